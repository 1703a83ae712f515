"""What every backend provides to :class:`edgeface.Detector`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..spec import ModelSpec


class Backend(Protocol):
    """Runs the network: ``(N, 3, H, W)`` float32 input -> ``loc (N, A, 4)``, ``conf (N, A, 2)`` float32."""

    spec: ModelSpec
    name: str  # e.g. "onnxruntime:CPUExecutionProvider", "torch:cpu"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's box offsets and logits for a pre-processed batch."""
        ...
