"""WIDER FACE in its official layout: ``WIDER_{split}/images/<event>/<file>.jpg`` and
``wider_face_split/wider_face_{split}_bbx_gt.txt`` (file name, face count, then one line per face:
``x y w h blur expression illumination invalid occlusion pose``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import user_stacklevel
from .records import FaceRecord, annotation_file

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def read_wider_txt(gt_txt: str | os.PathLike, images_root: str | os.PathLike) -> list[FaceRecord]:
    """Records of an official ``*_bbx_gt.txt``. Faces flagged invalid (or of zero size) are marked
    ignore; the per-face attributes are kept in ``record.attributes`` (``(N, 6)`` int, ATTRIBUTES order)."""
    records, i = [], 0
    with annotation_file(gt_txt, "WIDER FACE ground-truth") as position:
        lines = Path(gt_txt).read_text().split("\n")
        while i < len(lines) and lines[i].strip():
            name = lines[i].strip()
            position.where = f"line {i + 1} ({name})"
            count = int(lines[i + 1])
            if count < 0:
                raise ValueError(f"a negative count of faces, {count}")
            rows = [list(map(int, lines[i + 2 + k].split()[:10])) for k in range(max(count, 1))]
            i += 2 + max(count, 1)  # an image with no faces still has one all-zero line
            data = np.array(rows[:count], np.int64).reshape(-1, 10)
            boxes = np.concatenate([data[:, :2], data[:, :2] + data[:, 2:4]], axis=1).astype(np.float32)
            ignore = data[:, 7] == 1  # (and FaceRecord ignores the boxes of no size)
            records.append(FaceRecord(os.path.join(os.fspath(images_root), name), boxes, ignore, name=name,
                                      attributes=data[:, 4:10]))
    return records


def images_folder(root: str | os.PathLike, split: str) -> Path:
    """Where WIDER FACE's official layout under `root` keeps the images of `split`: ``WIDER_<split>/images``."""
    return Path(root) / f"WIDER_{split}" / "images"


def read_wider(root: str | os.PathLike, split: str = "train") -> list[FaceRecord]:
    """WIDER FACE ``split`` ("train" / "val") under `root`, which holds ``WIDER_<split>/`` and ``wider_face_split/``.

    Images listed but not on disk (a partial copy of the dataset) are left out, with a warning saying how many."""
    images = images_folder(root, split)
    records = read_wider_txt(Path(root) / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt", images)
    present = [r for r in records if os.path.exists(r.image_path)]
    if not present:
        raise FileNotFoundError(f"none of the {len(records)} WIDER {split} images listed is under {images}")
    if len(present) < len(records):
        warnings.warn(f"WIDER {split}: {len(records) - len(present)} of the {len(records)} images listed are not "
                      f"under {images}; using the {len(present)} present", stacklevel=user_stacklevel())
    return present
