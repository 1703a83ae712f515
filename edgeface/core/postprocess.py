"""Raw network outputs -> :class:`Detections` (NumPy reference for the CUDA decode and NMS kernels)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelFileError
from ..spec import ModelSpec
from .boxes import decode_boxes
from .detections import Detections
from .letterbox import Letterbox
from .nms import nms


def face_scores(conf: np.ndarray) -> np.ndarray:
    """Face probability from ``(A, 2)`` (background, face) logits: softmax, written as a stable sigmoid."""
    return 1.0 / (1.0 + np.exp(np.clip(conf[:, 0] - conf[:, 1], -80, 80)))


def best_scoring(indices: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The (sorted) `indices` of the `k` highest ``scores[indices]`` (all when there are no more than `k`)."""
    if len(indices) <= k:
        return indices
    return np.sort(indices[np.argpartition(-scores[indices], k - 1)[:k]])


def decode_detections(loc: np.ndarray, conf: np.ndarray, anchors: np.ndarray, spec: ModelSpec,
                      transform: Letterbox, score_threshold: float, nms_iou: float,
                      max_detections: int, active: np.ndarray | None = None, top_k: int | None = None) -> Detections:
    """Faces of one image from its ``(A, 4)`` box offsets and ``(A, 2)`` logits over ``(A, 4)`` anchors.

    Keeps scores above `score_threshold`, at most `top_k` (default ``spec.pre_nms_top_k``) of them, decodes them,
    suppresses overlaps above `nms_iou` and maps the survivors to source-image pixels. `active`, a
    boolean ``(A,)`` mask, restricts the candidates to some anchors (HR's templates per pyramid scale).
    """
    if loc.shape[0] != anchors.shape[0]:
        raise ModelFileError(f"the network gave {loc.shape[0]} boxes but its spec's anchor layout has "
                             f"{anchors.shape[0]}: the model file and its spec disagree; re-export it with "
                             "`edgeface export onnx`")
    scores = face_scores(conf.astype(np.float32, copy=False))
    passing = scores > score_threshold
    candidates = np.flatnonzero(passing if active is None else passing & active)
    candidates = best_scoring(candidates, scores, top_k or spec.pre_nms_top_k)
    if len(candidates) == 0:
        return Detections.empty()
    boxes = decode_boxes(loc[candidates], anchors[candidates], spec.variances, spec.box_down)
    scores = scores[candidates].astype(np.float32)
    keep = nms(boxes, scores, nms_iou, max_detections)
    return in_source(transform, boxes[keep], scores[keep])


def in_source(transform: Letterbox, boxes: np.ndarray, scores: np.ndarray) -> Detections:
    """Network-input boxes mapped to the source image and clipped to it; a box left without area (it lay wholly in
    the input's padding) is dropped."""
    mapped = transform.to_source(boxes)
    inside = (mapped[:, 2] > mapped[:, 0]) & (mapped[:, 3] > mapped[:, 1])
    return Detections(mapped[inside], scores[inside])
