"""Checks of the user-facing options, shared by :class:`~edgeface.Detector` and the command line.

Each ``check_*`` returns the value in its canonical type or raises :class:`~edgeface.errors.OptionError`
with a one-line message that names the option, the value and the allowed range.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Optional, cast

from .errors import OptionError
from .spec import TestTimeSpec

# Longest side of a network input edgeface accepts; memory grows about 0.9 GB per megapixel on the CPU.
MAX_INPUT_SIDE = 8192
# The default bound on a frame's longest side when frames run at their own size (see Detector's max_side).
DEFAULT_MAX_SIDE = 1920
DEVICES = ("cpu", "cuda", "cuda:N", "tensorrt")
MAX_MARGIN = 10.0  # the most a face region grows on each side, in box sizes (Detections.regions)
MAX_SCALE = 8.0  # the largest test-time resize factor (the papers' pyramids go up to 2; max_side bounds the input)
INT8_CALIBRATIONS = ("minmax", "percentile")  # how INT8 quantisation sets each activation's range


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise OptionError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise OptionError(f"{name} must be a finite number, got {value}")
    return value


def _integer(name: str, value: object) -> int:
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(float(value))
    raise OptionError(f"{name} must be a whole number, got {value!r}")


def check_score_threshold(value: object) -> float:
    """A face probability in [0, 1]."""
    value = _real("score_threshold", value)
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"score_threshold is a face probability in [0, 1], got {value:g}")
    return value


def check_nms_iou(value: object) -> float:
    """An IoU in [0, 1]: overlapping boxes above it are suppressed (1 keeps all but exact duplicates)."""
    return check_overlap(value, "nms_iou")


def check_overlap(value: object, name: str) -> float:
    """An IoU in [0, 1] (``name`` for the error)."""
    value = _real(name, value)
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"{name} is an overlap (IoU) in [0, 1], got {value:g}")
    return value


def check_scale(value: object) -> float:
    """A test-time resize factor, above 0 and at most MAX_SCALE."""
    value = _real("scale", value)
    if not 0.0 < value <= MAX_SCALE:
        raise OptionError(f"a test-time scale is a resize factor above 0 and at most {MAX_SCALE:g}, got {value:g}")
    return value


def check_share(value: object, name: str) -> float:
    """A share of training samples (``name`` for the error), in [0, 1]."""
    value = _real(name, value)
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"{name} is a share of samples in [0, 1], got {value:g}")
    return value


def check_blur_prob(value: object) -> float:
    """The share of training samples blurred, in [0, 1]."""
    return check_share(value, "blur_prob")


def check_occlude_prob(value: object) -> float:
    """The share of training samples whose faces may be partly covered, in [0, 1]."""
    return check_share(value, "occlude_prob")


def check_background_crop_prob(value: object) -> float:
    """The share of training samples cropped to a window without faces, in [0, 1]."""
    return check_share(value, "background_crop_prob")


def check_keep_share(value: float, name: str = "keep") -> float:
    """The share of each weight tensor's changes a trimmed interpolation keeps, in (0, 1] (1: all of them)."""
    value = _real(name, value)
    if not 0.0 < value <= 1.0:
        raise OptionError(f"{name} must be in (0, 1], got {value:g}")
    return value


def check_int8_calibration(value: object) -> str:
    """An INT8 calibration method, one of :data:`INT8_CALIBRATIONS` (how activation ranges are read from the
    calibration photos), for the API and the command line alike."""
    if value not in INT8_CALIBRATIONS:
        raise OptionError(f"calibration must be one of {', '.join(INT8_CALIBRATIONS)}, got {value!r}")
    return cast(str, value)


def check_box_shift(value: float, name: str = "down") -> float:
    """A box centre's shift in box heights (:func:`edgeface.models.checkpoint.move_boxes`), in [-0.5, 0.5]."""
    value = _real(name, value)
    if not -0.5 <= value <= 0.5:
        raise OptionError(f"{name} must be in [-0.5, 0.5] (a share of the box's height), got {value:g}")
    return value


def check_box_scale(value: float, name: str = "a box side's factor") -> float:
    """A box side's factor (:func:`edgeface.models.checkpoint.move_boxes`), in [0.5, 2]."""
    value = _real(name, value)
    if not 0.5 <= value <= 2.0:
        raise OptionError(f"{name} must be in [0.5, 2], got {value:g}")
    return value


def parse_module_scale(text: str) -> tuple[str, float]:
    """``MODULE=FACTOR`` (``conf=0``) as ``(module, factor)``, the factor checked to lie in [0, 1]."""
    module, sep, factor = text.partition("=")
    try:
        value = float(factor)
    except ValueError:
        value = None
    if not sep or not module or value is None:
        raise OptionError(f"expected MODULE=FACTOR such as conf=0, got {text!r}")
    return module, _module_factor(module, value)


def _module_factor(module: str, value: object) -> float:
    if not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:  # also false for NaN
        raise OptionError(f"the factor of {module} must be a number in [0, 1], got {value!r}")
    return float(value)


def in_module(weight: str, module: str) -> bool:
    """Whether `weight`, a state-dict entry (``conf.0.bias``) or a module (``conf.0``), belongs to `module`
    (``conf``)."""
    return weight == module or weight.startswith(module + ".")


