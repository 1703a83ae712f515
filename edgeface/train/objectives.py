"""Training objectives: what each model family learns from, plugged into one training loop.

An objective turns one augmented image's faces into anchor targets (NumPy, in data-loader workers)
and a batch's network outputs plus targets into named loss terms (torch), summed by the trainer:

- :class:`SSDObjective` (EXTD): S3FD matching, softmax cross-entropy with 3:1 hard-negative mining, smooth-L1;
- :class:`SHFObjective`: IoU matching, anchor-level OHEM (256 anchors per branch, 25 % positive), smooth-L1 (sigma 3);
- :class:`HRObjective` (Tiny Faces): IoU 0.7 / 0.3 labels, border windows ignored, balanced hard mining
  (loss > 0.03, at most 128 + 128), logistic loss and Huber regression;
- :class:`SRNObjective`: sigmoid focal loss + smooth-L1 for both steps, with the selective rules (STC on
  strides 4-16, STR on strides 32-128) and second-step targets matched to the first step's refined anchors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.anchors import feature_sizes, generate_anchors
from ..core.boxes import box_iou, cxcywh_to_xyxy, encode_boxes
from ..spec import ModelSpec
from .losses import multibox_loss
from .matching import build_targets

MAX_FACES = 512  # faces per training image kept for objectives that match inside the loss (SRN's second step)


def match_iou(faces: np.ndarray, anchors: np.ndarray, positive: float, negative: float,
              best_anchor_positive: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matching: ``(labels, assigned, best_iou)`` per anchor. Labels are 1 (IoU >= positive), 0 (IoU <
    negative) or -1 (between: ignored); each face's best anchor is positive when `best_anchor_positive`.
    faces ``(G, 4)`` xyxy, anchors ``(A, 4)`` cxcywh."""
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
        keep = iou[np.arange(len(faces)), face_best] > 0
        labels[face_best[keep]] = 1
        assigned[face_best[keep]] = np.flatnonzero(keep)
    return labels, assigned, best


def encoded(faces: np.ndarray, anchors: np.ndarray, assigned: np.ndarray, mask: np.ndarray,
            variances: tuple[float, float]) -> np.ndarray:
    """``(A, 4)`` float32 offsets of each masked anchor's assigned face (zeros elsewhere)."""
    loc = np.zeros((len(anchors), 4), np.float32)
    if mask.any():
        loc[mask] = encode_boxes(faces[assigned[mask]], anchors[mask], variances)
    return loc


