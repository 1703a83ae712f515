"""Anchor matching (NumPy, runs in data-loader workers): every model family's rules, written once.

:func:`match_iou` (IoU thresholds with optionally forced best anchors: SHF, HR, SRN), :func:`ignore_near`
(faces too small to learn are not background) and :func:`encoded` (regression targets); and

S3FD scale-compensation matching, the EXTD rule: every face's best anchor is positive; anchors with
IoU >= ``thresholds[1]`` are positive; then ``N = (#faces with best IoU >= thresholds[1] + #faces with
best IoU >= thresholds[2]) // 2`` more anchors with ``thresholds[0] < IoU < thresholds[1]``, best first.
"""

from __future__ import annotations

import numpy as np

from ..core.boxes import box_iou, cxcywh_to_xyxy, encode_boxes

IGNORE = -1
IGNORED_FACE_AREA_RATIO = 25.0  # see ignore_near: anchors up to 5x an ignored face's side stop being its negatives


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
    return (assigned >= 0).astype(np.int64), encoded(faces, anchors, assigned, assigned >= 0, variances)


def match_iou(faces: np.ndarray, anchors: np.ndarray, positive: float, negative: float,
              best_anchor_positive: bool = True, min_forced_iou: float = 0.0,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matching: ``(labels, assigned, best_iou)`` per anchor. Labels are 1 (IoU >= positive), 0 (IoU <
    negative) or -1 (between: ignored); with `best_anchor_positive`, each face's best anchor is positive too
    when their IoU exceeds `min_forced_iou` (0: any overlap). faces ``(G, 4)`` xyxy, anchors ``(A, 4)`` cxcywh."""
    labels = np.zeros(len(anchors), np.int64)
    if len(faces) == 0:
        return labels, np.full(len(anchors), -1, np.int64), np.zeros(len(anchors), np.float32)
    iou = box_iou(faces, cxcywh_to_xyxy(anchors))
    assigned = iou.argmax(axis=0)
    best = iou[assigned, np.arange(len(anchors))]
    labels[best >= negative] = -1
    labels[best >= positive] = 1
    if best_anchor_positive:
        face_best = iou.argmax(axis=1)
        keep = iou[np.arange(len(faces)), face_best] > min_forced_iou
        labels[face_best[keep]] = 1
        assigned[face_best[keep]] = np.flatnonzero(keep)
    return labels, assigned, best


def ignore_near(labels: np.ndarray, ignored: np.ndarray | None, anchors: np.ndarray) -> np.ndarray:
    """`labels` with the negatives (0) that would teach an ignored face as background set to -1 (ignored): the
    anchors holding at least half of such a face whose area is at most IGNORED_FACE_AREA_RATIO times the face's
    (larger windows would not have matched it anyway). ignored ``(K, 4)`` xyxy, anchors ``(A, 4)`` cxcywh."""
    if ignored is None or len(ignored) == 0:
        return labels
    faces, boxes = np.asarray(ignored, np.float32).reshape(-1, 4), cxcywh_to_xyxy(anchors)
    # (K, A, 2) sides of each face's intersection with each anchor
    low, high = np.maximum(faces[:, None, :2], boxes[None, :, :2]), np.minimum(faces[:, None, 2:], boxes[None, :, 2:])
    wh = np.clip(high - low, 0, None)
    face_area = np.maximum((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]), 1e-6)[:, None]
    holds = wh[..., 0] * wh[..., 1] >= 0.5 * face_area
    small = anchors[None, :, 2] * anchors[None, :, 3] <= IGNORED_FACE_AREA_RATIO * face_area
    out = labels.copy()
    out[(holds & small).any(axis=0) & (out == 0)] = -1
    return out


def encoded(faces: np.ndarray, anchors: np.ndarray, assigned: np.ndarray, mask: np.ndarray,
            variances: tuple[float, float]) -> np.ndarray:
    """``(A, 4)`` float32 offsets of each masked anchor's assigned face (zeros elsewhere)."""
    loc = np.zeros((len(anchors), 4), np.float32)
    if mask.any():
        loc[mask] = encode_boxes(faces[assigned[mask]], anchors[mask], variances)
    return loc
