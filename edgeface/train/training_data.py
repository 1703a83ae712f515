"""What a recipe trains on: its ``train_data`` entries read, relabelled as asked (``redraw_boxes``,
``ignore_unlabelled``) and turned into augmented samples with their targets, and its teachers and starting weights."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from ..backends.torch_backend import TorchBackend
from ..core.files import atomic_write
from ..data.records import mark_unlabelled, redraw_boxes
from ..data.sources import load_records
from ..errors import OptionError, user_stacklevel
from ..models.registry import default_spec
from .config import TrainConfig
from .dataset import FaceTrainingSet
from .objectives import Objective, objective_for

if TYPE_CHECKING:
    from ..data.records import FaceRecord
    from ..detector import Detector


def training_objective(cfg: TrainConfig) -> Objective:
    """The recipe's model family's targets and loss at its crop size."""
    return objective_for(default_spec(cfg.model), cfg.input_size, neg_pos_ratio=cfg.neg_pos_ratio,
                         match_thresholds=tuple(cfg.match_thresholds))


def teacher_paths(cfg: TrainConfig) -> list[str]:
    """The recipe's teachers, in the order of the ``teacher`` index training samples carry: ``distill_from``
    first, then each ``train_data`` entry's own ``distill_from`` (checked here, before any teacher is loaded)."""
    paths = [cfg.distill_from] if cfg.distill_from else []
    for source in cfg.train_data:
        own = source.get("distill_from")
        if own is not None and not isinstance(own, str):
            raise OptionError(f"train_data distill_from must be a path, got {own!r}")
        if own and source.get("distill", True) is False:
            entry = {k: v for k, v in source.items() if k not in ("distill", "distill_from")}
            raise OptionError(f"train_data entry {entry} has both distill: false and distill_from: {own}")
        if own and own not in paths:
            paths.append(own)
    return paths


def recipe_weights(cfg: TrainConfig, path: str) -> torch.nn.Module:
    """The model at `path` (edgeface checkpoint or authors' .pth), which must be the recipe's model."""
    from ..models.checkpoint import load_any_checkpoint

    model, spec = load_any_checkpoint(path)
    if spec.name != cfg.model:
        raise ValueError(f"weights {path} are {spec.name!r}, the recipe trains {cfg.model!r}")
    return model


UNLABELLED_FACES = "unlabelled_faces.json"  # in the run folder: what the ignore_unlabelled models found


