"""Named data sources, as recipes and the CLI refer to them."""

from __future__ import annotations

import inspect
import os
import zlib
from typing import Any, Callable

from ..errors import OptionError
from .fddb import read_fddb
from .imglab import read_imglab
from .records import FaceRecord
from .voc import read_facemask, read_voc_folder
from .wider import read_wider


def load_records(source: dict[str, Any]) -> list[FaceRecord]:
    """Records of ``{"format": ..., ...}``:

    - ``facemask``: ``root``, ``split`` (train / val, from its split.json)
    - ``voc``: ``annotation_dir``, ``image_dir`` (folders), optional ``stems`` (default: every ``*.xml``)
    - ``imglab``: ``xml`` (dlib imglab file)
    - ``wider``: ``root``, ``split``
    - ``fddb``: ``root`` (``FDDB-folds/`` and ``originalPics/``), optional ``fddb_folds`` (official folds, 1-10)

    Any source also takes ``folds: K`` with ``fold: I`` (only the images of fold I) or ``skip_fold: I`` (all but
    those): a fixed K-way split by image name (:func:`fold_of`), to hold some of a training set out for validation.
    """
    kind = source.get("format")
    args = {k: v for k, v in source.items() if k not in ("format", *FOLD_KEYS)}
    if kind not in READERS:
        raise OptionError(f"unknown data format {kind!r}; known: {', '.join(READERS)}")
    check_reader_keys(kind, READERS[kind], args)
    in_choice = fold_filter(source)
    records = READERS[kind](**args)
    if in_choice is None:
        return records
    chosen = [r for r in records if in_choice(r.name or os.path.basename(r.image_path))]
    if not chosen:
        raise OptionError(f"{kind} source {source}: no image left after the fold choice")
    return chosen


READERS: dict[str, Callable[..., list[FaceRecord]]] = {
    "facemask": read_facemask, "voc": read_voc_folder, "imglab": read_imglab, "wider": read_wider, "fddb": read_fddb}
FOLD_KEYS = ("folds", "fold", "skip_fold")


def reader_keys(reader: Callable) -> list[str]:
    """The keys a source read by `reader` takes: its parameters, optional ones with their defaults (``split=train``)."""
    return [name if p.default is p.empty else f"{name}={p.default}"
            for name, p in inspect.signature(reader).parameters.items()]


def check_reader_keys(kind: str, reader: Callable, args: dict[str, Any]) -> None:
    """Raise OptionError naming the keys a `kind` source takes when `args` has one it does not, or lacks one it
    needs (instead of the reader's TypeError)."""
    params = inspect.signature(reader).parameters
    unknown = sorted(set(args) - set(params))
    missing = [name for name, p in params.items() if p.default is p.empty and name not in args]
    if unknown or missing:
        wrong = "; ".join(part for part in (f"unknown: {', '.join(unknown)}" if unknown else "",
                                           f"missing: {', '.join(missing)}" if missing else "") if part)
        raise OptionError(f"{kind} sources take {', '.join(params)} (and folds with fold or skip_fold); {wrong}")


def fold_of(name: str, folds: int) -> int:
    """The fold (0 .. folds - 1) of the image called `name` in its dataset (WIDER's ``<event>/<file>.jpg``; the file
    name for sets without such names): a CRC-32 of it, so an image stays in its fold whatever else is on disk and
    in whatever order the dataset lists it."""
    return zlib.crc32(name.encode()) % folds


def fold_filter(source: dict[str, Any]) -> Callable[[str], bool] | None:
    """Whether an image (by its name in the dataset, as :func:`fold_of` takes it) is in the part of the dataset that
    a source's fold keys choose; None for a source without them. Raises OptionError on bad keys."""
    # the command line's KEY=VALUE gives text: "5" is the whole number 5 there
    folds, fold, skip = (int(v) if isinstance(v, str) and v.strip().isdigit() else v
                         for v in (source.get("folds"), source.get("fold"), source.get("skip_fold")))
    if folds is None and fold is None and skip is None:
        return None
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise OptionError(f"folds must be an integer of at least 2, got {folds!r}")
    if (fold is None) == (skip is None):
        raise OptionError("with folds, give exactly one of fold (take that fold) and skip_fold (take the others)")
    index = fold if skip is None else skip
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < folds:
        raise OptionError(f"fold / skip_fold must be an integer in 0 .. {folds - 1}, got {index!r}")
    take = skip is None
    return lambda name: (fold_of(name, folds) == index) == take
