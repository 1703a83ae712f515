"""One registry of model names -> (builder, spec). Torch-free: builders are imported when called.

EXTD names: ``extd{32,48,64}`` (FPN head, PReLU: the authors' released layout), with optional
``-ssd`` head and ``-leaky`` / ``-relu`` activation suffixes, e.g. ``extd32-ssd-leaky``.
Explicit ``-fpn`` / ``-prelu`` suffixes are accepted as aliases.
The heavier models: ``srn``, ``hr-res101`` / ``hr-res50`` (Tiny Faces) and ``shf``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..spec import AnchorSpec, InputSpec, ModelSpec, PyramidScale, TestTimeSpec
from .templates import WIDER_TRAIN_TEMPLATES


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: str  # "module:callable" under edgeface.models
    kwargs: dict[str, Any]
    spec: ModelSpec
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry


def model_names() -> list[str]:
    """Every registered model name."""
    return sorted(_REGISTRY)


def canonical_name(name: str) -> str:
    """Registry name for `name`, accepting the explicit default suffixes (``extd64-fpn-prelu`` -> ``extd64``)."""
    key = name.lower().replace("-fpn", "").replace("-prelu", "")
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return key


def get_entry(name: str) -> ModelEntry:
    return _REGISTRY[canonical_name(name)]


def default_spec(name: str) -> ModelSpec:
    """The spec of a registered model (no torch needed)."""
    return get_entry(name).spec


def create_model(name: str, **overrides: Any):
    """Build the torch module of a registered model with fresh weights (needs torch)."""
    entry = get_entry(name)
    module_name, attr = entry.builder.split(":")
    builder = getattr(importlib.import_module(f"edgeface.models.{module_name}"), attr)
    return builder(**{**entry.kwargs, **overrides})


def _register_extd() -> None:
    activations = {"prelu": "PReLU", "leaky": "Leaky-ReLU (0.25)", "relu": "ReLU"}
    for width in (32, 48, 64):
        for head in ("fpn", "ssd"):
            for activation, act_name in activations.items():
                suffix = ("-ssd" if head == "ssd" else "") + ("" if activation == "prelu" else f"-{activation}")
                name = f"extd{width}{suffix}"
                released = " (the authors' released layout)" if (head, activation) == ("fpn", "prelu") else ""
                register(ModelEntry(
                    name=name,
                    builder="extd:EXTD",
                    kwargs={"width": width, "head": head, "activation": activation},
                    spec=ModelSpec(name=name),
                    description=f"EXTD width {width}, {head.upper()} head, {act_name}{released}",
                ))


# torchvision's ImageNet convention: the backbones of the heavier models start from its weights
IMAGENET_INPUT = InputSpec(channel_order="RGB", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def _register_heavy() -> None:
    strides = (4, 8, 16, 32, 64, 128)
    register(ModelEntry(
        name="srn", builder="srn:SRN", kwargs={},
        spec=ModelSpec(
            name="srn", input=IMAGENET_INPUT,
            anchors=AnchorSpec(strides, tuple((2.0 * s, 2.0 * 2**0.5 * s) for s in strides), (1.25,)),
            variances=(1.0, 1.0), max_out_background=0, nms_iou=0.4,
            test_time=TestTimeSpec.from_scales((0.5, 1.0, 1.5), flip=True, voting_iou=0.5)),
        description="SRN: ResNet-50 + C6/C7, selective two-step classification and regression, RFE head"))
    t = WIDER_TRAIN_TEMPLATES
    a_only, a_and_b = tuple(t.a_set), tuple(sorted(t.a_set + t.b_set))
    for depth in (101, 50):
        name = f"hr-res{depth}"
        register(ModelEntry(
            name=name, builder="hr:HR", kwargs={"depth": depth},
            spec=ModelSpec(
                name=name, input=IMAGENET_INPUT, anchors=AnchorSpec((8,), shapes=(t.shapes,)),
                variances=(1.0, 1.0), max_out_background=0, nms_iou=0.3,
                # the pruned A+B model: A templates over the pyramid, B templates only on the 2x image
                test_time=TestTimeSpec(tuple(PyramidScale(s, anchors=a_only) for s in (0.25, 0.5, 1.0))
                                       + (PyramidScale(2.0, anchors=a_and_b),))),
            description=f"HR (Tiny Faces): ResNet-{depth} res3+res4 hypercolumn, 25 clustered templates, pyramid"))
    register(ModelEntry(
        name="shf", builder="shf:SHF", kwargs={},
        spec=ModelSpec(
            name="shf", input=IMAGENET_INPUT, anchors=AnchorSpec((8,), ((16.0, 32.0, 64.0),)),
            variances=(1.0, 1.0), max_out_background=0, nms_iou=0.3,
            test_time=TestTimeSpec(tuple(PyramidScale(short_side=s) for s in (100, 300, 600, 1000, 1400)),
                                   flip=True, voting_iou=0.4)),
        description="SHF: VGG16 single stride-8 map, dilated head (1, 2, 4), hard image mining"))


_register_extd()
_register_heavy()
