"""Tiling: a frame larger than the network-input bound run at full resolution in overlapping tiles.

Each tile answers for the small faces whose centre lies in its *core* (the cores partition the frame, their
borders halfway across each overlap); the whole frame scaled down to the bound answers for the large faces, which
survive the scaling. A face no longer than half the overlap and centred in a core lies wholly inside that core's
tile, a quarter of the overlap clear of its cut edges, so no tile's kept box is a face cut in two, and a face cut
by one tile is whole in the tile whose core holds its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_OVERLAP = 128  # px of the frame; faces up to half of it are the tiles' job
WHOLE_FRAME_FACE = 32  # px after scaling: the smallest face the whole-frame pass is trusted with
HANDOVER = 0.8  # the whole-frame pass keeps faces from this share of the tiles' largest; NMS merges the band


@dataclass(frozen=True)
class Tile:
    """A window of the frame, ``[x0, x1) x [y0, y1)``, and its core, the part of the frame it answers for."""

    x0: int
    y0: int
    x1: int
    y1: int
    core: tuple[float, float, float, float]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one frame size and the face size that divides the work: boxes whose longest side is at most
    `small_face` come from the tiles, larger ones from the whole frame scaled down."""

    tiles: tuple[Tile, ...]
    small_face: float

    def tile_keeps(self, boxes: np.ndarray, tile: Tile) -> np.ndarray:
        """Mask of a tile's ``(N, 4)`` boxes (frame pixels) that are its to report: small, centred in its core."""
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        x0, y0, x1, y1 = tile.core
        return (_longest_side(boxes) <= self.small_face) & (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)

    def whole_frame_keeps(self, boxes: np.ndarray) -> np.ndarray:
        """Mask of the whole-frame pass's boxes that are its to report: the faces too large for the tiles."""
        return _longest_side(boxes) > HANDOVER * self.small_face


def _longest_side(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def plan_tiles(width: int, height: int, max_side: int) -> TilePlan | None:
    """Tiles of at most ``max_side`` x ``max_side`` covering a ``width`` x ``height`` frame, or None when it fits
    within `max_side` whole. The overlap grows as the whole-frame pass shrinks the frame, so that every face
    the tiles leave to it is at least ``WHOLE_FRAME_FACE`` px after scaling (at most half a tile)."""
    longest = max(width, height)
    if longest <= max_side:
        return None
    scale = max_side / longest  # the whole-frame pass's
    overlap = min(max(MIN_OVERLAP, math.ceil(2 * WHOLE_FRAME_FACE / scale)), max_side // 2)
    tiles = tuple(Tile(x0, y0, x1, y1, (cx0, cy0, cx1, cy1))
                  for y0, y1, cy0, cy1 in _spans(height, max_side, overlap)
                  for x0, x1, cx0, cx1 in _spans(width, max_side, overlap))
    return TilePlan(tiles, overlap / 2)


def _spans(length: int, longest: int, overlap: int) -> list[tuple[int, int, float, float]]:
    """``(start, end, core_start, core_end)`` of the fewest equal spans of at most `longest` px, evenly spread so
    that neighbours overlap by at least `overlap` px, covering ``[0, length)``; cores meet mid-overlap."""
    if length <= longest:
        return [(0, length, 0.0, float(length))]
    count = math.ceil((length - overlap) / (longest - overlap))
    size = min(longest, math.ceil((length - overlap) / count) + overlap)
    starts = [(length - size) * i // (count - 1) for i in range(count)]
    ends = [start + size for start in starts]
    borders = [0.0] + [(ends[i] + starts[i + 1]) / 2 for i in range(count - 1)] + [float(length)]
    return [(starts[i], ends[i], borders[i], borders[i + 1]) for i in range(count)]
