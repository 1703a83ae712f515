"""TensorRT engine builder for Jetson and desktop GPUs (``edgeface build-engine``).

Runs where TensorRT is installed (JetPack's, or NVIDIA's wheels on a desktop) and writes an edgeface
engine file: the serialized engine behind a header with the spec and the build target, so
``Detector("model.engine")`` needs no side file and rejects an engine built for another GPU or
TensorRT version with a message that says how to rebuild.

Three API generations, detected from ``tensorrt.__version__``:

- 8.5/8.6 (JetPack 5.1 / 6.0): explicit-batch network flag; FP16/INT8 builder flags; INT8 from an
  entropy calibrator (with a calibration cache) or from a Q/DQ ONNX;
- 10.x (JetPack 6.1/6.2, desktops): explicit batch is implicit; FP16 flag; INT8 from a Q/DQ ONNX, or the
  (deprecated) calibrator, which DLA still needs;
- 11.x (desktops, JetPack 7.2.2+): strongly typed networks only: FP16 comes from an FP16-cast ONNX and
  INT8 from a Q/DQ ONNX (see :mod:`edgeface.export.precision`); no precision flags, no calibrators.

Every generation gets an optimisation profile (batch and input size), a persisted timing cache, the
builder optimisation level, a workspace limit and, on Xavier / Orin, DLA with GPU fallback and a
report of the layers that fell back.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgeface.backends.engine_file import EngineHeader, tensorrt_generation, write_engine_file
from edgeface.core.files import atomic_write
from edgeface.errors import OptionError

from .onnx_spec import DEFAULT_PROFILE, profile_shapes, read_onnx_spec
from .precision import calibration_batches, cast_fp16, compare_precisions, quantize_int8

if TYPE_CHECKING:
    from edgeface.spec import ModelSpec

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BuildOptions:
    precision: str = "fp16"
    max_batch: int = 1
    profile_sizes: tuple[tuple[int, int], ...] = DEFAULT_PROFILE  # ignored for fixed-size exports
    workspace_mb: int = 1024
    optimization_level: Optional[int] = None  # 0-5 (TensorRT 8.6+); None: TensorRT's default (3)
    timing_cache: Optional[str] = None  # read if present, written after the build
    dla_core: Optional[int] = None  # Xavier / Orin DLA core; unsupported layers fall back to the GPU
    calibration_images: Sequence[str] = ()  # INT8: calibration set
    check_images: Sequence[str] = ()  # held out from calibration: accuracy of the precision against FP32
    calibration_cache: Optional[str] = None  # entropy calibrator's cache (TensorRT 8/10)
    int8_mode: str = "auto"  # "qdq" (explicit quantisation), "calibrator" (implicit, TRT 8/10), "auto"

    def __post_init__(self) -> None:
        """Checked before TensorRT is imported: a typo costs no import and no parse."""
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.int8_mode not in ("auto", "qdq", "calibrator"):
            raise OptionError(f"int8_mode must be auto, qdq or calibrator, got {self.int8_mode!r}")
        for name, value, low in (("max_batch", self.max_batch, 1), ("workspace_mb", self.workspace_mb, 1),
                                 ("dla_core", self.dla_core, 0), ("optimization_level", self.optimization_level, 0)):
            if value is not None and value < low:
                raise OptionError(f"{name} must be at least {low}, got {value}")


@dataclass
class BuildReport:
    engine_path: str
    tensorrt_version: str
    generation: str
    precision: str
    engine_bytes: int
    seconds: float
    profile: dict[str, tuple[int, ...]]
    dla_fallback_layers: list[str] = field(default_factory=list)
    accuracy: Optional[str] = None  # the precision check against FP32
    notes: list[str] = field(default_factory=list)


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError("building engines needs TensorRT: on Jetson it comes with JetPack (python3-libnvinfer); "
                           "on desktops `pip install tensorrt` from NVIDIA's index. No GPU here? "
                           "`edgeface export onnx --rtx-check` checks an ONNX builds, without a GPU") from exc
    return trt


class Generation:
    """The TensorRT API of one generation, as the builder needs it."""

    def __init__(self, trt: Any):
        self.trt = trt
        self.version = trt.__version__
        self.name = tensorrt_generation(self.version)

    @property
    def strongly_typed(self) -> bool:
        return self.name == "11"

    def network_flags(self) -> int:
        if self.name == "8":
            return 1 << int(self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        return 0  # explicit batch is the only mode from 10; 11 networks are always strongly typed

    def int8_mode(self, options: BuildOptions) -> str:
        if options.precision != "int8":
            return "none"
        if self.strongly_typed:
            if options.int8_mode == "calibrator":
                raise ValueError(f"TensorRT {self.version} has no INT8 calibrators: use int8_mode='qdq'")
            return "qdq"
        if options.int8_mode == "auto":  # DLA needs implicit quantisation; GPUs take Q/DQ graphs
            return "calibrator" if options.dla_core is not None else "qdq"
        return options.int8_mode

    def set_precision(self, config: Any, options: BuildOptions, int8_mode: str) -> None:
        if self.strongly_typed:
            return  # the ONNX carries the precision
        if options.precision in ("fp16", "int8"):
            config.set_flag(self.trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers that stay float
        if options.precision == "int8":
            config.set_flag(self.trt.BuilderFlag.INT8)


def _network_input_onnx(onnx_path: str, options: BuildOptions, gen: Generation, workdir: str,
                        int8_mode: str) -> tuple[str, list[str]]:
    """The ONNX the network is parsed from: as exported, FP16-cast (strongly typed) or Q/DQ (INT8)."""
    notes = []
    if int8_mode == "qdq":
        if not options.calibration_images:
            raise ValueError("INT8 needs --calibration-images (a folder of typical frames)")
        path = quantize_int8(onnx_path, os.path.join(workdir, "int8.onnx"), options.calibration_images)
        notes.append(f"INT8 as explicit Q/DQ from {len(options.calibration_images)} calibration images")
        return path, notes
    if options.precision == "fp16" and gen.strongly_typed:
        notes.append("FP16 from an FP16-cast ONNX (strongly typed network)")
        return cast_fp16(onnx_path, os.path.join(workdir, "fp16.onnx")), notes
    return onnx_path, notes


def build_engine(onnx_path: str | os.PathLike, output: str | os.PathLike, options: Optional[BuildOptions] = None,
                 trt: Any = None, device: Optional[tuple[str, str]] = None) -> BuildReport:
    """Build an edgeface engine file at `output` from an exported ONNX.

    `trt` is the TensorRT module (default: ``import tensorrt``); `device` is ``(name, compute capability)``
    of the GPU the engine is for (default: read through cuda-bindings).
    """
    start = time.perf_counter()
    options = options or BuildOptions()
    trt = trt or _import_tensorrt()
    gen = Generation(trt)
    onnx_path = os.fspath(onnx_path)
    spec = read_onnx_spec(onnx_path)
    int8_mode = gen.int8_mode(options)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    with tempfile.TemporaryDirectory() as workdir:
        source, notes = _network_input_onnx(onnx_path, options, gen, workdir, int8_mode)
        network = builder.create_network(gen.network_flags())
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(source):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT {gen.version} cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        if options.optimization_level is not None:
            if not hasattr(type(config), "builder_optimization_level"):  # a property since TensorRT 8.6
                raise ValueError(f"TensorRT {gen.version} has no builder optimisation level (8.6 and newer): "
                                 "drop --opt-level")
            config.builder_optimization_level = options.optimization_level
        gen.set_precision(config, options, int8_mode)
        shapes = profile_shapes(spec, options.profile_sizes, options.max_batch, opt_batch=options.max_batch)
        if options.dla_core is not None and len(set(shapes)) > 1:  # DLA runs static shapes only
            shapes = (shapes[1],) * 3
            notes.append(f"DLA needs static shapes: the profile is fixed at {shapes[1]} (--opt-size, --max-batch)")
        input_name = network.get_input(0).name
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, *shapes)
        config.add_optimization_profile(profile)
        if int8_mode == "calibrator":
            calibration_shape = (1, *shapes[1][1:])  # the calibrator feeds one image at a time
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(input_name, *(calibration_shape,) * 3)
            config.set_calibration_profile(calibration_profile)
            config.int8_calibrator = make_calibrator(trt, options, spec, calibration_shape)
            notes.append("INT8 from the entropy calibrator" + (f" (cache {options.calibration_cache})"
                                                                  if options.calibration_cache else ""))
        fallback = _configure_dla(trt, config, network, options) if options.dla_core is not None else []
        notes += _load_timing_cache(config, options.timing_cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT {gen.version} failed to build an engine from {onnx_path} (see its log above)")
        engine = bytes(memoryview(serialized))  # IHostMemory: the buffer protocol and nbytes, no len()
        if options.timing_cache:
            notes += _save_timing_cache(config, options.timing_cache)
        name, capability = device or gpu_identity()
        if capability is None:
            notes.append("no GPU identity (cuda-bindings missing or no driver): the engine file names no GPU, "
                         "so a mismatch is only found when TensorRT loads it")
        header = EngineHeader(spec, gen.version, "tensorrt",
                              capability, name, options.precision,
                              {"profile": [list(s) for s in shapes], "dla_core": options.dla_core,
                               "int8": int8_mode if int8_mode != "none" else None})
        write_engine_file(output, header, engine)
        accuracy = None
        if options.precision != "fp32" and options.check_images:
            if source != onnx_path:  # the precision is in the graph: check it on ONNX Runtime against FP32
                accuracy = compare_precisions(onnx_path, source, options.precision, options.check_images).summary()
            else:  # builder flags: the precision only exists inside TensorRT
                notes.append("FP16 from the builder flag: check it against FP32 by running the engine "
                             "(`python -m benchmarks gpu`)")
    return BuildReport(os.fspath(output), gen.version, gen.name, options.precision, len(engine),
                       time.perf_counter() - start, dict(zip(("min", "opt", "max"), shapes)), fallback, accuracy,
                       notes)


def _configure_dla(trt: Any, config: Any, network: Any, options: BuildOptions) -> list[str]:
    """Put the network on DLA core `options.dla_core` with GPU fallback; the layers DLA cannot run."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = options.dla_core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return [network.get_layer(i).name for i in range(network.num_layers)
            if not config.can_run_on_DLA(network.get_layer(i))]


