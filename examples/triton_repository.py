"""Serve an edgeface model with NVIDIA Triton Inference Server: write a model repository.

    python examples/triton_repository.py extd64.onnx -o model_repository --max-batch 8
    tritonserver --model-repository model_repository

The repository holds the model (ONNX for Triton's ONNX Runtime backend, or a TensorRT .engine for
its TensorRT backend) and a ``config.pbtxt``. Triton runs the network only; clients do edgeface's
pre- and post-processing, which the model spec (embedded in the ONNX and copied into the config's
parameters) fully describes, so a client needs nothing else:

    spec = ModelSpec.from_json(<config parameter "edgeface.spec">)
    x, letterbox = edgeface.core.preprocess.prepare_input(frame, spec.input, size)   # 3 x H x W float32
    loc, conf = <Triton infer: input "input" = x[None]; outputs "loc", "conf">
    anchors = edgeface.core.anchors.generate_anchors(spec.anchors, W, H)
    faces = edgeface.core.postprocess.decode_detections(loc[0], conf[0], anchors, spec, letterbox,
                                                       spec.score_threshold, spec.nms_iou, spec.max_detections)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import onnxruntime as ort

from edgeface.spec import SPEC_KEY, ModelSpec


def triton_config(name: str, spec: ModelSpec, platform: str, max_batch: int) -> str:
    """config.pbtxt text for an edgeface model: input (3, H, W) FP32, outputs loc (A, 4) and conf (A, 2)."""
    height, width = (spec.input.size[1], spec.input.size[0]) if spec.input.size else (-1, -1)
    batching = spec.input.batch is None and max_batch > 0
    lead = "" if batching else f"{spec.input.batch or 1}, "  # with Triton batching the batch dim is implicit
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch if batching else 0}",
        "input [",
        f'  {{ name: "input" data_type: TYPE_FP32 dims: [ {lead}3, {height}, {width} ] }}',
        "]",
        "output [",
        f'  {{ name: "loc" data_type: TYPE_FP32 dims: [ {lead}-1, 4 ] }},',
        f'  {{ name: "conf" data_type: TYPE_FP32 dims: [ {lead}-1, 2 ] }}',
        "]",
        "instance_group [ { kind: KIND_GPU count: 1 } ]",
    ]
    if batching:
        lines.append("dynamic_batching { }")
    lines.append(f'parameters {{ key: "{SPEC_KEY}" value: {{ string_value: {json.dumps(spec.to_json())} }} }}')
    return "\n".join(lines) + "\n"


def write_repository(model: Path, out: Path, max_batch: int = 8, name: str | None = None) -> Path:
    """Copy `model` into ``out/<name>/1/`` with its ``config.pbtxt``; returns the model folder."""
    if model.suffix == ".onnx":
        meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta()
        spec = ModelSpec.from_json(meta.custom_metadata_map[SPEC_KEY])
        platform, file_name = "onnxruntime_onnx", "model.onnx"
    else:
        raise SystemExit(f"{model}: give an edgeface .onnx (TensorRT engines need the GPU runtime's spec reader)")
    name = name or spec.name.replace("-", "_")
    folder = out / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, folder / "1" / file_name)
    (folder / "config.pbtxt").write_text(triton_config(name, spec, platform, max_batch))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="edgeface .onnx")
    parser.add_argument("-o", "--output", default="model_repository")
    parser.add_argument("--max-batch", type=int, default=8, help="Triton dynamic batching limit (dynamic-batch models)")
    parser.add_argument("--name", help="model name in the repository (default: the spec's)")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"error: no such model file: {args.model}")
    folder = write_repository(Path(args.model), Path(args.output), args.max_batch, args.name)
    print(f"Triton model repository: {folder} (start with: tritonserver --model-repository {args.output})")


if __name__ == "__main__":
    main()
