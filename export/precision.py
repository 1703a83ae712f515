"""Reduced-precision ONNX for TensorRT, made and checked on the CPU.

- FP16: every float tensor cast to half inside the graph (inputs and outputs stay float32), the form a
  strongly typed network (TensorRT 11, TensorRT-RTX) takes its precision from.
- INT8: explicit, symmetric Q/DQ quantisation from calibration images (what TensorRT 10/11 build INT8
  engines from), with NVIDIA ModelOpt when installed, else ONNX Runtime's static quantiser.

:func:`compare_precisions` runs a reduced-precision graph against the FP32 one on ONNX Runtime over
images held out from calibration and reports how much outputs and detections move.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgeface.core.boxes import box_iou
from edgeface.core.files import atomic_write
from edgeface.core.image import read_image
from edgeface.options import check_int8_calibration, in_module
from edgeface.spec import INPUT, ModelSpec

from .onnx_spec import embed_spec, read_onnx_spec


def cast_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write an FP16 copy of `src` (float32 inputs/outputs kept, so the runtime side does not change)."""
    from onnxconverter_common import float16

    model = onnx.load(os.fspath(src))
    del model.graph.value_info[:]  # stale float32 annotations would contradict the cast graph
    # Resize stays float32: its scales/roi inputs must be float32, and upsampling gains nothing from FP16
    half = float16.convert_float_to_float16(model, keep_io_types=True,
                                            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Resize"])
    onnx.checker.check_model(half)
    onnx.save(half, os.fspath(dst))
    return os.fspath(dst)


def calibration_batches(images: Sequence[str | np.ndarray], spec: ModelSpec,
                        size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """Calibration inputs: each image letterboxed to `size` (or the export's fixed size) and normalised."""
    from edgeface.core.preprocess import prepare_input

    size = spec.input.size or size
    return [prepare_input(read_image(i) if isinstance(i, (str, os.PathLike)) else i, spec.input, size)[0][None]
            for i in images]


def _calibrated(src: str, dst: str, images: Sequence[str | np.ndarray], size: tuple[int, int],
                quantise: Callable[[list[np.ndarray], str], None]) -> str:
    """Run `quantise(batches, out)` (which writes the model to `out`) on `images` letterboxed to `size`, give the
    result back the spec of `src` (quantisers drop metadata) and only then put it at `dst`: a failed or interrupted
    quantisation leaves no half-written model there."""
    spec = read_onnx_spec(src)
    batches = calibration_batches(images, spec, size)
    if not batches:
        raise ValueError("INT8 quantisation needs calibration images")
    with atomic_write(dst) as out:
        quantise(batches, out)
        model = onnx.load(out)
        embed_spec(model, spec)
        onnx.save(model, out)
    return dst


def _ort_quantize_static(src: str, dst: str, batches: list[np.ndarray], **options: Any) -> None:
    """ONNX Runtime's static quantisation of `src` into `dst`, calibrated on `batches`, with a progress bar over the
    calibration images on a terminal (the shipped recipes' percentile ranges of 65 photos take 8-11 minutes on a 2-core
    EPYC)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from tqdm import tqdm

    bar = tqdm(total=len(batches), desc="calibrating", unit="image", disable=None, file=sys.stderr)

    class Reader(CalibrationDataReader):  # set_range: ONNX Runtime's CalibStridedMinMax reads a stride at a time
        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.items = iter([{INPUT: b} for b in batches[start_index:end_index]])

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            bar.update(item is not None)
            return item

    # the percentile calibrator prints its settings and a line for every stride (every image here) on stdout, where
    # a command's results go: kept out of it
    with bar, contextlib.redirect_stdout(io.StringIO()):
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, **options)


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, images: Sequence[str | np.ndarray],
                  size: tuple[int, int] = (640, 480)) -> str:
    """Write an explicitly quantised (Q/DQ, symmetric INT8) copy of `src`, calibrated on `images`: NVIDIA's
    ModelOpt where installed, else ONNX Runtime's quantiser with the heads and what carries their outputs left
    unquantised (TensorRT runs them in FP16 / FP32), as the CPU recipe keeps them (:func:`quantize_int8_cpu`)."""
    src, dst = os.fspath(src), os.fspath(dst)

    def quantise(batches: list[np.ndarray], out: str) -> None:
        try:
            from modelopt.onnx.quantization import quantize as modelopt_quantize
        except ImportError:
            from onnxruntime.quantization import QuantType

            model = onnx.load(src)
            _ort_quantize_static(src, out, batches, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                 nodes_to_exclude=nodes_of(model, heads_of(model)),
                                 extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
            return
        modelopt_quantize(src, quantize_mode="int8", calibration_data=np.concatenate(batches),
                          calibration_eps=["cpu"], output_path=out)

    return _calibrated(src, dst, images, size, quantise)


def quantize_int8_cpu(src: str | os.PathLike, dst: str | os.PathLike, images: Sequence[str | np.ndarray],
                      size: tuple[int, int] = (640, 480), keep_float: Sequence[str] = (),
                      calibration: str = "minmax") -> str:
    """Write an INT8 copy of `src` for ONNX Runtime on CPUs, calibrated on `images`: Q/DQ with unsigned 8-bit
    activations and signed per-channel 8-bit weights, the form ONNX Runtime's x86 / ARM integer kernels run
    (TensorRT wants :func:`quantize_int8`'s symmetric activations instead).

    `calibration` sets each activation's range: ``"minmax"``, the extremes seen on the images, or
    ``"percentile"``, its 0.001st to 99.999th percentiles (a histogram over the images, gathered one image at a
    time: ONNX Runtime's one-shot histograms of 65 photos ran out of 24 GB), which clips rare outliers and gives
    the common values finer steps.

    `keep_float` names parts of the network as PyTorch names its modules (``"base.0"``, ``"loc"`` for every
    ``loc.N``): each of their operations stays FP32, the activations between them and the operations that only
    carry their outputs on included (:func:`nodes_of`), where leaving out only convolutions would still round what
    they read and write to 8 bits (:data:`SHIPPED_INT8_KEEP_FLOAT`).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    check_int8_calibration(calibration)

    def quantise(batches: list[np.ndarray], out: str) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantType
        from onnxruntime.quantization.shape_inference import quant_pre_process

        method = {} if calibration == "minmax" else {
            "calibrate_method": CalibrationMethod.Percentile,
            "extra_options": {"CalibPercentile": 99.999, "CalibStridedMinMax": 1}}

        prepared = f"{out}.prepared.onnx"
        try:
            quant_pre_process(src, prepared, skip_symbolic_shape=True)  # folded and shape-inferred, as ORT advises
            _ort_quantize_static(prepared, out, batches, activation_type=QuantType.QUInt8,
                                 weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_exclude=nodes_of(onnx.load(prepared), keep_float), **method)
        finally:
            if os.path.exists(prepared):
                os.remove(prepared)

    return _calibrated(src, dst, images, size, quantise)


# The detection heads (box offsets and face scores), which every INT8 recipe here keeps in FP32
HEADS = ("loc", "conf")
# What each shipped INT8 model keeps in FP32 (percentile ranges for the rest): the stem convolution (the first at full
# resolution), the heads and, for the default, the FPN's upsampling convolutions, which carry the coarse levels down to
# where the smallest faces are found. Every layer INT8, the default lost 0.0114 on WIDER hard in 416 px frames and the
# fast model 0.011 with TTA; keeping the backbone's whole first stage in FP32 too saved no accuracy and cost time (the
# default at 0.73x its FP32 time instead of 0.66x on an AMD EPYC; edgeface_default_int8.md, edgeface_fast_int8.md)
SHIPPED_INT8_KEEP_FLOAT = {"default": ("base.0", *HEADS, "upfeat"), "fast": ("base.0", *HEADS)}


def _module(node: onnx.NodeProto) -> str:
    """The PyTorch module an exported node belongs to (``/base.0/conv/Conv``: ``base.0``); "" for module-less ones."""
    return node.name.split("/")[1] if node.name.startswith("/") and node.name.count("/") > 1 else ""


def heads_of(model: onnx.ModelProto) -> list[str]:
    """Those of :data:`HEADS` that `model` has (EXTD's and SHF's `loc` / `conf`): what to keep in FP32 by default."""
    found = {_module(n).split(".")[0] for n in model.graph.node}
    return [head for head in HEADS if head in found]


def nodes_of(model: onnx.ModelProto, modules: Sequence[str]) -> list[str]:
    """Names of the nodes the PyTorch export made for `modules` (``"base.0"``: ``/base.0/...``; ``"loc"``: every
    ``/loc.N/...`` too), and of the module-less operations whose every float input comes from those (the heads'
    transposes, reshapes and concatenations into the graph's outputs): quantised, they would round the FP32 heads'
    box offsets and scores to 8 bits. A module that matches no node is a ValueError, not a silent full quantisation."""
    found = {m: [n.name for n in model.graph.node if in_module(_module(n), m)] for m in modules}
    if missing := [m for m, names in found.items() if not names]:
        raise ValueError(f"no operations of module(s) {', '.join(missing)} in this ONNX graph")
    kept = {name for names in found.values() for name in names}
    typed = onnx.shape_inference.infer_shapes(model).graph
    weights = {i.name for i in typed.initializer}
    activations = {v.name for v in [*typed.input, *typed.value_info, *typed.output]
                   if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in weights}
    float_outputs = {out for n in model.graph.node if n.name in kept for out in n.output}
    for node in model.graph.node:  # topological order: a tail's operations come after what they read
        read = activations.intersection(node.input)
        if not _module(node) and read and read <= float_outputs:
            kept.add(node.name)
            float_outputs.update(node.output)
    return [n.name for n in model.graph.node if n.name in kept]


@dataclass
class PrecisionReport:
    precision: str
    images: int
    max_score_diff: float  # largest |face probability - FP32's| over all anchors
    face_recall: float  # share of FP32's faces found again (IoU >= 0.5)
    extra_faces: int  # faces FP32 did not find

    def summary(self) -> str:
        return (f"{self.precision} vs fp32 on {self.images} held-out images: max score change "
                f"{self.max_score_diff:.4f}, {self.face_recall:.1%} of FP32's faces kept, {self.extra_faces} new")


def compare_precisions(reference: str | os.PathLike | Any, candidate: str | os.PathLike | Any, precision: str,
                       images: Sequence[str | np.ndarray]) -> PrecisionReport:
    """FP32 `reference` against reduced-precision `candidate`, at each image's size: model files (ONNX on ONNX
    Runtime) or backends (for example torch on CUDA in float32 and with half weights)."""
    from edgeface.core.postprocess import face_scores
    from edgeface.detector import Detector

    def opened(model: Any) -> Detector:
        return Detector(os.fspath(model) if isinstance(model, (str, os.PathLike)) else model)

    ref, cand = opened(reference), opened(candidate)
    max_diff, kept, total, extra = 0.0, 0, 0, 0
    for image in images:
        frame = read_image(image) if isinstance(image, (str, os.PathLike)) else image
        batch, transforms = ref.prepare([frame])
        (loc_r, conf_r), (loc_c, conf_c) = ref.infer(batch), cand.infer(batch)
        max_diff = max(max_diff, float(np.abs(face_scores(conf_r[0]) - face_scores(conf_c[0])).max()))
        width, height = batch.shape[3], batch.shape[2]
        a = ref.decode(loc_r, conf_r, transforms, width, height)[0]
        b = cand.decode(loc_c, conf_c, transforms, width, height)[0]
        same = box_iou(a.boxes, b.boxes) >= 0.5  # (len(a), len(b)), empty sides included
        kept += int(same.any(axis=1).sum())
        extra += int((~same.any(axis=0)).sum())
        total += len(a)
    return PrecisionReport(precision, len(images), max_diff, kept / total if total else 1.0, extra)
