"""ONNX export: graph format, spec, parity enforcement, and the TensorRT-RTX ahead-of-time build."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from conftest import perturb_batchnorm  # noqa: E402
from edgeface.export import onnx_export  # noqa: E402
from edgeface.export.onnx_export import ExportError, export_onnx, load_model  # noqa: E402
from edgeface.models import model_names  # noqa: E402
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
    ops = {node.op_type for node in proto.graph.node}
    assert "LeakyRelu" in ops and "PRelu" not in ops  # single-slope PReLUs folded (the parity check held)


def test_fold_scalar_prelu_keeps_the_function():
    import torch

    from edgeface.export.onnx_export import fold_scalar_prelu

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.PReLU(), torch.nn.PReLU(4))
    torch.nn.init.uniform_(net[1].weight, 0.1, 0.5)
    torch.nn.init.uniform_(net[2].weight, -0.5, 0.5)
    folded = fold_scalar_prelu(net)
    assert isinstance(folded[1], torch.nn.LeakyReLU) and isinstance(folded[2], torch.nn.PReLU)
    assert isinstance(net[1], torch.nn.PReLU)  # the original is untouched
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(folded(x), net(x), rtol=0, atol=0)


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


@pytest.mark.parametrize("name, options, message", [
    ("m.onnx", dict(opset=12), "opset must be between 13 (TensorRT 8.0, JetPack 4.6) and "),
    ("m.onnx", dict(opset=99), "got 99"),
    ("m.onnx", dict(batch=0), "batch must be at least 1 (or none: any batch), got 0"),
    ("m.txt", {}, "the output is an ONNX file and must end in .onnx"),
])
def test_export_options_torch_or_detector_would_reject_are_option_errors(name, options, message, tmp_path):
    from edgeface.errors import OptionError

    model, spec, _ = load_model("extd32")
    with pytest.raises(OptionError, match=re.escape(message)):
        export_onnx(model, spec, tmp_path / name, **options)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tensorrt_rtx_is_an_error_saying_how_to_install_it(monkeypatch):
    import sys

    from edgeface.export.tensorrt_rtx import RtxBuildError, build_engine_rtx

    monkeypatch.setitem(sys.modules, "tensorrt_rtx_bindings", None)  # import fails as if not installed
    with pytest.raises(RtxBuildError, match="needs its Python bindings: pip install 'edgeface\\[tensorrt-rtx\\]'"):
        build_engine_rtx("never_read.onnx")


def test_export_refuses_unknown_models():
    with pytest.raises(FileNotFoundError, match="neither a file nor a registered model"):
        load_model("resnet1000")


def test_tensorrt_rtx_builds_exported_models(extd64_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX missing: pip install edgeface[tensorrt-rtx]")
    from edgeface.export.tensorrt_rtx import build_engine_rtx

    report = build_engine_rtx(extd64_onnx, max_batch=2)
    assert report.engine_bytes > 100_000
    assert report.profile["max"] == (2, 3, 1152, 1920)  # 1920x1080 frames, padded to multiples of 128
    model, spec, _ = load_model("extd64-ssd")
    fixed = tmp_path / "fixed.onnx"
    export_onnx(model, spec, fixed, input_size=(640, 480), batch=1, opset=13, compare_detections=False,
                check_images=[np.zeros((480, 640, 3), np.uint8)])
    assert build_engine_rtx(fixed).profile["opt"] == (1, 3, 480, 640)


HEAVY = [pytest.param(n, marks=pytest.mark.slow) for n in ("srn", "hr-res50", "shf")]


def _exportable(name: str) -> tuple[torch.nn.Module, ModelSpec]:
    """A registry model with random weights whose export parity can hold: for the heavy models small random
    predictors, as trained ones are (SRN's second step multiplies its deltas by e^(first-step log-scale), rounding
    noise too)."""
    torch.manual_seed(0)
    model, spec, _ = load_model(name)
    if not name.startswith("extd"):
        torch.manual_seed(0)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.out_channels <= 125:
                torch.nn.init.normal_(module.weight, std=0.01)
        if name == "srn":  # SRN's prior bias puts first-step scores on the 0.01 STC threshold: scores flip
            torch.nn.init.zeros_(model.cls[-1].bias)
    return model, spec


@pytest.mark.parametrize("name", [n for n in model_names() if n.startswith("extd")] + HEAVY)
def test_every_variant_exports_and_builds_with_tensorrt_rtx(name, tmp_path, photo_paths):
    """The CPU stand-in for an engine build: every model's dynamic ONNX parses and builds."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX missing: pip install edgeface[tensorrt-rtx]")
    import cv2

    from edgeface.export.tensorrt_rtx import build_engine_rtx

    model, spec = _exportable(name)
    small = cv2.resize(cv2.imread(photo_paths[0]), (160, 120))
    export_onnx(model, spec, tmp_path / "m.onnx", check_images=[small], compare_detections=False)
    assert build_engine_rtx(tmp_path / "m.onnx", max_batch=2).engine_bytes > 50_000


