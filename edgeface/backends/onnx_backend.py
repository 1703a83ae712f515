"""ONNX Runtime backend (no torch needed)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.files import has_utf8_name
from ..errors import BackendError, ModelFileError
from ..options import gpu_ordinal
from ..spec import SPEC_KEY, ModelSpec

GPU_PROVIDERS = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}


def providers(device: str) -> tuple[list[str], list[dict]]:
    """ONNX Runtime's execution providers for an edgeface device (``cpu``, ``cuda``, ``cuda:N``, ``tensorrt``),
    best first, the CPU last, and each one's options: a GPU index goes to the GPU providers as their ``device_id``."""
    index = gpu_ordinal(device)
    gpu = GPU_PROVIDERS.get(device.partition(":")[0], [])
    return [*gpu, "CPUExecutionProvider"], [*({} if index is None else {"device_id": index} for _ in gpu), {}]


class OnnxBackend:
    """An edgeface ONNX file on ONNX Runtime; ``device`` is "cpu", "cuda", "cuda:N" or "tensorrt". ``memory_pattern``:
    ONNX Runtime's memory planning, at most a few % faster for frames of one size, but it keeps memory for each size
    it meets (README, Big photos)."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None, memory_pattern: bool = True):
        import onnxruntime as ort

        wanted, provider_options = providers(device)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_mem_pattern = memory_pattern
        try:
            with warnings.catch_warnings():  # ORT warns about missing providers; the check below says more
                warnings.simplefilter("ignore", UserWarning)
                model = path if has_utf8_name(path) else Path(path).read_bytes()  # ORT takes only UTF-8 paths
                self.session = ort.InferenceSession(model, options, providers=wanted,
                                                    provider_options=provider_options)
        except Exception as exc:
            raise ModelFileError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}; "
                                 "is the file complete? re-export it with `edgeface export onnx`") from exc
        running = self.session.get_providers()
        if running[0] != wanted[0]:
            raise BackendError(
                f"asked for {wanted[0]} but ONNX Runtime runs {running[0]} (available here: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu with a working CUDA, "
                "or pass device='cpu'")
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ModelFileError(f"{path} is an ONNX model without an edgeface spec; export models with "
                                 "`edgeface export onnx` so the runtime knows their anchors and input convention")
        try:
            self.spec = ModelSpec.from_json(meta[SPEC_KEY])
        except ValueError as exc:
            raise ModelFileError(f"{path} carries a model spec this edgeface cannot use: {exc}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4 or len(outputs) != 2:
            have = ", ".join(f"{i.name} {i.type} of rank {len(i.shape)}" for i in inputs)
            raise ModelFileError(f"{path} has inputs ({have}) and {len(outputs)} outputs, where edgeface exports have "
                                 "one float32 N x 3 x H x W input and two outputs (boxes, scores); re-export it with "
                                 "`edgeface export onnx`")
        self.name = f"onnxruntime:{running[0]}"
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in outputs]
        self.path = os.fspath(path)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            loc, conf = self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:
            if "alloc" not in str(exc).lower():
                raise
            n, _, h, w = batch.shape
            raise BackendError(f"out of memory running {n} input(s) of {w}x{h} on ONNX Runtime: use a smaller "
                               "input_size or max_side") from None
        return loc, conf