def check_module_scales(scales: Mapping[str, float], weights: Iterable[str]) -> dict[str, float]:
    """`scales` (module name -> factor in [0, 1]) checked against a model's weight names: each name must be a
    module of the model, so a typo cannot silently leave the weights as they were."""
    weights = list(weights)
    checked = {}
    for module, factor in scales.items():
        if not any(in_module(w, module) for w in weights):
            top = sorted({w.split(".")[0] for w in weights})
            part = ".".join(weights[0].split(".")[:2])
            raise OptionError(f"the model has no module {module!r}; its modules are {', '.join(top)} "
                              f"(or a part of one, such as {part})")
        checked[module] = _module_factor(module, factor)
    return checked


def check_margin(value: object) -> float:
    """A face box's growth on each side, as a share of its width and height, in [0, MAX_MARGIN]."""
    value = _real("margin", value)
    if not 0.0 <= value <= MAX_MARGIN:
        raise OptionError(f"margin is a share of the box's width and height added on each side, in [0, "
                          f"{MAX_MARGIN:g}], got {value:g}")
    return value


def check_max_detections(value: object) -> int:
    """At least one face per image."""
    value = _integer("max_detections", value)
    if value < 1:
        raise OptionError(f"max_detections must be at least 1, got {value}")
    return value


def check_samples(value: object) -> int:
    """A number of images to draw: at least one."""
    value = _integer("samples", value)
    if value < 1:
        raise OptionError(f"samples must be at least 1, got {value}")
    return value


def check_seed(value: object) -> int:
    """A random seed: a whole number, 0 or more (NumPy's generators take no negative seed)."""
    value = _integer("seed", value)
    if value < 0:
        raise OptionError(f"seed must be 0 or more, got {value}")
    return value


def check_threads(value: object) -> Optional[int]:
    """None (the backend's own choice) or a number of CPU threads from 1 to the larger of 256 and this machine's
    CPUs (a million threads hung ONNX Runtime's session start; more threads than CPUs only slow it down)."""
    if value is None:
        return None
    value = _integer("threads", value)
    most = max(256, os.cpu_count() or 1)
    if not 1 <= value <= most:
        raise OptionError(f"threads must be between 1 and {most} (or None: the backend's own choice; this "
                          f"machine has {os.cpu_count()} CPUs), got {value}")
    return value


def check_input_size(value: object, name: str = "input_size") -> tuple[int, int]:
    """``(w, h)``, each side in [1, MAX_INPUT_SIDE]; `name`: the option's name in the error."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise OptionError(f"{name} must be a (width, height) pair such as (640, 480), got {value!r}")
    w, h = (_integer(name, v) for v in cast("Sequence[object]", value))
    if not (0 < w <= MAX_INPUT_SIDE and 0 < h <= MAX_INPUT_SIDE):
        raise OptionError(f"{name} sides must be between 1 and {MAX_INPUT_SIDE} pixels, got {w}x{h}")
    return w, h


def check_training_size(value: object) -> int:
    """The side of the square training input, in [32, MAX_INPUT_SIDE] (a model's coarsest stride is up to 128)."""
    value = _integer("input_size", value)
    if not 32 <= value <= MAX_INPUT_SIDE:
        raise OptionError(f"the training input side (input_size) must be between 32 and {MAX_INPUT_SIDE} pixels, "
                          f"got {value}")
    return value


def check_max_side(value: object) -> Optional[int]:
    """A bound on the longest side of a frame run at its own size, in [32, MAX_INPUT_SIDE]; None or 0: no bound."""
    return _side("max_side", value)


def check_frame_side(value: object) -> Optional[int]:
    """The side of the square a validation image is downscaled to fit, in [32, MAX_INPUT_SIDE]; None or 0: none."""
    return _side("frame_side", value)


def check_min_side(value: object) -> Optional[int]:
    """The longest side a smaller frame is upscaled to, in [32, MAX_INPUT_SIDE]; 0: never upscale; None: not given
    (the model's own)."""
    if value is not None and not isinstance(value, bool) and value == 0:
        return 0
    return _side("min_side", value)


def _side(name: str, value: object) -> Optional[int]:
    if value is None or (not isinstance(value, bool) and value == 0):
        return None
    value = _integer(name, value)
    if not 32 <= value <= MAX_INPUT_SIDE:
        raise OptionError(f"{name} must be between 32 and {MAX_INPUT_SIDE} pixels (or 0 for none), got {value}")
    return value


def check_test_time(value: object) -> Optional[TestTimeSpec]:
    """None (the model's own strategy) or a :class:`~edgeface.spec.TestTimeSpec` with at least one pass, every
    scale in range and a voting overlap in [0, 1]."""
    if value is None:
        return None
    if not isinstance(value, TestTimeSpec):
        raise OptionError(f"test_time must be an edgeface.spec.TestTimeSpec (for example "
                          f"TestTimeSpec.from_scales((0.5, 1.0), flip=True)) or None, got {value!r}")
    if not value.pyramid:
        raise OptionError("test_time has no pass: give at least one scale")
    for p in value.pyramid:
        if p.short_side is None:
            check_scale(p.scale)
        else:
            _side("a pass's short_side", p.short_side)
    if value.voting_iou is not None:
        check_overlap(value.voting_iou, "box voting's IoU")
    return value


def check_device(value: object) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``tensorrt``."""
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|tensorrt", value):
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {value!r}")
    return value


def gpu_ordinal(device: str) -> Optional[int]:
    """The GPU index a device names (``cuda:1`` -> 1), None when it names none (``cpu``, ``cuda``, ``tensorrt``)."""
    index = check_device(device).partition(":")[2]
    return int(index) if index else None