class Objective:
    """Base: ``targets`` runs per image in workers, ``loss`` per batch on the training device. Training
    inputs are ``size`` x ``size`` squares, so one anchor set serves every image."""

    terms: tuple[str, ...] = ()

    def __init__(self, spec: ModelSpec, size: int, **options: Any):
        self.spec, self.size, self.options = spec, size, options
        self.anchors = generate_anchors(spec.anchors, size, size)

    def targets(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """Anchor targets of one augmented image's ``(G, 4)`` xyxy faces."""
        raise NotImplementedError

    def loss(self, outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch (the trainer sums them)."""
        raise NotImplementedError

    def face_prob(self, outputs) -> torch.Tensor:
        """``(B, A)`` face probabilities (for hard image mining), from the outputs of a training forward."""
        return outputs[1].detach().float().softmax(dim=-1)[..., 1]


class SSDObjective(Objective):
    """EXTD / S3FD."""

    terms = ("conf", "loc")

    def targets(self, faces):
        labels, loc = build_targets(faces, self.anchors, self.spec.variances,
                                    tuple(self.options.get("match_thresholds", (0.1, 0.35, 0.5))))
        return {"labels": labels, "loc": loc}

    def loss(self, outputs, targets):
        conf, loc = multibox_loss(outputs[0], outputs[1], targets["loc"], targets["labels"],
                                  self.options.get("neg_pos_ratio", 3))
        return {"conf": conf, "loc": loc}


def ohem_mask(loss: torch.Tensor, labels: torch.Tensor, max_pos: int, max_neg: int | None = None,
              total: int | None = None, min_loss: float | None = None) -> torch.Tensor:
    """Online hard example mining per row of ``(R, A)`` losses: the hardest positives (labels 1, at most
    `max_pos`) and the hardest negatives (labels 0, at most `max_neg`, or up to `total` anchors in all),
    only among anchors whose loss exceeds `min_loss` when given. Returns a bool mask."""
    hard = loss.detach()
    eligible = torch.ones_like(labels, dtype=torch.bool) if min_loss is None else hard > min_loss

    def hardest(value: int, limit: torch.Tensor) -> torch.Tensor:
        candidate = eligible & (labels == value)
        rank = hard.masked_fill(~candidate, -float("inf")).argsort(dim=1, descending=True).argsort(dim=1)
        return candidate & (rank < limit)

    positives = hardest(1, torch.tensor(max_pos, device=labels.device))
    limit = total - positives.sum(dim=1, keepdim=True) if total is not None else torch.tensor(max_neg)
    return positives | hardest(0, limit.to(labels.device))


def by_cell_anchor(t: torch.Tensor, per_cell: int) -> torch.Tensor:
    """``(B, A)`` -> ``(B * per_cell, A / per_cell)``: row ``(image, k)`` holds the k-th anchor of every cell
    (for SHF, one dilation branch)."""
    return t.reshape(t.shape[0], -1, per_cell).transpose(1, 2).reshape(t.shape[0] * per_cell, -1)


class SHFObjective(Objective):
    """SHF: positives IoU >= 0.5, negatives < 0.3, regression for IoU >= 0.3; OHEM per dilation branch."""

    terms = ("conf", "loc")

    def targets(self, faces):
        labels, assigned, best = match_iou(faces, self.anchors, 0.5, 0.3)
        regress = (best >= 0.3) | (labels == 1)
        return {"labels": labels, "loc": encoded(faces, self.anchors, assigned, regress, self.spec.variances),
                "regress": regress}

    def loss(self, outputs, targets):
        loc, conf = outputs
        labels = targets["labels"]
        branches = self.spec.anchors.per_cell(0)
        ce = F.cross_entropy(conf.float().reshape(-1, 2), labels.clamp(min=0).reshape(-1), reduction="none")
        ce, branch_labels = by_cell_anchor(ce.view_as(labels), branches), by_cell_anchor(labels, branches)
        chosen = ohem_mask(ce, branch_labels, max_pos=64, total=256)
        conf_loss = ce[chosen].sum() / chosen.sum().clamp(min=1)
        regress = targets["regress"]
        loc_loss = F.smooth_l1_loss(loc[regress].float(), targets["loc"][regress], beta=1 / 9, reduction="sum")
        return {"conf": conf_loss, "loc": loc_loss / regress.sum().clamp(min=1)}


class HRObjective(Objective):
    """Tiny Faces: IoU > 0.7 positive, < 0.3 negative; windows crossing the border ignored; balanced hard
    mining of at most 128 positives and 128 negatives whose loss exceeds 0.03."""

    terms = ("conf", "loc")

    def targets(self, faces):
        labels, assigned, _ = match_iou(faces, self.anchors, 0.7, 0.3)
        box = cxcywh_to_xyxy(self.anchors)
        crossing = (box[:, :2] < 0).any(axis=1) | (box[:, 2:] > self.size).any(axis=1)
        labels[crossing & (labels == 0)] = -1
        return {"labels": labels, "loc": encoded(faces, self.anchors, assigned, labels == 1, self.spec.variances)}

    def loss(self, outputs, targets):
        loc, conf = outputs
        labels = targets["labels"]
        logits = conf[..., 1].float() - conf[..., 0].float()
        logistic = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float(), reduction="none")
        chosen = ohem_mask(logistic, labels, max_pos=128, max_neg=128, min_loss=0.03)
        positive = labels == 1
        return {"conf": logistic[chosen].sum() / chosen.sum().clamp(min=1),
                "loc": F.huber_loss(loc[positive].float(), targets["loc"][positive], reduction="sum")
                / positive.sum().clamp(min=1)}


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per anchor (labels 1 / 0; the caller masks ignored anchors)."""
    target = labels.clamp(min=0).float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = logits.sigmoid()
    p_t = p * target + (1 - p) * (1 - target)
    return (alpha * target + (1 - alpha) * (1 - target)) * (1 - p_t) ** gamma * ce


class SRNObjective(Objective):
    """SRN. First step: anchors matched at IoU 0.5 / 0.4 (RetinaNet's rule). Second step: STC levels keep
    those targets but only anchors the first step did not filter out (score > 0.01) are classified; STR
    levels are matched again, at IoU 0.7 / 0.3, against the anchors the first step regressed. Loss =
    STC loss (focal, both steps) + STR loss (smooth-L1, both steps), each normalised by its positives."""

    terms = ("stc", "str")
    first_step = (0.5, 0.4)
    refined_step = (0.7, 0.3)

    def __init__(self, spec: ModelSpec, size: int, **options: Any):
        from ..models.srn import STC_LEVELS

        super().__init__(spec, size, **options)
        counts = [spec.anchors.per_cell(k) * r * c for k, (r, c) in enumerate(feature_sizes(spec.anchors, size, size))]
        self.low = np.zeros(len(self.anchors), bool)  # anchors of the STC levels (strides 4-16)
        self.low[: sum(counts[: len(STC_LEVELS)])] = True

    def targets(self, faces):
        labels, assigned, _ = match_iou(faces, self.anchors, *self.first_step)
        padded = np.zeros((MAX_FACES, 4), np.float32)
        padded[: min(len(faces), MAX_FACES)] = faces[:MAX_FACES]
        return {"labels": labels, "loc": encoded(faces, self.anchors, assigned, labels == 1, self.spec.variances),
                "faces": padded, "num_faces": np.int64(min(len(faces), MAX_FACES))}

    def face_prob(self, outputs) -> torch.Tensor:
        return outputs[3].detach().float()[..., 0].sigmoid()

    def loss(self, outputs, targets):
        from ..models.srn import FIRST_STEP_THRESHOLD

        loc1, conf1, loc2, conf2 = (t.float() for t in outputs)
        labels, loc_t = targets["labels"], targets["loc"]
        low = torch.from_numpy(self.low).to(labels.device)
        high = ~low
        # second-step targets on the STR levels: match again against the anchors the first step refined
        labels2, loc2_t = labels.clone(), loc_t.clone()
        refined = refine_anchors(self.anchors[~self.low], loc1[:, high].detach().cpu().numpy())
        for i in range(len(labels)):
            faces = targets["faces"][i, : int(targets["num_faces"][i])].cpu().numpy()
            lab, assigned, _ = match_iou(faces, refined[i], *self.refined_step)
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
    from ..models.srn import MAX_LOG_SCALE

    centre = anchors[None, :, :2] + deltas[..., :2] * anchors[None, :, 2:]
    return np.concatenate([centre, anchors[None, :, 2:] * np.exp(np.minimum(deltas[..., 2:], MAX_LOG_SCALE))],
                          axis=-1)


OBJECTIVES = {"extd": SSDObjective, "shf": SHFObjective, "hr": HRObjective, "srn": SRNObjective}


def objective_for(spec: ModelSpec, size: int, **options: Any) -> Objective:
    """The objective of the model family `spec.name` belongs to (``extd64`` -> EXTD, ``hr-res50`` -> HR)."""
    family = next((f for f in OBJECTIVES if spec.name.startswith(f)), None)
    if family is None:
        raise ValueError(f"no training objective for model {spec.name!r}; families: {sorted(OBJECTIVES)}")
    return OBJECTIVES[family](spec, size, **options)
