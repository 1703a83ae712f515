"""A training recipe: its keys with their types (checked when read from YAML) and its learning-rate schedule."""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union, get_args, get_origin, get_type_hints

from ..errors import OptionError
from ..options import check_seed

if TYPE_CHECKING:
    from ..data.augment import AugmentConfig

SCHEDULES = ("step", "cosine")


def recipe_key(default: Any, about: str) -> Any:
    """A recipe key's field: its default and what it does, as ``edgeface train --keys`` lists it."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"about": about})
    return field(default=default, metadata={"about": about})


@dataclass
class TrainConfig:
    """A recipe. Steps count optimizer steps; one step sees ``batch_size x accumulate x ranks`` images."""

    model: str = recipe_key("extd32", "the variant to train, a registry name (extd64, extd32-ssd-leaky, srn, ...)")
    train_data: list[dict[str, Any]] = recipe_key([], "the data sources trained on (below: their keys)")
    val_data: list[dict[str, Any]] = recipe_key([], "the data sources validated on, each under its own protocol")
    output: str = recipe_key("runs/extd32", "the run folder: last.pt, best.pt, log.csv")
    input_size: int = recipe_key(640, "the side of the square training crops, in pixels")
    batch_size: int = recipe_key(16, "images per batch on each GPU (or the CPU)")
    accumulate: int = recipe_key(1, "batches summed into one optimizer step (the papers' 'iter size')")
    steps: int = recipe_key(480_000, "optimizer steps in the run")
    lr: float = recipe_key(1e-3, "the learning rate after warm-up (SGD)")
    momentum: float = recipe_key(0.9, "SGD momentum")
    weight_decay: float = recipe_key(5e-4, "L2 weight decay")
    warmup_steps: int = recipe_key(0, "steps of linear warm-up from 0 to lr")
    schedule: str = recipe_key("step", "the decay after warm-up: step (x lr_gamma at each of lr_steps) or cosine "
                                       "(to 0)")
    lr_steps: list[int] = recipe_key([240_000, 360_000], "the steps where the step schedule decays")
    lr_gamma: float = recipe_key(0.1, "the step schedule's factor")
    neg_pos_ratio: int = recipe_key(3, "hard-negative mining: background anchors learned per face anchor (EXTD)")
    match_thresholds: list[float] = recipe_key([0.1, 0.35, 0.5], "S3FD anchor matching's three overlaps (EXTD)")
    data_anchor_sampling_prob: float = recipe_key(0.5, "share of crops made by data-anchor-sampling (the rest SSD "
                                                       "crops); a train_data entry may set its own")
    augment_recipe: str = recipe_key("extd", "extd; rescale_crop (HR, SHF: a random rescale, then an input_size "
                                             "window); square_crop (SRN: expand, then a square crop)")
    rescales: list[float] = recipe_key([0.5, 1.0, 2.0], "rescale_crop's factors")
    blur_prob: float = recipe_key(0.0, "share of samples blurred, out of focus or along a motion line")
    blur_max_px: float = recipe_key(7.0, "the largest blur, in pixels")
    occlude_prob: float = recipe_key(0.0, "share of samples whose faces (16 px or more, each with p = 0.5) get a band "
                                          "along one edge, 20-60 % deep, covered by a patch of the same image")
    background_crop_prob: float = recipe_key(0.0, "share of samples cropped to a window clear of every face (grown "
                                                  "by half its size): background seen up close")
    checkpoint_every: int = recipe_key(1000, "steps between writes of last.pt (also written on Ctrl-C / SIGTERM)")
    val_every: int = recipe_key(5000, "steps between validations, plus one at the last step (0: never)")
    log_every: int = recipe_key(10, "steps between log.csv rows")
    workers: int = recipe_key(2, "DataLoader worker processes (0: load in the training process)")
    seed: int = recipe_key(0, "the seed of the augmentation and the sampling order")
    amp: bool = recipe_key(True, "mixed precision (on CUDA only)")
    clip_grad_norm: Optional[float] = recipe_key(None, "clip the gradient's norm to this (null: no clipping)")
    hard_image_mining: bool = recipe_key(False, "SHF's hard image mining: skip well-detected images with p = 0.7")
    init: Optional[str] = recipe_key(None, "weights to start from: an edgeface checkpoint, an EXTD authors' .pth, "
                                           "an edgeface ONNX export or a shipped model's name (default, fast; "
                                           "BatchNorm folded: with freeze_bn)")
    backbone_weights: Optional[str] = recipe_key(None, "torchvision ImageNet weights for SRN / HR / SHF, e.g. "
                                                       "VGG16_Weights.DEFAULT")
    freeze_bn: bool = recipe_key(False, "keep BatchNorm statistics and affine parameters as init left them "
                                        "(fine-tuning with small batches)")
    freeze: list[str] = recipe_key([], "parts not trained, by module name ([base]: EXTD's backbone; base.0: one "
                                       "layer); their weights and statistics stay as init left them")
    distill_from: Optional[str] = recipe_key(None, "a teacher (checkpoint, authors' .pth, ONNX export or shipped "
                                                   "model's name; the same anchors) whose "
                                                   "outputs the student follows where no labelled face is "
                                                   "(learning without forgetting)")
    distill_weight: float = recipe_key(1.0, "the distillation terms' weight against the ground-truth terms")
    keep_init_weight: float = recipe_key(0.0, "keep the weights near init: this times the sum of F x (w - w_init)^2, "
                                              "a proximal step after each optimizer step (L2-SP; 0: off)")
    keep_init_fisher: Optional[str] = recipe_key(None, "F above: `edgeface fisher`'s file, each weight's Fisher "
                                                       "information (elastic weight consolidation); null: F = 1")
    ema_decay: float = recipe_key(0.0, "an exponential moving average of the weights (e.g. 0.99), which checkpoints "
                                       "and validation use (0: none)")

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
        if any(step < 1 for step in self.lr_steps):
            raise OptionError(f"lr_steps are the steps where the step schedule decays, each at least 1, got "
                              f"{self.lr_steps}")
        if self.clip_grad_norm is not None and not (math.isfinite(self.clip_grad_norm) and self.clip_grad_norm > 0):
            # (torch scales the gradient by max_norm / norm: a negative norm would turn descent into ascent)
            raise OptionError(f"clip_grad_norm must be above 0 (null: no clipping), got {self.clip_grad_norm}")
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


# what a train_data entry takes beside its data source's keys (training_set reads them)
TRAIN_ENTRY_KEYS = {
    "distill": "false: not distilled (images whose teacher outputs training should change)",
    "distill_from": "this entry's own teacher instead of the recipe's (one teacher per kind of image)",
    "labels": "false: the images teach only through their teacher (their boxes are not learned)",
    "redraw_boxes": "{dx, dy, width, height}: labels redrawn to another dataset's convention (each box's centre "
                    "moved by dx / dy of its width / height, its size scaled)",
    "data_anchor_sampling_prob": "this entry's own share of data-anchor-sampling crops",
    "ignore_unlabelled": "{model, score: 0.5, min_side: 640}: faces that trusted model finds in the images and no "
                         "label covers are ignored in training, not taught as background",
}
# what a val_data entry takes beside its data source's keys (validation_set reads them)
VAL_ENTRY_KEYS = {
    "name": "the prefix of its log.csv columns (default: the format)",
    "max_side": "validate with the longest image side bounded to this (cheaper)",
    "frame_side": "each image first downscaled to fit this square, as a camera of that resolution delivers it",
    "frame_size": "[w, h]: each image first resized to exactly this, its aspect ratio not kept, as apps that squash "
                  "frames to a square do",
    "input_size": "[w, h]: every image letterboxed to this fixed network input, as an app running a model at one "
                  "size does",
}


def describe_keys(width: int = 100) -> str:
    """Every key a recipe and its data entries take, with its type, default and what it does: the text of
    ``edgeface train --keys``."""
    from ..data.sources import FOLD_KEYS, READERS, reader_keys

    def item(name: str, about: str) -> list[str]:
        return textwrap.wrap(about, width, initial_indent=f"  {name:<27} ", subsequent_indent=" " * 30)

    hints = get_type_hints(TrainConfig)
    lines = ["Recipe keys (YAML; `extends: other.yaml` starts from another recipe's keys; `edgeface train --set "
             "KEY=VALUE` overrides one):"]
    for f in fields(TrainConfig):
        default = f.default_factory() if callable(f.default_factory) else f.default
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
        lines += item(f.name, f"{f.metadata['about']} [{_type_name(hints[f.name])}, default {shown}]")
    lines += ["", "train_data and val_data entries are data sources, {format: NAME, ...its keys}:"]
    lines += [line for name, reader in READERS.items() for line in item(name, ", ".join(reader_keys(reader)))]
    lines += item(" / ".join(FOLD_KEYS), "any source: folds: K with fold: I (only fold I of a fixed K-way split by "
                                         "image name) or skip_fold: I (all but it)")
    lines += ["", "train_data entries also take:"]
    lines += [line for name, about in TRAIN_ENTRY_KEYS.items() for line in item(name, about)]
    lines += ["", "val_data entries also take:"]
    lines += [line for name, about in VAL_ENTRY_KEYS.items() for line in item(name, about)]
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    """``Optional[float]`` as ``float or null``, ``list[int]`` as ``list of int``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        return f"{_type_name(next(a for a in args if a is not type(None)))} or null"
    if origin is list:
        return f"list of {_type_name(args[0])}" if get_origin(args[0]) is not dict else "list of mappings"
    return getattr(hint, "__name__", str(hint))


# a number with an exponent and maybe no dot: a float in YAML 1.2, text in PyYAML's YAML 1.1
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


def load_yaml(text: str) -> Any:
    """A recipe's YAML (or a ``--set`` value) read as PyYAML's safe loader does, but with numbers as YAML 1.2 reads
    them: ``1e-4`` and ``5e-4``, written without a dot, are floats (PyYAML's YAML 1.1 rules make them text, and a
    recipe's ``lr: 1e-4`` an error)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # a SafeLoader: plain data only


def _recipe_keys(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The keys the recipe at `path` sets, those of the recipes it ``extends`` included."""
    import yaml

    if path.resolve() in seen:
        raise OptionError(f"{path}: recipes extend each other in a loop: {' -> '.join(map(str, seen + (path,)))}")
    try:
        data = load_yaml(path.read_text()) or {}
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
