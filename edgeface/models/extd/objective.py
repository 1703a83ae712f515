"""EXTD's training objective (S3FD / SSD): S3FD matching, softmax cross-entropy with 3:1 hard-negative mining,
smooth-L1."""

from __future__ import annotations

import numpy as np
import torch

from ...train.losses import distillation_loss, multibox_loss
from ...train.matching import build_targets, ignore_near
from ...train.objectives import Objective, Outputs


class SSDObjective(Objective):
    """EXTD / S3FD."""

    terms = ("conf", "loc")

    def targets(self, faces: np.ndarray, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
        labels, loc = build_targets(faces, self.anchors, self.spec.variances,
                                    tuple(self.options.get("match_thresholds", (0.1, 0.35, 0.5))))
        return {"labels": ignore_near(labels, ignored, self.anchors), "loc": loc}

    def loss(self, outputs: Outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        conf, loc = multibox_loss(outputs[0], outputs[1], targets["loc"], targets["labels"],
                                  self.options.get("neg_pos_ratio", 3))
        return {"conf": conf, "loc": loc}

    def distill(self, outputs: Outputs, teacher_outputs: Outputs,
                targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        conf, loc = distillation_loss(outputs[0], outputs[1], teacher_outputs[0], teacher_outputs[1], targets["labels"],
                                      targets["teacher"] >= 0 if "teacher" in targets else None)
        return {"conf": conf, "loc": loc}
