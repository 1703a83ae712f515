"""ONNX export: graph format, spec, parity enforcement, and the TensorRT-RTX ahead-of-time build."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgeface.export import onnx_export  # noqa: E402
from edgeface.export.onnx_export import ExportError, export_onnx, load_model  # noqa: E402

from edgeface.spec import SPEC_KEY, ModelSpec  # noqa: E402


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_exported_authors_model_carries_its_spec(extd64_onnx):
    proto = onnx.load(extd64_onnx)
    assert proto.opset_import[0].version == 17 and proto.ir_version == 8
    spec = ModelSpec.from_json(_metadata(extd64_onnx)[SPEC_KEY])
    assert spec.name == "extd64" and spec.model_version == "authors-release"
    assert spec.input.size is None and spec.input.batch is None
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


@pytest.mark.parametrize("name,opset,size,batch,ir", [
    ("extd48-ssd-leaky", 13, None, None, 7),
    ("extd32-relu", 17, (320, 240), 1, 8),
])
def test_export_variants(name, opset, size, batch, ir, tmp_path, photo_paths):
    model, spec, trained = load_model(name)
    assert not trained
    report = export_onnx(model, spec, tmp_path / "m.onnx", opset=opset, input_size=size, batch=batch,
                         check_images=photo_paths[:2], compare_detections=False)
    assert report.max_abs_diff <= onnx_export.PARITY_ATOL and report.images_checked == 2
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.opset_import[0].version == opset and proto.ir_version == ir
    assert ModelSpec.from_json(_metadata(tmp_path / "m.onnx")[SPEC_KEY]).input.size == size


def test_parity_failure_is_loud_and_writes_nothing(tmp_path, monkeypatch):
    model, spec, _ = load_model("extd32")
    monkeypatch.setattr(onnx_export, "PARITY_ATOL", -1.0)  # no export can pass this
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(model, spec, tmp_path / "m.onnx", check_images=[np.zeros((64, 64, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_unknown_models():
    with pytest.raises(FileNotFoundError, match="neither a file nor a registered model"):
        load_model("resnet1000")


def test_tensorrt_rtx_builds_exported_models(extd64_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX missing: pip install edgeface[tensorrt-rtx]")
    from edgeface.export.tensorrt_rtx import build_engine_rtx

    report = build_engine_rtx(extd64_onnx, max_batch=2)
    assert report.engine_bytes > 100_000
    assert report.profile["max"] == (2, 3, 1088, 1920)
    model, spec, _ = load_model("extd64-ssd")
    fixed = tmp_path / "fixed.onnx"
    export_onnx(model, spec, fixed, input_size=(640, 480), batch=1, opset=13, compare_detections=False,
                check_images=[np.zeros((480, 640, 3), np.uint8)])
    assert build_engine_rtx(fixed).profile["opt"] == (1, 3, 480, 640)
