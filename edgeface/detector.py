"""`Detector`: frame in, faces out, on whichever backend the model file calls for."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .backends import Backend, open_backend
from .core.anchors import generate_anchors
from .core.detections import Detections
from .core.image import check_image
from .core.letterbox import Letterbox
from .core.postprocess import decode_detections
from .core.preprocess import prepare_input
from .errors import ModelFileError
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

    ``detect(frame)`` takes an OpenCV BGR uint8 ``H x W x 3`` frame and returns :class:`Detections`
    in that frame's pixels. The pipeline is ``prepare`` -> ``infer`` -> ``decode``, each public so
    benchmarks and custom pipelines can time or replace one stage.
    """

    def __init__(self, path: str | os.PathLike | Backend | None = None, score_threshold: Optional[float] = None,
                 nms_iou: Optional[float] = None, max_detections: Optional[int] = None,
                 input_size: Optional[tuple[int, int]] = None, device: str = "cpu",
                 threads: Optional[int] = None):
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
        images = [check_image(image) for image in images]
        results: list[Optional[Detections]] = [None] * len(images)
        for indices in self._groups(images):
            batch, transforms = self.prepare([images[i] for i in indices])
            loc, conf = self.infer(batch)
            for i, dets in zip(indices, self.decode(loc, conf, transforms, batch.shape[3], batch.shape[2])):
                results[i] = dets
        return results  # type: ignore[return-value]

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
               height: int) -> list[Detections]:
        """Raw outputs of a ``width`` x ``height`` batch -> one :class:`Detections` per frame."""
        anchors = generate_anchors(self.spec.anchors, width, height)
        return [decode_detections(loc[i], conf[i], anchors, self.spec, transform, self.score_threshold,
                                  self.nms_iou, self.max_detections)
                for i, transform in enumerate(transforms)]
