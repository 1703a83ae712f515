"""SRN's training objective."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...core.anchors import feature_sizes
from ...spec import ModelSpec
from ...train.losses import focal_loss
from ...train.matching import encoded, ignore_near, match_iou
from ...train.objectives import Objective, Outputs
from .network import FIRST_STEP_THRESHOLD, MAX_LOG_SCALE, STC_LEVELS

MAX_FACES = 512  # faces per training image kept for the second step's matching inside the loss


class SRNObjective(Objective):
    """SRN, with the paper's sample matching: IoU >= 0.7 positive and < 0.3 negative in the first step, >= 0.5
    and < 0.4 in the second (each face's best anchor positive when their IoU reaches the step's negative
    threshold). Second step: on the STC levels the anchors are the original ones, and only those the first
    step kept (score > 0.01) are classified; on the STR levels the faces are matched again against the anchors
    the first step regressed. Loss = STC loss (focal, both steps) + STR loss (smooth-L1, both steps), each
    normalised by its positives."""

    terms = ("stc", "str")
    first_step = (0.7, 0.3)  # (positive, negative) IoU
    refined_step = (0.5, 0.4)

    def __init__(self, spec: ModelSpec, size: int, **options: Any):
        super().__init__(spec, size, **options)
        counts = [spec.anchors.per_cell(k) * r * c for k, (r, c) in enumerate(feature_sizes(spec.anchors, size, size))]
        self.low = np.zeros(len(self.anchors), bool)  # anchors of the STC levels (strides 4-16)
        self.low[: sum(counts[: len(STC_LEVELS)])] = True

    @staticmethod
    def match_step(faces: np.ndarray, anchors: np.ndarray, thresholds: tuple[float, float],
                   ignored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, assigned)`` of one step's matching (forced best anchors only at IoU >= its negative
        threshold: a 9-17 px face's best stride-32 anchor, at IoU 0.04, is no positive)."""
        labels, assigned, _ = match_iou(faces, anchors, *thresholds, min_forced_iou=thresholds[1] - 1e-6)
        return ignore_near(labels, ignored, anchors), assigned

    def targets(self, faces: np.ndarray, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
        labels, assigned = self.match_step(faces, self.anchors, self.first_step, ignored)
        labels2, assigned2 = self.match_step(faces, self.anchors, self.refined_step, ignored)
        padded = np.zeros((MAX_FACES, 4), np.float32)
        padded[: min(len(faces), MAX_FACES)] = faces[:MAX_FACES]
        variances = self.spec.variances
        return {"labels": labels, "loc": encoded(faces, self.anchors, assigned, labels == 1, variances),
                "labels2": labels2, "loc2": encoded(faces, self.anchors, assigned2, labels2 == 1, variances),
                "faces": padded, "num_faces": np.array(min(len(faces), MAX_FACES), np.int64)}

    def face_prob(self, outputs: Outputs) -> torch.Tensor:
        return outputs[3].detach().float()[..., 0].sigmoid()

    def loss(self, outputs: Outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loc1, conf1, loc2, conf2 = (t.float() for t in outputs)
        labels, loc_t = targets["labels"], targets["loc"]
        low = torch.from_numpy(self.low).to(labels.device)
        high = ~low
        # second-step targets on the STR levels: match again against the anchors the first step refined
        labels2, loc2_t = targets["labels2"].clone(), targets["loc2"].clone()
        refined = refine_anchors(self.anchors[~self.low], loc1[:, high].detach().cpu().numpy())
        for i in range(len(labels)):
            faces = targets["faces"][i, : int(targets["num_faces"][i])].cpu().numpy()
            lab, assigned = self.match_step(faces, refined[i], self.refined_step)
            labels2[i, high] = torch.from_numpy(lab).to(labels.device)
            loc2_t[i, high] = torch.from_numpy(
                encoded(faces, refined[i], assigned, lab == 1, self.spec.variances)).to(loc_t.device)
        # STC: first step on low levels; second step on low levels where the first step kept the anchor,
        # and on all high-level anchors
        first = conf1[..., 0]
        kept = (first.detach().sigmoid() > FIRST_STEP_THRESHOLD) | ~low
        valid1 = (labels >= 0) & low
        valid2 = (labels2 >= 0) & kept
        stc = (focal_loss(first, labels)[valid1].sum() / ((labels == 1) & low).sum().clamp(min=1)
               + focal_loss(conf2[..., 0], labels2)[valid2].sum() / ((labels2 == 1) & kept).sum().clamp(min=1))
        # STR: first step regresses the high-level anchors; second step regresses every level
        pos1, pos2 = (labels == 1) & high, labels2 == 1
        strl = (F.smooth_l1_loss(loc1[pos1], loc_t[pos1], reduction="sum") / pos1.sum().clamp(min=1)
                + F.smooth_l1_loss(loc2[pos2], loc2_t[pos2], reduction="sum") / pos2.sum().clamp(min=1))
        return {"stc": stc, "str": strl}


def refine_anchors(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """``(B, A, 4)`` cxcywh anchors moved by ``(B, A, 4)`` first-step deltas (centre-offset coding, no variances;
    log-scales capped like SRN's :func:`~edgeface.models.srn.compose_deltas`)."""
    centre = anchors[None, :, :2] + deltas[..., :2] * anchors[None, :, 2:]
    return np.concatenate([centre, anchors[None, :, 2:] * np.exp(np.minimum(deltas[..., 2:], MAX_LOG_SCALE))],
                          axis=-1)
