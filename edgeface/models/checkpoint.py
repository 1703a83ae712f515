"""edgeface checkpoints (torch): a state dict that carries its model spec, and the converter for the
EXTD authors' released checkpoints."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Optional

import torch
from torch import nn

from ..core.files import atomic_write
from ..errors import ModelFileError, OptionError
from ..options import check_box_scale, check_box_shift, check_keep_share, check_module_scales, in_module
from ..spec import ModelSpec
from .registry import create_model

CHECKPOINT_FORMAT = "edgeface-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(model: nn.Module, spec: ModelSpec, path: str | os.PathLike, **extra: Any) -> None:
    """Write ``{format, version, spec, state_dict, **extra}``; written to a temporary file first, so an
    interrupted save never leaves a truncated checkpoint behind."""
    path = os.fspath(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "spec": spec.to_dict(),
               "state_dict": model.state_dict(), **extra}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def read_torch_file(path: str) -> Any:
    """The contents of a PyTorch file (tensors and plain data only), or a ModelFileError saying why not."""
    if not os.path.isfile(path):
        raise ModelFileError(f"no such model file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        if "Unsupported global" in str(exc):  # whole pickled objects, not a corrupt file
            raise ModelFileError(f"{path} holds pickled Python objects (a whole torch module?), which edgeface does "
                                 "not unpickle, since unpickling can run code: save tensors (a state_dict) "
                                 "instead") from exc
        raise ModelFileError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}); "
                             "is the file complete? re-download or re-export it") from exc


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """Load an edgeface checkpoint as an eval-mode model and its spec."""
    path = os.fspath(path)
    payload = read_torch_file(path)
    if not _is_edgeface(payload):
        raise ModelFileError(f"{path} is a PyTorch file but not an edgeface checkpoint; for the EXTD authors' "
                             f"weights run `edgeface convert {path} -o model.pt` first")
    return _model_from_checkpoint(payload, path)


def _is_edgeface(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def _model_from_checkpoint(payload: dict, path: str) -> tuple[nn.Module, ModelSpec]:
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ModelFileError(f"{path} is an edgeface checkpoint of format version {version!r}, newer than this "
                             f"edgeface reads ({CHECKPOINT_VERSION}); upgrade edgeface")
    try:
        spec = ModelSpec.from_dict(payload.get("spec"))
    except ValueError as exc:
        raise ModelFileError(f"{path} carries a model spec this edgeface cannot use: {exc}") from None
    try:
        model = create_model(spec.name)
    except KeyError as exc:  # the registry's message names the known models
        raise ModelFileError(f"{path} holds a model this edgeface does not build: {exc.args[0]}") from None
    weights = payload.get("state_dict")
    if not isinstance(weights, Mapping):
        raise ModelFileError(f"{path} is an edgeface checkpoint without its weights (no state_dict); is it "
                             "complete? save it again")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: weights do not fit model {spec.name!r}: {_load_error(exc)}") from exc
    return model.eval(), spec


def _load_error(exc: Exception) -> str:
    """What load_state_dict's error says, in one line: its first reason (the line after torch's "Error(s) in
    loading state_dict for ..." heading), cut to 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines or [""])[0]
    return reason if len(reason) <= 300 else reason[:297] + "..."


def recognise_authors_width(state_dict: dict[str, torch.Tensor]) -> int:
    """EXTD width of an authors' state dict, read off the first block's projection."""
    key = "base.1.conv.3.weight"
    if key not in state_dict or "loc.5.weight" not in state_dict:
        raise ModelFileError("not an EXTD checkpoint from the authors' release (no base.1/loc.5 weights)")
    weight = state_dict[key]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ModelFileError(f"not an EXTD checkpoint from the authors' release ({key} is not a convolution weight)")
    width = int(weight.shape[0])
    if width not in (32, 48, 64):
        raise ModelFileError(f"EXTD checkpoint of width {width}; released widths are 32, 48 and 64")
    return width