def test_fp16_cast_builds_with_tensorrt_rtx(extd64_onnx, tmp_path):
    """TensorRT 11 and TensorRT-RTX take FP16 from the graph: the FP16-cast export must parse and build."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX missing: pip install edgeface[tensorrt-rtx]")
    pytest.importorskip("onnxconverter_common")
    from edgeface.export.precision import cast_fp16
    from edgeface.export.tensorrt_rtx import build_engine_rtx

    half = cast_fp16(extd64_onnx, tmp_path / "half.onnx")
    fp32 = build_engine_rtx(extd64_onnx, max_batch=1)
    fp16 = build_engine_rtx(half, max_batch=1)
    assert 0 < fp16.engine_bytes and fp16.engine_bytes != fp32.engine_bytes


@pytest.mark.parametrize("name", ["extd32", "extd48-ssd-relu", "extd64-leaky", *HEAVY])
def test_an_export_reads_back_into_the_model_it_came_from(name, tmp_path, photo_paths):
    from edgeface.export.onnx_import import load_onnx_weights
    from edgeface.models import create_model
    from edgeface.models.checkpoint import conv_batchnorm_pairs, is_baked

    model, spec = _exportable(name)
    if name.startswith("extd"):  # (the heavy models' exports hold parity only with their fresh statistics)
        perturb_batchnorm(model)
    export_onnx(model, spec, tmp_path / "m.onnx", check_images=photo_paths[:1], compare_detections=False)
    loaded, loaded_spec = load_onnx_weights(tmp_path / "m.onnx")
    assert loaded_spec == spec and not is_baked(model)
    assert is_baked(loaded) == (name != "shf") == bool(conv_batchnorm_pairs(model))  # SHF's VGG16 has none
    assert list(loaded.state_dict()) == list(create_model(name).state_dict())  # lines up with every checkpoint
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        for expected, got in zip(model(x), loaded(x)):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_shipped_models_read_back_mix_with_checkpoints_and_move(tmp_path):
    from conftest import AUTHORS_WEIGHTS, need
    from edgeface.models import checkpoint
    from edgeface.weights import FAST_MODEL

    fast, spec = checkpoint.load_any_checkpoint("fast")
    assert spec.name == "extd32" and spec.input.min_side == 640 and checkpoint.is_baked(fast)
    assert checkpoint.load_any_checkpoint(str(FAST_MODEL))[1] == spec
    release, _ = checkpoint.load_authors_checkpoint(need(AUTHORS_WEIGHTS / "EXTD_32.pth"))
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        want_release, want_fast = release(x), fast(x)
        # the release, not folded, is folded before the mix: the weights mean the same, the ends are the models
        for mixed, want in ((checkpoint.interpolate_weights(release, fast, 0.0), want_release),
                            (checkpoint.interpolate_weights(release, fast, 1.0), want_fast),
                            (checkpoint.average_weights([release, fast], [1.0, 0.0]), want_release)):
            assert checkpoint.is_baked(mixed)
            for a, b in zip(mixed(x), want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert not checkpoint.is_baked(release)  # the caller's model is left as it was
        moved, moved_spec = checkpoint.move_boxes(fast, spec, down=0.1, width=1.1)
        assert not torch.equal(moved(x)[0], want_fast[0]) and torch.equal(moved(x)[1], want_fast[1])
        assert moved_spec.box_down == spec.box_down + 0.1
    pytest.importorskip("onnxconverter_common")
    from edgeface.export.precision import cast_fp16

    half, _ = checkpoint.load_any_checkpoint(cast_fp16(FAST_MODEL, tmp_path / "half.onnx"))  # FP16 weights
    with torch.no_grad():
        for a, b in zip(half(x), want_fast):
            torch.testing.assert_close(a, b, rtol=0, atol=0.02)


def test_files_that_are_no_plain_export_are_refused(tmp_path):
    from edgeface.errors import ModelFileError
    from edgeface.export.onnx_import import load_onnx_weights
    from edgeface.weights import FAST_MODEL, SHIPPED

    with pytest.raises(ModelFileError, match="is quantised"):
        load_onnx_weights(SHIPPED["fast-int8"])
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(FAST_MODEL.read_bytes()[:50_000])
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        load_onnx_weights(truncated)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_onnx_weights(tmp_path / "none.onnx")

    def edited(change) -> str:
        proto = onnx.load(FAST_MODEL)
        change(proto)
        path = tmp_path / "edited.onnx"
        onnx.save(proto, path)
        return str(path)

    with pytest.raises(ModelFileError, match="carries no edgeface spec"):
        load_onnx_weights(edited(lambda p: p.metadata_props.__delitem__(slice(None))))

    def as_extd64(proto):
        spec = ModelSpec.from_json(_metadata(FAST_MODEL)[SPEC_KEY])
        proto.metadata_props[0].value = ModelSpec.from_dict({**spec.to_dict(), "name": "extd64"}).to_json()

    with pytest.raises(ModelFileError, match=r"does not fit base\.1\.conv\.3 of extd64: weight \(32, 64, 1, 1\)"):
        load_onnx_weights(edited(as_extd64))

    def rename_first_conv(proto):
        next(n for n in proto.graph.node if n.op_type == "Conv").name = "/head.9/Conv"

    with pytest.raises(ModelFileError, match=r"node /head\.9/Conv \(Conv\) is no layer of extd32"):
        load_onnx_weights(edited(rename_first_conv))

    def edit_one_use(proto):  # the second use of the shared block base.2 gets weights of its own
        node = next(n for n in proto.graph.node if n.name == "/base.2/conv/conv.0_1/Conv")
        weight = next(i for i in proto.graph.initializer if i.name == node.input[1])
        copy = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, "edited_weight")
        proto.graph.initializer.append(copy)
        node.input[1] = "edited_weight"

    with pytest.raises(ModelFileError, match=r"the uses of extd32's shared base\.2\.conv\.0 hold different weights"):
        load_onnx_weights(edited(edit_one_use))

    def change_the_output(proto):  # a graph that computes something else after the layers
        conf = next(o for o in proto.graph.output if o.name == "conf")
        conf.name = "conf_in"
        next(n for n in proto.graph.node if "conf" in n.output).output[0] = "conf_in"
        proto.graph.node.append(onnx.helper.make_node("Neg", ["conf_in"], ["conf"]))
        conf.name = "conf"

    with pytest.raises(ModelFileError, match="give other conf outputs than the file"):
        load_onnx_weights(edited(change_the_output))
