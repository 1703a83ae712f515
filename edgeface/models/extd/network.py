"""EXTD: Extremely Tiny Face Detector via Iterative Filter Reuse (Yoo, Han, Yun 2019).

A MobileNetV2-style backbone reaches stride 4; the *same* blocks are then applied five more times,
each pass halving the resolution, giving the six detection levels (strides 4 ... 128) with no new
weights. The FPN variant adds a top-down path (bilinear resize + depthwise-separable "upfeat" with
ReLU); the SSD variant predicts from the six backbone outputs directly. Module names follow the
authors' release (``base.N.conv.M``, ``upfeat.N``, ``loc.N``, ``conf.N``) so their checkpoints load
as they are into the FPN-PReLU variants.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 6
STEM_CHANNELS = 64  # every released width has a 64-channel stem
MAX_OUT_BACKGROUND = 3  # background logits max-pooled to one on the stride-4 level (S3FD)

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "prelu": lambda: nn.PReLU(),  # one learned slope per layer, as released
    "leaky": lambda: nn.LeakyReLU(0.25),
    "relu": lambda: nn.ReLU(),
}


def block_table(width: int) -> list[tuple[int, int, int]]:
    """``(expand ratio, repeats, stride of the last repeat)`` rows up to stride 4 (stem excluded).

    Everything after the first block is the part reused at every further level.
    """
    if width == 32:
        return [(1, 1, 1), (2, 2, 1), (4, 2, 1), (2, 2, 2)]
    return [(1, 1, 1), (2, 2, 1), (4, 2, 2)]


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> act -> 3x3 depthwise (bias) -> BN -> act -> 1x1 project -> BN [-> act].

    The expansion is skipped when the ratio is 1; residual when stride 1 and in == out channels.
    """

    def __init__(self, inp: int, out: int, stride: int, expand: int, act: Callable[[], nn.Module],
                 act_after_project: bool):
        super().__init__()
        hidden = inp * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=True), nn.BatchNorm2d(hidden), act(),
            nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out),
        ]
        if act_after_project:
            layers.append(act())
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def upfeat(channels: int) -> nn.Sequential:
    """Top-down refinement: depthwise 3x3 + pointwise 1x1 (no biases) + BN + ReLU (ReLU in every variant)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class EXTD(nn.Module):
    """EXTD detector. ``forward`` maps a ``(N, 3, H, W)`` normalised input to

    - ``loc``  ``(N, A, 4)``: SSD box offsets,
    - ``conf`` ``(N, A, 2)``: (background, face) logits, max-out background already applied,

    with ``A`` anchors ordered level (stride 4 first), row, column.
    """

    def __init__(self, width: int = 64, head: str = "fpn", activation: str = "prelu",
                 stem_channels: int = STEM_CHANNELS):
        super().__init__()
        if width not in (32, 48, 64) or head not in ("fpn", "ssd") or activation not in ACTIVATIONS:
            raise ValueError(f"no EXTD variant with width={width}, head={head!r}, activation={activation!r}")
        self.width, self.head, self.activation = width, head, activation
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_channels), act())
        ]
        channels = stem_channels
        for expand, repeats, stride in block_table(width):
            for i in range(repeats):
                layers.append(InvertedResidual(channels, width, stride if i == repeats - 1 else 1, expand, act,
                                               act_after_project=width == 32))
                channels = width
        self.base = nn.ModuleList(layers)
        if head == "fpn":
            self.upfeat = nn.ModuleList(upfeat(width) for _ in range(LEVELS - 1))
        self.loc = nn.ModuleList(nn.Conv2d(width, 4, 3, padding=1) for _ in range(LEVELS))
        self.conf = nn.ModuleList(
            nn.Conv2d(width, MAX_OUT_BACKGROUND + 1 if level == 0 else 2, 3, padding=1) for level in range(LEVELS)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six detection feature maps, stride 4 first."""
        x = self.base[1](self.base[0](x))
        shared = self.base[2:]
        levels = []
        for _ in range(LEVELS):  # iterative filter reuse: the same blocks at every level
            for block in shared:
                x = block(x)
            levels.append(x)
        if self.head == "ssd":
            return levels
        top = levels[-1]
        outs = [top]
        for k in range(LEVELS - 2, -1, -1):
            up = F.interpolate(top, size=levels[k].shape[-2:], mode="bilinear", align_corners=False)
            top = self.upfeat[LEVELS - 2 - k](up) + levels[k]
            outs.append(top)
        return outs[::-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        locs, confs = [], []
        for level, feature in enumerate(self.features(x)):
            conf = self.conf[level](feature)
            if level == 0:
                background = conf[:, :MAX_OUT_BACKGROUND].amax(dim=1, keepdim=True)
                conf = torch.cat([background, conf[:, MAX_OUT_BACKGROUND:]], dim=1)
            locs.append(self.loc[level](feature).permute(0, 2, 3, 1).flatten(1, 2))
            confs.append(conf.permute(0, 2, 3, 1).flatten(1, 2))
        return torch.cat(locs, 1), torch.cat(confs, 1)
