"""Anchor generation: pixel-space anchors for every detection level, cached per input size."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..spec import AnchorSpec


def feature_size(size: int, stride: int) -> int:
    """Cells along one side of the level with `stride` for an input side of `size` pixels."""
    for _ in range(int(round(math.log2(stride)))):
        size = (size + 1) // 2
    return size


def feature_sizes(spec: AnchorSpec, width: int, height: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of every level, fine to coarse, for a ``width`` x ``height`` input."""
    return [(feature_size(height, s), feature_size(width, s)) for s in spec.strides]


def generate_anchors(spec: AnchorSpec, width: int, height: int) -> np.ndarray:
    """Anchors for a ``width`` x ``height`` input as float32 ``(A, 4)`` rows of ``(cx, cy, w, h)`` pixels.

    Order matches the networks' flattened outputs: level, then row, then column, then size, then ratio.
    The result is cached per (spec, size) and read-only.
    """
    return _anchors(spec, int(width), int(height))


@lru_cache(maxsize=64)
def _anchors(spec: AnchorSpec, width: int, height: int) -> np.ndarray:
    levels = []
    for level, ((rows, cols), stride) in enumerate(zip(feature_sizes(spec, width, height), spec.strides)):
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = (np.stack([xs, ys], axis=-1).reshape(-1, 1, 2) + 0.5) * stride
        shapes = np.array(spec.cell_shapes(level))  # (per_cell, 2) as (w, h)
        cell = np.concatenate(np.broadcast_arrays(centres, shapes[None]), axis=-1)
        levels.append(cell.reshape(-1, 4))
    anchors = np.concatenate(levels).astype(np.float32)
    anchors.setflags(write=False)
    return anchors
