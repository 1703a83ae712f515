"""Test-time strategies from the papers: image pyramids, horizontal flip, and box voting."""

from __future__ import annotations

import numpy as np

from ..spec import AnchorSpec, PyramidScale
from .anchors import feature_sizes
from .boxes import box_iou
from .detections import Detections
from .nms import nms
from .postprocess import best_scoring


def pass_size(width: int, height: int, p: PyramidScale) -> tuple[int, int]:
    """``(w, h)`` of a ``width`` x ``height`` frame in pyramid pass `p`."""
    scale = p.short_side / min(width, height) if p.short_side else p.scale
    return max(1, round(width * scale)), max(1, round(height * scale))


def active_anchors(spec: AnchorSpec, width: int, height: int, indices: tuple[int, ...]) -> np.ndarray:
    """Boolean ``(A,)`` mask of the anchors whose index within their cell is in `indices`."""
    masks = []
    for level, (rows, cols) in enumerate(feature_sizes(spec, width, height)):
        in_cell = np.isin(np.arange(spec.per_cell(level)), indices)
        masks.append(np.tile(in_cell, rows * cols))
    return np.concatenate(masks)


def box_voting(boxes: np.ndarray, scores: np.ndarray, keep: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Replace each kept box by the score-weighted mean of every box overlapping it by >= `iou_threshold`."""
    if len(keep) == 0:
        return boxes[keep]
    weights = (box_iou(boxes[keep], boxes, np.float32) >= iou_threshold) * scores[None, :]
    return ((weights @ boxes) / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def merge_passes(passes: list[Detections], nms_iou: float, max_detections: int,
                 voting_iou: float | None = None, top_k: int | None = None) -> Detections:
    """One set of faces from several passes over the same frame: NMS, then optionally box voting, over the
    `top_k` best-scoring boxes of all passes (all when None), which bounds both."""
    boxes = np.concatenate([d.boxes for d in passes]) if passes else np.zeros((0, 4), np.float32)
    scores = np.concatenate([d.scores for d in passes]) if passes else np.zeros(0, np.float32)
    if top_k is not None:
        best = best_scoring(np.arange(len(scores)), scores, top_k)
        boxes, scores = boxes[best], scores[best]
    keep = nms(boxes, scores, nms_iou, max_detections)
    merged = box_voting(boxes, scores, keep, voting_iou) if voting_iou else boxes[keep]
    return Detections(merged, scores[keep])
