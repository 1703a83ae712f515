"""The TensorRT engine builder's code paths for the three API generations, without TensorRT: a stand-in
module exposes exactly the API of each generation and records what the builder asks of it. The parts
that run for real here (FP16 cast, INT8 Q/DQ quantisation and its accuracy check, engine files) do."""

from __future__ import annotations

import pickle
import types

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from edgeface.backends.engine_file import read_engine_header  # noqa: E402
from edgeface.export.tensorrt_build import BuildOptions, build_engine  # noqa: E402
from edgeface.spec import ModelSpec  # noqa: E402

# IBuilderConfig's Python API per TensorRT generation, read off NVIDIA/TensorRT's python/src/infer/pyCore.cpp
# (every .def / .def_property name of py::class_<IBuilderConfig>) at tags 8.5.3, v8.6.1, v10.3.0 and v11.1.
_CONFIG_COMMON = {
    "DLA_core", "add_optimization_profile", "avg_timing_iterations", "can_run_on_DLA", "clear_flag",
    "create_timing_cache", "default_device_type", "engine_capability", "flags", "get_device_type", "get_flag",
    "get_memory_pool_limit", "get_preview_feature", "get_tactic_sources", "get_timing_cache", "is_device_type_set",
    "num_optimization_profiles", "profile_stream", "profiling_verbosity", "reset", "reset_device_type",
    "set_device_type", "set_flag", "set_memory_pool_limit", "set_preview_feature", "set_tactic_sources",
    "set_timing_cache"}
_CONFIG_QUANTIZATION = {"algorithm_selector", "clear_quantization_flag", "get_calibration_profile",
                        "get_quantization_flag", "int8_calibrator", "quantization_flags", "set_calibration_profile",
                        "set_quantization_flag"}
CONFIG_API = {
    "8.5": _CONFIG_COMMON | _CONFIG_QUANTIZATION | {"max_workspace_size", "min_timing_iterations"},
    "8.6": _CONFIG_COMMON | _CONFIG_QUANTIZATION | {"max_workspace_size", "min_timing_iterations",
                                                    "builder_optimization_level", "hardware_compatibility_level",
                                                    "max_aux_streams", "plugins_to_serialize"},
    "10": _CONFIG_COMMON | _CONFIG_QUANTIZATION | {"builder_optimization_level", "hardware_compatibility_level",
                                                   "max_aux_streams", "plugins_to_serialize", "progress_monitor",
                                                   "runtime_platform"},
    "11": _CONFIG_COMMON | {"all_build_routes", "build_route", "builder_optimization_level",
                            "hardware_compatibility_level", "l2_limit_for_tiling", "max_aux_streams",
                            "max_num_tactics", "plugins_to_serialize", "progress_monitor", "remote_auto_tuning_config",
                            "runtime_platform", "tiling_optimization_level"},
}


