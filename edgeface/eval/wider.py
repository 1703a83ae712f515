"""The WIDER FACE evaluation protocol, written from its definition (the official ``eval_tools``).

- Ground truth: ``wider_face_val.mat`` (events, files, boxes ``x y w h``) and the keep lists of each
  setting in ``wider_{easy,medium,hard}_val.mat`` (1-based indices of the faces that count). Labelled images
  without official keep lists (WIDER train) get lists by face height, fitted to val's (ground_truth_from_records).
- Scores are normalised over the whole submission to [0, 1] (``(s - min) / (max - min)``).
- Per image, detections in descending score: a detection's best ground-truth face (pixel-inclusive
  IoU) at IoU >= 0.5 is a hit; a hit on a face outside the keep list is neither matched nor counted
  (that detection is dropped from the proposals); a face counts once.
- At 1000 thresholds ``1 - (t + 1) / 1000`` the kept proposals and recalled faces are summed over the
  dataset; precision and recall (over the keep-list faces) give a VOC-style AP.
- Beside the official easy / medium / hard, ``all`` counts every labelled face (every box with a width and a
  height: WIDER marks an image without faces with a 0 x 0 one): the faces hard leaves out, nearly all under 11
  px, and the few labelled invalid, must be found too.

Submissions use the official layout: a folder per event, one ``<file>.txt`` per image holding the file
name, the count, then ``x y w h score`` lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, overload

import numpy as np

from ..core.detections import Detections
from ..data.records import annotation_file
from .voc import detect_or_miss, interpolated_ap, iou_matrix

OFFICIAL_SETTINGS = ("easy", "medium", "hard")  # the settings with keep lists in eval_tools/ground_truth
SETTINGS = (*OFFICIAL_SETTINGS, "all")
THRESHOLDS = 1000
# WIDER FACE's per-face labels (``<name>_label_list`` in the .mat) and what each value (0, 1, ...) means
ATTRIBUTES = {"blur": ("clear", "normal", "heavy"), "expression": ("typical", "exaggerated"),
              "illumination": ("normal", "extreme"), "occlusion": ("none", "partial", "heavy"),
              "pose": ("typical", "atypical"), "invalid": ("valid", "invalid")}


@dataclass
class WiderImage:
    """One WIDER FACE image's official ground truth: its faces and, per setting, which of them count."""

    event: str
    name: str  # file stem, e.g. "0_Parade_marchingband_1_465"
    boxes: np.ndarray  # (M, 4) x y w h
    keep: dict[str, np.ndarray]  # official setting -> 0-based indices of the faces that count
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # ATTRIBUTES name -> (M,) label per face

    def counted(self, setting: str) -> np.ndarray:
        """0-based indices of the faces that count in `setting` (one of SETTINGS)."""
        if setting == "all":
            return np.flatnonzero((self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0))
        return self.keep[setting]


