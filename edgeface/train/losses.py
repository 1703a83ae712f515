"""Losses (torch), every model family's, written once: multibox (softmax cross-entropy with hard-negative
mining + smooth-L1 on positives), example mining (:func:`ohem_mask`), the sigmoid focal loss and distillation
from a teacher's outputs (:func:`distillation_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multibox_loss(loc: torch.Tensor, conf: torch.Tensor, loc_target: torch.Tensor, labels: torch.Tensor,
                  neg_pos_ratio: int = 3, min_negatives: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD/S3FD loss of a batch, each part divided by the number of positives.

    loc ``(B, A, 4)``, conf ``(B, A, 2)`` logits, loc_target ``(B, A, 4)``, labels ``(B, A)`` in
    {1 face, 0 background, -1 ignore}. Per image the hardest ``neg_pos_ratio`` x #positives
    negatives (at least `min_negatives`) enter the classification loss.
    Returns ``(classification, localisation)``.
    """
    positive = labels == 1
    num_pos = positive.sum(dim=1, keepdim=True)
    ce = F.cross_entropy(conf.reshape(-1, 2).float(), labels.clamp(min=0).reshape(-1), reduction="none")
    ce = ce.view_as(labels)
    mining = ce.detach().clone()
    mining[labels != 0] = -1.0  # only background anchors compete as negatives
    rank = mining.argsort(dim=1, descending=True).argsort(dim=1)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, min=min_negatives)
    negative = (rank < num_neg) & (labels == 0)
    total_pos = num_pos.sum().clamp(min=1).float()
    loss_conf = ce[positive | negative].sum() / total_pos
    loss_loc = F.smooth_l1_loss(loc[positive].float(), loc_target[positive], reduction="sum") / total_pos
    return loss_conf, loss_loc


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


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per anchor (labels 1 / 0; the caller masks ignored anchors)."""
    target = labels.clamp(min=0).float()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = logits.sigmoid()
    p_t = p * target + (1 - p) * (1 - target)
    return (alpha * target + (1 - alpha) * (1 - target)) * (1 - p_t) ** gamma * ce


def distillation_loss(loc: torch.Tensor, conf: torch.Tensor, teacher_loc: torch.Tensor, teacher_conf: torch.Tensor,
                      labels: torch.Tensor, images: torch.Tensor | None = None, min_prob: float = 0.02,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Learning without forgetting for softmax-and-box heads (shapes as in :func:`multibox_loss`).

    Wherever the ground truth does not mark a face (labels 0 or -1), the student follows the teacher: its class
    distribution by KL divergence, averaged over the anchors where either model gives a face at least
    `min_prob` (elsewhere both agree on background), and its box offsets by smooth-L1, averaged over the anchors
    the teacher calls a face (probability 0.5 or more). Anchors labelled face learn from the ground truth alone,
    so new faces the teacher misses are not unlearned. `images` ``(B,)`` bool: only these images are distilled
    (default all). Returns ``(classification, localisation)``.
    """
    free = labels != 1
    if images is not None:
        free = free & images.view(-1, 1)
    teacher_prob = teacher_conf.detach().float().softmax(dim=-1)
    log_prob = conf.float().log_softmax(dim=-1)
    face = torch.maximum(teacher_prob[..., 1], log_prob[..., 1].detach().exp())
    active = free & (face >= min_prob)
    kl = (teacher_prob * (teacher_prob.clamp(min=1e-12).log() - log_prob)).sum(dim=-1)
    loss_conf = kl[active].sum() / active.sum().clamp(min=1)
    sure = free & (teacher_prob[..., 1] >= 0.5)
    loss_loc = F.smooth_l1_loss(loc[sure].float(), teacher_loc.detach()[sure].float(), reduction="sum")
    return loss_conf, loss_loc / sure.sum().clamp(min=1)
