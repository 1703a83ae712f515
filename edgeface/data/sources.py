"""Named data sources, as recipes and the CLI refer to them."""

from __future__ import annotations

from typing import Any

from .fddb import read_fddb
from .imglab import read_imglab
from .records import FaceRecord
from .voc import read_facemask, read_voc_folder
from .wider import read_wider


def load_records(source: dict[str, Any]) -> list[FaceRecord]:
    """Records of ``{"format": ..., ...}``:

    - ``facemask``: ``root``, ``split`` (train / val, from its split.json)
    - ``voc``: ``annotations``, ``images`` (folders)
    - ``imglab``: ``xml`` (dlib imglab file)
    - ``wider``: ``root``, ``split``
    - ``fddb``: ``root`` (``FDDB-folds/`` and ``originalPics/``)
    """
    kind = source.get("format")
    args = {k: v for k, v in source.items() if k != "format"}
    readers = {"facemask": read_facemask, "voc": read_voc_folder, "imglab": read_imglab, "wider": read_wider,
               "fddb": read_fddb}
    if kind not in readers:
        raise ValueError(f"unknown data format {kind!r}; known: {', '.join(readers)}")
    return readers[kind](**args)
