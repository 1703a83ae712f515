"""Ahead-of-time engine build with TensorRT-RTX: a GPU-free check that an exported ONNX parses and
builds with a dynamic-shape profile (``pip install edgeface[tensorrt-rtx]``).

TensorRT-RTX is a checking stand-in here, not a shipping target: it builds strongly typed networks
only, for sm_75 and newer desktop GPUs. Jetson engines are built with JetPack's TensorRT.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from edgeface.backends.engine_file import EngineHeader, write_engine_file
from edgeface.errors import EdgefaceError

from .onnx_spec import DEFAULT_PROFILE, profile_shapes, read_onnx_spec


class RtxBuildError(EdgefaceError, RuntimeError):
    """TensorRT-RTX is missing, or it could not parse or build the ONNX file."""


def rtx_bindings() -> Any:
    """The TensorRT-RTX Python bindings, or an RtxBuildError saying how to install them."""
    try:
        import tensorrt_rtx_bindings
    except ImportError:
        raise RtxBuildError("the TensorRT-RTX build check needs its Python bindings: "
                            "pip install 'edgeface[tensorrt-rtx]'") from None
    return tensorrt_rtx_bindings


@dataclass
class RtxBuildReport:
    onnx_path: str
    engine_bytes: int
    profile: dict[str, tuple[int, ...]]
    seconds: float


def build_engine_rtx(onnx_path: str | os.PathLike, max_batch: int = 4,
                     profile_sizes: tuple[tuple[int, int], ...] = DEFAULT_PROFILE,
                     output: Optional[str | os.PathLike] = None) -> RtxBuildReport:
    """Parse `onnx_path` and build a serialized TensorRT-RTX engine; raise RtxBuildError on failure.

    Dynamic dimensions get an optimisation profile from `profile_sizes` (w, h) and batch 1 ...
    `max_batch`; fixed dimensions keep the sizes the file declares. With `output`, the engine is
    written as an edgeface engine file (spec in its header).
    """
    trt = rtx_bindings()
    start = time.perf_counter()
    onnx_path = os.fspath(onnx_path)
    spec = read_onnx_spec(onnx_path)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise RtxBuildError(f"TensorRT-RTX cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    name = network.get_input(0).name
    shapes = profile_shapes(spec, profile_sizes, max_batch, opt_batch=1)
    profile = builder.create_optimization_profile()
    profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RtxBuildError(f"TensorRT-RTX failed to build an engine from {onnx_path}")
    if output is not None:
        write_engine_file(output, EngineHeader(spec, trt.__version__, "tensorrt_rtx", None, None, "fp32",
                                               {"profile": [list(s) for s in shapes]}), bytes(serialized))
    return RtxBuildReport(onnx_path, serialized.nbytes, dict(zip(("min", "opt", "max"), shapes)),
                          time.perf_counter() - start)
