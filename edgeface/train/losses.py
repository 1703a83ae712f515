"""Losses (torch). Multibox: softmax cross-entropy with hard-negative mining + smooth-L1 on positives."""

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
