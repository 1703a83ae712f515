"""Test-time strategies from the papers: multi-scale passes, horizontal flip, and box voting."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..core.boxes import box_iou
from ..core.detections import Detections
from ..core.nms import nms


def box_voting(boxes: np.ndarray, scores: np.ndarray, keep: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Replace each kept box by the score-weighted mean of every box overlapping it by >= `iou_threshold`."""
    if len(keep) == 0:
        return boxes[keep]
    weights = (box_iou(boxes[keep], boxes) >= iou_threshold) * scores[None, :]
    return ((weights @ boxes) / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def detect_tta(detector, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False,
               voting_iou: float | None = None) -> Detections:
    """Faces from one pass per scale (and its mirror), merged by NMS at the detector's IoU, optionally with
    box voting (the EXTD release used flip + multi-scale + voting at IoU 0.3)."""
    if tuple(scales) == (1.0,) and not flip and not voting_iou:
        return detector(image)  # one pass: nothing to merge
    height, width = image.shape[:2]
    boxes, scores = [], []
    for scale in scales:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scaled = image if scale == 1 else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        sx, sy = scaled.shape[1] / width, scaled.shape[0] / height
        for mirrored in (False, True) if flip else (False,):
            dets = detector(np.ascontiguousarray(scaled[:, ::-1]) if mirrored else scaled)
            b = dets.boxes.copy()
            if mirrored:
                b[:, [0, 2]] = scaled.shape[1] - b[:, [2, 0]]
            boxes.append(b / np.array([sx, sy, sx, sy], np.float32))
            scores.append(dets.scores)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    keep = nms(boxes, scores, detector.nms_iou, detector.max_detections)
    merged = box_voting(boxes, scores, keep, voting_iou) if voting_iou else boxes[keep]
    return Detections(merged, scores[keep])
