"""Frame checks and reading: the runtime takes OpenCV BGR uint8 H x W x 3 frames."""

from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def check_image(image: object) -> np.ndarray:
    """Return `image` if it is a BGR uint8 H x W x 3 array, else raise :class:`ImageError` saying how to fix it."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a NumPy array (an OpenCV BGR frame), got {type(image).__name__}; "
                         "read files with edgeface.read_image(path) or cv2.imread")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}; convert with "
                         "np.clip(image, 0, 255).astype(np.uint8) (scale float images in [0, 1] by 255 first)")
    if image.ndim != 3 or image.shape[2] != 3:
        shape = "x".join(map(str, image.shape))
        raise ImageError(f"expected an H x W x 3 BGR image, got shape {shape}; convert gray with "
                         "cv2.COLOR_GRAY2BGR, BGRA with cv2.COLOR_BGRA2BGR")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"the image is empty (shape {image.shape}); check the capture or the file it came from")
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a BGR uint8 array; raise :class:`ImageError` if it is missing or unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"no such image file: {path}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"cannot decode {path}: not an image OpenCV can read, or the file is corrupt")
    return image
