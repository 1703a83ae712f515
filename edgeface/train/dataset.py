"""Training data: records -> augmented, normalised inputs with their anchor targets; and a sampler
whose order is a pure function of (seed, epoch, rank), so training resumes exactly where it stopped."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..core.preprocess import normalise
from ..data.augment import AugmentConfig, augment_sample
from ..data.records import FaceRecord, read_record_image
from ..errors import ImageError, ImageWarning, OptionError
from .objectives import Objective

if TYPE_CHECKING:
    from .mining import HardImageMiner

Sample = tuple[torch.Tensor, dict[str, torch.Tensor], int]  # a training input, its anchor targets, its index


class FaceTrainingSet(Dataset):
    """Item ``epoch * len(records) + i`` is record i augmented with the RNG seeded by (seed, epoch, i):
    the same sample whatever the worker, the batch or an interruption in between. Targets come from the
    model family's :class:`~edgeface.train.objectives.Objective`, plus ``teacher``: the index of the teacher
    whose outputs on the image are to be kept (`teachers`, one per record, -1 for none; default all 0). Records
    whose `labelled` flag is false have every anchor labelled -1 (ignored): their boxes are not learned, so the
    image teaches only through its teacher (default: all labelled). `augment_configs` gives a record its own
    augmentation (one per record; default: `augment_config` for all), e.g. another data-anchor-sampling share.
    A record's ignored boxes (WIDER's invalid faces, dlib's ignore boxes, faces found but not labelled) are neither
    faces nor background: the anchors on them are ignored, like those on faces too small to learn."""

    def __init__(self, records: Sequence[FaceRecord], objective: Objective, augment_config: AugmentConfig,
                 seed: int = 0, teachers: Optional[Sequence[int]] = None,
                 labelled: Optional[Sequence[bool]] = None,
                 augment_configs: Optional[Sequence[AugmentConfig]] = None):
        for name, flags in (("teacher indices", teachers), ("labelled flags", labelled),
                            ("augmentation configs", augment_configs)):
            if flags is not None and len(flags) != len(records):
                raise ValueError(f"{len(flags)} {name} for {len(records)} records")
        self.augment_configs = [augment_config] * len(records) if augment_configs is None else list(augment_configs)
        wrong = [c.size for c in [augment_config, *self.augment_configs] if c.size != objective.size]
        if wrong:
            raise ValueError(f"augmentation size {wrong[0]} != objective size {objective.size}")
        self.records = list(records)
        self.teachers = np.zeros(len(self.records), np.int64) if teachers is None else np.asarray(teachers, np.int64)
        self.labelled = np.ones(len(self.records), bool) if labelled is None else np.asarray(labelled, bool)
        self.objective = objective
        self.augment_config = augment_config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> Sample:
        return self.sample(key)

    def sample(self, key: int, stage_done: Callable[[str], None] = lambda stage: None) -> Sample:
        """Item `key`; `stage_done` is called after each stage ("decode", "augment", "targets", "normalise"),
        for timing them (``python -m benchmarks data-loading``)."""
        epoch, index = divmod(int(key), len(self.records))
        index, image = self._readable(index)
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        stage_done("decode")
        image, faces, ignored = augment_sample(image, record.boxes[~record.ignore], rng, self.augment_configs[index],
                                               ignored=record.boxes[record.ignore])
        stage_done("augment")
        targets = {k: torch.as_tensor(v) for k, v in self.objective.targets(faces, ignored).items()}
        if not self.labelled[index]:
            targets["labels"] = torch.full_like(targets["labels"], -1)
        targets["teacher"] = torch.tensor(self.teachers[index])
        stage_done("targets")
        x = torch.from_numpy(normalise(image, self.objective.spec.input))
        stage_done("normalise")
        return x, targets, index

    def _readable(self, index: int) -> tuple[int, np.ndarray]:
        """Record `index`'s image, or, when it cannot be read (a corrupt or vanished file), with a warning, the
        next readable record's: one bad file among thousands costs one sample, not the run."""
        for step in range(len(self.records)):
            at = (index + step) % len(self.records)
            try:
                return at, read_record_image(self.records[at])
            except ImageError as exc:
                warnings.warn(ImageWarning(f"training image skipped (the next one is used in its place): {exc}"),
                              stacklevel=2)
        raise ImageError(f"none of the {len(self.records)} training images can be read")


class ResumableSampler(Sampler[int]):
    """Shuffled keys ``epoch * n + i`` for this rank, endless, starting at a given optimizer step.

    Every epoch is a permutation seeded by (seed, epoch), cut to a whole number of steps of
    ``samples_per_step`` per rank, and dealt to ranks round-robin. With a hard image miner, the
    images it skips leave the permutation and the next permutations fill the epoch back to length,
    so epochs keep their number of steps; exact resume then holds up to the flags, which a resumed
    run takes from its checkpoint.
    """

    def __init__(self, n: int, samples_per_step: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 miner: HardImageMiner | None = None):
        self.n, self.samples_per_step, self.seed, self.miner = n, samples_per_step, seed, miner
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // (samples_per_step * world_size)
        if self.steps_per_epoch == 0:
            raise OptionError(f"{n} training images are fewer than one step ({samples_per_step} x {world_size} "
                              "ranks): lower batch_size or accumulate, or add images")
        self.start_step = 0

    def start_at(self, step: int) -> None:
        self.start_step = step

    def epoch_order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if self.miner is None:
            return order
        need, k = len(order), 0
        parts: list[np.ndarray] = []
        while sum(len(p) for p in parts) < need:
            parts.append(self.miner.keep(np.random.default_rng([self.seed, epoch, k]).permutation(self.n), epoch))
            k += 1
            if k > 64 and not sum(len(p) for p in parts):  # everything skipped: nothing is hard any more
                return order
        return np.concatenate(parts)[:need]

    def __len__(self) -> int:  # endless; a DataLoader only needs this for progress estimates
        return 2**62

    def __iter__(self) -> Iterator[int]:
        epoch, step_in_epoch = divmod(self.start_step, self.steps_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            mine = order[self.rank :: self.world_size][: self.steps_per_epoch * self.samples_per_step]
            for i in mine[step_in_epoch * self.samples_per_step :]:
                yield epoch * self.n + int(i)
            epoch, step_in_epoch = epoch + 1, 0


def collate(batch: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Stack a batch of samples."""
    xs, targets, indices = zip(*batch)
    return torch.stack(xs), {k: torch.stack([t[k] for t in targets]) for k in targets[0]}, torch.tensor(indices)
