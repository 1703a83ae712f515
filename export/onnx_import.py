"""An edgeface ONNX export read back into its torch model: the shipped models (``Detector("fast")``'s file) and
any ``edgeface export onnx`` file can be fine-tuned, distilled from, averaged or moved like a checkpoint.

An export folds every BatchNorm into the convolution before it and writes single-slope PReLUs as LeakyRelu. The
model read back keeps its BatchNorm modules, so its weights line up with every checkpoint of the architecture,
in the folded form :func:`~edgeface.models.checkpoint.bake_batchnorm` gives: the convolution holds the folded
weights, the BatchNorm only adds the folded bias (scale 1, mean 0, variance 1 - eps). Such a model trains with
``freeze_bn: true``. Weights are matched to the graph's Conv and LeakyRelu / PRelu nodes by their weights' names
where the export kept them, else by the module paths torch writes into node names, each checked for its shape, and
the model read back must give the file's outputs on ONNX Runtime, or nothing is returned.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import nn

from edgeface.errors import ModelFileError
from edgeface.models.checkpoint import bake_batchnorm
from edgeface.models.registry import create_model
from edgeface.spec import ModelSpec

from .onnx_spec import spec_of

if TYPE_CHECKING:
    import onnx

ACTIVATIONS = ("LeakyRelu", "PRelu")
LAYERS = (nn.Conv2d, nn.PReLU, nn.LeakyReLU)  # the modules whose weights a graph's nodes hold
Layer = Union[nn.Conv2d, nn.PReLU, nn.LeakyReLU]
PARITY_RTOL = 1e-3  # outputs of the model read back against the file's, relative to max(|output|, 1)
QUANTISED = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}


def load_onnx_weights(path: str | os.PathLike) -> tuple[nn.Module, ModelSpec]:
    """The eval-mode torch model and spec of an edgeface ONNX export (float32 or float16 weights); a
    :class:`ModelFileError` saying why for other files (INT8 models, foreign graphs, corrupt files)."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"no such model file: {path}")
    try:
        proto = onnx.load(path)
    except Exception as exc:  # protobuf raises its own DecodeError, onnx others
        raise ModelFileError(f"{path} is not a readable ONNX model ({type(exc).__name__}); is the file "
                             "complete?") from exc
    try:
        spec = spec_of(proto, path)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    quantised = sorted(QUANTISED & {node.op_type for node in proto.graph.node})
    if quantised:
        raise ModelFileError(f"{path} is quantised ({', '.join(quantised)} nodes): its weights are not the "
                             "model's; read the float model it was quantised from")
    try:
        model = create_model(spec.name).eval()
    except KeyError as exc:
        raise ModelFileError(f"{path} holds a model this edgeface does not build: {exc.args[0]}") from None
    weights = {i.name: onnx.numpy_helper.to_array(i).astype(np.float32) for i in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", *ACTIVATIONS)]
    with torch.no_grad():
        folded_into = bake_batchnorm(model)  # conv -> the BatchNorm that now only adds its bias
        _load(model, spec, nodes, weights, folded_into, path)
    _check_outputs(model, spec, path)
    return model, spec


def _probe_size(spec: ModelSpec) -> tuple[int, int]:
    """(h, w) of an input the model takes: the export's fixed size, else 256 x 256 rounded to its multiple."""
    if spec.input.size:
        width, height = spec.input.size
        return height, width
    side = -(-256 // spec.input.size_multiple) * spec.input.size_multiple
    return side, side


def _module_of(model: nn.Module, node_name: str) -> nn.Module | None:
    """The module a node was traced from, by the scope path torch writes into node names: ``/base.1/conv/conv.0_3/
    Conv`` is ``base.1.conv.0`` (its fourth use); each scope repeats its parent's name before its own. None when the
    name is no such path."""
    module: nn.Module | None = model
    parent = ""
    for scope in node_name.strip("/").split("/")[:-1]:
        scope = re.sub(r"_\d+$", "", scope)  # the n-th use of a shared module
        own = scope[len(parent) + 1:] if parent and scope.startswith(parent + ".") else scope
        for part in own.split("."):
            module = module._modules.get(part) if isinstance(module, nn.Module) else None
        parent = scope
        if module is None:
            return None
    return module


def _load(model: nn.Module, spec: ModelSpec, nodes: list, weights: dict[str, np.ndarray],
          folded_into: dict[nn.Conv2d, nn.BatchNorm2d], path: str) -> None:
    names = {module: name for name, module in model.named_modules()}
    loaded: dict[nn.Module, list[np.ndarray]] = {}
    modules = dict(model.named_modules())
    for node in nodes:
        named = node.input[1].rsplit(".", 1) if len(node.input) > 1 else []  # unfolded weights keep their names
        module = (modules[named[0]] if len(named) == 2 and named[1] == "weight" and named[0] in modules
                  else _module_of(model, node.name))
        if not isinstance(module, LAYERS) or isinstance(module, nn.Conv2d) != (node.op_type == "Conv"):
            raise ModelFileError(f"{path}: node {node.name} ({node.op_type}) is no layer of {spec.name}; was it "
                                 "exported by edgeface from this model?")
        try:
            values = _node_weights(module, node, weights)
        except (KeyError, ValueError) as exc:
            raise ModelFileError(f"{path}: node {node.name} does not fit {names[module]} of {spec.name}: "
                                 f"{exc}") from None
        if module in loaded:  # a shared module runs several times: every use must hold the same weights
            if any(not np.array_equal(a, b) for a, b in zip(loaded[module], values)):
                raise ModelFileError(f"{path}: the uses of {spec.name}'s shared {names[module]} hold different "
                                     "weights; the graph was edited, not exported")
            continue
        loaded[module] = values
        norm = folded_into.get(module) if isinstance(module, nn.Conv2d) else None
        _assign(module, values, norm, f"{names[module]} ({node.name})")
    missing = [name for name, m in model.named_modules()
               if m not in loaded and not isinstance(m, (nn.BatchNorm2d, nn.LeakyReLU))
               and any(True for _ in m.parameters(recurse=False))]
    if missing:
        raise ModelFileError(f"{path}: no weights for {', '.join(missing[:5])} of {spec.name} in the graph")


def _node_weights(module: Layer, node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A Conv node's weight and bias (zeros when it has none), or an activation's slope, as `module` holds them."""
    if isinstance(module, nn.Conv2d):
        weight = weights[node.input[1]]
        if weight.shape != tuple(module.weight.shape):
            raise ValueError(f"weight {weight.shape}, the module's {tuple(module.weight.shape)}")
        bias = weights[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(weight.shape[0],
                                                                                           np.float32)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias {bias.shape} for {weight.shape[0]} output channels")
        return [weight, bias]
    if node.op_type == "LeakyRelu":
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.01)
        slope = np.array([alpha], np.float32)
    else:
        slope = weights[node.input[1]].reshape(-1)
    if isinstance(module, nn.LeakyReLU):
        if slope.size != 1 or not np.isclose(slope[0], module.negative_slope, rtol=1e-6, atol=1e-7):
            raise ValueError(f"slope {slope.tolist()[:4]}, the module's fixed {module.negative_slope}")
        return [slope]
    if slope.size not in (1, module.weight.numel()):
        raise ValueError(f"{slope.size} slopes, the module's {module.weight.numel()}")
    return [np.broadcast_to(slope, tuple(module.weight.shape)).copy()]


def _assign(module: Layer, values: list[np.ndarray], norm: nn.BatchNorm2d | None, where: str) -> None:
    if isinstance(module, nn.LeakyReLU):
        return
    if isinstance(module, nn.PReLU):
        module.weight.copy_(torch.from_numpy(values[0]))
        return
    weight, bias = values
    module.weight.copy_(torch.from_numpy(weight))
    if norm is not None:  # the folded bias lives in the BatchNorm after it
        norm.bias.copy_(torch.from_numpy(bias))
        if module.bias is not None:
            module.bias.zero_()
    elif module.bias is not None:
        module.bias.copy_(torch.from_numpy(bias))
    elif np.any(bias):
        raise ModelFileError(f"{where}: the graph adds a bias the model has no place for")


def _check_outputs(model: nn.Module, spec: ModelSpec, path: str) -> None:
    """The model read back must give the file's outputs (ONNX Runtime, a random input)."""
    import onnxruntime as ort

    height, width = _probe_size(spec)
    batch = np.random.default_rng(0).standard_normal((spec.input.batch or 1, 3, height, width)).astype(np.float32)
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        expected = [e.astype(np.float32) for e in session.run(None, {feed.name: batch.astype(
            np.float16 if feed.type == "tensor(float16)" else np.float32)})]
    except Exception as exc:  # onnxruntime's own error types
        raise ModelFileError(f"{path}: ONNX Runtime cannot run it, so its weights cannot be checked: "
                             f"{str(exc).splitlines()[0][:300]}") from exc
    with torch.no_grad():
        got = [t.numpy() for t in model(torch.from_numpy(batch))]
    for name, e, g in zip(("loc", "conf"), expected, got):
        diff = float(np.abs(e - g).max() / max(1.0, float(np.abs(e).max()))) if e.shape == g.shape else np.inf
        if not diff <= PARITY_RTOL:
            raise ModelFileError(f"{path}: the weights read back give other {name} outputs than the file "
                                 f"(relative difference {diff:.3g}); the graph is not a plain edgeface export of "
                                 f"{spec.name}")
