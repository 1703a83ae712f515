"""Errors edgeface raises for things a user can fix; each message says what happened and what to do."""

import os
import sys
from types import FrameType
from typing import Optional

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class EdgefaceError(Exception):
    """Base class of edgeface's own errors."""


class ModelFileError(EdgefaceError, ValueError):
    """A model file is missing, unreadable, corrupt, or not an edgeface artifact."""


class ImageError(EdgefaceError, ValueError):
    """An image is empty, unreadable, or of the wrong dtype or shape."""


class AnnotationError(EdgefaceError, ValueError):
    """An annotation file (WIDER txt, VOC or imglab XML, FDDB ellipse list) or a WIDER submission file is
    truncated or malformed."""


class BackendError(EdgefaceError, RuntimeError):
    """A backend is not installed, or did not give what was asked (e.g. a GPU provider fell back to CPU)."""


class OptionError(EdgefaceError, ValueError):
    """An option (threshold, size, device, recipe value, ...) is out of range or of the wrong type."""


class OutputError(EdgefaceError, OSError):
    """An output file could not be written: its folder is missing or not writable, or its suffix names no format."""


class ImageWarning(UserWarning):
    """An image or video decoded, but not whole (a truncated JPEG whose lower part is grey, a video cut short),
    or a training image that could not be read and was skipped: results may miss faces."""


class UnscoredImageWarning(ImageWarning):
    """An evaluation image could not be read: it was scored as no detections, so its labelled faces count as
    missed. ``reason`` says why it could not be read."""

    def __init__(self, reason: str):
        super().__init__(f"evaluation image scored as no detections (its faces count as missed): {reason}")
        self.reason = reason


def user_stacklevel() -> int:
    """The ``warnings.warn`` stacklevel of the first caller outside edgeface, for the function calling this: a
    warning then names the user's line (their ``detector(path)``), not the edgeface line that noticed."""
    frame: Optional[FrameType] = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level
