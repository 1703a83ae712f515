"""The spec inside an exported ONNX file, and the engine input shapes it implies. Torch-free, so the
TensorRT builder runs on a Jetson without torch."""

from __future__ import annotations

import os

import onnx

from edgeface.core.preprocess import network_size
from edgeface.spec import SPEC_KEY, ModelSpec

DEFAULT_PROFILE = ((64, 64), (640, 480), (1920, 1080))  # (w, h) of the frames an engine takes: min, opt, max


def read_onnx_spec(path: str | os.PathLike) -> ModelSpec:
    """The edgeface spec stored in an ONNX file's ``metadata_props``."""
    return spec_of(onnx.load(os.fspath(path), load_external_data=False), path)


def spec_of(proto: onnx.ModelProto, path: str | os.PathLike) -> ModelSpec:
    """The edgeface spec in a loaded ONNX model (read from `path`); ValueError when it has none."""
    props = {p.key: p.value for p in proto.metadata_props}
    if SPEC_KEY not in props:
        raise ValueError(f"{path} carries no edgeface spec: export it with `edgeface export onnx`")
    try:
        return ModelSpec.from_json(props[SPEC_KEY])
    except ValueError as exc:
        raise ValueError(f"{path} carries a model spec this edgeface cannot use: {exc}") from None


def embed_spec(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """Replace `proto`'s metadata with `spec` (and the model name)."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {SPEC_KEY: spec.to_json(), "edgeface.model": spec.name})


def profile_shapes(spec: ModelSpec, profile_sizes: tuple[tuple[int, int], ...], max_batch: int,
                   opt_batch: int) -> tuple[tuple[int, int, int, int], ...]:
    """``(min, opt, max)`` NCHW input shapes of an engine's optimisation profile: a fixed-size or fixed-batch
    export keeps its own size or batch; dynamic ones take the network inputs of frames of `profile_sizes` (w, h:
    padded to the spec's size multiple) and batches 1, `opt_batch`, `max_batch`."""
    batch = spec.input.batch
    sizes = [spec.input.size] * 3 if spec.input.size else [network_size(spec.input, s) for s in profile_sizes]
    return tuple((batch or b, 3, h, w) for b, (w, h) in zip((1, opt_batch, max_batch), sizes))