def load_ground_truth(gt_dir: str | os.PathLike, images_root: str | os.PathLike | None = None) -> list[WiderImage]:
    """The official ground truth from ``eval_tools/ground_truth/`` (needs scipy).

    With `images_root` (``WIDER_val/images``), only the images present under it: a partial copy of WIDER val is
    scored on what it has (the protocol is per image, so the subset's AP is the protocol applied to the subset)."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    needed = ["wider_face_val.mat"] + [f"wider_{s}_val.mat" for s in OFFICIAL_SETTINGS]
    missing = [name for name in needed if not (gt_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{gt_dir} is not WIDER FACE's eval_tools/ground_truth folder: it has no "
                                f"{', '.join(missing)}")
    full = loadmat(gt_dir / "wider_face_val.mat")
    keeps = {s: loadmat(gt_dir / f"wider_{s}_val.mat")["gt_list"] for s in OFFICIAL_SETTINGS}
    images = []
    for e, event in enumerate(full["event_list"][:, 0]):
        event_name = str(event[0])
        for i, file in enumerate(full["file_list"][e, 0][:, 0]):
            boxes = np.asarray(full["face_bbx_list"][e, 0][i, 0], np.float64).reshape(-1, 4)
            keep = {s: np.asarray(keeps[s][e, 0][i, 0], np.int64).reshape(-1) - 1 for s in OFFICIAL_SETTINGS}
            attributes = {a: np.asarray(full[f"{a}_label_list"][e, 0][i, 0], np.int64).reshape(-1)
                          for a in ATTRIBUTES if f"{a}_label_list" in full}
            images.append(WiderImage(event_name, str(file[0]), boxes, keep, attributes))
    if images_root is not None:
        images = [g for g in images if (Path(images_root) / g.event / f"{g.name}.jpg").exists()]
        if not images:
            raise FileNotFoundError(f"no WIDER val image of the ground truth is under {images_root}")
    return images


# A valid face counts in a setting when it is taller than this (pixels), fitted to the official keep lists: on
# the 39,708 faces of WIDER FACE val the official lists hold every such face and this rule agrees with them on
# 99.8% (easy), 99.4% (medium) and 98.0% (hard) of the faces (the lists come from detection rates, which follow
# face size; the rest they keep are smaller faces).
SETTING_TALLER_THAN = {"easy": 50, "medium": 30, "hard": 10}


def ground_truth_from_records(records: list) -> list[WiderImage]:
    """WIDER ground truth for labelled images that have no official keep lists (WIDER train, or a fold of it held
    out for validation): each setting counts the valid faces taller than ``SETTING_TALLER_THAN[setting]`` pixels.
    `records` are :func:`edgeface.data.wider.read_wider` records (names ``<event>/<file>.jpg``)."""
    from ..data.wider import ATTRIBUTES as COLUMNS

    images = []
    for record in records:
        event, _, file = record.name.partition("/")
        boxes = np.concatenate([record.boxes[:, :2], record.boxes[:, 2:] - record.boxes[:, :2]], axis=1)
        valid = ~record.ignore
        keep = {s: np.flatnonzero(valid & (boxes[:, 3] > h)) for s, h in SETTING_TALLER_THAN.items()}
        attributes = ({} if record.attributes is None else
                      {name: record.attributes[:, k].astype(np.int64) for k, name in enumerate(COLUMNS)})
        images.append(WiderImage(event, Path(file).stem, boxes.astype(np.float64), keep, attributes))
    return images


def write_submission(folder: str | os.PathLike, detections: Mapping[str, Detections]) -> None:
    """Write ``{"<event>/<stem>": Detections}`` in the official layout."""
    folder = Path(folder)
    for key, dets in detections.items():
        event, stem = key.split("/")
        (folder / event).mkdir(parents=True, exist_ok=True)
        lines = [stem, str(len(dets))] + [f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {s:.5f}"
                                          for (x, y, w, h), s in zip(dets.xywh.tolist(), dets.scores.tolist())]
        (folder / event / f"{stem}.txt").write_text("\n".join(lines) + "\n")


@overload
def detect_wider(detector: Any, ground_truth: list[WiderImage], images_root: str | os.PathLike,
                 progress: bool = ..., should_stop: None = ...) -> dict[str, Detections]: ...


@overload
def detect_wider(detector: Any, ground_truth: list[WiderImage], images_root: str | os.PathLike,
                 progress: bool = ..., should_stop: Optional[Callable[[], bool]] = ...,
                 ) -> Optional[dict[str, Detections]]: ...


def detect_wider(detector: Any, ground_truth: list[WiderImage], images_root: str | os.PathLike, progress: bool = True,
                 should_stop: Optional[Callable[[], bool]] = None) -> Optional[dict[str, Detections]]:
    """Run `detector` over the WIDER val images (``WIDER_val/images/<event>/<file>.jpg``) of the ground truth.
    Returns None when `should_stop` turns true before the last image (checked before each one)."""
    from tqdm import tqdm

    found = {}
    for image in tqdm(ground_truth, desc="WIDER val", unit="img", disable=not progress):
        if should_stop is not None and should_stop():
            return None
        path = Path(images_root) / image.event / f"{image.name}.jpg"
        found[f"{image.event}/{image.name}"] = detect_or_miss(detector, path)
    return found


def as_predictions(detections: Mapping[str, Detections]) -> dict[str, np.ndarray]:
    """``{"<event>/<stem>": (N, 5) x y w h score}``, as :func:`read_submission` gives, from detections in memory."""
    return {key: np.concatenate([d.xywh, d.scores[:, None]], axis=1).astype(np.float64)
            for key, d in detections.items()}


def read_submission(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"<event>/<stem>": (N, 5) x y w h score}`` from a folder in the official layout (an empty file: no
    detections). A file whose second line is not its count of rows is an AnnotationError: the official tools read
    that many rows, so what it holds is ambiguous."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no submission folder {folder}")
    predictions = {}
    for txt in sorted(Path(folder).glob("*/*.txt")):
        with annotation_file(txt, "WIDER FACE submission") as position:
            lines = [(n, line.split()) for n, line in enumerate(txt.read_text().splitlines(), 1) if line.strip()]
            rows = []
            for number, fields in lines[2:]:
                position.where = f"line {number}"
                if len(fields) < 5:
                    raise ValueError("a detection is five numbers: x y w h score")
                rows.append([float(value) for value in fields[:5]])
                if not np.isfinite(rows[-1]).all():  # one NaN score would turn the whole normalisation into NaN
                    raise ValueError(f"a detection with a value that is not a finite number: {' '.join(fields[:5])}")
            position.where = "its second line (the count of detections)"
            count = int(lines[1][1][0]) if lines else 0
            if count != len(rows):
                raise ValueError(f"it says {count} detections and holds {len(rows)}")
        predictions[f"{txt.parent.name}/{txt.stem}"] = np.asarray(rows, np.float64).reshape(-1, 5)
    return predictions


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)


def _image_pr(pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``(THRESHOLDS, 2)``: kept proposals and recalled faces of one image at each threshold."""
    pred = pred[np.argsort(-pred[:, 4], kind="stable")]
    overlaps = iou_matrix(_xyxy(pred), _xyxy(gt), inclusive=True)
    recalled = np.zeros(len(gt))  # 1 found, -1 found but not counted
    proposal = np.ones(len(pred))
    pred_recall = np.zeros(len(pred))
    for h in range(len(pred)):
        best = int(np.argmax(overlaps[h]))
        if overlaps[h, best] >= iou_threshold:
            if not counted[best]:
                recalled[best], proposal[h] = -1, -1
            elif recalled[best] == 0:
                recalled[best] = 1
        pred_recall[h] = np.count_nonzero(recalled == 1)
    thresholds = 1 - np.arange(1, THRESHOLDS + 1) / THRESHOLDS
    n_above = np.searchsorted(-pred[:, 4], -thresholds, side="right")  # scores are descending
    kept = np.concatenate([[0], np.cumsum(proposal == 1)])
    recalled_at = np.concatenate([[0], pred_recall])
    return np.stack([kept[n_above], recalled_at[n_above]], axis=1)


