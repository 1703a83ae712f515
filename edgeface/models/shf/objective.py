"""SHF's training objective."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...train.losses import ohem_mask
from ...train.matching import encoded, ignore_near, match_iou
from ...train.objectives import Objective, Outputs


class SHFObjective(Objective):
    """SHF, as its official anchor layer: positives IoU >= 0.5 only (no forced best anchor), negatives < 0.3,
    regression for IoU >= 0.3; OHEM of 256 anchors per image, at most 64 positive, over all dilation branches
    (one detection level with three anchors per cell)."""

    terms = ("conf", "loc")

    def targets(self, faces: np.ndarray, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
        labels, assigned, best = match_iou(faces, self.anchors, 0.5, 0.3, best_anchor_positive=False)
        regress = best >= 0.3
        return {"labels": ignore_near(labels, ignored, self.anchors),
                "loc": encoded(faces, self.anchors, assigned, regress, self.spec.variances), "regress": regress}

    def loss(self, outputs: Outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loc, conf = outputs
        labels = targets["labels"]
        ce = F.cross_entropy(conf.float().reshape(-1, 2), labels.clamp(min=0).reshape(-1),
                             reduction="none").view_as(labels)
        chosen = ohem_mask(ce, labels, max_pos=64, total=256)
        conf_loss = ce[chosen].sum() / chosen.sum().clamp(min=1)
        regress = targets["regress"]
        loc_loss = F.smooth_l1_loss(loc[regress].float(), targets["loc"][regress], beta=1 / 9, reduction="sum")
        return {"conf": conf_loss, "loc": loc_loss / regress.sum().clamp(min=1)}
