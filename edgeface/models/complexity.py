"""Parameter and multiply-add counts (torch). MAdds are conv/matmul multiply-adds as the papers count
them, measured with torch's own ``FlopCounterMode`` (FLOPs / 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, width: int = 640, height: int = 480) -> int:
    """Conv and matmul multiply-adds of one forward pass on a ``width`` x ``height`` input."""
    model = model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() // 2
