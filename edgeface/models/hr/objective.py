"""HR (Tiny Faces) training objective."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...core.boxes import cxcywh_to_xyxy
from ...train.losses import ohem_mask
from ...train.matching import encoded, ignore_near, match_iou
from ...train.objectives import Objective, Outputs


class HRObjective(Objective):
    """Tiny Faces, as its official training code (``cnn_get_batch_hardmine.m``, ``cnn_train_dag_hardmine.m``):
    IoU >= 0.7 positive, < 0.3 negative, each face's best template positive when their IoU exceeds 0.3; every
    window crossing the image border ignored (positives and negatives alike: ``clsmap(pad_viomask) = 0``);
    locations with loss under 0.03 dropped, then at most 128 positives and 128 negatives sampled at random. Both
    losses are sums over the sampled locations divided by the number of images, so the paper's lr 1e-4 applies."""

    terms = ("conf", "loc")

    def targets(self, faces: np.ndarray, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
        labels, assigned, _ = match_iou(faces, self.anchors, 0.7, 0.3, min_forced_iou=0.3)
        box = cxcywh_to_xyxy(self.anchors)
        crossing = (box[:, :2] < 0).any(axis=1) | (box[:, 2:] > self.size).any(axis=1)
        labels[crossing] = -1
        return {"labels": ignore_near(labels, ignored, self.anchors),
                "loc": encoded(faces, self.anchors, assigned, labels == 1, self.spec.variances)}

    def loss(self, outputs: Outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loc, conf = outputs
        labels = targets["labels"]
        logits = conf[..., 1].float() - conf[..., 0].float()
        logistic = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float(), reduction="none")
        chosen = ohem_mask(logistic, labels, max_pos=128, max_neg=128, min_loss=0.03, random=True)
        regressed = chosen & (labels == 1)  # the regression loss follows the sampled positive labels
        images = labels.shape[0]
        return {"conf": logistic[chosen].sum() / images,
                "loc": F.huber_loss(loc[regressed].float(), targets["loc"][regressed], reduction="sum") / images}
