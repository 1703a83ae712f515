"""One registry of model names -> (family, network builder, training objective, spec), in the timm pattern.
Torch-free: networks and objectives are imported when used.

A model family is one folder under ``edgeface/models/`` (``extd/``, ``srn/``, ``hr/``, ``shf/``): its
``__init__.py`` registers its models (torch-free), ``network.py`` holds the torch module and ``objective.py``
the training objective. Every family folder is found and loaded the first time the registry is asked, so
adding a family means adding a folder.

EXTD names: ``extd{32,48,64}`` (FPN head, PReLU: the authors' released layout), with optional
``-ssd`` head and ``-leaky`` / ``-relu`` activation suffixes, e.g. ``extd32-ssd-leaky``.
Explicit ``-fpn`` / ``-prelu`` suffixes are accepted as aliases.
The heavier models: ``srn``, ``hr-res101`` / ``hr-res50`` (Tiny Faces) and ``shf``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..spec import InputSpec, ModelSpec

if TYPE_CHECKING:  # the registry itself needs no torch
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered model variant: how to build its network (lazily, so the registry needs no torch), its spec,
    and its training objective."""

    name: str
    family: str  # the family folder under edgeface/models
    builder: str  # "module:callable" under edgeface.models, e.g. "srn.network:SRN"
    kwargs: dict[str, Any]
    spec: ModelSpec
    description: str
    objective: str = ""  # "module:class" of its training objective under edgeface.models


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False

# torchvision's ImageNet convention: the backbones of the heavier models start from its weights
IMAGENET_INPUT = InputSpec(channel_order="RGB", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


def register(entry: ModelEntry) -> None:
    """Add a variant to the registry (each family package registers its own variants when it is imported)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry


def load_families(paths: Optional[Iterable[str]] = None) -> None:
    """Import every family folder under `paths` (default: edgeface/models), each registering its models."""
    global _LOADED
    from . import __path__ as models_path

    _LOADED = True
    for module in pkgutil.iter_modules(list(paths or models_path)):
        if module.ispkg:
            importlib.import_module(f"edgeface.models.{module.name}")


def _entries() -> dict[str, ModelEntry]:
    if not _LOADED:
        load_families()
    return _REGISTRY


def resolve(path: str) -> Any:
    """The object a ``"module:attribute"`` path under edgeface.models names (imported now)."""
    module_name, attr = path.split(":")
    return getattr(importlib.import_module(f"edgeface.models.{module_name}"), attr)


def forward_to(package: str, module: str = "network") -> Callable[[str], Any]:
    """A module ``__getattr__`` for a family package: names it does not define come from its `module` (torch),
    imported on first use, so ``from edgeface.models.srn import SRN`` works while the package stays torch-free."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


def model_names() -> list[str]:
    """Every registered model name."""
    return sorted(_entries())


def canonical_name(name: str) -> str:
    """Registry name for `name`, accepting the explicit default suffixes (``extd64-fpn-prelu`` -> ``extd64``)."""
    key = name.lower().replace("-fpn", "").replace("-prelu", "")
    if key not in _entries():
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return key


def get_entry(name: str) -> ModelEntry:
    """The registry entry of the variant `name` (the explicit default suffixes accepted, as canonical_name)."""
    return _REGISTRY[canonical_name(name)]


def default_spec(name: str) -> ModelSpec:
    """The spec of a registered model (no torch needed)."""
    return get_entry(name).spec


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the torch module of a registered model with fresh weights (needs torch)."""
    entry = get_entry(name)
    return resolve(entry.builder)(**{**entry.kwargs, **overrides})
