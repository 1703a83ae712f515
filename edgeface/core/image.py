"""Frame checks and reading: the runtime takes OpenCV BGR uint8 H x W x 3 frames."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ImageError, ImageWarning, OutputError, user_stacklevel
from .files import check_output_folder, has_utf8_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
HEIF_SUFFIXES = (".heic", ".heif", ".avif")  # phones' photos, which OpenCV does not decode


def check_image(image: object) -> np.ndarray:
    """Return `image` if it is a BGR uint8 H x W x 3 array, else raise :class:`ImageError` saying how to fix it."""
    if not isinstance(image, np.ndarray):
        if image is None:
            hint = ("cv2.imread returns None for a file it cannot read and VideoCapture.read for a frame it could "
                    "not grab: check the path or the capture")
        elif isinstance(image, (bytes, bytearray, memoryview)):
            hint = "decode encoded bytes with cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)"
        else:
            hint = ("convert it to a BGR uint8 array (a PIL image: cv2.cvtColor(np.asarray(image.convert('RGB')), "
                    "cv2.COLOR_RGB2BGR))")
        raise ImageError(f"expected a NumPy array (an OpenCV BGR frame) or an image file's path, got "
                         f"{type(image).__name__}; {hint}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}; {_dtype_hint(image.dtype)}")
    if image.ndim != 3 or image.shape[2] != 3:
        shape = "x".join(map(str, image.shape)) or "() (a scalar)"
        raise ImageError(f"expected an H x W x 3 BGR image, got shape {shape}; {_shape_hint(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"the image is empty (shape {image.shape}); check the capture or the file it came from")
    return image


def _dtype_hint(dtype: np.dtype) -> str:
    if dtype == np.uint16:
        return "a 16-bit image becomes 8-bit with (image >> 8).astype(np.uint8)"
    return "convert with np.clip(image, 0, 255).astype(np.uint8) (scale float images in [0, 1] by 255 first)"


def _shape_hint(shape: tuple[int, ...]) -> str:
    if len(shape) < 2:
        return "a frame is rows x columns x 3 channels: check what produced this array"
    if len(shape) == 4:
        return "for several frames pass a list of H x W x 3 frames to detect_batch"
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] > 4:
        return "this looks channels-first (C x H x W): image.transpose(1, 2, 0) makes it H x W x C"
    return "convert gray with cv2.COLOR_GRAY2BGR, BGRA with cv2.COLOR_BGRA2BGR"


def opencv_path(path: str | os.PathLike) -> Any:
    """`path` as OpenCV's file functions take it: a name that is not UTF-8 (:func:`has_utf8_name`) would crash
    OpenCV's conversion of text with a segmentation fault, so it goes as the file system's bytes, which OpenCV
    passes through unchanged (a ``str`` or ``bytes``; typed Any, as OpenCV's type stubs name only ``str``)."""
    return os.fspath(path) if has_utf8_name(path) else os.fsencode(path)


def check_input_file(path: str | os.PathLike, kind: str) -> None:
    """Raise :class:`ImageError` when the `kind` ("image", "video") file `path` is a folder or does not exist."""
    if os.path.isdir(path):
        raise ImageError(f"{os.fspath(path)} is a folder, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file")
    if not os.path.exists(path):
        raise ImageError(f"no such {kind} file: {os.fspath(path)}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a BGR uint8 array; raise :class:`ImageError` if it is missing or unreadable. A photo
    with an EXIF orientation (as phones store them) comes back turned upright, as viewers show it.

    A file that decodes but is cut short (a truncated JPEG or PNG: its lower part comes out grey) is returned
    with an :class:`~edgeface.errors.ImageWarning`, so callers can flag results that may miss faces.
    """
    path = os.fspath(path)
    check_input_file(path, "image")
    if not os.path.isfile(path):
        raise ImageError(f"{path} is a device, a pipe or a socket, not an image file")
    try:
        image = cv2.imread(opencv_path(path), cv2.IMREAD_COLOR)  # (imdecode rejects the truncated JPEGs it reads)
    except cv2.error as error:  # e.g. more pixels than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS), or out of memory
        reason = (error.err or str(error)).strip()
        raise ImageError(f"cannot decode {path}: OpenCV refused it ({reason})") from None
    data = Path(path).read_bytes()
    if image is None:
        raise ImageError(f"cannot decode {path}: {undecodable_reason(data)}")
    if is_truncated(data):
        warnings.warn(ImageWarning(f"{path} is truncated ({len(data)} bytes): the part of the image after the cut "
                                   "is missing (decoded as grey), so faces there cannot be found"),
                      stacklevel=user_stacklevel())
    return image


def check_image_output(path: str | os.PathLike) -> None:
    """Raise OutputError, before the work that makes the image, when `path` cannot be written as one: a missing
    folder, a folder in its place, or a suffix OpenCV has no encoder for."""
    check_output_folder(path)
    if not cv2.haveImageWriter(opencv_path(path)):
        raise OutputError(f"cannot write {os.fspath(path)}: its suffix names no image format OpenCV writes (.png, "
                          ".jpg, ...)")


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write `image` (BGR) in the format its suffix names, or raise OutputError saying it could not."""
    try:
        written = cv2.imwrite(opencv_path(path), image)
    except cv2.error:  # a suffix OpenCV has no encoder for
        written = False
    if not written:
        raise OutputError(f"could not write {path} (does its folder exist? is its suffix an image format?)")


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")


def undecodable_reason(data: bytes) -> str:
    """What a file OpenCV could not decode most likely is, from its first bytes, and what to do about it."""
    if not data:
        return "the file is empty (0 bytes)"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return ("a HEIF / HEIC or AVIF photo (as phones save them), which OpenCV does not decode; convert it to JPEG "
                "or PNG first (e.g. with the pillow-heif package)")
    if data[:5] == b"%PDF-":
        return "a PDF document, not an image"
    if data.lstrip()[:1] == b"<":
        return "a text file (HTML, XML or SVG), not a raster image: a web page saved under an image's name?"
    return "not an image OpenCV can read, or the file is corrupt"


def is_truncated(data: bytes) -> bool:
    """Whether JPEG or PNG bytes stop before the image's end: no JPEG end-of-image marker after the last
    start-of-scan (entropy-coded data cannot contain one), or no PNG IEND chunk near the end. Other formats: False.
    """
    if data[:2] == b"\xff\xd8":
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-4096:]
    return False


def list_inputs(paths: Sequence[str | os.PathLike], suffixes: tuple[str, ...] = IMAGE_SUFFIXES + VIDEO_SUFFIXES,
                ) -> list[Path]:
    """The files named in `paths`, folders searched recursively for files with one of `suffixes`.

    The one rule of every edgeface command and example that takes folders: files given by name are taken as
    they are (whatever their suffix); a folder contributes every file below it, in subfolders too, whose suffix
    is in `suffixes` (case-insensitive), sorted by path, hidden files and folders skipped. A missing path, or
    nothing found at all, is an :class:`ImageError`.
    """
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = [p for p in item.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(item).parts)]
            files += sorted(p for p in found if p.suffix.lower() in suffixes)
            heif = sum(p.suffix.lower() in HEIF_SUFFIXES for p in found)
            if heif:
                warnings.warn(ImageWarning(f"{item}: {heif} HEIF / HEIC / AVIF photo(s) skipped, which OpenCV does not "
                                           "decode; convert them to JPEG or PNG first"), stacklevel=user_stacklevel())
        elif item.exists():
            files.append(item)
        else:
            raise ImageError(f"no such file or folder: {item}")
    if not files:
        raise ImageError(f"no {'/'.join(s.lstrip('.') for s in suffixes)} files found in {', '.join(map(str, paths))}")
    return files
