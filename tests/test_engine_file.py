"""Engine files: the header that carries the spec and build target, readable without TensorRT."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from edgeface import BackendError, Detector, ModelFileError, ModelSpec
from edgeface.backends.engine_file import (
    MAGIC,
    EngineHeader,
    check_engine_fits,
    read_engine_header,
    tensorrt_generation,
    write_engine_file,
)

SPEC = ModelSpec(name="extd64").with_input_shape((640, 480), batch=1)


def test_round_trip_and_damage(tmp_path):
    path = tmp_path / "m.engine"
    header = EngineHeader(SPEC, "10.3.0", compute_capability="8.7", device_name="Orin", precision="fp16")
    write_engine_file(path, header, b"\x01" * 100)
    read, offset = read_engine_header(path)
    assert read.spec == SPEC and read.precision == "fp16" and read.compute_capability == "8.7"
    assert path.read_bytes()[offset:] == b"\x01" * 100
    data = path.read_bytes()
    (tmp_path / "truncated.engine").write_bytes(data[:offset])
    with pytest.raises(ModelFileError, match="holds no engine"):
        read_engine_header(tmp_path / "truncated.engine")
    (tmp_path / "corrupt.engine").write_bytes(data[:24] + b"}" + data[25:])
    with pytest.raises(ModelFileError, match="header is corrupt"):
        read_engine_header(tmp_path / "corrupt.engine")
    with pytest.raises(ModelFileError, match="no such model file"):
        read_engine_header(tmp_path / "missing.engine")


def test_mismatch_messages_say_what_and_how_to_rebuild():
    header = EngineHeader(SPEC, "8.6.2", compute_capability="8.7", device_name="Jetson AGX Orin")
    with pytest.raises(ModelFileError, match=r"built with TensorRT 8.6.2, this machine has 10.3.0; rebuild"):
        check_engine_fits(header, "m.engine", "10.3.0", "8.7")
    with pytest.raises(ModelFileError, match=r"built for Jetson AGX Orin \(sm_87\), this GPU is sm_72"):
        check_engine_fits(header, "m.engine", "8.6.1", "7.2")
    check_engine_fits(header, "m.engine", "8.6.1", "8.7")  # patch releases of one minor version load


def test_tensorrt_generations():
    assert [tensorrt_generation(v) for v in ("8.5.2", "8.6.2", "10.3.0", "10.13.1", "11.4.1")] == \
        ["8", "8", "10", "10", "11"]
    with pytest.raises(ModelFileError, match="not supported"):
        tensorrt_generation("8.2.1")


def test_rtx_built_engine_carries_its_spec(tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX missing: pip install edgeface[tensorrt-rtx]")
    pytest.importorskip("torch")
    from edgeface.export.onnx_export import export_onnx, load_model
    from edgeface.export.tensorrt_rtx import build_engine_rtx

    model, spec, _ = load_model("extd32")
    export_onnx(model, spec, tmp_path / "m.onnx", input_size=(160, 120), batch=1, compare_detections=False,
                check_images=[np.zeros((120, 160, 3), np.uint8)])
    build_engine_rtx(tmp_path / "m.onnx", output=tmp_path / "m.engine")
    header, _ = read_engine_header(tmp_path / "m.engine")
    assert header.spec.name == "extd32" and header.spec.input.size == (160, 120)
    assert header.tensorrt_flavour == "tensorrt_rtx"
    with pytest.raises(BackendError, match=r"m.engine was built by TensorRT-RTX [\d.]+, edgeface's GPU-free build "
                                           "check, which is not a runtime here"):
        Detector(tmp_path / "m.engine")  # (TensorRT would refuse its plan: it said "built with TensorRT 1.7")


def test_an_engine_without_tensorrt_says_what_it_needs(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    write_engine_file(tmp_path / "m.engine", EngineHeader(SPEC, "10.3.0"), b"plan")
    with pytest.raises(BackendError, match=r"m.engine is a TensorRT engine \(extd64, TensorRT 10.3.0\) and TensorRT "
                                           "is not installed here"):
        Detector(tmp_path / "m.engine")


@pytest.mark.parametrize("header, says", [
    (b"{}", "no 'spec'; no 'tensorrt_version'"),
    (b'"text"', "a JSON object was expected"),
    (b'{"spec": {"name": "extd32"}, "tensorrt_version": 10.3}', "tensorrt_version 10.3 is not a version"),
    (b'{"spec": {"name": "extd32"}, "tensorrt_version": "10.3", "compute_capability": 8.7}',
     "compute_capability 8.7 has the wrong type"),
    (b'{"spec": {"name": "extd32"}, "tensorrt_version": "10.3", "tensorrt_flavour": "x", "new": 1}',
     "unknown field 'new'; unknown tensorrt_flavour 'x'"),
])
def test_malformed_header_is_a_model_file_error(tmp_path, header, says):
    """A header that is JSON but not what edgeface writes fails at load, naming the field (it used to surface as
    a KeyError, or an AttributeError only when the TensorRT version was compared)."""
    path = tmp_path / "m.engine"
    path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + b"plan")
    with pytest.raises(ModelFileError, match=re.escape(f"the engine header is corrupt ({says}")):
        Detector(path)


def test_engine_from_a_newer_edgeface_says_upgrade(tmp_path):
    path = tmp_path / "m.engine"
    write_engine_file(path, EngineHeader(SPEC, "10.3.0"), b"plan")
    data = path.read_bytes().replace(b'"format_version": 1', b'"format_version": 7')
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="written by a newer edgeface .engine file format 7.; upgrade"):
        read_engine_header(path)
