"""Resizing to the network input and the mapping of boxes back to the source image."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Where a source image sits in the network input: ``x_in = x_src * scale_x + pad_x`` (same for y)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    source_width: int
    source_height: int

    @classmethod
    def identity(cls, width: int, height: int) -> Letterbox:
        """The transform of a frame run at its own size: no scaling, no offset."""
        return cls(1.0, 1.0, 0.0, 0.0, width, height)

    @cached_property
    def _xyxy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pad, scale and source size, each as an x1, y1, x2, y2 row (float32, as the boxes are)."""
        rows = ((self.pad_x, self.pad_y), (self.scale_x, self.scale_y), (self.source_width, self.source_height))
        pad, scale, size = (np.array(row * 2, np.float32) for row in rows)
        return pad, scale, size

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes from input pixels to source pixels, clipped to the source image."""
        pad, scale, size = self._xyxy
        out = np.subtract(boxes, pad, dtype=np.float32)
        np.divide(out, scale, out=out)
        return np.minimum(np.maximum(out, 0, out=out), size, out=out)  # ufuncs: np.clip costs more than the math

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes from source pixels to input pixels (inverse of :meth:`to_source`)."""
        out = boxes.astype(np.float32, copy=True)
        out[:, 0::2] = out[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale_y + self.pad_y
        return out


def fit(width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_w, new_h, pad_x, pad_y)``: a ``width`` x ``height`` image resized into ``size = (w, h)``
    keeping its aspect ratio, centred (shared by the NumPy path and the CUDA pre-processing kernel)."""
    out_w, out_h = size
    scale = min(out_w / width, out_h / height)
    new_w, new_h = min(out_w, max(1, round(width * scale))), min(out_h, max(1, round(height * scale)))
    return new_w, new_h, (out_w - new_w) // 2, (out_h - new_h) // 2


def fit_within(width: int, height: int, max_side: int | None, min_side: int | None = None) -> tuple[int, int]:
    """``(w, h)`` of a ``width`` x ``height`` frame scaled, keeping its aspect ratio, so that its longest side is at
    least `min_side` and at most `max_side` (`max_side` wins; unchanged when it already fits; None: no bound)."""
    longest = max(width, height)
    if min_side is not None and longest < min_side:
        target = min_side if max_side is None else min(min_side, max_side)
    elif max_side is not None and longest > max_side:
        target = max_side
    else:
        return width, height
    scale = target / longest
    return min(target, max(1, round(width * scale))), min(target, max(1, round(height * scale)))


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: tuple[float, ...] = (0, 0, 0),
              interpolation: int = cv2.INTER_LINEAR, canvas: tuple[int, int] | None = None,
              ) -> tuple[np.ndarray, Letterbox]:
    """Fit `image` into ``size = (w, h)`` keeping its aspect ratio, centred, the rest filled with `pad_value`;
    `canvas` (at least `size`) extends the result at the right and bottom.

    Returns the image (``h x w``, or the canvas's) and the :class:`Letterbox` that maps boxes back.
    """
    height, width = image.shape[:2]
    out_w, out_h = canvas or size
    new_w, new_h, pad_x, pad_y = fit(width, height, size)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    out = cv2.copyMakeBorder(image, pad_y, out_h - new_h - pad_y, pad_x, out_w - new_w - pad_x,
                             cv2.BORDER_CONSTANT, value=pad_value)
    return out, Letterbox(new_w / width, new_h / height, float(pad_x), float(pad_y), width, height)
