"""A training recipe: its keys with their types (checked when read from YAML) and its learning-rate schedule."""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, get_args, get_origin, get_type_hints

from ..errors import OptionError
from ..options import check_seed

if TYPE_CHECKING:
    from ..data.augment import AugmentConfig

SCHEDULES = ("step", "cosine")


@dataclass
class TrainConfig:
    """A recipe. Steps count optimizer steps; one step sees ``batch_size x accumulate x ranks`` images."""

    model: str = "extd32"
    train_data: list[dict[str, Any]] = field(default_factory=list)
    val_data: list[dict[str, Any]] = field(default_factory=list)
    output: str = "runs/extd32"
    input_size: int = 640
    batch_size: int = 16
    accumulate: int = 1  # the papers' "iter size"
    steps: int = 480_000
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 0
    schedule: str = "step"  # "step" or "cosine"
    lr_steps: list[int] = field(default_factory=lambda: [240_000, 360_000])
    lr_gamma: float = 0.1
    neg_pos_ratio: int = 3  # EXTD's objective
    match_thresholds: list[float] = field(default_factory=lambda: [0.1, 0.35, 0.5])  # EXTD's S3FD matching
    data_anchor_sampling_prob: float = 0.5
    augment_recipe: str = "extd"  # or "rescale_crop" (HR, SHF): a random rescale, then an input_size window
    rescales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # rescale_crop's factors
    blur_prob: float = 0.0  # share of samples blurred (out of focus or moving), at most blur_max_px pixels
    blur_max_px: float = 7.0
    occlude_prob: float = 0.0  # share of samples whose faces may get a band covered (see AugmentConfig)
    background_crop_prob: float = 0.0  # share of samples cropped to a face-free window (see AugmentConfig)
    checkpoint_every: int = 1000
    val_every: int = 5000  # 0: never
    log_every: int = 10
    workers: int = 2
    seed: int = 0
    amp: bool = True  # only on CUDA
    clip_grad_norm: Optional[float] = None
    hard_image_mining: bool = False  # SHF's hard image mining: skip well-detected images with p = 0.7
    init: Optional[str] = None  # weights to start from: an edgeface checkpoint or an EXTD authors' .pth
    backbone_weights: Optional[str] = None  # torchvision ImageNet weights for SRN/HR/SHF, e.g. "VGG16_Weights.DEFAULT"
    freeze_bn: bool = False  # keep BatchNorm statistics and affine parameters fixed (fine-tuning small batches)
    # parts of the model not trained, by module name (e.g. [base] for EXTD's backbone, [base, upfeat] to train only
    # its heads, base.0 for one layer): their weights and BatchNorm statistics stay as `init` left them
    freeze: list[str] = field(default_factory=list)
    # a teacher (checkpoint or authors' .pth, same anchors) to distil from on the training images (LwF); a
    # train_data entry with `distill: false` is not distilled (images whose teacher outputs training should change),
    # one with its own `distill_from` is distilled from that teacher instead (one teacher per kind of image), and
    # one with `labels: false` teaches only through its teacher (its boxes are not learned); an entry's
    # `redraw_boxes: {dx, dy, width, height}` redraws its labels to another dataset's convention (redraw_boxes);
    # `ignore_unlabelled: {model, score, min_side}` ignores in training the faces a trusted model finds in its images
    # that no label covers (mark_unlabelled, UnlabelledFinder)
    distill_from: Optional[str] = None
    distill_weight: float = 1.0  # the distillation terms' weight against the ground-truth terms
    # keep the weights near `init`: keep_init_weight x sum over weights of F x (w - w_init)^2 is minimised with the
    # loss (a proximal step after each optimizer step), F the Fisher information of `init` on the data it should not
    # forget (`edgeface fisher`, scaled to mean 1: elastic weight consolidation) or, without keep_init_fisher, 1
    # for every weight (L2-SP)
    keep_init_weight: float = 0.0
    keep_init_fisher: Optional[str] = None
    # an exponential moving average of the weights over the steps (0: none; e.g. 0.99, which weighs the last ~100
    # steps): checkpoints, validation and everything that reads them use the average, the trainer resumes from the
    # weights it trains (kept beside it in the checkpoint)
    ema_decay: float = 0.0

    def check(self) -> TrainConfig:
        """Return the recipe if every value is in its range, else raise OptionError naming the first key that is
        not (the types were checked when it was read)."""
        at_least = {"steps": 1, "batch_size": 1, "accumulate": 1, "warmup_steps": 0, "neg_pos_ratio": 1,
                    "checkpoint_every": 1, "val_every": 0, "log_every": 1, "workers": 0}  # val_every 0: never
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise OptionError(f"{key} must be at least {low}, got {getattr(self, key)}")
        positive, non_negative, under_one = (lambda v: v > 0), (lambda v: v >= 0), (lambda v: 0 <= v < 1)
        ranges = {"lr": ("0 or more", non_negative), "lr_gamma": ("above 0", positive),
                  "momentum": ("in [0, 1)", under_one), "ema_decay": ("in [0, 1) (0: no average)", under_one),
                  "weight_decay": ("0 or more", non_negative), "distill_weight": ("0 or more", non_negative),
                  "keep_init_weight": ("0 or more", non_negative)}
        for key, (allowed, in_range) in ranges.items():
            value = getattr(self, key)
            if not (math.isfinite(value) and in_range(value)):
                raise OptionError(f"{key} must be {allowed}, got {value}")
        check_seed(self.seed)  # the rule the command line's --seed follows
        if self.schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if len(self.match_thresholds) != 3 or not 0 <= min(self.match_thresholds) <= max(self.match_thresholds) <= 1:
            raise OptionError(f"match_thresholds are three overlaps in [0, 1], got {self.match_thresholds}")
        self.augment_config()  # checks the augmentation keys
        return self

    def augment_config(self) -> AugmentConfig:
        """The augmentation this recipe asks for."""
        from ..data.augment import AugmentConfig

        return AugmentConfig(size=self.input_size, data_anchor_sampling_prob=self.data_anchor_sampling_prob,
                             recipe=self.augment_recipe, rescales=tuple(self.rescales), blur_prob=self.blur_prob,
                             blur_max_px=self.blur_max_px, occlude_prob=self.occlude_prob,
                             background_crop_prob=self.background_crop_prob)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
        """The recipe at `path`, with `overrides` replacing some of its keys.

        A recipe's ``extends: other.yaml`` (a path relative to the recipe's folder) starts from that recipe's keys
        and replaces the ones it names itself, so a variant of a recipe states only how it differs.
        """
        data = {**_recipe_keys(Path(path)), **(overrides or {})}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            guesses = {key: difflib.get_close_matches(key, known, n=1) for key in sorted(unknown)}
            meant = "; ".join(f"{key}: did you mean {guess[0]}?" for key, guess in guesses.items() if guess)
            raise OptionError(f"{path}: unknown recipe keys {sorted(unknown)}" + (f" ({meant})" if meant else "")
                              + f"; known: {sorted(known)}")
        hints = get_type_hints(cls)
        recipe = cls(**{key: _checked_value(f"{path}: {key}", hints[key], value) for key, value in data.items()})
        try:
            return recipe.check()
        except OptionError as exc:
            raise OptionError(f"{path}: {exc}") from None


