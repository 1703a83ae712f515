"""Models that ship inside the package: trained by edgeface, each with a model card beside it (none yet)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "edgeface_default.onnx"
