"""dlib imglab XML (``<image file=...><box top left width height [ignore]/>``), e.g. dlib's
``examples/faces/training.xml`` and ``testing.xml``."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from .records import FaceRecord, annotation_file, required


def read_imglab(xml: str | os.PathLike) -> list[FaceRecord]:
    """Records of an imglab XML file; image paths are resolved relative to the XML file."""
    root_dir = os.path.dirname(os.fspath(xml))
    records = []
    with annotation_file(xml, "dlib imglab XML") as position:
        for image in ET.parse(xml).getroot().iter("image"):
            position.where = f"image {image.get('file')!r}"
            boxes, ignore = [], []
            for box in image.iter("box"):
                left, top, width, height = (float(required(box.get(k), f"the {k!r} attribute of a <box>"))
                                            for k in ("left", "top", "width", "height"))
                boxes.append((left, top, left + width, top + height))
                ignore.append(box.get("ignore", "0") == "1")
            file = required(image.get("file"), "the 'file' attribute of an <image>")
            records.append(FaceRecord(os.path.join(root_dir, file), np.array(boxes), np.array(ignore),
                                      int(image.get("width", 0)), int(image.get("height", 0))))
    return records
