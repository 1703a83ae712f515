"""Models that ship inside the package: trained by edgeface, each with a model card beside it.

``Detector()`` runs the default model; ``Detector("fast")`` the fast one; ``Detector("default-int8")`` and
``Detector("fast-int8")`` the two quantised for CPUs (a file of that name in the working folder wins over the short
name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
SHIPPED = {"default": HERE / "edgeface_default.onnx",  # EXTD-64: the most accurate
           "fast": HERE / "edgeface_fast.onnx",  # EXTD-32: 2.5x fewer MACs
           "default-int8": HERE / "edgeface_default_int8.onnx",  # the default, INT8 for ONNX Runtime on CPUs
           "fast-int8": HERE / "edgeface_fast_int8.onnx"}  # the fast one, INT8 for ONNX Runtime on CPUs
SHIPPED_QUOTED = ", ".join(map(repr, SHIPPED))  # their short names as error messages list them
DEFAULT_MODEL = SHIPPED["default"]
FAST_MODEL = SHIPPED["fast"]


def shipped_model(name: str | os.PathLike | None) -> Optional[Path]:
    """The shipped model a short name (a key of :data:`SHIPPED`; None: the default) stands
    for, or None when `name` is not one or a file of that name exists."""
    if name is None:
        return DEFAULT_MODEL
    if isinstance(name, str) and name in SHIPPED and not os.path.exists(name):
        return SHIPPED[name]
    return None
