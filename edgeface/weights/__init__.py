"""Models that ship inside the package: trained by edgeface, each with a model card beside it."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "edgeface_default.onnx"
MODEL_CARD = DEFAULT_MODEL.with_suffix(".md")