def load_authors_checkpoint(src: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """Load an EXTD authors' ``EXTD_{32,48,64}.pth`` as an eval-mode model and its spec."""
    src = os.fspath(src)
    return _model_from_authors(read_torch_file(src), src)


def _model_from_authors(state_dict: Any, src: str) -> tuple[nn.Module, ModelSpec]:
    if isinstance(state_dict, dict) and "weight" in state_dict and isinstance(state_dict["weight"], dict):
        state_dict = state_dict["weight"]  # the authors' training snapshots wrap the weights
    if not isinstance(state_dict, dict):
        raise ModelFileError(f"{src} does not hold a state dict")
    width = recognise_authors_width(state_dict)
    name = f"extd{width}"
    model = create_model(name)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{src} looks like EXTD-{width} but its weights do not fit the released layout: "
                             f"{_load_error(exc)}") from exc
    return model.eval(), ModelSpec(name=name, model_version="authors-release")


def load_any_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """An edgeface checkpoint, an edgeface ONNX export or shipped model's short name ("default", "fast"; the
    weights read back with BatchNorm folded, :mod:`edgeface.export.onnx_import`) or an EXTD authors' release
    file."""
    from ..weights import shipped_model

    shipped = shipped_model(path) if isinstance(path, str) else None
    path = os.fspath(shipped or path)
    if path.lower().endswith(".onnx"):
        try:
            from ..export.onnx_import import load_onnx_weights
        except ImportError as exc:
            raise ModelFileError(f"reading the weights of {path} needs the onnx package ({exc}): "
                                 "pip install 'edgeface[train]'") from None
        return load_onnx_weights(path)
    payload = read_torch_file(path)  # read once, then interpreted as whichever format it is
    return _model_from_checkpoint(payload, path) if _is_edgeface(payload) else _model_from_authors(payload, path)


def convert_authors_checkpoint(src: str | os.PathLike, dst: str | os.PathLike,
                               model_version: str = "authors-release") -> ModelSpec:
    """Convert an EXTD authors' ``EXTD_{32,48,64}.pth`` into an edgeface checkpoint; returns its spec."""
    model, spec = load_authors_checkpoint(src)
    spec = ModelSpec(name=spec.name, model_version=model_version)
    save_checkpoint(model, spec, dst, source=os.path.basename(src))
    return spec


PROBE_SIZE = 128  # side of the blank input a model runs once on to find which BatchNorm follows which convolution


