"""torch -> ONNX export with the spec embedded, graph simplification and a parity check that fails loudly."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from edgeface.backends.onnx_backend import OnnxBackend
from edgeface.backends.torch_backend import TorchBackend
from edgeface.core.detections import Detections
from edgeface.core.files import atomic_write
from edgeface.core.image import check_image, read_image
from edgeface.detector import Detector
from edgeface.errors import EdgefaceError, OptionError
from edgeface.models.checkpoint import load_checkpoint
from edgeface.models.registry import create_model, default_spec, model_names
from edgeface.spec import CONF, INPUT, LOC, ModelSpec

from .onnx_spec import embed_spec

DEFAULT_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5.1 / 6.0) parse opset <= 17 with IR <= 8
MIN_OPSET = 13  # the oldest TensorRT edgeface targets (8.0, JetPack 4.6) parses opset 13
PARITY_ATOL = 1e-4  # max difference of raw outputs, ONNX Runtime vs torch (relative for magnitudes above 1)
TRACE_SIZE = (640, 480)
CHECK_MAX_SIDE = 1024  # check images are shrunk to this to keep the check fast


class ExportError(EdgefaceError, RuntimeError):
    """The exported graph failed its checks; nothing was written."""


@dataclass
class ExportReport:
    path: str
    opset: int
    ir_version: int
    input_size: Optional[tuple[int, int]]
    batch: Optional[int]
    images_checked: int
    max_abs_diff: float
    detections_checked: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        size = "dynamic HxW" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        batch = "dynamic batch" if self.batch is None else f"batch {self.batch}"
        return (f"{self.path}: opset {self.opset}, IR {self.ir_version}, {size}, {batch}; parity on "
                f"{self.images_checked} images: max |onnx - torch| = {self.max_abs_diff:.2e} "
                f"(<= {PARITY_ATOL:g}), {self.detections_checked} detections identical; {self.seconds:.1f} s"
                + "".join(f"; {note}" for note in self.notes))


def load_model(model: str) -> tuple[nn.Module, ModelSpec, bool]:
    """A checkpoint path or registry name -> (eval model, spec, whether it has trained weights)."""
    if os.path.isfile(model):
        net, spec = load_checkpoint(model)
        return net, spec, True
    try:
        return create_model(model).eval(), default_spec(model), False
    except KeyError:
        raise FileNotFoundError(f"{model!r} is neither a file nor a registered model "
                                f"({', '.join(model_names())})") from None


def fold_scalar_prelu(model: nn.Module) -> nn.Module:
    """Copy of `model` with every single-slope PReLU replaced by the LeakyReLU it equals at inference.

    ONNX Runtime fuses Conv + LeakyRelu but not Conv + PRelu (the released PReLU EXTD-64 ran 2.8x slower
    on it), and PReLU is a typical DLA fallback on Jetson; the function computed is unchanged.
    """
    import copy

    model = copy.deepcopy(model)
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.PReLU) and child.weight.numel() == 1:
                setattr(parent, child_name, nn.LeakyReLU(float(child.weight.detach())))
    return model


def _check_images(images: Sequence[str | np.ndarray], seed: int = 0) -> list[np.ndarray]:
    loaded = [read_image(i) if isinstance(i, (str, os.PathLike)) else check_image(i) for i in images]
    if not loaded:
        warnings.warn("no check images given: checking parity on synthetic frames; pass real photos "
                      "(--check-images) for a meaningful check", stacklevel=3)
        rng = np.random.default_rng(seed)
        loaded = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                  cv2.GaussianBlur(rng.integers(0, 256, (357, 501, 3), dtype=np.uint8), (0, 0), 3)]
    out = []
    for image in loaded:
        scale = CHECK_MAX_SIDE / max(image.shape[:2])
        out.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image)
    return out


def _same_detections(a: Detections, b: Detections) -> bool:
    """Same faces, in any order: runtimes may order scores that tie to float precision differently."""
    if len(a) != len(b):
        return False
    close = ((np.abs(a.boxes[:, None] - b.boxes[None]).max(axis=-1) <= 1e-2)
             & (np.abs(a.scores[:, None] - b.scores[None]) <= 1e-4))
    return bool(close.any(axis=1).all() and close.any(axis=0).all())


def check_export_options(output: str, opset: int, batch: Optional[int]) -> None:
    """Raise OptionError for an ONNX file name Detector would not open, an opset torch cannot write or edgeface's
    targets cannot read, or a fixed batch under 1."""
    if not output.lower().endswith(".onnx"):
        raise OptionError(f"the output is an ONNX file and must end in .onnx (Detector tells model files by their "
                          f"suffix), got {output}")
    highest = torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    if not MIN_OPSET <= opset <= highest:
        raise OptionError(f"opset must be between {MIN_OPSET} (TensorRT 8.0, JetPack 4.6) and {highest} (the "
                          f"highest torch {torch.__version__} writes), got {opset}")
    if batch is not None and batch < 1:
        raise OptionError(f"batch must be at least 1 (or none: any batch), got {batch}")


def export_onnx(model: nn.Module, spec: ModelSpec, output: str | os.PathLike, opset: int = DEFAULT_OPSET,
                input_size: Optional[tuple[int, int]] = None, batch: Optional[int] = None,
                check_images: Sequence[str | np.ndarray] = (), slim: bool = True,
                compare_detections: bool = True) -> ExportReport:
    """Export `model` to ONNX at `output`.

    ``input_size=None`` gives dynamic H and W, ``batch=None`` a dynamic batch. The graph is checked
    by ``onnx.checker`` and run on ONNX Runtime against the original torch model on `check_images` (paths or BGR
    frames): raw outputs must agree within :data:`PARITY_ATOL` and the detections must be identical,
    else :class:`ExportError` is raised and nothing is written. Untrained weights score every anchor
    about 0.5, so NMS order is decided by rounding noise: pass ``compare_detections=False`` for them.
    """
    start = time.perf_counter()
    output = os.fspath(output)
    check_export_options(output, opset, batch)
    model = model.eval().float().cpu()
    exported_model = fold_scalar_prelu(model)
    spec = spec.with_input_shape(input_size, batch)
    width, height = input_size or TRACE_SIZE
    dummy = torch.zeros(batch or 1, 3, height, width)
    dynamic_axes = {INPUT: {}, LOC: {1: "anchors"}, CONF: {1: "anchors"}}
    if batch is None:
        for name in dynamic_axes:
            dynamic_axes[name][0] = "batch"
    if input_size is None:
        dynamic_axes[INPUT].update({2: "height", 3: "width"})

    with tempfile.TemporaryDirectory() as tmp:
        raw_path = os.path.join(tmp, "raw.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(exported_model, (dummy,), raw_path, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[LOC, CONF], dynamic_axes=dynamic_axes)
        proto = onnx.load(raw_path)
    if slim:
        import onnxslim

        proto = onnxslim.slim(proto)
    proto.ir_version = min(proto.ir_version, onnx.helper.find_min_ir_version_for(
        [onnx.helper.make_opsetid("", opset)]))
    embed_spec(proto, spec)
    proto.producer_name = "edgeface"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc

    with atomic_write(output) as tmp:  # replaces `output` only once the parity check passed
        onnx.save(proto, tmp)
        max_diff, n_dets, n_images = _parity(model, spec, tmp, _check_images(check_images), compare_detections)
    notes = [] if compare_detections else ["detections not compared (untrained weights: near-tied scores)"]
    return ExportReport(output, opset, proto.ir_version, input_size, batch, n_images, max_diff, n_dets,
                        time.perf_counter() - start, notes)


def _parity(model: nn.Module, spec: ModelSpec, onnx_path: str, images: list[np.ndarray],
            compare_detections: bool) -> tuple[float, int, int]:
    """Compare ONNX Runtime with torch on `images`; raise :class:`ExportError` on any disagreement."""
    reference = Detector(TorchBackend.from_model(model, spec))
    exported = Detector(OnnxBackend(onnx_path))
    max_diff, n_dets = 0.0, 0
    for image in images:
        batch, transforms = reference.prepare([image])
        expected, got = reference.infer(batch), exported.infer(batch)
        diff = max(float((np.abs(e - g) / np.maximum(np.abs(e), 1.0)).max()) for e, g in zip(expected, got))
        max_diff = max(max_diff, diff)
        if diff > PARITY_ATOL:
            raise ExportError(f"ONNX Runtime differs from torch by {diff:.3g} (> {PARITY_ATOL:g}) on a "
                              f"{image.shape[1]}x{image.shape[0]} image; the export is wrong, not written")
        if not compare_detections:
            continue
        width, height = batch.shape[3], batch.shape[2]
        dets_ref = reference.decode(*expected, transforms, width, height)[0]
        dets_onnx = exported.decode(*got, transforms, width, height)[0]
        if not _same_detections(dets_ref, dets_onnx):
            raise ExportError(f"detections differ between torch ({len(dets_ref)}) and ONNX Runtime "
                              f"({len(dets_onnx)}) on a {image.shape[1]}x{image.shape[0]} image; not written")
        n_dets += len(dets_ref)
    return max_diff, n_dets, len(images)
