"""Training objectives: what each model family learns from, plugged into one training loop.

An objective turns one augmented image's faces into anchor targets (NumPy, in data-loader workers)
and a batch's network outputs plus targets into named loss terms (torch), summed by the trainer:

- :class:`SSDObjective` (EXTD): S3FD matching, softmax cross-entropy with 3:1 hard-negative mining, smooth-L1;
- :class:`SHFObjective`: IoU matching, anchor-level OHEM (256 anchors per image, at most 25 % positive),
  smooth-L1 (sigma 3);
- :class:`HRObjective` (Tiny Faces): IoU 0.7 / 0.3 labels, border windows ignored, random sampling of at most
  128 + 128 locations whose loss exceeds 0.03, logistic loss and Huber regression summed per image;
- :class:`SRNObjective`: sigmoid focal loss + smooth-L1 for both steps, with the selective rules (STC on
  strides 4-16, STR on strides 32-128) and second-step targets matched to the first step's refined anchors.

Faces too small to learn (under the augmentation's ``min_face``) come as ``ignored`` boxes: anchors that
would have been their negatives are ignored instead (:func:`ignore_near`), so a tiny face is never taught
as background.
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
IGNORED_FACE_AREA_RATIO = 25.0  # see ignore_near: anchors up to 5x an ignored face's side stop being its negatives


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

    def loss(self, outputs, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch (the trainer sums them)."""
        raise NotImplementedError

    def face_prob(self, outputs) -> torch.Tensor:
        """``(B, A)`` face probabilities (for hard image mining), from the outputs of a training forward."""
        return outputs[1].detach().float().softmax(dim=-1)[..., 1]


class SSDObjective(Objective):
    """EXTD / S3FD."""

    terms = ("conf", "loc")

    def targets(self, faces, ignored=None):
        labels, loc = build_targets(faces, self.anchors, self.spec.variances,
                                    tuple(self.options.get("match_thresholds", (0.1, 0.35, 0.5))))
        return {"labels": ignore_near(labels, ignored, self.anchors), "loc": loc}

    def loss(self, outputs, targets):
        conf, loc = multibox_loss(outputs[0], outputs[1], targets["loc"], targets["labels"],
                                  self.options.get("neg_pos_ratio", 3))
        return {"conf": conf, "loc": loc}


def ohem_mask(loss: torch.Tensor, labels: torch.Tensor, max_pos: int, max_neg: int | None = None,
              total: int | None = None, min_loss: float | None = None, random: bool = False) -> torch.Tensor:
    """Example mining per row of ``(R, A)`` losses: positives (labels 1, at most `max_pos`) and negatives
    (labels 0, at most `max_neg`, or up to `total` anchors in all), only among anchors whose loss exceeds
    `min_loss` when given; the hardest first (OHEM), or at random among the eligible with `random` (Tiny
    Faces' sampling; torch's RNG, so a resumed run draws the same). Returns a bool mask."""
    hard = loss.detach()
    eligible = torch.ones_like(labels, dtype=torch.bool) if min_loss is None else hard > min_loss
    order = torch.rand(hard.shape, device=hard.device) if random else hard

    def hardest(value: int, limit: torch.Tensor) -> torch.Tensor:
        candidate = eligible & (labels == value)
        rank = order.masked_fill(~candidate, -float("inf")).argsort(dim=1, descending=True).argsort(dim=1)
        return candidate & (rank < limit)

    positives = hardest(1, torch.tensor(max_pos, device=labels.device))
    limit = total - positives.sum(dim=1, keepdim=True) if total is not None else torch.tensor(max_neg)
    return positives | hardest(0, limit.to(labels.device))


