"""`FaceRecord`: one annotated image, whatever format it was read from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceRecord:
    """An image path and its faces: ``boxes`` ``(N, 4)`` float32 xyxy pixels; ``ignore`` ``(N,)`` bool marks
    faces that are neither matched nor counted in evaluation (dlib's ``ignore``, WIDER's invalid)."""

    image_path: str
    boxes: np.ndarray
    ignore: np.ndarray = field(default=None)  # type: ignore[assignment]
    width: int = 0
    height: int = 0
    name: str = ""  # the image's name in its dataset (e.g. WIDER's "<event>/<file>.jpg")
    attributes: np.ndarray | None = None  # per-face dataset flags, e.g. WIDER's (N, 6) attributes
    ellipses: np.ndarray | None = None  # FDDB's (N, 5) face ellipses (major, minor, angle, cx, cy)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.ignore = np.zeros(len(self.boxes), bool) if self.ignore is None else np.asarray(self.ignore, bool)
