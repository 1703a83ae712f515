"""HR: "Finding Tiny Faces" (Hu & Ramanan, CVPR 2017).

A ResNet-101 (or -50) truncated after res4; a hypercolumn of 1x1 score convolutions on res4 (stride 16,
upsampled x2 by a fixed bilinear transposed convolution) and res3 (stride 8), summed into one stride-8
map with, per template, a face logit and four deltas. The 25 templates come from k-medoids clustering
of the training boxes (:mod:`edgeface.models.hr.templates`); the image pyramid runs them at the
resolutions they were made for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import ResNet

TEMPLATES = 25
RES3_LR_MULTIPLIER = 0.1  # the paper's learning-rate multipliers: res4 branch 1, res3 branch 0.1


def bilinear_kernel(channels: int, factor: int = 2) -> torch.Tensor:
    """Per-channel bilinear upsampling weights for ``conv_transpose2d(groups=channels)``."""
    size = 2 * factor - factor % 2
    centre = (size - 1) / 2 if size % 2 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    return (ramp[:, None] * ramp[None, :]).expand(channels, 1, size, size).clone()


class HR(nn.Module):
    """``forward`` maps ``(N, 3, H, W)`` to ``loc (N, A, 4)`` template-relative deltas and ``conf (N, A, 2)``
    logits (``(0, z)``: the template's logistic score as a two-class softmax), anchors ordered row,
    column, template."""

    upsample: torch.Tensor  # the fixed bilinear 2x upsampling kernel (a buffer)

    def __init__(self, depth: int = 101, templates: int = TEMPLATES):
        super().__init__()
        self.templates = templates
        self.backbone = ResNet(depth, stages=3)
        outputs = templates * 5  # a logit and four deltas per template
        self.score_res3 = nn.Conv2d(self.backbone.channels[1], outputs, 1)
        self.score_res4 = nn.Conv2d(self.backbone.channels[2], outputs, 1)
        self.register_buffer("upsample", bilinear_kernel(outputs), persistent=False)
        for layer in (self.score_res3, self.score_res4):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter-name prefixes whose learning rate differs from the base rate."""
        return {"score_res3.": RES3_LR_MULTIPLIER}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, res3, res4 = self.backbone(x)
        up = F.conv_transpose2d(self.score_res4(res4), self.upsample, stride=2, padding=1,
                                groups=self.upsample.shape[0])
        score = self.score_res3(res3) + up[..., : res3.shape[2], : res3.shape[3]]
        n = x.shape[0]
        logits = score[:, : self.templates].permute(0, 2, 3, 1).reshape(n, -1, 1)
        loc = score[:, self.templates :].permute(0, 2, 3, 1).reshape(n, -1, 4)  # (t, 4) per cell
        return loc, torch.cat([torch.zeros_like(logits), logits], dim=-1)
