"""VOC-style average precision at one IoU threshold (as in the Pascal VOC devkit).

Boxes are pixel-inclusive in the devkit (area ``(x2 - x1 + 1) * (y2 - y1 + 1)``); ``inclusive=True``
reproduces that. AP is the area under the interpolated precision-recall curve (VOC2010+). Ground
truth marked ``ignore`` is neither matched as a true positive nor counted; a detection whose best
match is an ignored face is neither a true nor a false positive.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, overload

import numpy as np

from ..core.detections import Detections
from ..data.records import FaceRecord, read_record_image
from ..errors import ImageError, UnscoredImageWarning, user_stacklevel


@dataclass
class PRCurve:
    """A precision-recall curve over a labelled set, its VOC AP and the number of faces that count."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray  # the score threshold at each point
    ap: float
    num_faces: int


def iou_matrix(a: np.ndarray, b: np.ndarray, inclusive: bool) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes; ``inclusive`` adds the devkit's +1."""
    one = 1.0 if inclusive else 0.0
    a, b = a.astype(np.float64), b.astype(np.float64)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one, 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one, 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (precision made monotonically decreasing)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def voc_ap(records: Sequence[FaceRecord], detections: Sequence[Detections], iou_threshold: float = 0.5,
           inclusive: bool = True) -> PRCurve:
    """Precision-recall and AP of `detections` (one per record, same order) against the records' faces."""
    if len(records) != len(detections):
        raise ValueError(f"{len(records)} records but {len(detections)} detection sets")
    scores = np.concatenate([d.scores for d in detections] + [np.zeros(0, np.float32)])
    image_ids = np.concatenate([np.full(len(d), i) for i, d in enumerate(detections)] + [np.zeros(0, int)])
    det_ids = np.concatenate([np.arange(len(d)) for d in detections] + [np.zeros(0, int)])
    order = np.argsort(-scores, kind="stable")
    ious = [iou_matrix(d.boxes, r.boxes, inclusive) if len(d) and len(r.boxes) else None
            for r, d in zip(records, detections)]
    taken = [np.zeros(len(r.boxes), bool) for r in records]
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for k, idx in enumerate(order):
        img, det = image_ids[idx], det_ids[idx]
        iou = ious[img]
        if iou is None:
            fp[k] = 1
            continue
        best = int(np.argmax(iou[det]))
        if iou[det, best] < iou_threshold:
            fp[k] = 1
        elif records[img].ignore[best]:
            continue  # matched an ignored face: neither true nor false positive
        elif not taken[img][best]:
            taken[img][best] = True
            tp[k] = 1
        else:
            fp[k] = 1
    num_faces = int(sum((~r.ignore).sum() for r in records))
    keep = (tp + fp) > 0
    tp_cum, fp_cum = np.cumsum(tp[keep]), np.cumsum(fp[keep])
    recall = tp_cum / max(num_faces, 1)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
    return PRCurve(precision, recall, scores[order][keep], interpolated_ap(recall, precision), num_faces)


@dataclass
class BoxPlacement:
    """Where a model's confident boxes sit against the labelled faces: whether a dataset's labels are drawn the
    way the model draws faces (datasets differ: brow to chin or hairline to chin, mask included or not). Each
    labelled face (not ignored) takes its best-overlapping box scoring at least ``min_score``; offsets and
    ratios are medians over the faces whose best box overlaps at IoU 0.2 or more."""

    faces: int
    min_score: float
    matched: float  # share of faces whose best box overlaps at IoU >= 0.5
    misplaced: float  # share at 0.2 <= IoU < 0.5: found, but drawn differently from the label
    # medians over the faces found at IoU >= 0.2 (None when there are none):
    dx: Optional[float]  # (box centre - label centre) / label width
    dy: Optional[float]  # (box centre - label centre) / label height; negative: the boxes sit higher
    width_ratio: Optional[float]  # box width / label width
    height_ratio: Optional[float]

    def __str__(self) -> str:
        shares = (f"{self.matched:.1%} of the {self.faces} labelled faces have a box scoring >= {self.min_score:g} "
                  f"at IoU >= 0.5, {self.misplaced:.1%} one at IoU 0.2-0.5 (found but drawn differently)")
        if self.dx is None or self.dy is None:
            return shares
        return (f"{shares}; box centres sit {abs(self.dy):.3f} label heights {'above' if self.dy < 0 else 'below'} "
                f"and {abs(self.dx):.3f} widths {'left' if self.dx < 0 else 'right'} of the labels', the boxes "
                f"x{self.width_ratio:.3f} as wide and x{self.height_ratio:.3f} as tall (medians)")


