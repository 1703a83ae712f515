"""`Detections`: the faces found in one image."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

from ..errors import OptionError
from ..options import check_margin
from .image import check_image


class Face(NamedTuple):
    """One face: ``box`` = (x1, y1, x2, y2) pixels of the input image, ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class Detections:
    """Faces in one image, best first.

    ``boxes``: ``(N, 4)`` float32 xyxy in the pixels of the image passed to ``detect``;
    ``scores``: ``(N,)`` float32 face probabilities.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        boxes, scores = np.asarray(self.boxes, np.float32), np.asarray(self.scores, np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (len(boxes),):
            raise ValueError(f"Detections takes (N, 4) boxes and (N,) scores, got {boxes.shape} and {scores.shape}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):  # (detectors drop such outputs)
            raise ValueError("Detections takes finite boxes and scores; a NaN or infinite value was given")
        object.__setattr__(self, "boxes", boxes)  # frozen: the arrays in their documented dtype
        object.__setattr__(self, "scores", scores)

    @classmethod
    def empty(cls) -> Detections:
        """No faces."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Face]:
        for box, score in zip(self.boxes.tolist(), self.scores.tolist()):
            yield Face(tuple(box), score)

    def __getitem__(self, index: Any) -> Detections:
        """Select faces with an index, slice or boolean mask, e.g. ``dets[dets.scores > 0.8]``."""
        return Detections(self.boxes[index].reshape(-1, 4), self.scores[index].reshape(-1))

    @property
    def xywh(self) -> np.ndarray:
        """``(N, 4)`` boxes as (x, y, width, height)."""
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out

    def regions(self, image_size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
        """``(N, 4)`` int64 pixel rectangles (x1, y1, x2, y2), ``x2`` and ``y2`` exclusive, of each box grown by
        `margin` of its width and height on every side and cut at the edges of an image of `image_size` =
        (width, height), so that ``image[y1:y2, x1:x2]`` holds the face; a box wholly outside gives an empty one."""
        width, height = image_size
        if not (isinstance(width, (int, np.integer)) and isinstance(height, (int, np.integer)) and width > 0
                and height > 0):
            raise OptionError(f"image_size is an image's (width, height) in pixels, got {image_size!r}")
        boxes = self.boxes.astype(np.float64)
        grow = (boxes[:, 2:] - boxes[:, :2]) * check_margin(margin)
        low, high = np.floor(boxes[:, :2] - grow).astype(np.int64), np.ceil(boxes[:, 2:] + grow).astype(np.int64)
        bound = np.array([width, height])
        low, high = np.clip(low, 0, bound), np.clip(high, 0, bound)
        return np.concatenate([low, np.maximum(high, low)], axis=1)

    def crops(self, image: np.ndarray, margin: float = 0.0) -> list[np.ndarray]:
        """Each face's pixels of `image` (the image the boxes are in), best first: :meth:`regions` cut out as
        views into `image` (``.copy()`` one to keep it apart), e.g. to save thumbnails or feed a face recogniser."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            check_image(image)  # an ImageError saying what an image is (gray and BGRA ones are cut alike)
        return [image[y1:y2, x1:x2] for x1, y1, x2, y2 in self.regions((image.shape[1], image.shape[0]),
                                                                       margin).tolist()]

    def draw(self, image: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0), thickness: int = 2,
             show_scores: bool = True, copy: bool = True) -> np.ndarray:
        """Draw boxes (and scores) on a BGR image; returns the drawn image (a copy unless ``copy=False``)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            check_image(image)  # an ImageError saying how to convert it (gray and BGRA canvases are drawn on)
        canvas = image.copy() if copy else image
        # edges beyond the canvas stay out of sight, and coordinates stay in the range OpenCV's int drawing takes
        margin = thickness + 1
        low, high = np.float32(-margin), np.array([canvas.shape[1], canvas.shape[0]] * 2, np.float32) + margin
        for (x1, y1, x2, y2), score in zip(np.clip(self.boxes, low, high).tolist(), self.scores.tolist()):
            p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
            cv2.rectangle(canvas, p1, p2, colour, thickness, cv2.LINE_AA)
            if show_scores:
                cv2.putText(canvas, f"{score:.2f}", (p1[0], max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.45, colour, 1, cv2.LINE_AA)
        return canvas

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready ``[{"box": [x1, y1, x2, y2], "score": s}, ...]`` with boxes rounded to 0.01 px."""
        return [{"box": [round(v, 2) for v in box], "score": round(score, 5)} for box, score in self]

    def to_json(self) -> str:
        """:meth:`to_list` as JSON text."""
        return json.dumps(self.to_list())

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> Detections:
        """The faces of :meth:`to_list`'s ``[{"box": [x1, y1, x2, y2], "score": s}, ...]`` (e.g. one image's
        ``"faces"`` in ``edgeface detect``'s detections.json), or ValueError saying what does not fit."""
        if not items:
            return cls.empty()
        try:
            boxes = np.array([item["box"] for item in items], np.float32).reshape(len(items), 4)
            scores = np.array([item["score"] for item in items], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Detections.from_list takes [{{'box': [x1, y1, x2, y2], 'score': s}}, ...]; "
                             f"{type(exc).__name__}: {exc}") from None
        return cls(boxes, scores)

    def __repr__(self) -> str:
        return f"Detections({len(self)} faces)"