def _recipe_keys(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys the recipe at `path` sets, those of the recipes it ``extends`` included."""
    import yaml

    if path.resolve() in seen:
        raise OptionError(f"{path}: recipes extend each other in a loop: {' -> '.join(map(str, seen + (path,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise OptionError(f"no recipe {path}" + (f" (extended by {seen[-1]})" if seen else "")) from None
    except UnicodeDecodeError:
        raise OptionError(f"{path} is not a text file: a recipe is YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OptionError(f"{path} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise OptionError(f"{path}: a recipe is a mapping of KEY: VALUE lines, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise OptionError(f"{path}: extends must be the path of another recipe, got {base!r}")
    return {**_recipe_keys(path.parent / base, seen + (path.resolve(),)), **data}


def _checked_value(name: str, hint: Any, value: Any) -> Any:
    """`value` if it has the recipe key's type (ints pass as floats), else an :class:`OptionError` naming both."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _checked_value(name, next(a for a in args if a is not type(None)), value)
    if origin is list:
        if not isinstance(value, list):
            raise OptionError(f"{name} must be a list, got {value!r}")
        return [_checked_value(f"{name}[{i}]", args[0], v) for i, v in enumerate(value)] if args else value
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise OptionError(f"{name} must be a mapping (KEY: VALUE lines), got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise OptionError(f"{name} must be {'a' if hint is not int else 'an'} {hint.__name__}, got {value!r}")
    return value


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up from 0, then step decay at ``lr_steps`` or cosine decay to 0 at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * cfg.lr_gamma ** sum(step >= s for s in cfg.lr_steps)
