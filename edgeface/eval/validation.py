"""Validation sets as recipes name them, each scored under its own protocol.

A recipe's ``val_data`` entry is a data source (see :func:`edgeface.data.sources.load_records`) plus five
optional keys: ``name`` (the metric prefix; default: the format), ``max_side`` (the detector's bound on
the longest image side, to keep validation cheap; default: the detector's), ``frame_side`` (each image is
first downscaled to fit a square of this side, as a low-resolution camera would deliver it; the detector then
applies its own settings, e.g. a shipped model's upscaling, and its boxes are scored on the full image),
``frame_size`` (``[w, h]``: each image first resized to exactly this, its aspect ratio not kept, as apps that squash
every frame to a square do; scored as ``frame_side`` is) and ``input_size`` (``[w, h]``: every image letterboxed to
this fixed network input, as an app running a model at one size does, ``Detector(input_size=...)``; no upscaling or
``max_side`` then).
WIDER FACE entries are scored with its easy / medium / hard protocol on the images present: val
(``{format: wider, root: ..., split: val}``) with the official keep lists (``eval_tools/ground_truth`` under
``root``), train (or a fold of it held out from training: ``folds: 5, fold: 0``) with keep lists by face height
fitted to val's (:func:`edgeface.eval.wider.ground_truth_from_records`); every other set with VOC AP at IoU 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, overload

from ..core.detections import Detections
from ..data.records import FaceRecord
from ..errors import OptionError
from ..options import check_frame_side, check_input_size

if TYPE_CHECKING:
    import os

    import numpy as np

    from ..backends.base import Backend


class SmallFrames:
    """Runs `detector` on each image resized (area averaging) as a camera or an app delivers it, and maps the boxes
    back to the image's own pixels: downscaled to fit a `side` x `side` square, as a camera of that resolution
    would see the scene, or resized to exactly `size` ``(w, h)``, its aspect ratio not kept, as apps that squash
    every frame to a square do."""

    def __init__(self, detector: Callable, side: Optional[int] = None, size: Optional[tuple[int, int]] = None):
        if (side is None) == (size is None):
            raise ValueError("SmallFrames takes a side or a size, one of them")
        self.detector, self.side, self.size = detector, side, size

    def __call__(self, image: np.ndarray) -> Detections:
        import cv2
        import numpy as np

        from ..core.letterbox import fit_within

        height, width = image.shape[:2]
        size = self.size or fit_within(width, height, self.side)
        small = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        found = self.detector(small)
        back = np.array([width / size[0], height / size[1]] * 2, np.float32)
        return Detections(found.boxes * back, found.scores)


@dataclass
class ValidationSet:
    """One ``val_data`` entry, ready to score: VOC AP over its records, or WIDER FACE's protocol over its images."""

    name: str
    max_side: Optional[int]  # None: the detector's default
    records: list[FaceRecord]  # VOC AP sets
    wider_ground_truth: Optional[list] = None  # WIDER val: official protocol over these images
    wider_images: Optional[Path] = None
    frame_side: Optional[int] = None  # None: the images as they are
    frame_size: Optional[tuple[int, int]] = None  # None: the images as they are (or as frame_side makes them)
    input_size: Optional[tuple[int, int]] = None  # None: each image at its own size

    def detector(self, model: str | os.PathLike | Backend) -> Callable[[np.ndarray], Detections]:
        """The detector validation runs `model` (a model file or an open backend) as: one pass per image, score
        threshold 0.05, pre- and post-processing on the CPU, bounded by this set's ``max_side`` when it has one,
        on frames downscaled to its ``frame_side`` or resized to its ``frame_size`` when it has one, letterboxed to
        its ``input_size`` when it has one."""
        from ..detector import Detector
        from ..spec import TestTimeSpec

        limits = (("max_side", self.max_side), ("input_size", self.input_size))
        bound: dict[str, Any] = {key: value for key, value in limits if value is not None}
        # gpu_pipeline=False: only the network on a GPU. Through the GPU pipeline each new image size would cost
        # memory, a forward pass checking its anchors, and a graph capture when it recurs, rarely repaid here
        detector = Detector(model, score_threshold=0.05, test_time=TestTimeSpec(), gpu_pipeline=False, **bound)
        if self.frame_side is None and self.frame_size is None:
            return detector
        return SmallFrames(detector, self.frame_side, self.frame_size)

    @property
    def metrics(self) -> list[str]:
        """The metric names this set reports, e.g. ``facemask_ap50`` or ``wider_easy``."""
        if self.wider_ground_truth is not None:
            from .wider import SETTINGS

            return [f"{self.name}_{s}" for s in SETTINGS]
        return [f"{self.name}_ap50"]