def config_api(version: str) -> set[str]:
    """The API of `version`'s generation (the oldest listed for older versions, which the builder refuses)."""
    major, minor = (int(v) for v in version.split(".")[:2])
    return CONFIG_API.get(f"8.{minor}" if major == 8 else str(major), CONFIG_API["8.5"])


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(version: str, dla_unsupported: tuple[str, ...] = ("Resize",)) -> types.SimpleNamespace:
    """A module with the builder API of TensorRT `version` (8.x, 10.x or 11.x), recording calls."""
    major, minor = (int(v) for v in version.split(".")[:2])
    rec = Recorder()

    class Layer:
        def __init__(self, name):
            self.name = name

    class Network:
        num_layers = 3

        def __init__(self, flags):
            rec.calls.append(("create_network", flags))

        def get_input(self, i):
            return types.SimpleNamespace(name="input")

        def get_layer(self, i):
            return Layer(("Conv_0", "Resize_1", "Conv_2")[i])

    class Parser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse", path, onnx.load(path)))
            return True

        num_errors = 0

    class Cache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self):
            return pickle.PickleBuffer(b"timing-cache")  # IHostMemory: buffer protocol only, no len()

    api = config_api(version)

    class Config:
        """IBuilderConfig of this generation: using a name its binding does not have is an AttributeError."""

        __slots__ = ("flags", "default_device_type", "DLA_core", "_cache", "_calibrator",
                     *(("builder_optimization_level",) if "builder_optimization_level" in api else ()))

        def __init__(self):
            self.flags, self._cache, self._calibrator = set(), None, None

        def __getattribute__(self, name):
            if not name.startswith("_") and name not in api:
                raise AttributeError(f"'tensorrt.IBuilderConfig' object ({version}) has no attribute {name!r}")
            return object.__getattribute__(self, name)

        def __setattr__(self, name, value):
            if not name.startswith("_") and name not in api:
                raise AttributeError(f"'tensorrt.IBuilderConfig' object ({version}) has no attribute {name!r}")
            object.__setattr__(self, name, value)

        @property
        def int8_calibrator(self):
            return self._calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, calibrator):
            self._calibrator = calibrator

        def set_flag(self, flag):
            self.flags.add(flag)
            rec.calls.append(("flag", flag))

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", size))

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            rec.calls.append(("timing_cache_in", bytes(data)))
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            if cache.data not in (b"", b"timing-cache"):  # a cache of another GPU or TensorRT version
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache  # None until one is set

        def set_calibration_profile(self, profile):
            rec.calls.append(("calibration_profile", profile.shapes))

        def can_run_on_DLA(self, layer):
            return not any(u in layer.name for u in dla_unsupported)

    for name in [n for n in vars(Config) if not n.startswith("_") and n not in api]:
        delattr(Config, name)  # e.g. TensorRT 11 has no calibration

    class Profile:
        def set_shape(self, name, *shapes):
            self.shapes = shapes

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            self.config = Config()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.calls.append(("build", frozenset(config.flags), config._calibrator))
            return pickle.PickleBuffer(b"\x01" * 4096)  # IHostMemory: buffer protocol and nbytes, no len()

    flags = {"GPU_FALLBACK": "GPU_FALLBACK"}
    if major < 11:  # TensorRT 11 removed the precision flags and the calibrators
        flags.update(FP16="FP16", INT8="INT8")
    module = types.SimpleNamespace(
        __version__=version, recorder=rec, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda s, lvl: None}),
        Builder=Builder, OnnxParser=Parser, BuilderFlag=types.SimpleNamespace(**flags),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"), DeviceType=types.SimpleNamespace(DLA="DLA"))
    if major == 8:
        module.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    if major < 11:
        module.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda s: None})
    return module


ORIN = ("Orin", "8.7")


def test_tensorrt_8_fp16_with_explicit_batch_timing_cache_and_header(extd64_onnx, tmp_path):
    trt = fake_tensorrt("8.6.2")
    cache = tmp_path / "timing.cache"
    options = BuildOptions(precision="fp16", max_batch=2, optimization_level=4, timing_cache=str(cache))
    report = build_engine(extd64_onnx, tmp_path / "m.engine", options, trt=trt, device=ORIN)
    calls = trt.recorder.calls
    assert ("create_network", 1) in calls  # 1 << EXPLICIT_BATCH
    assert ("flag", "FP16") in calls and ("workspace", 1024 << 20) in calls
    # frames of 64x64 to 1920x1080, tuned for 640x480: network inputs padded to multiples of 128
    assert dict(c[:2] for c in calls if c[0] == "profile")["profile"] == ((1, 3, 128, 128), (2, 3, 512, 640),
                                                                         (2, 3, 1152, 1920))
    assert cache.read_bytes() == b"timing-cache" and report.generation == "8"
    header, offset = read_engine_header(tmp_path / "m.engine")
    assert (header.tensorrt_version, header.compute_capability, header.precision) == ("8.6.2", "8.7", "fp16")
    assert header.spec.name == "extd64" and (tmp_path / "m.engine").stat().st_size == offset + 4096
    # a rebuild reads the persisted timing cache back
    trt = fake_tensorrt("8.6.2")
    build_engine(extd64_onnx, tmp_path / "m.engine", options, trt=trt, device=ORIN)
    assert ("timing_cache_in", b"timing-cache") in trt.recorder.calls