@dataclass
class WiderResult:
    """AP and the precision-recall curve of each WIDER FACE setting (easy, medium, hard, all)."""

    ap: dict[str, float]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]


def image_curves(predictions: Mapping[str, np.ndarray], ground_truth: list[WiderImage],
                 iou_threshold: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each image's share of the protocol's sums, per setting: ``(curves, faces)``, ``curves`` ``(images,
    THRESHOLDS, 2)`` kept proposals and recalled faces at each threshold, ``faces`` ``(images,)`` the faces that
    count (ground-truth order). Summed over the images they give :func:`evaluate_wider`'s curves; resampled, a
    confidence interval (:func:`paired_bootstrap`)."""
    scores = np.concatenate([p[:, 4] for p in predictions.values() if len(p)] + [np.zeros(0)])
    low, span = (scores.min(), max(scores.max() - scores.min(), 1e-12)) if len(scores) else (0.0, 1.0)
    normalised = {k: np.concatenate([p[:, :4], (p[:, 4:5] - low) / span], axis=1) for k, p in predictions.items()}
    result = {}
    for setting in SETTINGS:
        curves = np.zeros((len(ground_truth), THRESHOLDS, 2), np.int32)  # counts: int32 keeps 3,226 images in 77 MB
        faces_counted = [image.counted(setting) for image in ground_truth]
        faces = np.array([len(indices) for indices in faces_counted], np.int64)
        for i, (image, indices) in enumerate(zip(ground_truth, faces_counted)):
            pred = normalised.get(f"{image.event}/{image.name}")
            if pred is None or not len(pred) or not len(image.boxes):
                continue
            counted = np.zeros(len(image.boxes), bool)
            counted[indices] = True
            curves[i] = _image_pr(pred, image.boxes, counted, iou_threshold)
        result[setting] = (curves, faces)
    return result


def _curve_ap(curve: np.ndarray, faces: float) -> tuple[float, np.ndarray, np.ndarray]:
    """AP, precision and recall of a dataset's summed ``(THRESHOLDS, 2)`` curve over `faces` counted faces."""
    precision = np.divide(curve[:, 1], curve[:, 0], out=np.zeros(THRESHOLDS), where=curve[:, 0] > 0)
    recall = curve[:, 1] / max(faces, 1)
    return interpolated_ap(recall, precision), precision, recall


def evaluate_wider(predictions: Mapping[str, np.ndarray], ground_truth: list[WiderImage],
                   iou_threshold: float = 0.5) -> WiderResult:
    """AP on easy / medium / hard / all of ``{"<event>/<stem>": (N, 5) x y w h score}`` predictions."""
    return evaluate_curves(image_curves(predictions, ground_truth, iou_threshold))


def evaluate_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> WiderResult:
    """:func:`evaluate_wider`'s result from the images' :func:`image_curves`."""
    result = WiderResult({}, {}, {})
    for setting, (per_image, faces) in curves.items():
        ap, precision, recall = _curve_ap(per_image.sum(axis=0, dtype=np.float64), faces.sum())
        result.ap[setting], result.precision[setting], result.recall[setting] = ap, precision, recall
    return result


@dataclass
class ApDifference:
    """How a second model's AP differs from a first's on the same images: the difference on the whole set, the
    central `level` interval of the difference over image resamples (paired bootstrap), and the share of
    resamples in which the second model is at least as good."""

    difference: float
    low: float
    high: float
    share_not_worse: float
    level: float


def paired_bootstrap(first: Mapping[str, tuple[np.ndarray, np.ndarray]],
                     second: Mapping[str, tuple[np.ndarray, np.ndarray]], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, ApDifference]:
    """Per setting, the second model's AP minus the first's (both :func:`image_curves` on the same ground truth),
    with a percentile interval from `resamples` draws of the images with replacement, the same draws for both
    models. A difference whose interval spans 0 is one these images cannot tell from chance: which faces and
    images happen to be in the set. (Scores stay normalised as on the whole set; with no resamples the interval is
    the difference itself.)"""
    images = len(next(iter(first.values()))[1])
    if images == 0 or any(len(second[s][1]) != images for s in first):
        raise ValueError(f"paired_bootstrap needs both models' curves over the same images, at least one; got "
                         f"{images} and {[len(second[s][1]) for s in first]}")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(images, np.full(images, 1 / images), size=resamples)
    weights = np.vstack([np.ones(images), draws])  # row 0: the images as they are, then each draw's counts
    result = {}
    for setting in first:
        aps = []
        for curves, faces in (first[setting], second[setting]):
            sums = weights @ curves.reshape(images, -1).astype(np.float64)
            aps.append(np.array([_curve_ap(curve.reshape(THRESHOLDS, 2), total)[0]
                                 for curve, total in zip(sums, weights @ faces)]))
        whole, resampled = aps[1][0] - aps[0][0], aps[1][1:] - aps[0][1:]
        low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2]) if resamples else (whole, whole)
        result[setting] = ApDifference(float(whole), float(low), float(high),
                                       float(np.mean(resampled >= 0)) if resamples else float(whole >= 0), level)
    return result


