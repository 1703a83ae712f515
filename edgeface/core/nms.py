"""Greedy non-maximum suppression.

:func:`nms_reference` is the contract (plain NumPy); :func:`nms` is the fast path on OpenCV's
``cv2.dnn.NMSBoxes`` and is tested to keep exactly the same boxes in the same order. Both visit
boxes by descending score (ties in input order) and drop a box whose IoU with a kept one is
greater than ``iou_threshold``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .boxes import box_iou


def nms_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Indices of kept ``(N, 4)`` xyxy boxes, best first; ``max_keep > 0`` stops after that many."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        if max_keep and len(keep) == max_keep:
            break
        suppressed |= box_iou(boxes[i : i + 1], boxes)[0] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Same result as :func:`nms_reference`, computed by OpenCV."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.asarray(boxes, dtype=np.float64).copy()
    xywh[:, 2:] -= xywh[:, :2]
    scores = np.asarray(scores, dtype=np.float32)
    if scores.min() <= 0:  # OpenCV drops scores <= 0: pass their dense ranks, which order the same
        scores = (np.unique(scores, return_inverse=True)[1] + 1).astype(np.float32)
    # (OpenCV's own top_k truncates the candidates before suppression, not the kept boxes)
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, float(iou_threshold)), dtype=np.int64).reshape(-1)
    return keep[:max_keep] if max_keep else keep