def test_tensorrt_10_dla_reports_fallback_layers_and_uses_the_calibrator(extd64_onnx, tmp_path, monkeypatch):
    from edgeface.export import tensorrt_build

    trt = fake_tensorrt("10.3.0")
    made = []
    monkeypatch.setattr(tensorrt_build, "make_calibrator", lambda *a: made.append(a) or "calibrator")
    report = build_engine(extd64_onnx, tmp_path / "m.engine",
                          BuildOptions(precision="int8", dla_core=0, calibration_images=["x.jpg"], max_batch=2),
                          trt=trt, device=ORIN)
    assert ("create_network", 0) in trt.recorder.calls
    assert report.dla_fallback_layers == ["Resize_1"]
    # DLA runs static shapes: min = opt = max, or the "DLA" engine would silently run on the GPU
    # (640x480 frames: their network input, padded to multiples of 128)
    assert dict(c[:2] for c in trt.recorder.calls if c[0] == "profile")["profile"] == ((2, 3, 512, 640),) * 3
    # the calibrator feeds one image: a calibration profile of that shape, and the calibrator sized for it
    assert ("calibration_profile", ((1, 3, 512, 640),) * 3) in trt.recorder.calls
    assert made[0][3] == (1, 3, 512, 640)
    build = next(c for c in trt.recorder.calls if c[0] == "build")
    assert build[1] == {"FP16", "INT8", "GPU_FALLBACK"} and build[2] == "calibrator" and made
    assert read_engine_header(tmp_path / "m.engine")[0].extra["int8"] == "calibrator"


