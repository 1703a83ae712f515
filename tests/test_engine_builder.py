"""The TensorRT engine builder's code paths for the three API generations, without TensorRT: a stand-in
module exposes exactly the API of each generation and records what the builder asks of it. The parts
that run for real here (FP16 cast, INT8 Q/DQ quantisation and its accuracy check, engine files) do."""

from __future__ import annotations

import types

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from edgeface.backends.engine_file import read_engine_header  # noqa: E402
from edgeface.export.tensorrt_build import BuildOptions, build_engine  # noqa: E402


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(version: str, dla_unsupported: tuple[str, ...] = ("Resize",)) -> types.SimpleNamespace:
    """A module with the builder API of TensorRT `version` (8.x, 10.x or 11.x), recording calls."""
    major = int(version.split(".")[0])
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
        def serialize(self):
            return b"timing-cache"

    class Config:
        def __init__(self):
            self.flags, self.int8_calibrator = set(), None

        def set_flag(self, flag):
            self.flags.add(flag)
            rec.calls.append(("flag", flag))

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", size))

        def add_optimization_profile(self, profile):
            rec.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            rec.calls.append(("timing_cache_in", bytes(data)))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return Cache()

        def can_run_on_DLA(self, layer):
            return not any(u in layer.name for u in dla_unsupported)

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
            rec.calls.append(("build", frozenset(config.flags), config.int8_calibrator))
            return b"\x01" * 4096

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
    assert dict(c[:2] for c in calls if c[0] == "profile")["profile"] == ((1, 3, 64, 64), (2, 3, 480, 640),
                                                                         (2, 3, 1088, 1920))
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
                          BuildOptions(precision="int8", dla_core=0, calibration_images=["x.jpg"]), trt=trt,
                          device=ORIN)
    assert ("create_network", 0) in trt.recorder.calls
    assert report.dla_fallback_layers == ["Resize_1"]
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
    assert "int8 vs fp32 on 3 held-out images" in report.accuracy
    kept = float(report.accuracy.split(", ")[1].split("%")[0])
    assert kept >= 80.0, report.accuracy  # INT8 keeps most of FP32's faces on real photos


def test_unsupported_versions_and_missing_tensorrt(extd64_onnx, tmp_path):
    from edgeface.errors import ModelFileError

    with pytest.raises(ModelFileError, match="not supported"):
        build_engine(extd64_onnx, tmp_path / "m.engine", trt=fake_tensorrt("7.2.3"), device=ORIN)
    with pytest.raises(ValueError, match="precision must be"):
        BuildOptions(precision="int4")
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
