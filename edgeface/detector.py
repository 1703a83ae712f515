"""`Detector`: frame in, faces out, on whichever backend the model file calls for."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np

from .backends import Backend, open_backend
from .core.anchors import generate_anchors
from .core.detections import Detections
from .core.image import check_image
from .core.letterbox import Letterbox
from .core.postprocess import decode_detections
from .core.preprocess import prepare_input
from .core.testtime import active_anchors, merge_passes, pass_size
from .errors import ModelFileError
from .spec import TestTimeSpec
from .weights import DEFAULT_MODEL


class Detector:
    """Face detector for an edgeface model file.

    Args:
        path: ``.onnx`` (ONNX Runtime, no torch needed) or ``.pt`` edgeface checkpoint (torch), or an
            already open :class:`~edgeface.backends.Backend`; default: the model edgeface ships in
            ``edgeface/weights/`` (none yet: then a clear error).
        score_threshold, nms_iou, max_detections: override the model spec's defaults.
        input_size: ``(w, h)`` to letterbox every frame to; default: frames run at their own size
            (or at the fixed size of a static-shape export).
        device: "cpu" (default), "cuda", or for ONNX files "tensorrt". A GPU that was asked for but
            is not what runs is an error, never a silent CPU fallback.
        threads: CPU threads for the backend (default: the backend's own choice).
        test_time: passes per frame (pyramid, flip, box voting); default: the model's own strategy from
            its spec (one pass for EXTD; HR's pyramid with 2x interpolation, ...). ``TestTimeSpec()``
            forces a single pass. A fixed ``input_size`` always runs one pass.

    ``detect(frame)`` takes an OpenCV BGR uint8 ``H x W x 3`` frame (on the GPU runtime also a device array
    with ``__cuda_array_interface__``: CuPy, torch) and returns :class:`Detections` in that frame's pixels.
    The pipeline is ``prepare`` -> ``infer`` -> ``decode``, each public so benchmarks and custom pipelines
    can time or replace one stage.
    """

    def __init__(self, path: str | os.PathLike | Backend | None = None, score_threshold: Optional[float] = None,
                 nms_iou: Optional[float] = None, max_detections: Optional[int] = None,
                 input_size: Optional[tuple[int, int]] = None, device: str = "cpu",
                 threads: Optional[int] = None, test_time: Optional[TestTimeSpec] = None):
        if path is None:
            path = DEFAULT_MODEL
            if not path.exists():
                raise ModelFileError(f"this edgeface install ships no default model ({path} is missing); "
                                     "pass a model file, e.g. Detector('extd64.onnx')")
        is_backend = hasattr(path, "run") and hasattr(path, "spec")
        self.backend = path if is_backend else open_backend(path, device=device, threads=threads)
        self.spec = self.backend.spec
        fixed = self.spec.input.size
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
            if min(input_size) <= 0:
                raise ValueError(f"input_size must be positive (w, h), got {input_size}")
            if fixed is not None and tuple(fixed) != input_size:
                raise ValueError(f"{path} was exported for input {fixed[0]}x{fixed[1]} only; "
                                 "drop input_size, or re-export without --input-size for any size")
        self.input_size = input_size or (tuple(fixed) if fixed else None)
        self.score_threshold = self.spec.score_threshold if score_threshold is None else float(score_threshold)
        self.nms_iou = self.spec.nms_iou if nms_iou is None else float(nms_iou)
        self.max_detections = self.spec.max_detections if max_detections is None else int(max_detections)
        if test_time is not None and not test_time.single_pass and self.input_size is not None:
            raise ValueError("test-time passes resize the frame, so they need a model that runs at any input "
                             "size: drop input_size (or use a dynamic-shape export)")
        self.test_time = TestTimeSpec() if self.input_size is not None else (test_time or self.spec.test_time)
        self.gpu_pipeline = self._open_gpu_pipeline()

    def _open_gpu_pipeline(self):
        """The all-GPU path (CUDA pre-processing, network, decode and NMS) for TensorRT engines, and for torch on
        CUDA when cuda-bindings is installed; None for CPU backends."""
        import importlib.util

        name = getattr(self.backend, "name", "")
        wanted = name.startswith("tensorrt") or (name.startswith("torch:cuda")
                                                 and importlib.util.find_spec("cuda") is not None)
        if not wanted or not hasattr(self.backend, "gpu_pipeline"):
            return None
        return self.backend.gpu_pipeline(self.score_threshold, self.nms_iou, self.max_detections)

    def __repr__(self) -> str:
        size = "native" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        return f"Detector({self.spec.name}, backend={self.backend.name}, input={size})"

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect(image)

    def detect(self, image: np.ndarray) -> Detections:
        """Faces in one BGR uint8 frame."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each frame; frames of one size (or all, when letterboxing) share a network run."""
        if self.gpu_pipeline is not None and self.test_time.single_pass:  # device arrays stay on the GPU
            on_device = [hasattr(image, "__cuda_array_interface__") for image in images]
            return [self.gpu_pipeline.detect(image if device else check_image(image), self.input_size)
                    for image, device in zip(images, on_device)]
        images = [check_image(image) for image in images]
        if not self.test_time.single_pass:
            return [self._detect_passes(image) for image in images]
        results: list[Optional[Detections]] = [None] * len(images)
        for indices in self._groups(images):
            batch, transforms = self.prepare([images[i] for i in indices])
            loc, conf = self.infer(batch)
            for i, dets in zip(indices, self.decode(loc, conf, transforms, batch.shape[3], batch.shape[2])):
                results[i] = dets
        return results  # type: ignore[return-value]

    def _detect_passes(self, image: np.ndarray) -> Detections:
        """The test-time strategy: one network run per pyramid scale (and mirror), merged."""
        height, width = image.shape[:2]
        passes = []
        for p in self.test_time.pyramid:
            size = pass_size(width, height, p)
            scaled = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            for mirrored in (False, True) if self.test_time.flip else (False,):
                frame = np.ascontiguousarray(scaled[:, ::-1]) if mirrored else scaled
                batch, transforms = self.prepare([frame])
                loc, conf = self.infer(batch)
                dets = self.decode(loc, conf, transforms, batch.shape[3], batch.shape[2], p.anchors)[0]
                boxes = dets.boxes
                if mirrored:
                    boxes[:, [0, 2]] = size[0] - boxes[:, [2, 0]]
                passes.append(Detections(boxes * np.float32([width / size[0], height / size[1]] * 2), dets.scores))
        return merge_passes(passes, self.nms_iou, self.max_detections, self.test_time.voting_iou)

    def _groups(self, images: list[np.ndarray]) -> list[list[int]]:
        """Indices of frames that can share one batch (same input size, at most the fixed batch)."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(self.input_size or image.shape[1::-1], []).append(i)
        step = self.spec.input.batch or max(len(images), 1)
        return [group[k : k + step] for group in by_size.values() for k in range(0, len(group), step)]

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Frames of one input size -> ``(N, 3, H, W)`` float32 batch and each frame's letterbox."""
        pairs = [prepare_input(image, self.spec.input, self.input_size) for image in images]
        batch = np.stack([p[0] for p in pairs])
        fixed_batch = self.spec.input.batch
        if fixed_batch and len(batch) < fixed_batch:  # a static-batch export: pad with empty frames
            batch = np.concatenate([batch, np.zeros((fixed_batch - len(batch), *batch.shape[1:]), np.float32)])
        return batch, [p[1] for p in pairs]

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network: raw ``loc (N, A, 4)`` and ``conf (N, A, 2)``."""
        return self.backend.run(batch)

    def decode(self, loc: np.ndarray, conf: np.ndarray, transforms: Sequence[Letterbox], width: int,
               height: int, anchor_subset: Optional[tuple[int, ...]] = None) -> list[Detections]:
        """Raw outputs of a ``width`` x ``height`` batch -> one :class:`Detections` per frame, from the
        anchors whose index within their cell is in `anchor_subset` (default: all)."""
        anchors = generate_anchors(self.spec.anchors, width, height)
        active = None if anchor_subset is None else active_anchors(self.spec.anchors, width, height, anchor_subset)
        return [decode_detections(loc[i], conf[i], anchors, self.spec, transform, self.score_threshold,
                                  self.nms_iou, self.max_detections, active)
                for i, transform in enumerate(transforms)]
