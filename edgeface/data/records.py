"""`FaceRecord`: one annotated image, whatever format it was read from."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.boxes import box_iou
from ..core.image import read_image
from ..errors import AnnotationError, EdgefaceError, ImageWarning, OptionError, user_stacklevel


@dataclass
class FaceRecord:
    """An image path and its faces: ``boxes`` ``(N, 4)`` float32 xyxy pixels; ``ignore`` ``(N,)`` bool marks
    faces that are neither matched nor counted in evaluation (dlib's ``ignore``, WIDER's invalid, and any box of no
    width or height, which no detector can match). A coordinate that is not a finite number is a ValueError."""

    image_path: str
    boxes: np.ndarray
    ignore: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: no face ignored
    width: int = 0
    height: int = 0
    name: str = ""  # the image's name in its dataset (e.g. WIDER's "<event>/<file>.jpg")
    attributes: np.ndarray | None = None  # per-face dataset flags, e.g. WIDER's (N, 6) attributes
    ellipses: np.ndarray | None = None  # FDDB's (N, 5) face ellipses (major, minor, angle, cx, cy)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if not np.isfinite(self.boxes).all():
            raise ValueError(f"a face box with a coordinate that is not a finite number: "
                             f"{self.boxes[~np.isfinite(self.boxes).all(axis=1)][0].tolist()}")
        empty = (self.boxes[:, 2] <= self.boxes[:, 0]) | (self.boxes[:, 3] <= self.boxes[:, 1])
        self.ignore = empty | (False if self.ignore is None else np.asarray(self.ignore, bool))


def read_record_image(record: FaceRecord) -> np.ndarray:
    """`record`'s image as :func:`~edgeface.core.image.read_image` reads it, with an
    :class:`~edgeface.errors.ImageWarning` when the record gives the image's size (VOC's ``<size>``) and the image
    reads at another: its boxes were drawn on other pixels, most often a photo stored sideways whose EXIF
    orientation read_image applies (as viewers do) and the labelling tool did not."""
    image = read_image(record.image_path)
    height, width = image.shape[:2]
    if record.width > 0 and record.height > 0 and (width, height) != (record.width, record.height):
        why = (" once turned upright by its EXIF orientation: the boxes were most likely drawn on the stored, "
               "unturned pixels; label the upright image" if (width, height) == (record.height, record.width)
               else ": its boxes may not fit the image; check the annotation")
        warnings.warn(ImageWarning(f"{record.image_path}: the annotation gives {record.width}x{record.height} px, "
                                   f"the image reads {width}x{height} px{why}"), stacklevel=user_stacklevel())
    return image


def redraw_boxes(records: list[FaceRecord], dx: float = 0.0, dy: float = 0.0, width: float = 1.0,
                 height: float = 1.0) -> list[FaceRecord]:
    """`records` with every box drawn to another dataset's convention: its centre moved by `dx` box widths and
    `dy` box heights (negative: left / up), its width and height scaled by `width` and `height`.

    Datasets draw faces differently (the face dataset's boxes sit about a tenth of a face height below WIDER
    FACE's and are shorter); training on two at once teaches a compromise between them. The numbers come from
    measuring one model against both sets of labels (``edgeface eval`` prints where its boxes sit relative to
    the labels).
    """
    for name, value in (("dx", dx), ("dy", dy), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise OptionError(f"redraw_boxes {name} must be a number, got {value!r}")
    if width <= 0 or height <= 0:
        raise OptionError(f"redraw_boxes width and height must be > 0, got {width} and {height}")
    out = []
    for record in records:
        size = record.boxes[:, 2:] - record.boxes[:, :2]
        centre = (record.boxes[:, :2] + record.boxes[:, 2:]) / 2 + size * np.array([dx, dy], np.float32)
        half = size * np.array([width, height], np.float32) / 2
        out.append(replace(record, boxes=np.concatenate([centre - half, centre + half], axis=1)))
    return out


UNLABELLED_MAX_IOU = 0.3  # a found face overlapping a label less than this is another face (the datasets' boxes
# of one face overlap by 0.6 or more even where their conventions differ)


def mark_unlabelled(records: Iterable[FaceRecord], find_faces: Callable[[FaceRecord], np.ndarray],
                    ) -> list[FaceRecord]:
    """`records` with the faces that `find_faces` (a record -> ``(K, 4)`` xyxy boxes, e.g. a trusted model's
    detections) finds in an image but no label covers (IoU under UNLABELLED_MAX_IOU with every labelled box, ignored
    ones included) added as ignored boxes: neither faces nor background in training.

    Datasets leave faces unlabelled: the face dataset's crowds have blurred, turned and half-hidden faces in the
    background that nobody boxed, which training would otherwise teach as background.
    """
    out = []
    for record in records:
        found = np.asarray(find_faces(record), np.float32).reshape(-1, 4)
        if len(found) and len(record.boxes):
            found = found[box_iou(found, record.boxes).max(axis=1) < UNLABELLED_MAX_IOU]
        out.append(replace(record, boxes=np.concatenate([record.boxes, found]),
                           ignore=np.concatenate([record.ignore, np.ones(len(found), bool)])))
    return out


def required(value: str | None, what: str) -> str:
    """`value`, an XML element's text or attribute, else a ValueError saying `what` is missing (inside
    :func:`annotation_file`, an :class:`AnnotationError`)."""
    if value is None:
        raise ValueError(f"missing {what}")
    return value


@dataclass
class ReadPosition:
    """Where a reader is in an annotation file (``"line 12"``, ``"image a.jpg"``), for its errors."""

    where: str = ""


@contextmanager
def annotation_file(path: str | os.PathLike, kind: str) -> Iterator[ReadPosition]:
    """Parse `path`, a `kind` annotation file, inside this block: what a truncated or malformed file makes the
    parsing raise becomes an :class:`AnnotationError` naming the file and the position the reader last set; a
    missing file is a FileNotFoundError naming it."""
    if not os.path.isfile(path):
        state = "is a folder" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"{os.fspath(path)} {state}; expected the {kind} file there")
    position = ReadPosition()
    try:
        yield position
    except EdgefaceError:
        raise
    except (ValueError, IndexError, AttributeError, TypeError, SyntaxError) as exc:  # ET.ParseError: SyntaxError
        at = f" at {position.where}" if position.where else ""
        raise AnnotationError(f"{os.fspath(path)} is not a valid {kind} file{at}: {exc or type(exc).__name__}; "
                              "is it complete (not truncated) and in the official format?") from exc
