"""SRN: Selective Refinement Network (Chi et al., AAAI 2019).

ResNet-50 with C6/C7; a first-step feature set (C2 ... C7 reduced to 256 channels) and a second-step
FPN (P2 ... P7); one head, with the receptive field enrichment (RFE) block, shared by all six levels
and both steps. Two anchors per cell (2 and 2*sqrt(2) x stride, h = 1.25 w).

Selective two-step classification (STC) uses the first step to drop easy negatives on strides 4-16;
selective two-step regression (STR) refines anchors with the first step on strides 32-128. In
training mode ``forward`` returns both steps; in eval mode it applies the selective rules inside the
graph, so exports give plain per-anchor ``(loc, conf)`` like every edgeface model.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import ResNet

LEVELS = 6
STC_LEVELS = (0, 1, 2)  # strides 4, 8, 16: two-step classification
STR_LEVELS = (3, 4, 5)  # strides 32, 64, 128: two-step regression
ANCHORS_PER_CELL = 2
FIRST_STEP_THRESHOLD = 0.01  # an STC anchor survives only if its first-step face score exceeds this
PRIOR = 0.01  # classification bias initialisation (focal loss)
MAX_LOG_SCALE = 4.0  # a refined anchor grows at most e^4 = 55x per side (keeps untrained outputs finite)
FILTERED_LOGIT = -1.0e4  # logit of an anchor the first step filtered out (finite for FP16 engines)


class RFE(nn.Module):
    """Receptive field enrichment: four branches (1x1 -> 1x5 / 5x1 / 1x3 / 3x1 -> 1x1), concatenated,
    fused by a 1x1 convolution + ReLU (the official ``cated_conv``) and added to the input."""

    def __init__(self, channels: int = 256):
        super().__init__()
        branch = channels // 4
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, branch, 1), nn.ReLU(inplace=True),
                          nn.Conv2d(branch, branch, kernel, padding=(kernel[0] // 2, kernel[1] // 2)),
                          nn.ReLU(inplace=True), nn.Conv2d(branch, branch, 1), nn.ReLU(inplace=True))
            for kernel in ((1, 5), (5, 1), (1, 3), (3, 1)))
        self.fuse = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.fuse(torch.cat([b(x) for b in self.branches], dim=1)))


def subnet(outputs: int) -> nn.Sequential:
    """conv 3x3 + ReLU -> RFE -> conv 3x3 + ReLU -> 1x1 predictor."""
    return nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), RFE(256),
                         nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, outputs, 1))


def flatten(t: torch.Tensor, channels: int) -> torch.Tensor:
    """``(N, A_cell * C, H, W)`` -> ``(N, H * W * A_cell, C)``."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, channels)


def compose_deltas(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Deltas relative to the anchor equal to applying `first`, then `second` relative to the refined anchor
    (centre-offset coding without variances): exact, so refined anchors never leave the graph. The first
    step's log-scales are capped at MAX_LOG_SCALE, as when training refines the anchors."""
    first_wh = first[..., 2:].clamp(max=MAX_LOG_SCALE)
    dxy = first[..., :2] + second[..., :2] * first_wh.exp()
    return torch.cat([dxy, first_wh + second[..., 2:]], dim=-1)


class SRN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet(50, stages=4)
        for p in (*self.backbone.conv1.parameters(), *self.backbone.bn1.parameters()):
            p.requires_grad_(False)
        c2, c3, c4, c5 = self.backbone.channels
        self.c6 = nn.Conv2d(c5, 1024, 3, 2, 1)
        self.c7 = nn.Conv2d(1024, 256, 3, 2, 1)
        self.first = nn.ModuleList(nn.Conv2d(c, 256, 1) for c in (c2, c3, c4, c5, 1024, 256))
        self.lateral = nn.ModuleList(nn.Conv2d(c, 256, 1) for c in (c2, c3, c4, c5))
        self.smooth = nn.ModuleList(nn.Conv2d(256, 256, 3, padding=1) for _ in range(4))
        self.p6 = nn.Conv2d(256, 256, 3, 2, 1)
        self.p7 = nn.Conv2d(256, 256, 3, 2, 1)
        self.cls = subnet(ANCHORS_PER_CELL)
        self.box = subnet(ANCHORS_PER_CELL * 4)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not any(m is b for b in self.backbone.modules()):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(cast(torch.Tensor, self.cls[-1].bias), -math.log((1 - PRIOR) / PRIOR))

    def train(self, mode: bool = True) -> SRN:
        """Training mode with the frozen stem's BatchNorm kept in eval mode (its statistics stay ImageNet's)."""
        super().train(mode)
        self.backbone.bn1.eval()
        return self

    def feature_sets(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """First-step (C2 ... C7 reduced) and second-step (P2 ... P7) features, stride 4 first."""
        c = self.backbone(x)
        c6 = self.c6(c[-1])
        c7 = self.c7(c6)  # no ReLU between C6 and C7, nor between P6 and P7: the official resnet_srn.py
        first = [conv(t) for conv, t in zip(self.first, (*c, c6, c7))]
        top = self.lateral[3](c[3])
        tops = [top]
        for k in (2, 1, 0):
            top = self.lateral[k](c[k]) + F.interpolate(top, size=c[k].shape[-2:], mode="bilinear",
                                                        align_corners=False)
            tops.append(top)
        p = [smooth(t) for smooth, t in zip(self.smooth, tops[::-1])]
        p6 = self.p6(tops[0])  # from C5's lateral, as the official code (not from the smoothed P5)
        second = [*p, p6, self.p7(p6)]
        return first, second

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Training: ``(loc1, conf1, loc2, conf2)`` of both steps, ``(N, A, 4)`` deltas and ``(N, A, 1)`` logits.
        Eval: per-anchor ``loc (N, A, 4)`` relative to the anchors and ``conf (N, A, 2)`` logits."""
        first, second = self.feature_sets(x)
        steps = [[(flatten(self.box(f), 4), flatten(self.cls(f), 1)) for f in features]
                 for features in (first, second)]
        if self.training:
            loc1, conf1 = (torch.cat(t, 1) for t in zip(*steps[0]))
            loc2, conf2 = (torch.cat(t, 1) for t in zip(*steps[1]))
            return loc1, conf1, loc2, conf2
        locs, confs = [], []
        for level, ((loc1, conf1), (loc2, conf2)) in enumerate(zip(*steps)):
            if level in STC_LEVELS:
                conf2 = torch.where(conf1.sigmoid() > FIRST_STEP_THRESHOLD, conf2,
                                    torch.full_like(conf2, FILTERED_LOGIT))
            if level in STR_LEVELS:
                loc2 = compose_deltas(loc1, loc2)
            locs.append(loc2)
            confs.append(torch.cat([torch.zeros_like(conf2), conf2], dim=-1))  # sigmoid(z) == softmax((0, z))
        return torch.cat(locs, 1), torch.cat(confs, 1)
