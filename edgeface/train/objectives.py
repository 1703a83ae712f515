"""Training objectives: what each model family learns from, plugged into one training loop.

An objective turns one augmented image's faces into anchor targets (NumPy, in data-loader workers)
and a batch's network outputs plus targets into named loss terms (torch), summed by the trainer. Each model
family has its own in its folder (``edgeface/models/<family>/objective.py``), named by its registry entry:

- EXTD (``SSDObjective``): S3FD matching, softmax cross-entropy with 3:1 hard-negative mining, smooth-L1;
- SHF (``SHFObjective``): IoU matching, anchor-level OHEM (256 anchors per image, at most 25 % positive),
  smooth-L1 (sigma 3);
- HR / Tiny Faces (``HRObjective``): IoU 0.7 / 0.3 labels, border windows ignored, random sampling of at most
  128 + 128 locations whose loss exceeds 0.03, logistic loss and Huber regression summed per image;
- SRN (``SRNObjective``): sigmoid focal loss + smooth-L1 for both steps, with the selective rules (STC on
  strides 4-16, STR on strides 32-128) and second-step targets matched to the first step's refined anchors.

Faces too small to learn (under the augmentation's ``min_face``) come as ``ignored`` boxes: anchors that
would have been their negatives are ignored instead (:func:`~edgeface.train.matching.ignore_near`), so a tiny
face is never taught as background. Matching lives in :mod:`edgeface.train.matching`, losses in
:mod:`edgeface.train.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.anchors import generate_anchors
from ..spec import ModelSpec
from .losses import focal_loss, ohem_mask  # noqa: F401  (the families' helpers, importable from here too)
from .matching import encoded, ignore_near, match_iou  # noqa: F401

Outputs = Sequence[torch.Tensor]  # a training forward's outputs (EXTD: loc, conf; SRN: both steps')

FAMILY_OBJECTIVES = {  # names importable from here as before the family folders, resolved on first use
    "SSDObjective": "extd", "SHFObjective": "shf", "HRObjective": "hr", "SRNObjective": "srn",
    "refine_anchors": "srn", "MAX_FACES": "srn",
}


class Objective:
    """Base: ``targets`` runs per image in workers, ``loss`` per batch on the training device. Training
    inputs are ``size`` x ``size`` squares, so one anchor set serves every image."""

    terms: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec, size: int, **options: Any):
        self.spec, self.size, self.options = spec, size, options
        self.anchors = generate_anchors(spec.anchors, size, size)

    def targets(self, faces: np.ndarray, ignored: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Anchor targets of one augmented image's ``(G, 4)`` xyxy faces; `ignored` ``(K, 4)`` faces are
        neither positives nor negatives (see :func:`ignore_near`)."""
        raise NotImplementedError

    def loss(self, outputs: Outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch (the trainer sums them)."""
        raise NotImplementedError

    def distill(self, outputs: Outputs, teacher_outputs: Outputs,
                targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms that keep a batch's `outputs` close to a teacher's on the same images (learning
        without forgetting); the trainer adds them, prefixed ``distill_``, when a recipe names a teacher."""
        raise ValueError(f"{type(self).__name__} ({self.spec.name}) has no distillation loss")

    def face_prob(self, outputs: Outputs) -> torch.Tensor:
        """``(B, A)`` face probabilities (for hard image mining), from the outputs of a training forward."""
        return outputs[1].detach().float().softmax(dim=-1)[..., 1]


def objective_for(spec: ModelSpec, size: int, **options: Any) -> Objective:
    """The training objective of the registered model `spec.name` (its family's, named by its registry entry)."""
    from ..models.registry import get_entry, resolve

    try:
        entry = get_entry(spec.name)
    except KeyError:
        raise ValueError(f"no training objective for model {spec.name!r}: it is not a registered model") from None
    if not entry.objective:
        raise ValueError(f"model {spec.name!r} ({entry.family}) has no training objective")
    return resolve(entry.objective)(spec, size, **options)


def __getattr__(name: str) -> Any:
    if name in FAMILY_OBJECTIVES:
        import importlib

        return getattr(importlib.import_module(f"edgeface.models.{FAMILY_OBJECTIVES[name]}.objective"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