def box_placement(records: Sequence[FaceRecord], detections: Sequence[Detections], min_score: float = 0.5,
                  ) -> BoxPlacement:
    """The :class:`BoxPlacement` of `detections` (one per record, same order) against the records' faces."""
    if len(records) != len(detections):
        raise ValueError(f"{len(records)} records but {len(detections)} detection sets")
    best_iou, pairs = [], []
    for record, found in zip(records, detections):
        labels, boxes = record.boxes[~record.ignore], found.boxes[found.scores >= min_score]
        if not len(labels):
            continue
        if not len(boxes):
            best_iou += [0.0] * len(labels)
            continue
        iou = iou_matrix(labels, boxes, inclusive=False)
        best = iou.argmax(axis=1)
        overlap = iou[np.arange(len(labels)), best]
        best_iou += overlap.tolist()
        pairs += [(label, boxes[j]) for label, j, v in zip(labels, best, overlap) if v >= 0.2]
    ious = np.array(best_iou)
    medians: list[Optional[float]] = [None] * 4
    if pairs:
        label, box = (np.array(side, np.float64) for side in zip(*pairs))
        size = np.maximum(label[:, 2:] - label[:, :2], 1e-6)
        offset = ((box[:, :2] + box[:, 2:]) - (label[:, :2] + label[:, 2:])) / 2 / size
        medians = [float(v) for v in (*np.median(offset, axis=0), *np.median((box[:, 2:] - box[:, :2]) / size, axis=0))]
    return BoxPlacement(len(ious), min_score, float(np.mean(ious >= 0.5)) if len(ious) else 0.0,
                        float(np.mean((ious >= 0.2) & (ious < 0.5))) if len(ious) else 0.0, *medians)


@overload
def detect_records(detector: Any, records: Sequence[FaceRecord], progress: bool = ...,
                   should_stop: None = ...) -> list[Detections]: ...


@overload
def detect_records(detector: Any, records: Sequence[FaceRecord], progress: bool = ...,
                   should_stop: Optional[Callable[[], bool]] = ...) -> Optional[list[Detections]]: ...


def detect_records(detector: Any, records: Sequence[FaceRecord], progress: bool = False,
                   should_stop: Optional[Callable[[], bool]] = None) -> Optional[list[Detections]]:
    """`detector`'s detections on each record's image, in order; None when `should_stop` turns true before the
    last image (checked before each one)."""
    from tqdm import tqdm

    detections = []
    for record in tqdm(records, desc="eval", unit="img", disable=not progress):
        if should_stop is not None and should_stop():
            return None
        detections.append(detect_or_miss(detector, record))
    return detections


def detect_or_miss(detector: Callable[..., Detections], source: str | os.PathLike | FaceRecord) -> Detections:
    """`detector`'s detections on an image file (`source`: its path, or a record, whose image is read by
    :func:`~edgeface.data.records.read_record_image`), or none, with an :class:`UnscoredImageWarning`, when the
    file is missing or cannot be decoded: one bad file does not stop an evaluation, and its faces count as missed
    (as an image without a detections file does in the WIDER FACE protocol), so it can only lower the score."""
    from ..core.image import read_image

    try:
        image = read_record_image(source) if isinstance(source, FaceRecord) else read_image(source)
    except ImageError as exc:
        warnings.warn(UnscoredImageWarning(str(exc)), stacklevel=user_stacklevel())
        return Detections.empty()
    return detector(image)


@overload
def evaluate_detector(detector: Any, records: Sequence[FaceRecord], iou_threshold: float = ...,
                      progress: bool = ..., should_stop: None = ...) -> PRCurve: ...


@overload
def evaluate_detector(detector: Any, records: Sequence[FaceRecord], iou_threshold: float = ...,
                      progress: bool = ..., should_stop: Optional[Callable[[], bool]] = ...) -> Optional[PRCurve]: ...


def evaluate_detector(detector: Any, records: Sequence[FaceRecord], iou_threshold: float = 0.5,
                      progress: bool = False, should_stop: Optional[Callable[[], bool]] = None) -> Optional[PRCurve]:
    """Run `detector` (an :class:`edgeface.Detector`) over the records' images (:func:`detect_records`) and score
    it with :func:`voc_ap`: validation during training; ``edgeface eval`` takes the same two steps and also
    reports :func:`box_placement` from the same detections. Returns None when `should_stop` turns true before the
    last image (checked before each one)."""
    detections = detect_records(detector, records, progress, should_stop)
    return None if detections is None else voc_ap(records, detections, iou_threshold=iou_threshold)
