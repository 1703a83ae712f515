"""Which weights matter for what a model already does: the diagonal of its Fisher information.

The empirical Fisher of weight ``w`` on a set of training images is the mean over images of ``(d loss / d w)^2``,
the training loss taken one image at a time against the image's labels. A fine-tune that must not forget (elastic
weight consolidation, Kirkpatrick et al. 2017: the recipe's ``keep_init_weight`` with ``keep_init_fisher``) pulls each
weight back to where it started in proportion to it: the weights the old task leans on stay put, the others learn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError, OptionError
from ..options import check_samples

FORMAT = "edgeface-fisher-1"


def fisher_information(model: nn.Module, dataset: Any, objective: Any, samples: int, seed: int = 0,
                       progress: bool = True) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher of `model`'s trainable weights, by name: the mean of each squared gradient of
    `objective`'s loss over `samples` images of `dataset` (a :class:`FaceTrainingSet`: augmented crops with their
    targets), drawn without replacement with `seed`. BatchNorm runs on its statistics (eval mode)."""
    from tqdm import tqdm

    from .dataset import collate

    samples = check_samples(samples)
    if len(dataset) == 0:
        raise OptionError("the data source holds no training image")
    samples = min(samples, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:samples]
    model.eval()
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for index in tqdm(order.tolist(), desc="fisher", unit="img", disable=not progress):
        x, targets, _ = collate([dataset[index]])
        model.zero_grad(set_to_none=True)
        sum(objective.loss(model(x), targets).values()).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2 / samples
    model.zero_grad(set_to_none=True)
    return fisher


def save_fisher(fisher: dict[str, torch.Tensor], path: str | os.PathLike, **meta: Any) -> None:
    """Write `fisher` with what it was measured on (`meta`: model, data, samples...)."""
    torch.save({"format": FORMAT, "fisher": fisher, "meta": meta}, path)


def load_fisher(path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """The Fisher file at `path`, scaled to mean 1 over all its entries and checked against `model`'s weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Fisher file {path} not found (write one with `edgeface fisher`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ModelFileError(f"{path} is not a Fisher file written by `edgeface fisher`: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a Fisher file written by `edgeface fisher`")
    fisher, shapes = payload["fisher"], {name: p.shape for name, p in model.named_parameters()}
    wrong = [name for name, f in fisher.items() if shapes.get(name) != f.shape]
    if wrong or not fisher:
        raise ModelFileError(f"{path} does not fit this model ({payload['meta'].get('model', '?')}): weights "
                             f"{wrong[:3] or 'none'} differ")
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    if not torch.isfinite(mean) or mean <= 0:
        raise ModelFileError(f"{path} holds no finite, positive Fisher information")
    return {name: f / mean for name, f in fisher.items()}
