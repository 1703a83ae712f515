"""Anchor matching (NumPy, runs in data-loader workers).

S3FD scale-compensation matching, the EXTD rule: every face's best anchor is positive; anchors with
IoU >= ``thresholds[1]`` are positive; then ``N = (#faces with best IoU >= thresholds[1] + #faces with
best IoU >= thresholds[2]) // 2`` more anchors with ``thresholds[0] < IoU < thresholds[1]``, best first.
"""

from __future__ import annotations

import numpy as np

from ..core.boxes import box_iou, cxcywh_to_xyxy, encode_boxes

IGNORE = -1


def match_s3fd(faces: np.ndarray, anchors: np.ndarray,
               thresholds: tuple[float, float, float] = (0.1, 0.35, 0.5)) -> np.ndarray:
    """Index of the face each anchor regresses to, or -1 for background.

    faces: ``(G, 4)`` xyxy; anchors: ``(A, 4)`` cxcywh. Returns ``(A,)`` int64.
    """
    assigned = np.full(len(anchors), -1, np.int64)
    if len(faces) == 0:
        return assigned
    low, positive, high = thresholds
    iou = box_iou(faces, cxcywh_to_xyxy(anchors))  # (G, A)
    best_face = iou.argmax(axis=0)
    best_iou = iou[best_face, np.arange(len(anchors))]
    assigned[best_iou >= positive] = best_face[best_iou >= positive]
    best_anchor = iou.argmax(axis=1)
    assigned[best_anchor] = np.arange(len(faces))  # each face's best anchor, even below the threshold
    face_best_iou = iou.max(axis=1)
    extra = (int((face_best_iou >= positive).sum()) + int((face_best_iou >= high).sum())) // 2
    if extra:
        candidates = np.flatnonzero((assigned < 0) & (best_iou > low) & (best_iou < positive))
        chosen = candidates[np.argsort(-best_iou[candidates], kind="stable")[:extra]]
        assigned[chosen] = best_face[chosen]
    return assigned


def build_targets(faces: np.ndarray, anchors: np.ndarray, variances: tuple[float, float],
                  thresholds: tuple[float, float, float] = (0.1, 0.35, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of one image: ``labels (A,)`` int64 (1 face, 0 background) and encoded
    ``loc (A, 4)`` float32 offsets (zeros where background)."""
    assigned = match_s3fd(faces, anchors, thresholds)
    labels = (assigned >= 0).astype(np.int64)
    loc = np.zeros((len(anchors), 4), np.float32)
    pos = assigned >= 0
    if pos.any():
        loc[pos] = encode_boxes(faces[assigned[pos]], anchors[pos], variances)
    return labels, loc
