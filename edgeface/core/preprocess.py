"""Frame -> network input (NumPy reference for the CUDA pre-processing kernel)."""

from __future__ import annotations

import numpy as np

from ..spec import InputSpec
from .letterbox import Letterbox, letterbox


def pad_colour_bgr(spec: InputSpec) -> tuple[float, float, float]:
    """BGR colour that normalises to zero: letterbox padding looks like 'no signal' to the network."""
    mean = spec.mean if spec.channel_order == "BGR" else spec.mean[::-1]
    return float(mean[0]), float(mean[1]), float(mean[2])


def normalise(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``H x W x 3`` BGR uint8 -> ``3 x H x W`` float32 in the spec's channel order, mean and std."""
    order = [2, 1, 0] if spec.channel_order == "RGB" else [0, 1, 2]
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    chw = image_bgr.transpose(2, 0, 1)[order].astype(np.float32)
    chw -= mean
    if any(s != 1.0 for s in spec.std):
        chw /= np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return chw


def network_size(spec: InputSpec, size: tuple[int, int]) -> tuple[int, int]:
    """``(w, h)`` of the network input for frames fitted into ``size = (w, h)``: `size` padded at the right and
    bottom to a multiple of ``spec.size_multiple`` (the fixed size of a static-shape export as it is)."""
    if spec.size is not None:
        return spec.size[0], spec.size[1]
    multiple = spec.size_multiple
    return -(-size[0] // multiple) * multiple, -(-size[1] // multiple) * multiple


def prepare_input(image_bgr: np.ndarray, spec: InputSpec,
                  size: tuple[int, int] | None = None) -> tuple[np.ndarray, Letterbox]:
    """Normalised ``3 x H x W`` network input (:func:`network_size`) for one frame, at its own size or letterboxed
    to ``size = (w, h)``, padded with the colour that normalises to zero."""
    height, width = image_bgr.shape[:2]
    fitted = (width, height) if size is None else (size[0], size[1])
    canvas = network_size(spec, fitted)
    if fitted == canvas == (width, height):
        return normalise(image_bgr, spec), Letterbox.identity(width, height)
    boxed, transform = letterbox(image_bgr, fitted, pad_colour_bgr(spec), canvas=canvas)
    return normalise(boxed, spec), transform