class SHFObjective(Objective):
    """SHF, as its official anchor layer: positives IoU >= 0.5 only (no forced best anchor), negatives < 0.3,
    regression for IoU >= 0.3; OHEM of 256 anchors per image, at most 64 positive, over all dilation branches
    (one detection level with three anchors per cell)."""

    terms = ("conf", "loc")

    def targets(self, faces, ignored=None):
        labels, assigned, best = match_iou(faces, self.anchors, 0.5, 0.3, best_anchor_positive=False)
        regress = best >= 0.3
        return {"labels": ignore_near(labels, ignored, self.anchors),
                "loc": encoded(faces, self.anchors, assigned, regress, self.spec.variances), "regress": regress}

    def loss(self, outputs, targets):
        loc, conf = outputs
        labels = targets["labels"]
        ce = F.cross_entropy(conf.float().reshape(-1, 2), labels.clamp(min=0).reshape(-1),
                             reduction="none").view_as(labels)
        chosen = ohem_mask(ce, labels, max_pos=64, total=256)
        conf_loss = ce[chosen].sum() / chosen.sum().clamp(min=1)
        regress = targets["regress"]
        loc_loss = F.smooth_l1_loss(loc[regress].float(), targets["loc"][regress], beta=1 / 9, reduction="sum")
        return {"conf": conf_loss, "loc": loc_loss / regress.sum().clamp(min=1)}


class HRObjective(Objective):
    """Tiny Faces, as its official training code (``cnn_get_batch_hardmine.m``, ``cnn_train_dag_hardmine.m``):
    IoU >= 0.7 positive, < 0.3 negative, each face's best template positive when their IoU exceeds 0.3; every
    window crossing the image border ignored (positives and negatives alike: ``clsmap(pad_viomask) = 0``);
    locations with loss under 0.03 dropped, then at most 128 positives and 128 negatives sampled at random. Both
    losses are sums over the sampled locations divided by the number of images, so the paper's lr 1e-4 applies."""

    terms = ("conf", "loc")

    def targets(self, faces, ignored=None):
        labels, assigned, _ = match_iou(faces, self.anchors, 0.7, 0.3, min_forced_iou=0.3)
        box = cxcywh_to_xyxy(self.anchors)
        crossing = (box[:, :2] < 0).any(axis=1) | (box[:, 2:] > self.size).any(axis=1)
        labels[crossing] = -1
        return {"labels": ignore_near(labels, ignored, self.anchors),
                "loc": encoded(faces, self.anchors, assigned, labels == 1, self.spec.variances)}

    def loss(self, outputs, targets):
        loc, conf = outputs
        labels = targets["labels"]
        logits = conf[..., 1].float() - conf[..., 0].float()
        logistic = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0).float(), reduction="none")
        chosen = ohem_mask(logistic, labels, max_pos=128, max_neg=128, min_loss=0.03, random=True)
        regressed = chosen & (labels == 1)  # the regression loss follows the sampled positive labels
        images = labels.shape[0]
        return {"conf": logistic[chosen].sum() / images,
                "loc": F.huber_loss(loc[regressed].float(), targets["loc"][regressed], reduction="sum") / images}


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per anchor (labels 1 / 0; the caller masks ignored anchors)."""
    target = labels.clamp(min=0).float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = logits.sigmoid()
    p_t = p * target + (1 - p) * (1 - target)
    return (alpha * target + (1 - alpha) * (1 - target)) * (1 - p_t) ** gamma * ce


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
        from ..models.srn import STC_LEVELS

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

    def targets(self, faces, ignored=None):
        labels, assigned = self.match_step(faces, self.anchors, self.first_step, ignored)
        labels2, assigned2 = self.match_step(faces, self.anchors, self.refined_step, ignored)
        padded = np.zeros((MAX_FACES, 4), np.float32)
        padded[: min(len(faces), MAX_FACES)] = faces[:MAX_FACES]
        variances = self.spec.variances
        return {"labels": labels, "loc": encoded(faces, self.anchors, assigned, labels == 1, variances),
                "labels2": labels2, "loc2": encoded(faces, self.anchors, assigned2, labels2 == 1, variances),
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
