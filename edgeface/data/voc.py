"""Pascal VOC XML annotations, and the labelled face dataset (``facemask``) with its fixed split."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..core.image import IMAGE_SUFFIXES
from ..errors import OptionError
from .records import FaceRecord, annotation_file, required


def read_voc_xml(xml_path: str | os.PathLike, image_path: str | os.PathLike, classes: tuple[str, ...] | None = None,
                 ignore_difficult: bool = False) -> FaceRecord:
    """One VOC annotation; every object whose class is in `classes` (all when None) is a face.

    VOC boxes are 1-based and pixel-inclusive; they are kept as written (xmin, ymin, xmax, ymax).
    ``difficult`` objects are marked ignored only with ``ignore_difficult``.
    """
    with annotation_file(xml_path, "Pascal VOC XML"):
        root = ET.parse(xml_path).getroot()
        boxes, ignore = [], []
        for obj in root.iter("object"):
            if classes is not None and (obj.findtext("name") or "").strip() not in classes:
                continue
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError("an <object> without a <bndbox>")
            boxes.append(tuple(float(required(bb.findtext(k), f"<{k}> in a <bndbox>"))
                               for k in ("xmin", "ymin", "xmax", "ymax")))
            ignore.append(ignore_difficult and obj.findtext("difficult", "0").strip() == "1")
        size = root.find("size")
        width = int(size.findtext("width", "0")) if size is not None else 0
        height = int(size.findtext("height", "0")) if size is not None else 0
        return FaceRecord(os.fspath(image_path), np.array(boxes), np.array(ignore), width, height)


def _find_image(image_dir: Path, stem: str) -> Path:
    for suffix in (*IMAGE_SUFFIXES, *(s.upper() for s in IMAGE_SUFFIXES)):  # cameras write .JPG
        if (image_dir / f"{stem}{suffix}").exists():
            return image_dir / f"{stem}{suffix}"
    raise FileNotFoundError(f"no image for annotation {stem!r} in {image_dir}")


def read_voc_folder(annotation_dir: str | os.PathLike, image_dir: str | os.PathLike,
                    stems: list[str] | str | None = None) -> list[FaceRecord]:
    """Records for `stems` (a list, or comma-separated text as the command line gives it; default: every
    ``*.xml``), images matched by file stem in `image_dir`."""
    if isinstance(stems, str):
        stems = [stem.strip() for stem in stems.split(",") if stem.strip()]
    annotation_dir, image_dir = Path(annotation_dir), Path(image_dir)
    for folder, what in ((annotation_dir, "annotation"), (image_dir, "image")):
        if not folder.is_dir():
            raise FileNotFoundError(f"no {what} folder {folder}")
    stems = stems if stems is not None else sorted(p.stem for p in annotation_dir.glob("*.xml"))
    return [read_voc_xml(annotation_dir / f"{s}.xml", _find_image(image_dir, s)) for s in stems]


def read_facemask(root: str | os.PathLike, split: str) -> list[FaceRecord]:
    """The face dataset of ``shared/data/facemask`` (VOC XML; all three classes are faces), split
    ``"train"`` or ``"val"`` as fixed by its ``split.json``."""
    root = Path(root)
    if not (root / "split.json").is_file():
        raise FileNotFoundError(f"no split.json in {root}: root is the face dataset's folder (split.json, "
                                "annotations/, images/)")
    splits = json.loads((root / "split.json").read_text())
    if split not in splits or not isinstance(splits[split], list):
        known = [k for k, v in splits.items() if isinstance(v, list)]
        raise OptionError(f"the face dataset has no split {split!r}; its split.json has {', '.join(known)}")
    return read_voc_folder(root / "annotations", root / "images", splits[split])