def best_match_scores(predictions: Mapping[str, np.ndarray], image: WiderImage,
                      iou_threshold: float = 0.5) -> np.ndarray:
    """``(M,)``: for each face of `image`, the highest raw score among the detections that overlap it at
    `iou_threshold` or more (pixel-inclusive IoU), 0 where none does. A face counts as found at score t when
    this is >= t, whatever else the detection overlaps: a per-face view of recall, for finding which faces
    one model misses and another finds (the AP protocol above assigns each detection to one face only)."""
    pred = predictions.get(f"{image.event}/{image.name}", np.zeros((0, 5)))
    if not len(pred) or not len(image.boxes):
        return np.zeros(len(image.boxes))
    overlaps = iou_matrix(_xyxy(pred), _xyxy(image.boxes), inclusive=True)
    return np.where(overlaps >= iou_threshold, pred[:, 4:5], 0.0).max(axis=0)


def stray_scores(predictions: Mapping[str, np.ndarray], image: WiderImage, iou_threshold: float = 0.5) -> np.ndarray:
    """The raw scores of `image`'s detections that overlap no labelled face at `iou_threshold` or more
    (pixel-inclusive IoU; every labelled face counts here, those outside the keep lists too, as the protocol
    never penalises a box on one): confident ones are the false boxes a user sees. WIDER leaves some faces in
    crowds unlabelled, so these are an upper bound, for comparing models on the same images."""
    pred = predictions.get(f"{image.event}/{image.name}", np.zeros((0, 5)))
    if not len(pred) or not len(image.boxes):
        return pred[:, 4].copy()
    overlaps = iou_matrix(_xyxy(pred), _xyxy(image.boxes), inclusive=True)
    return pred[overlaps.max(axis=1) < iou_threshold, 4]