def _load_timing_cache(config: Any, path: Optional[str]) -> list[str]:
    """Give the build the timing cache at `path` (if any); a cache TensorRT rejects (another GPU or TensorRT
    version) is replaced by an empty one. Returns notes for the report."""
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    if data:
        cache = config.create_timing_cache(data)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return [f"timing cache {path}: reused"]
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        return ["TensorRT gave no timing cache: building without one"]
    return [f"timing cache {path} is from another GPU or TensorRT version: started afresh"] if data else []


def _save_timing_cache(config: Any, path: str) -> list[str]:
    cache = config.get_timing_cache()
    if cache is None:  # nothing was set, or the build dropped it
        return [f"no timing cache to write to {path}"]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(memoryview(cache.serialize()))
    return []


def make_calibrator(trt: Any, options: BuildOptions, spec: ModelSpec, shape: tuple[int, int, int, int]) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding letterboxed calibration images from device memory
    (cuda-bindings), reading and writing `options.calibration_cache`."""
    from edgeface.backends.cuda.runtime import DeviceBuffer

    batches = calibration_batches(options.calibration_images, spec, (shape[3], shape[2]))
    if not batches and not (options.calibration_cache and os.path.isfile(options.calibration_cache)):
        raise ValueError("the INT8 calibrator needs calibration images or an existing calibration cache")

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(batches)
            self.buffer = DeviceBuffer(int(np.prod((1, *shape[1:]))) * 4) if batches else None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None or self.buffer is None:  # no buffer: no batches
                return None
            self.buffer.copy_from_host(np.ascontiguousarray(batch, np.float32))
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            path = options.calibration_cache
            if path and os.path.isfile(path):
                with open(path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if options.calibration_cache:
                with open(options.calibration_cache, "wb") as f:
                    f.write(bytes(cache))

    return Calibrator()


def gpu_identity() -> tuple[Optional[str], Optional[str]]:
    """``(name, "major.minor")`` of CUDA device 0, through cuda-bindings; ``(None, None)`` without cuda-bindings
    or a driver (the runtime imports cuda-bindings only when called, so that is a BackendError, not an
    ImportError): a finished build is never lost to it."""
    from edgeface.backends.cuda.runtime import device_identity
    from edgeface.errors import BackendError

    try:
        return device_identity()
    except BackendError:
        return None, None