def test_tensorrt_11_fp16_parses_an_fp16_cast_onnx(extd64_onnx, tmp_path):
    pytest.importorskip("onnxconverter_common")
    trt = fake_tensorrt("11.4.1")
    report = build_engine(extd64_onnx, tmp_path / "m.engine", BuildOptions(precision="fp16"), trt=trt, device=ORIN)
    parsed = next(c[2] for c in trt.recorder.calls if c[0] == "parse")
    types_ = {init.data_type for init in parsed.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types_
    assert parsed.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay float32
    assert not [c for c in trt.recorder.calls if c[0] == "flag"] and "FP16-cast" in report.notes[0]


def test_tensorrt_11_int8_is_explicit_qdq_checked_against_fp32(extd64_onnx, tmp_path, photo_paths):
    trt = fake_tensorrt("11.4.1")
    with pytest.raises(ValueError, match="no INT8 calibrators"):
        build_engine(extd64_onnx, tmp_path / "m.engine", BuildOptions(precision="int8", int8_mode="calibrator"),
                     trt=trt, device=ORIN)
    options = BuildOptions(precision="int8", calibration_images=photo_paths[:6], check_images=photo_paths[6:9])
    report = build_engine(extd64_onnx, tmp_path / "m.engine", options, trt=trt, device=ORIN)
    parsed = next(c[2] for c in trt.recorder.calls if c[0] == "parse")
    ops = {n.op_type for n in parsed.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producers = {name: n.op_type for n in parsed.graph.node for name in n.output}
    heads = [n for n in parsed.graph.node if n.op_type == "Conv" and n.name.startswith(("/loc.", "/conf."))]
    assert len(heads) == 12 and all(producers.get(n.input[1]) != "DequantizeLinear" for n in heads)  # FP16/32 heads
    assert all(producers[o.name] == "Concat" for o in parsed.graph.output)  # their outputs not rounded to 8 bits
    assert "int8 vs fp32 on 3 held-out images" in report.accuracy
    kept = float(report.accuracy.split(", ")[1].split("%")[0])
    assert kept >= 80.0, report.accuracy  # INT8 keeps most of FP32's faces on real photos


def test_unsupported_versions_and_missing_tensorrt(extd64_onnx, tmp_path):
    from edgeface.errors import ModelFileError, OptionError

    with pytest.raises(ModelFileError, match="not supported"):
        build_engine(extd64_onnx, tmp_path / "m.engine", trt=fake_tensorrt("7.2.3"), device=ORIN)
    with pytest.raises(OptionError, match="precision must be"):
        BuildOptions(precision="int4")
    for option, message in ((dict(max_batch=0), "max_batch must be at least 1, got 0"),
                            (dict(workspace_mb=-5), "workspace_mb must be at least 1, got -5"),
                            (dict(dla_core=-1), "dla_core must be at least 0, got -1")):
        with pytest.raises(OptionError, match=message):
            BuildOptions(**option)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="JetPack"):
            build_engine(extd64_onnx, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_precision_check_on_the_fp16_cast(extd64_onnx, tmp_path, photo_paths):
    pytest.importorskip("onnxconverter_common")
    from edgeface.export.precision import cast_fp16, compare_precisions

    half = cast_fp16(extd64_onnx, tmp_path / "half.onnx")
    report = compare_precisions(extd64_onnx, half, "fp16", photo_paths[:3])
    assert report.max_score_diff < 0.02 and report.face_recall == 1.0, report.summary()
    assert np.isfinite(report.max_score_diff)
    from edgeface.backends.onnx_backend import OnnxBackend  # backends too (the GPU benchmark's torch FP16)

    same = compare_precisions(OnnxBackend(str(extd64_onnx)), OnnxBackend(str(extd64_onnx)), "fp32", photo_paths[:1])
    assert same.max_score_diff == 0 and same.face_recall == 1.0 and same.extra_faces == 0


def test_optimisation_level_needs_tensorrt_8_6(extd64_onnx, tmp_path):
    with pytest.raises(ValueError, match="no builder optimisation level"):
        build_engine(extd64_onnx, tmp_path / "m.engine", BuildOptions(optimization_level=3),
                     trt=fake_tensorrt("8.5.2"), device=ORIN)
    build_engine(extd64_onnx, tmp_path / "m.engine", BuildOptions(), trt=fake_tensorrt("8.5.2"), device=ORIN)
    assert read_engine_header(tmp_path / "m.engine")[0].tensorrt_version == "8.5.2"


def test_a_timing_cache_of_another_gpu_is_replaced_not_fatal(extd64_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    report = build_engine(extd64_onnx, tmp_path / "m.engine", BuildOptions(timing_cache=str(cache)),
                          trt=fake_tensorrt("10.3.0"), device=ORIN)
    assert any("another GPU or TensorRT version" in n for n in report.notes)
    assert cache.read_bytes() == b"timing-cache"  # the fresh cache of this build


def test_a_build_without_cuda_bindings_still_writes_its_engine(extd64_onnx, tmp_path, monkeypatch):
    from edgeface.backends.cuda import runtime
    from edgeface.errors import BackendError

    def no_bindings(ordinal=0):
        raise BackendError("the GPU runtime needs cuda-bindings: pip install edgeface[cuda]")

    monkeypatch.setattr(runtime, "device_identity", no_bindings)
    report = build_engine(extd64_onnx, tmp_path / "m.engine", trt=fake_tensorrt("10.3.0"))
    header = read_engine_header(tmp_path / "m.engine")[0]
    assert header.compute_capability is None and any("no GPU identity" in n for n in report.notes)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Use Deprecated in TensorRT-RTX:DeprecationWarning")  # its no-op timing cache
def test_the_tensorrt_10_builder_path_on_real_tensorrt_bindings(extd64_onnx, tmp_path):
    """TensorRT-RTX's Python bindings are the TensorRT 10 builder API (pybind11) without precision flags: the
    builder's own code path runs on them, real IHostMemory and timing cache included (FP32, no GPU needed)."""
    rtx = pytest.importorskip("tensorrt_rtx_bindings")

    class AsTensorRT10(types.ModuleType):  # the real bindings under TensorRT 10's version
        __version__ = "10.9.0"

        def __getattr__(self, name):
            return getattr(rtx, name)

    cache = tmp_path / "timing.cache"
    options = BuildOptions(precision="fp32", optimization_level=1, timing_cache=str(cache),
                           profile_sizes=((64, 64), (160, 120), (320, 320)))
    report = build_engine(extd64_onnx, tmp_path / "m.engine", options, trt=AsTensorRT10("tensorrt"), device=ORIN)
    header, offset = read_engine_header(tmp_path / "m.engine")
    assert report.engine_bytes > 10_000 and (tmp_path / "m.engine").stat().st_size == offset + report.engine_bytes
    assert header.spec.name == "extd64" and cache.stat().st_size > 0


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2", "10.3.0", "11.4.1"])
def test_the_stand_ins_offer_only_their_generations_api(version):
    """Every public name a stand-in IBuilderConfig defines exists in that generation's binding source."""
    config = fake_tensorrt(version).Builder(None).create_builder_config()
    defined = {n for n in dir(type(config)) if not n.startswith("_")}
    assert defined <= config_api(version), defined - config_api(version)
    if not version.startswith("8"):
        with pytest.raises(AttributeError, match="has no attribute"):
            config.max_workspace_size = 1 << 30  # removed in TensorRT 10
    if version.startswith("11"):
        with pytest.raises(AttributeError):
            config.int8_calibrator = object()


def test_cpu_int8_keeps_the_spec_and_the_faces(photo_paths, tmp_path):
    """ONNX Runtime's CPU INT8 form of the shipped model (python -m benchmarks int8 measures AP and speed)."""
    from edgeface import Detector
    from edgeface.export.precision import compare_precisions, quantize_int8_cpu
    from edgeface.weights import DEFAULT_MODEL

    int8 = quantize_int8_cpu(DEFAULT_MODEL, tmp_path / "int8.onnx", photo_paths[:6])
    written = Detector(DEFAULT_MODEL).spec  # the shipped file's spec, as this edgeface writes it
    assert Detector(int8).spec == ModelSpec.from_dict(written.to_dict())
    model = onnx.load(int8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    report = compare_precisions(DEFAULT_MODEL, int8, "int8", photo_paths[6:10])
    assert report.face_recall >= 0.8, report.summary()
    assert not list(tmp_path.glob("*.prepared.onnx"))
    with pytest.raises(ValueError, match="no operations of module\\(s\\) backbone in this ONNX graph"):
        quantize_int8_cpu(DEFAULT_MODEL, tmp_path / "int8.onnx", photo_paths[:1], keep_float=["base.0", "backbone"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]  # the failed one left the earlier model whole
    assert onnx.load(int8).graph.node == model.graph.node
    with pytest.raises(ValueError, match="calibration must be one of minmax, percentile"):
        quantize_int8_cpu(DEFAULT_MODEL, tmp_path / "int8.onnx", photo_paths[:1], calibration="entropy")


def test_cpu_int8_percentile_calibration_clips_rare_outliers(photo_paths, tmp_path):
    """Percentile ranges are narrower than min-max ones on the same photos, and the faces stay."""
    from edgeface.export.precision import compare_precisions, quantize_int8_cpu
    from edgeface.weights import FAST_MODEL

    def scales(path) -> dict[str, float]:  # each activation's quantisation step, by the tensor it quantises
        model = onnx.load(path)
        steps = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        return {n.input[0]: float(steps[n.input[1]]) for n in model.graph.node
                if n.op_type == "QuantizeLinear" and steps[n.input[1]].ndim == 0}

    minmax = quantize_int8_cpu(FAST_MODEL, tmp_path / "minmax.onnx", photo_paths[:4])
    percentile = quantize_int8_cpu(FAST_MODEL, tmp_path / "percentile.onnx", photo_paths[:4], calibration="percentile")
    wide, narrow = scales(minmax), scales(percentile)
    shared = [name for name in wide if name in narrow]
    assert len(shared) > 50
    assert sum(narrow[n] < wide[n] for n in shared) > 0.5 * len(shared)
    assert all(narrow[n] <= wide[n] * 1.0001 for n in shared)
    report = compare_precisions(FAST_MODEL, percentile, "int8", photo_paths[4:8])
    assert report.face_recall >= 0.8, report.summary()


def test_cpu_int8_heads_kept_in_fp32_give_unrounded_outputs(photo_paths, tmp_path):
    """With the heads in FP32 the operations that carry their outputs on (transposes, reshapes, concatenations)
    stay FP32 too: the box offsets and scores are not rounded to 8 bits on their way out, while the FPN's
    additions, which also read the INT8 backbone, are not pulled into FP32 by keeping its convolutions."""
    from edgeface.export.precision import HEADS, nodes_of, quantize_int8_cpu
    from edgeface.weights import FAST_MODEL

    fp32 = onnx.load(FAST_MODEL)
    assert all(name.startswith("/upfeat.") for name in nodes_of(fp32, ["upfeat"]))
    int8 = onnx.load(quantize_int8_cpu(FAST_MODEL, tmp_path / "int8.onnx", photo_paths[:2], keep_float=HEADS))
    producers = {out: n for n in int8.graph.node for out in n.output}
    tail, todo = [], [o.name for o in int8.graph.output]
    while todo:  # back from the outputs to the heads' convolutions
        node = producers[todo.pop()]
        tail.append(node.op_type)
        if node.op_type != "Conv":
            todo += [name for name in node.input if name in producers and producers[name].op_type != "Constant"]
    assert "Conv" in tail and not {"QuantizeLinear", "DequantizeLinear"} & set(tail), tail
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
