"""FDDB evaluation: discrete and continuous ROC, and the true-positive rate at 1000 false positives.

As in FDDB's protocol, a detection and a face match by the overlap of the detection rectangle with the
face *ellipse* (pixel regions, inside the image); detections and faces are paired by a maximum-weight
bipartite matching on that overlap. Discrete score: a pair with overlap > 0.5 is one true positive;
continuous score: the overlap itself. Unpaired detections are false positives. The matching is done
once per image with all its detections (the official tool re-matches at every threshold; the two agree
unless a lower-scored detection would steal a face from a higher-scored one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..core.detections import Detections
from ..data.fddb import ellipse_mask
from ..data.records import FaceRecord

if TYPE_CHECKING:
    from .ellipse import EllipseRegressor


@dataclass
class FddbRoc:
    """FDDB's ROC: the true-positive rate, discrete and continuous, against the false positives at each
    threshold."""

    false_positives: np.ndarray  # at each score threshold, descending
    tpr_discrete: np.ndarray
    tpr_continuous: np.ndarray
    num_faces: int

    def tpr_at(self, false_positives: int = 1000, continuous: bool = False) -> float:
        """True-positive rate at the last threshold with at most `false_positives` false positives."""
        tpr = self.tpr_continuous if continuous else self.tpr_discrete
        ok = np.flatnonzero(self.false_positives <= false_positives)
        return float(tpr[ok[-1]]) if len(ok) else 0.0


def region_overlaps(record: FaceRecord, dets: Detections, width: int, height: int,
                    ellipses: Optional[np.ndarray] = None) -> np.ndarray:
    """``(D, F)`` overlap (intersection over union of pixel regions) of detections and face ellipses; each
    detection's region is its rectangle, or its row of ``(D, 5)`` `ellipses` when given (FDDB takes both)."""
    if record.ellipses is None:
        raise ValueError(f"{record.image_path} has no face ellipses: FDDB's evaluation needs its ellipse annotations")
    faces = [ellipse_mask(e, width, height) for e in record.ellipses]
    out = np.zeros((len(dets), len(faces)))
    for d, (x1, y1, x2, y2) in enumerate(np.round(dets.boxes).astype(int).tolist()):
        if ellipses is not None:
            rect = ellipse_mask(ellipses[d], width, height)
        else:
            rect = np.zeros((height, width), bool)
            rect[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        for f, face in enumerate(faces):
            inter = np.count_nonzero(rect & face)
            union = np.count_nonzero(rect | face)
            out[d, f] = inter / union if union else 0.0
    return out


def fddb_roc(records: Sequence[FaceRecord], detections: Sequence[Detections],
             image_sizes: Sequence[tuple[int, int]], ellipse_regressor: EllipseRegressor | None = None) -> FddbRoc:
    """ROC of `detections` on FDDB `records` (with ``ellipses``); `image_sizes` are (width, height). With an
    :class:`~edgeface.eval.ellipse.EllipseRegressor`, detections are scored as the ellipses it predicts."""
    from scipy.optimize import linear_sum_assignment

    score_parts: list[np.ndarray] = []
    discrete: list[np.ndarray] = []
    continuous: list[np.ndarray] = []
    for record, dets, (width, height) in zip(records, detections, image_sizes):
        regions = ellipse_regressor.predict(dets.boxes) if ellipse_regressor is not None and len(dets) else None
        overlap = region_overlaps(record, dets, width, height, regions)
        hit = np.zeros(len(dets))
        if overlap.size:
            rows, cols = linear_sum_assignment(np.where(overlap > 0.5, overlap, 0.0), maximize=True)
            paired = overlap[rows, cols] > 0.5
            hit[rows[paired]] = overlap[rows[paired], cols[paired]]
        score_parts.append(dets.scores)
        discrete.append((hit > 0).astype(float))
        continuous.append(hit)
    scores = np.concatenate(score_parts) if score_parts else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    tp_d = np.cumsum(np.concatenate(discrete)[order]) if len(order) else np.zeros(0)
    tp_c = np.cumsum(np.concatenate(continuous)[order]) if len(order) else np.zeros(0)
    fp = np.cumsum(1 - np.concatenate(discrete)[order]) if len(order) else np.zeros(0)
    num_faces = sum(0 if r.ellipses is None else len(r.ellipses) for r in records)
    return FddbRoc(fp, tp_d / max(num_faces, 1), tp_c / max(num_faces, 1), num_faces)