def conv_batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(convolution, BatchNorm)`` module names wherever a BatchNorm takes exactly a convolution's output (in an
    ``nn.Sequential`` or called one after the other, as ResNet's ``conv1`` / ``bn1``), each pair once even when the
    model runs it several times (EXTD's shared blocks); a module that pairs with different partners on different
    uses is left out. (A convolution whose output also feeds something besides its BatchNorm is not seen; no
    edgeface model has one.) Found by running the model once, in eval mode, on a blank input; training flags are
    restored after."""
    names = {module: name for name, module in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) -> (convolution, output kept alive)
    inputs_of: dict[str, set] = {}  # BatchNorm -> what made its inputs (a convolution's name, or None)
    outputs_of: dict[str, set] = {}  # convolution -> the BatchNorms its outputs went to

    def convolved(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        produced[id(output)] = (names[module], output)

    def normalised(module: nn.Module, inputs: Any) -> None:
        conv = produced.get(id(inputs[0]), (None,))[0]
        inputs_of.setdefault(names[module], set()).add(conv)
        if conv is not None:
            outputs_of.setdefault(conv, set()).add(names[module])

    modes = {module: module.training for module in model.modules()}
    hooks = [m.register_forward_hook(convolved) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(normalised) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    weight = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, dtype=weight.dtype, device=weight.device))
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    return [(next(iter(convs)), norm) for norm, convs in inputs_of.items()
            if len(convs) == 1 and None not in convs and outputs_of[next(iter(convs))] == {norm}]


def bake_batchnorm(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Fold each BatchNorm after a convolution into it, in place, keeping both modules (and so the state dict's
    names): the convolution gets the folded weights, the BatchNorm the folded bias, with scale 1, mean 0 and
    variance 1 - eps, so it only adds that bias. Exact in eval mode; the form ONNX exports are read back in, and
    the one checkpoints are brought to before their weights mix with such a model's. Returns conv -> BatchNorm."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    baked = {}
    modules = dict(model.named_modules())
    with torch.no_grad():
        for conv, norm in ((modules[c], modules[n]) for c, n in conv_batchnorm_pairs(model)):
            if not norm.affine:
                raise OptionError(f"{type(model).__name__} has a BatchNorm without scale and bias, which cannot "
                                  "hold a folded bias")
            fused = fuse_conv_bn_eval(conv, norm)  # as inference folds them (fold_batchnorm)
            conv.weight.copy_(fused.weight)
            norm.bias.copy_(fused.bias)
            if conv.bias is not None:
                conv.bias.zero_()
            norm.weight.fill_(1.0)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            baked[conv] = norm
    return baked


def is_baked(model: nn.Module) -> bool:
    """True when every BatchNorm after a convolution is in :func:`bake_batchnorm`'s form (models read back from
    ONNX exports, and fine-tunes of them with BatchNorm frozen); False for models without such BatchNorms."""
    modules = dict(model.named_modules())
    norms = [modules[norm] for _, norm in conv_batchnorm_pairs(model)]

    def baked(norm: nn.BatchNorm2d) -> bool:  # to float rounding: averaged models hold sums of these values
        expected = ((norm.weight, 1.0), (norm.running_mean, 0.0), (norm.running_var, 1.0 - norm.eps))
        return all(value is not None and torch.allclose(value, torch.full_like(value, target), rtol=0.0, atol=1e-6)
                   for value, target in expected)

    return bool(norms) and all(baked(n) for n in norms)


def _state_dicts_of_one_architecture(models: Sequence[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """Each model's state dict; an error unless all hold the same weights of the same shapes. When some models
    have BatchNorm folded (:func:`is_baked`) and others not, the others' state dicts are given folded too, so that
    their weights mean the same and mix exactly."""
    baked = [is_baked(m) for m in models]
    if any(baked) and not all(baked):
        models = [m if b else _baked_copy(m) for m, b in zip(models, baked)]
    states = [m.state_dict() for m in models]
    last = states[-1]
    if any(s.keys() != last.keys() or any(s[k].shape != last[k].shape for k in last) for s in states):
        raise ModelFileError("the models are not the same architecture: their weights do not correspond")
    return states


def _baked_copy(model: nn.Module) -> nn.Module:
    baked = copy.deepcopy(model).eval()
    bake_batchnorm(baked)
    return baked


def load_weights_of_one_model(paths: Sequence[str | os.PathLike], purpose: str) -> list[tuple[nn.Module, ModelSpec]]:
    """``(model, spec)`` of each model file at `paths`, to mix in weight space (`purpose`, e.g. "a soup"); an
    :class:`OptionError` when they are not one model (naming each file's) or their boxes are moved apart (the
    spec's ``box_down``, which no weight carries)."""
    loaded = [load_any_checkpoint(path) for path in paths]
    if len({spec.name for _, spec in loaded}) > 1:
        held = ", ".join(f"{path} holds {spec.name}" for path, (_, spec) in zip(paths, loaded))
        raise OptionError(f"{held}: {purpose} needs weights of one model")
    if len({spec.box_down for _, spec in loaded}) > 1:
        held = ", ".join(f"{path} {spec.box_down:g}" for path, (_, spec) in zip(paths, loaded))
        raise OptionError(f"the models' boxes are moved by different shares of their height ({held}): {purpose} "
                          "needs models whose boxes sit alike; mix the unmoved weights, then `edgeface move-boxes`")
    return loaded


def average_weights(models: Sequence[nn.Module], weights: Optional[Sequence[float]] = None) -> nn.Module:
    """A copy of the last of `models` whose floating-point weights and buffers are their weighted mean (`weights`,
    non-negative, normalised to sum 1; default: equal): a model soup of fine-tunes of one model (Wortsman et al.
    2022). Integer buffers (BatchNorm's step counters) are the last model's. All must be the same architecture."""
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if not models:
        raise OptionError("need at least one model to average")
    if len(weights) != len(models):
        raise OptionError(f"need one weight per model: {len(models)} models, {len(weights)} weights")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise OptionError(f"weights must be non-negative, finite and not all 0, got {weights}")
    states = _state_dicts_of_one_architecture(models)
    last = states[-1]
    total = sum(weights)
    mixed = copy.deepcopy(models[-1])
    mixed.load_state_dict({k: sum(s[k] * (w / total) for s, w in zip(states, weights)) if v.is_floating_point() else v
                           for k, v in last.items()})
    return mixed.eval()


def interpolate_weights(start: nn.Module, end: nn.Module, alpha: float, keep: float = 1.0,
                        module_scales: Optional[Mapping[str, float]] = None) -> nn.Module:
    """WiSE-FT: a copy of `end` whose floating-point weights and buffers are ``start + alpha * (end - start)``
    (alpha 0: `start`, 1: `end`); integer buffers (BatchNorm's step counters) are `end`'s. Both must be the same
    architecture (for example a release and a fine-tune of it).

    With ``keep < 1`` the fine-tune's change of each parameter tensor, ``end - start``, is first trimmed to its
    `keep` share of largest-magnitude entries (the rest stay `start`'s), as TIES-merging trims task vectors
    (Yadav et al. 2023): ``start + alpha * trim(end - start)``. Buffers (BatchNorm statistics) are interpolated
    whole.

    `module_scales` maps a module's name (``conf``, ``base.0``) to a factor in [0, 1] of alpha for its weights:
    ``{"conf": 0}`` keeps `start`'s classification heads whole while the rest moves to alpha (the most specific
    name counts)."""
    if not 0.0 <= alpha <= 1.0:  # also false for NaN
        raise OptionError(f"alpha must be in [0, 1], got {alpha}")
    keep = check_keep_share(keep)
    before, after = _state_dicts_of_one_architecture([start, end])
    scales = check_module_scales(module_scales or {}, after)
    parameters = {name for name, _ in end.named_parameters()}
    mixed = {}
    for name, value in after.items():
        if not value.is_floating_point():
            mixed[name] = value
            continue
        change = value - before[name]
        if keep < 1.0 and name in parameters:
            change = _largest_entries(change, keep)
        mixed[name] = before[name] + alpha * _module_scale(name, scales) * change
    model = copy.deepcopy(end)
    model.load_state_dict(mixed)
    return model.eval()


def move_boxes(model: nn.Module, spec: ModelSpec, down: float = 0.0, width: float = 1.0,
               height: float = 1.0) -> tuple[nn.Module, ModelSpec]:
    """A copy of `model` and its spec that draw the boxes elsewhere: each box `width` and `height` times as wide and
    tall, then its centre `down` x its height lower (negative: higher). Datasets draw faces differently (brow to
    chin or hairline to chin, a mask included or not), and at IoU 0.5 a model drawn to one convention misses faces
    labelled to another; ``edgeface eval`` reports where a model's boxes sit against a dataset's labels.

    Exact and free at run time: SSD box coding sizes a box ``anchor size * exp(offset * variance)``, so the box
    heads' biases scale it; the shift, in the box's own height (a 6 px face moves as far, for its size, as a
    60 px one), is the spec's ``box_down``, which every decoder applies. Training starts from the network's own
    convention (its spec's ``box_down`` 0)."""
    down, width, height = check_box_shift(down), check_box_scale(width, "width"), check_box_scale(height, "height")
    heads = getattr(model, "loc", None)
    if spec.box_coding != "ssd" or not isinstance(heads, nn.ModuleList) or not all(
            isinstance(h, nn.Conv2d) and h.bias is not None and h.out_channels % 4 == 0 for h in heads):
        raise OptionError(f"{spec.name} has no SSD box heads (`loc` convolutions with biases) whose boxes edgeface "
                          "can move")
    box_down = spec.box_down / height + down  # the earlier shift was in the heights before this resize
    if abs(box_down) > 0.5:
        raise OptionError(f"{spec.name}'s boxes already sit {spec.box_down:g} of their height lower: moved "
                          f"{down:g} more, they would sit {box_down:g} lower, beyond the 0.5 a box can move")
    size_variance = spec.variances[1]
    resize = torch.tensor([0.0, 0.0, math.log(width) / size_variance, math.log(height) / size_variance])
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, bias in moved.named_parameters():
            if name.startswith("loc.") and name.endswith(".bias"):  # the box heads' (checked above)
                bias.view(-1, 4).add_(resize.to(bias))  # each anchor's (dx, dy, dw, dh)
    return moved.eval(), replace(spec, box_down=box_down)


def _largest_entries(change: torch.Tensor, keep: float) -> torch.Tensor:
    """`change` with all but its `keep` share of largest-magnitude entries set to 0."""
    flat = change.flatten()
    kept = torch.zeros_like(flat)
    largest = flat.abs().topk(math.ceil(keep * flat.numel())).indices
    kept[largest] = flat[largest]
    return kept.view_as(change)


def _module_scale(weight: str, scales: Mapping[str, float]) -> float:
    """The factor of the most specific module name in `scales` that `weight` belongs to (1 when none)."""
    owners = [name for name in scales if in_module(weight, name)]
    return scales[max(owners, key=len)] if owners else 1.0
