"""Greedy non-maximum suppression.

:func:`nms_reference` is the contract (plain NumPy); :func:`nms` is the fast path on OpenCV's
``cv2.dnn.NMSBoxes`` and is tested to keep exactly the same boxes in the same order. Both visit
boxes by descending score (ties in input order) and drop a box whose IoU with a kept one is
greater than ``iou_threshold``.
"""

from __future__ import annotations

import cv2
import numpy as np


def nms_reference(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Indices of kept ``(N, 4)`` xyxy boxes, best first; ``max_keep > 0`` stops after that many. Each kept box is
    compared only with the boxes after it in score order (those before are decided), in
    :func:`~edgeface.core.boxes.box_iou`'s float64 arithmetic, written out so areas are computed once."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = np.asarray(boxes, np.float64)[order].T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        if max_keep and len(keep) == max_keep:
            break
        r = slice(i + 1, None)
        inter = (np.clip(np.minimum(x2[i], x2[r]) - np.maximum(x1[i], x1[r]), 0, None)
                 * np.clip(np.minimum(y2[i], y2[r]) - np.maximum(y1[i], y1[r]), 0, None))
        union = area[i] + area[r] - inter
        suppressed[r] |= np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0) > iou_threshold
    return np.asarray(keep, dtype=np.int64)


EARLY_EXIT_RATIO = 4  # with max_keep <= n / this, greedy NMS that stops at max_keep beats OpenCV (which cannot)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Same result as :func:`nms_reference`: by OpenCV, or, when `max_keep` is small against the candidates
    (a model that fires everywhere), by the reference itself, which stops at `max_keep` boxes and so
    costs O(max_keep x n) instead of OpenCV's O(kept x n) over every box it keeps."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if max_keep and max_keep * EARLY_EXIT_RATIO <= len(boxes):
        return nms_reference(boxes, scores, iou_threshold, max_keep)
    xywh = np.asarray(boxes, dtype=np.float64).copy()
    xywh[:, 2:] -= xywh[:, :2]
    scores = np.asarray(scores, dtype=np.float32)
    if scores.min() <= 0:  # OpenCV drops scores <= 0: pass their dense ranks, which order the same
        scores = (np.unique(scores, return_inverse=True)[1] + 1).astype(np.float32)
    # (OpenCV's own top_k truncates the candidates before suppression, not the kept boxes)
    found = cv2.dnn.NMSBoxes(xywh, scores, 0.0, float(iou_threshold))  # type: ignore[arg-type]  # takes arrays
    keep = np.asarray(found, dtype=np.int64).reshape(-1)
    return keep[:max_keep] if max_keep else keep