class UnlabelledFinder:
    """The record -> boxes function of a train_data entry's ``ignore_unlabelled: {model, score, min_side}``: the
    faces `model` finds at `score` or more (default 0.5), each photo run upscaled to at least `min_side` pixels
    (default 640: the shipped models' setting, which finds small photos' small faces). `model` is whatever
    :class:`~edgeface.Detector` opens (a shipped model's name, ``.onnx``: 1.7x faster on CPUs than the same
    checkpoint, ``.pt``) or an EXTD authors' ``.pth``.

    With a `cache` file (the run folder's ``unlabelled_faces.json``), the faces found are kept there under the
    model file's digest and settings and each image's digest, so that a resumed run reuses them instead of running
    the model again (:meth:`look_at` saves them, also after an interrupted pass), also for images moved or on
    another machine, while an image edited in place is looked at again. The model opens on the first image the cache
    does not hold.
    """

    def __init__(self, options: Any, cache: Optional[Path] = None):
        if not isinstance(options, dict) or "model" not in options or set(options) - {"model", "score", "min_side"}:
            raise OptionError("train_data ignore_unlabelled takes a mapping with model (a shipped model's name, an "
                              ".onnx, a checkpoint or authors' .pth) and optionally score and min_side; "
                              f"got {options!r}")
        from ..weights import shipped_model

        self.model = str(shipped_model(options["model"]) or options["model"])
        if not os.path.isfile(self.model):
            raise OptionError(f"train_data ignore_unlabelled: no such model file {self.model}")
        self.score, self.min_side = options.get("score", 0.5), options.get("min_side", 640)
        self.cache = cache
        self.key = json.dumps({"model_sha256": file_sha256(self.model), "score": self.score,
                               "min_side": self.min_side}, sort_keys=True)
        self.saved = self._read_cache()
        self.found: dict[str, list] = self.saved.setdefault(self.key, {})
        self.detector: Any = None  # a Detector, opened at the first image it must look at
        self.digests: dict[tuple, str] = {}

    def _read_cache(self) -> dict:
        if self.cache is None or not self.cache.exists():
            return {}
        try:
            saved = json.loads(self.cache.read_text())
        except (OSError, ValueError) as exc:
            warnings.warn(f"{self.cache} is unreadable ({exc}): looking for unlabelled faces again",
                          stacklevel=user_stacklevel())
            return {}
        return saved if isinstance(saved, dict) else {}

    def _open(self) -> Detector:
        from ..backends import CHECKPOINT_SUFFIXES
        from ..detector import Detector

        model: str | TorchBackend = self.model
        if self.model.lower().endswith(CHECKPOINT_SUFFIXES):  # authors' .pth files too
            from ..models.checkpoint import load_any_checkpoint

            # BatchNorm folded and channels-last, as a checkpoint file runs on the CPU (3x faster than as trained)
            model = TorchBackend.from_model(*load_any_checkpoint(self.model), fold_bn=True, channels_last=True)
        return Detector(model, score_threshold=self.score, min_side=self.min_side)

    def digest(self, path: str) -> str:
        """The image file's SHA-256, read once per finder while the file keeps its size and modification time."""
        stat = os.stat(path)
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self.digests:
            self.digests[key] = file_sha256(path)
        return self.digests[key]

    def __call__(self, record: FaceRecord) -> np.ndarray:
        image = self.digest(record.image_path)
        if image not in self.found:
            if self.detector is None:
                self.detector = self._open()
            self.found[image] = self.detector(record.image_path).boxes.tolist()
        return np.asarray(self.found[image], np.float32).reshape(-1, 4)

    def look_at(self, records: list, progress: bool = False) -> None:
        """Find the faces in `records` that the cache does not hold (a progress bar with `progress`), and save
        them. In a distributed run each rank looks at its share of the images, and then every rank holds what all
        found (rank 0 saves it)."""
        from tqdm import tqdm

        distributed = dist.is_available() and dist.is_initialized()
        rank, ranks = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        try:
            for record in tqdm(records[rank::ranks], desc="finding unlabelled faces", unit="image",
                               disable=not progress):
                self(record)
            if distributed:
                shares: list = [None] * ranks
                dist.all_gather_object(shares, self.found)
                for share in shares:
                    self.found.update(share)
        finally:  # also when cut short: what was found stays
            if rank == 0:
                self.save()

    def save(self) -> None:
        """Write the cache file (atomically: an interrupted write leaves the previous one)."""
        if self.cache is not None and self.found:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.cache) as tmp:
                Path(tmp).write_text(json.dumps(self.saved))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def training_set(cfg: TrainConfig, objective: Objective, progress: bool = False,
                 unlabelled_cache: Optional[Path] = None) -> FaceTrainingSet:
    """The recipe's training images, augmented and turned into `objective`'s targets, each with the index of its
    teacher in :func:`teacher_paths` (-1: not distilled). `progress`: a progress bar while an entry's
    ``ignore_unlabelled`` model runs over its images; `unlabelled_cache`: the file that keeps what it found
    (:class:`UnlabelledFinder`)."""
    if not cfg.train_data:
        raise OptionError("the recipe has no train_data: list its data sources (see edgeface/train/recipes/)")
    paths = teacher_paths(cfg)
    augment_config = cfg.augment_config()
    records, teachers, labelled, configs = [], [], [], []
    for source in cfg.train_data:
        source = dict(source)
        distill, labels = source.pop("distill", True), source.pop("labels", True)
        own = source.pop("distill_from", None)
        redraw = source.pop("redraw_boxes", None)
        unlabelled = source.pop("ignore_unlabelled", None)
        own_config = augment_config
        if "data_anchor_sampling_prob" in source:  # this entry's own share of data-anchor-sampling crops
            own_config = replace(augment_config, data_anchor_sampling_prob=source.pop("data_anchor_sampling_prob"))
        for key, value in (("distill", distill), ("labels", labels)):
            if not isinstance(value, bool):
                raise OptionError(f"train_data {key} must be true or false, got {value!r}")
        teacher = (own or cfg.distill_from) if distill else None
        if not labels and not teacher:
            raise OptionError(f"train_data entry {source} has labels: false and no teacher: its images would "
                              "teach nothing (give distill_from)")
        source_records = load_records(source)
        if redraw is not None:
            if not isinstance(redraw, dict) or set(redraw) - {"dx", "dy", "width", "height"}:
                raise OptionError(f"train_data redraw_boxes takes a mapping of dx, dy, width, height; got {redraw!r}")
            source_records = redraw_boxes(source_records, **redraw)
        if unlabelled is not None:
            finder = UnlabelledFinder(unlabelled, unlabelled_cache)
            finder.look_at(source_records, progress)
            source_records = mark_unlabelled(source_records, finder)
        records += source_records
        teachers += [paths.index(teacher) if teacher else -1] * len(source_records)
        labelled += [labels] * len(source_records)
        configs += [own_config] * len(source_records)
    return FaceTrainingSet(records, objective, augment_config, cfg.seed, teachers, labelled, configs)
