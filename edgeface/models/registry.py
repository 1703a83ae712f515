"""One registry of model names -> (builder, spec). Torch-free: builders are imported when called.

EXTD names: ``extd{32,48,64}`` (FPN head, PReLU: the authors' released layout), with optional
``-ssd`` head and ``-leaky`` / ``-relu`` activation suffixes, e.g. ``extd32-ssd-leaky``.
Explicit ``-fpn`` / ``-prelu`` suffixes are accepted as aliases.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..spec import ModelSpec


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


_register_extd()
