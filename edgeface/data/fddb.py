"""FDDB: ten folds of ``originalPics/<path>.jpg`` with face ellipses
(``FDDB-folds/FDDB-fold-XX-ellipseList.txt``: name, count, then
``major_radius minor_radius angle centre_x centre_y 1`` lines; the angle, in radians, is the major
axis's from the x axis, so upright faces have angles near +-pi/2)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import OptionError
from .records import FaceRecord, annotation_file


def ellipse_bounds(ellipses: np.ndarray) -> np.ndarray:
    """Axis-aligned ``(N, 4)`` xyxy bounds of ``(N, 5)`` (major, minor, angle, cx, cy) ellipses."""
    a, b, angle, cx, cy = (ellipses[:, k] for k in range(5))
    half_w = np.sqrt((a * np.cos(angle)) ** 2 + (b * np.sin(angle)) ** 2)
    half_h = np.sqrt((a * np.sin(angle)) ** 2 + (b * np.cos(angle)) ** 2)
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)


def read_fddb_fold(ellipse_list: str | os.PathLike, images_root: str | os.PathLike) -> list[FaceRecord]:
    """Records of one ``*-ellipseList.txt``; ``record.ellipses`` holds the ``(N, 5)`` ellipses and
    ``record.boxes`` their axis-aligned bounds; ``record.name`` is the FDDB image path (no suffix)."""
    records, i = [], 0
    with annotation_file(ellipse_list, "FDDB ellipse list") as position:
        lines = [line.strip() for line in Path(ellipse_list).read_text().splitlines() if line.strip()]
        while i < len(lines):
            position.where = f"entry {lines[i]!r}"  # blank lines are dropped: no line numbers
            name, count = lines[i], int(lines[i + 1])
            ellipses = np.array([list(map(float, lines[i + 2 + k].split()[:5])) for k in range(count)],
                                np.float64).reshape(-1, 5)
            i += 2 + count
            records.append(FaceRecord(os.path.join(os.fspath(images_root), f"{name}.jpg"),
                                      ellipse_bounds(ellipses), name=name, ellipses=ellipses))
    return records


def read_fddb(root: str | os.PathLike, fddb_folds: list[int] | str | None = None) -> list[FaceRecord]:
    """FDDB under `root` (``FDDB-folds/`` and ``originalPics/``): its official folds `fddb_folds` (numbers 1-10, a
    list or comma-separated text as the command line gives it; default: all ten).

    (Named apart from the ``folds`` every data source takes, which splits a dataset K ways by image name.)
    """
    root = Path(root)
    return [r for k in check_fddb_folds(fddb_folds)
            for r in read_fddb_fold(root / "FDDB-folds" / f"FDDB-fold-{k:02d}-ellipseList.txt", root / "originalPics")]


def check_fddb_folds(fddb_folds: list[int] | str | None) -> list[int]:
    """The official FDDB fold numbers `fddb_folds` names (all ten for None), or OptionError."""
    if fddb_folds is None:
        return list(range(1, 11))
    items = fddb_folds.split(",") if isinstance(fddb_folds, str) else fddb_folds
    items = items if isinstance(items, (list, tuple)) else [items]
    numbers = [int(item) if isinstance(item, str) and item.strip().isdigit()
               else item if isinstance(item, int) and not isinstance(item, bool) else None for item in items]
    if not numbers or not all(k is not None and 1 <= k <= 10 for k in numbers):
        raise OptionError(f"fddb_folds are FDDB's official fold numbers, 1 to 10 (e.g. [9, 10] or 9,10), "
                          f"got {fddb_folds!r}")
    return [k for k in numbers if k is not None]


def ellipse_mask(ellipse: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean ``height x width`` mask of the pixels inside one (major, minor, angle, cx, cy) ellipse."""
    a, b, angle, cx, cy = ellipse
    ys, xs = np.mgrid[0:height, 0:width]
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    # the major axis makes `angle` with the x axis, in image coordinates (y down), as OpenCV draws it
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    return (u / max(a, 1e-9)) ** 2 + (v / max(b, 1e-9)) ** 2 <= 1
