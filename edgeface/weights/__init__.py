"""Models that ship inside the package (trained by edgeface; see MODEL_CARD.md beside this file)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "edgeface_default.onnx"
