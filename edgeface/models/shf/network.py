"""SHF: "Robust Face Detection via Learning Small Faces on Hard Images" (Zhang et al.).

VGG16 with one stride-8 detection map (conv4_3 fused with upsampled conv5_3) and the dilated head:
one 3x3 512->128 convolution applied at dilation 1, 2 and 4 with shared weights, each branch with its
own classifier and regressor, for anchors of 16, 32 and 64 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import VGG16

DILATIONS = (1, 2, 4)
FROZEN_FEATURES = 10  # conv1_1 ... conv2_2 (and their ReLUs / pools): frozen, as in the paper
BACKBONE_LR_MULTIPLIER = 2.0


class SHF(nn.Module):
    """``forward`` maps ``(N, 3, H, W)`` to ``loc (N, A, 4)`` Fast R-CNN deltas and ``conf (N, A, 2)``
    (background, face) logits, anchors ordered row, column, then dilation branch (16, 32, 64 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = VGG16()
        for p in self.backbone.features[:FROZEN_FEATURES].parameters():
            p.requires_grad_(False)
        self.reduce5 = nn.Conv2d(512, 256, 1)
        self.reduce4 = nn.Conv2d(512, 256, 1)
        self.fuse = nn.Conv2d(512, 512, 3, padding=1)
        self.dilated = nn.Conv2d(512, 128, 3)  # weights shared by the three branches; padding = dilation
        self.conf = nn.ModuleList(nn.Conv2d(128, 2, 1) for _ in DILATIONS)
        self.loc = nn.ModuleList(nn.Conv2d(128, 4, 1) for _ in DILATIONS)
        # new layers: Gaussian, as in the paper (which gives no scale): He-normal for the feature layers, so the
        # detection map keeps the backbone's scale, and std 0.01 for the predictors
        for layer in (self.reduce5, self.reduce4, self.fuse, self.dilated):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        for layer in (*self.conf, *self.loc):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter-name prefixes whose learning rate differs from the base rate: the trained part of VGG16 at 2x
        (the official ``BACKBONE_MULT = 2.0``; conv1-conv2 stay frozen)."""
        return {"backbone.": BACKBONE_LR_MULTIPLIER}

    def detection_map(self, x: torch.Tensor) -> torch.Tensor:
        conv4_3, conv5_3 = self.backbone(x)
        top = F.interpolate(F.relu(self.reduce5(conv5_3)), size=conv4_3.shape[-2:], mode="bilinear",
                            align_corners=False)
        return F.relu(self.fuse(torch.cat([F.relu(self.reduce4(conv4_3)), top], dim=1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.detection_map(x)
        locs, confs = [], []
        for branch, dilation in enumerate(DILATIONS):
            y = F.relu(F.conv2d(feature, self.dilated.weight, self.dilated.bias, padding=dilation, dilation=dilation))
            locs.append(self.loc[branch](y).permute(0, 2, 3, 1))
            confs.append(self.conf[branch](y).permute(0, 2, 3, 1))
        n = x.shape[0]
        # (N, H, W, branch, C) -> (N, H * W * branches, C): anchors of one cell are adjacent
        return torch.stack(locs, 3).reshape(n, -1, 4), torch.stack(confs, 3).reshape(n, -1, 2)
