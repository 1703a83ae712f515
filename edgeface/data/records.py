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

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if self.ignore is None:
            self.ignore = np.zeros(len(self.boxes), bool)