def validation_set(source: dict[str, Any]) -> ValidationSet:
    """The :class:`ValidationSet` of one recipe ``val_data`` entry."""
    from ..data.sources import load_records

    source = dict(source)
    name, max_side = str(source.pop("name", source.get("format"))), source.pop("max_side", None)
    frame_side = check_frame_side(source.pop("frame_side", None))
    frame_size, input_size = source.pop("frame_size", None), source.pop("input_size", None)
    frame_size = None if frame_size is None else check_input_size(frame_size, "frame_size")
    input_size = None if input_size is None else check_input_size(input_size)
    if frame_side is not None and frame_size is not None:
        raise OptionError("a validation set takes frame_side (downscaled, aspect kept) or frame_size (resized to "
                          "exactly [w, h]), not both")
    frames = partial(ValidationSet, frame_side=frame_side, frame_size=frame_size, input_size=input_size)
    if source.get("format") == "wider":
        from ..data.sources import fold_filter
        from ..data.wider import images_folder
        from .wider import ground_truth_from_records, load_ground_truth

        split = source.get("split", "train")
        images = images_folder(source["root"], split)
        if split != "val":
            return frames(name, max_side, [], ground_truth_from_records(load_records(source)), images)
        truth = load_ground_truth(Path(source["root"]) / "eval_tools" / "ground_truth", images)
        in_choice = fold_filter(source)
        if in_choice is not None:
            truth = [g for g in truth if in_choice(f"{g.event}/{g.name}.jpg")]
            if not truth:
                raise OptionError(f"WIDER val: no image of {images} left after the fold choice")
        return frames(name, max_side, [], truth, images)
    return frames(name, max_side, load_records(source))


@overload
def score(detector: Any, vset: ValidationSet, should_stop: None = ..., progress: bool = ...) -> dict[str, float]: ...


@overload
def score(detector: Any, vset: ValidationSet, should_stop: Optional[Callable[[], bool]] = ...,
          progress: bool = ...) -> Optional[dict[str, float]]: ...


def score(detector: Any, vset: ValidationSet, should_stop: Optional[Callable[[], bool]] = None,
          progress: bool = False) -> Optional[dict[str, float]]:
    """``{metric: value}`` of `detector` (an :class:`edgeface.Detector`) on `vset`; None when `should_stop`
    turned true before the last image."""
    if vset.wider_ground_truth is None:
        from .voc import evaluate_detector

        curve = evaluate_detector(detector, vset.records, progress=progress, should_stop=should_stop)
        return None if curve is None else {f"{vset.name}_ap50": curve.ap}
    from .wider import SETTINGS, as_predictions, detect_wider, evaluate_wider

    assert vset.wider_images is not None  # set with wider_ground_truth
    found = detect_wider(detector, vset.wider_ground_truth, vset.wider_images, progress, should_stop)
    if found is None:
        return None
    result = evaluate_wider(as_predictions(found), vset.wider_ground_truth)
    return {f"{vset.name}_{s}": result.ap[s] for s in SETTINGS}


def headline(scores: dict[str, float], sets: list[ValidationSet]) -> float:
    """One number to keep the best checkpoint by: the mean over sets of each set's mean metric."""
    means = [sum(scores[m] for m in s.metrics) / len(s.metrics) for s in sets]
    return sum(means) / len(means)
