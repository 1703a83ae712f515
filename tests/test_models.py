"""EXTD variants, the converter for the authors' checkpoints, and the size counts."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import AUTHORS_WEIGHTS, need, perturb_batchnorm  # noqa: E402
from edgeface.core.anchors import generate_anchors  # noqa: E402
from edgeface.errors import ModelFileError  # noqa: E402
from edgeface.models import create_model, default_spec, model_names  # noqa: E402
from edgeface.models.checkpoint import convert_authors_checkpoint, load_checkpoint  # noqa: E402
from edgeface.models.complexity import count_macs, count_parameters  # noqa: E402
from edgeface.models.extd import EXTD  # noqa: E402

EXTD_NAMES = [f"extd{w}{h}{a}" for w in (32, 48, 64) for h in ("", "-ssd") for a in ("", "-leaky", "-relu")]


def test_registry_has_every_paper_variant():
    assert set(EXTD_NAMES) <= set(model_names())
    assert default_spec("extd64-fpn-prelu").name == "extd64"
    with pytest.raises(KeyError, match="unknown model"):
        create_model("extd80")


@pytest.mark.parametrize("name", EXTD_NAMES)
def test_variant_output_shapes_follow_the_anchor_layout(name):
    model = create_model(name).eval()
    spec = default_spec(name)
    expected_act = {"leaky": "LeakyReLU", "relu": "ReLU"}.get(name.rsplit("-", 1)[-1], "PReLU")
    assert {type(m).__name__ for m in model.base.modules()} & {"PReLU", "LeakyReLU", "ReLU"} == {expected_act}
    assert hasattr(model, "upfeat") == ("-ssd" not in name)
    for batch, height, width in ((1, 64, 96), (2, 131, 97), (1, 5, 300)):
        with torch.no_grad():
            loc, conf = model(torch.randn(batch, 3, height, width))
        n = len(generate_anchors(spec.anchors, width, height))
        assert loc.shape == (batch, n, 4) and conf.shape == (batch, n, 2)


def test_leaky_slope_is_a_quarter():
    slopes = {m.negative_slope for m in create_model("extd48-ssd-leaky").modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.25}


def test_size_counts_against_models_md():
    # EXTD-64 as released: 162,352 params, 10.06 GMACs at 640x480 (models.md, within 1 %)
    model = create_model("extd64")
    assert count_parameters(model) == 162_352
    assert count_macs(model, 640, 480) / 1e9 == pytest.approx(10.06, rel=0.01)
    assert count_macs(model, 640, 640) / 1e9 == pytest.approx(13.41, rel=0.01)
    # models.md's EXTD-32/48 figures count a stem of the block width; the released checkpoints (which
    # load strictly, see below) have a 64-channel stem at every width, hence slightly larger models.
    for width, params, gmacs in ((32, 60_603, 3.88), (48, 98_736, 5.81)):
        analytic = EXTD(width, stem_channels=width)
        assert count_parameters(analytic) == pytest.approx(params, rel=0.01)
        assert count_macs(analytic, 640, 480) / 1e9 == pytest.approx(gmacs, rel=0.01)


@pytest.mark.parametrize("width", [32, 48, 64])
def test_converter_on_the_released_checkpoints(width, tmp_path):
    src = need(AUTHORS_WEIGHTS / f"EXTD_{width}.pth")
    dst = tmp_path / "converted.pt"
    spec = convert_authors_checkpoint(src, dst)
    assert spec.name == f"extd{width}"
    model, loaded_spec = load_checkpoint(dst)
    assert loaded_spec == spec
    reference = EXTD(width).eval()
    reference.load_state_dict(torch.load(src, map_location="cpu", weights_only=True), strict=True)
    x = torch.randn(1, 3, 120, 160) * 50
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    if width == 32:  # the width-32 release has an activation after every projection
        assert isinstance(model.base[2].conv[-1], torch.nn.PReLU)
    # either file serves as training's `init`: the same weights from the release and from the conversion
    from edgeface.models.checkpoint import load_any_checkpoint

    for source in (src, dst):
        loaded, loaded_spec = load_any_checkpoint(source)
        assert loaded_spec.name == f"extd{width}"
        for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()):
            assert torch.equal(a, b)


def test_converter_and_loader_reject_foreign_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not an EXTD checkpoint"):
        convert_authors_checkpoint(foreign, tmp_path / "out.pt")
    with pytest.raises(ModelFileError, match="not an edgeface checkpoint"):
        load_checkpoint(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_checkpoint(tmp_path / "missing.pt")
    assert not (tmp_path / "out.pt").exists()
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3), pickled)  # a whole module: loading it would unpickle code
    with pytest.raises(ModelFileError, match="module.pt holds pickled Python objects .* save tensors"):
        load_checkpoint(pickled)


@pytest.mark.parametrize("damage, says", [
    ({"state_dict": None}, "without its weights"),
    ({"state_dict": [1, 2]}, "without its weights"),
    ({"spec": {"name": "yolo"}}, "a model this edgeface does not build: unknown model 'yolo'"),
    ({"version": 9}, "format version 9, newer than this edgeface reads"),
    ({"state_dict": {"base.0.0.weight": 5}}, "weights do not fit model 'extd32': Missing key"),
])
def test_damaged_checkpoint_is_a_model_file_error(tmp_path, damage, says):
    """An edgeface checkpoint with a part missing or foreign fails at load saying which (it was a KeyError, a
    TypeError, or torch's error heading without its reason)."""
    from edgeface.models.checkpoint import CHECKPOINT_FORMAT

    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "spec": {"name": "extd32"},
               "state_dict": create_model("extd32").state_dict(), **damage}
    torch.save({k: v for k, v in payload.items() if v is not None}, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=says):
        load_checkpoint(tmp_path / "m.pt")
    authors = tmp_path / "authors.pt"
    torch.save({"base.1.conv.3.weight": torch.tensor(1.0), "loc.5.weight": torch.zeros(1)}, authors)
    with pytest.raises(ModelFileError, match="base.1.conv.3.weight is not a convolution weight"):
        convert_authors_checkpoint(authors, tmp_path / "out.pt")


def test_checkpoint_round_trip_keeps_weights_and_spec(tmp_path):
    from edgeface.models.checkpoint import save_checkpoint

    model = create_model("extd32-ssd-relu")
    spec = default_spec("extd32-ssd-relu")
    save_checkpoint(model, spec, tmp_path / "m.pt", step=7)
    loaded, loaded_spec = load_checkpoint(tmp_path / "m.pt")
    assert loaded_spec == spec
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))
    np.testing.assert_equal(len(list(tmp_path.iterdir())), 1)


def test_interpolated_weights_lie_on_the_line_between_two_models(tmp_path):
    import subprocess
    import sys

    from edgeface.errors import OptionError
    from edgeface.models.checkpoint import interpolate_weights, save_checkpoint

    torch.manual_seed(0)
    start, end = create_model("extd32"), create_model("extd32")
    for module in end.modules():  # make the BatchNorm buffers differ too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.num_batches_tracked.fill_(5)
    a, b = start.state_dict(), end.state_dict()
    for alpha in (0.0, 0.25, 1.0):
        mixed = interpolate_weights(start, end, alpha).state_dict()
        for key in a:
            if a[key].is_floating_point():
                torch.testing.assert_close(mixed[key], a[key] + alpha * (b[key] - a[key]), rtol=0, atol=1e-6)
            else:
                assert torch.equal(mixed[key], b[key]), key
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(interpolate_weights(start, end, 0.0)(x), start.eval()(x)))
    with pytest.raises(ModelFileError, match="not the same architecture"):
        interpolate_weights(start, create_model("extd64"), 0.5)
    with pytest.raises(OptionError, match=r"alpha must be in \[0, 1\]"):
        interpolate_weights(start, end, float("nan"))

    save_checkpoint(start, default_spec("extd32"), tmp_path / "a.pt")
    save_checkpoint(end, default_spec("extd32"), tmp_path / "b.pt")
    cli = [sys.executable, "-m", "edgeface", "interpolate", str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    done = subprocess.run([*cli, "--alpha", "0.5", "-o", str(tmp_path / "mid.pt")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, spec = load_checkpoint(tmp_path / "mid.pt")
    assert spec.name == "extd32" and spec.model_version.endswith("-wise0.5")
    for key in ("base.0.0.weight", "loc.0.weight"):
        torch.testing.assert_close(loaded.state_dict()[key], (a[key] + b[key]) / 2)
    failed = subprocess.run([*cli, "--alpha", "1.5", "-o", str(tmp_path / "bad.pt")], capture_output=True, text=True)
    assert failed.returncode == 1 and "alpha must be in [0, 1]" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "bad.pt").exists()
    done = subprocess.run([*cli, "--alpha", "1", "--keep", "0.25", "-o", str(tmp_path / "trim.pt")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "trim.pt")[1].model_version.endswith("-wise1-keep0.25")
    failed = subprocess.run([*cli, "--alpha", "1", "--keep", "0", "-o", str(tmp_path / "bad.pt")],
                            capture_output=True, text=True)  # refused by the parser, before any model loads
    assert failed.returncode == 2 and "keep must be in (0, 1], got 0" in failed.stderr
    assert not (tmp_path / "bad.pt").exists()
    before = (tmp_path / "a.pt").read_bytes()  # an input named as the output is refused and kept
    failed = subprocess.run([*cli, "--alpha", "0.5", "-o", str(tmp_path / "a.pt")], capture_output=True, text=True)
    assert failed.returncode == 1 and "the output" in failed.stderr and "is an input" in failed.stderr
    assert (tmp_path / "a.pt").read_bytes() == before


def test_trimmed_interpolation_keeps_only_the_largest_changes_of_each_weight():
    from edgeface.errors import OptionError
    from edgeface.models.checkpoint import interpolate_weights

    torch.manual_seed(0)
    start, end = create_model("extd32"), create_model("extd32")
    for module in end.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    alpha, keep = 0.75, 0.3
    mixed = interpolate_weights(start, end, alpha, keep).state_dict()
    a, b = start.state_dict(), end.state_dict()
    parameters = dict(start.named_parameters())
    for key in a:
        if not a[key].is_floating_point():
            continue
        change = b[key] - a[key]
        if key not in parameters:  # buffers: interpolated whole
            torch.testing.assert_close(mixed[key], a[key] + alpha * change, rtol=0, atol=1e-6)
            continue
        moved = mixed[key] != a[key]  # (weights both models initialise alike, like PReLU slopes, do not move)
        assert int(moved.sum()) == min(math.ceil(keep * change.numel()), int((change != 0).sum())), key
        # the moved entries are the largest changes, each moved alpha of its way
        if moved.any() and (~moved).any():
            assert change.abs()[moved].min() >= change.abs()[~moved].max(), key
        torch.testing.assert_close(mixed[key][moved], (a[key] + alpha * change)[moved], rtol=0, atol=1e-6)
    full = interpolate_weights(start, end, alpha, 1.0).state_dict()
    assert all(torch.equal(full[k], interpolate_weights(start, end, alpha).state_dict()[k]) for k in full)
    for bad, why in ((0.0, r"in \(0, 1\]"), (1.5, r"in \(0, 1\]"), (float("nan"), "a finite number"),
                     ("0.5", "a number")):
        with pytest.raises(OptionError, match=f"keep must be {why}"):
            interpolate_weights(start, end, alpha, bad)


def test_module_scales_move_some_modules_less_of_the_way(tmp_path):
    import subprocess
    import sys

    from edgeface.errors import OptionError
    from edgeface.models.checkpoint import interpolate_weights, save_checkpoint

    torch.manual_seed(0)
    start, end = create_model("extd32"), create_model("extd32")
    a, b = start.state_dict(), end.state_dict()
    mixed = interpolate_weights(start, end, 0.8, module_scales={"conf": 0.0, "base": 0.5, "base.0": 1.0})
    factors = {"conf.": 0.0, "base.0.": 1.0, "base.": 0.5, "": 1.0}  # the most specific name wins
    for key, value in mixed.state_dict().items():
        if value.is_floating_point():
            factor = next(f for name, f in factors.items() if key.startswith(name))
            torch.testing.assert_close(value, a[key] + 0.8 * factor * (b[key] - a[key]), rtol=0, atol=1e-6)
    assert all(torch.equal(mixed.state_dict()[k], a[k]) for k in a if k.startswith("conf."))
    with pytest.raises(OptionError, match=r"no module 'cls'; its modules are base, conf, loc, upfeat \(or a part "
                                          r"of one, such as base\.0\)"):
        interpolate_weights(start, end, 0.5, module_scales={"cls": 0.0})
    with pytest.raises(OptionError, match=r"factor of conf must be a number in \[0, 1\]"):
        interpolate_weights(start, end, 0.5, module_scales={"conf": 1.5})

    save_checkpoint(start, default_spec("extd32"), tmp_path / "a.pt")
    save_checkpoint(end, default_spec("extd32"), tmp_path / "b.pt")
    cli = [sys.executable, "-m", "edgeface", "interpolate", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
           "--alpha", "0.9"]
    done = subprocess.run([*cli, "--module-scale", "conf=0", "-o", str(tmp_path / "c.pt")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, spec = load_checkpoint(tmp_path / "c.pt")
    assert spec.model_version.endswith("-wise0.9-confx0") and "conf at 0 x alpha" in done.stdout
    torch.testing.assert_close(loaded.state_dict()["conf.0.weight"], a["conf.0.weight"])
    torch.testing.assert_close(loaded.state_dict()["loc.0.weight"], a["loc.0.weight"] + 0.9 * (
        b["loc.0.weight"] - a["loc.0.weight"]), rtol=0, atol=1e-6)
    for bad, message, code in (("conf", "expected MODULE=FACTOR such as conf=0", 2),
                               ("cls=0", "the model has no module 'cls'", 1)):
        failed = subprocess.run([*cli, "--module-scale", bad, "-o", str(tmp_path / "bad.pt")],
                                capture_output=True, text=True)
        assert failed.returncode == code and message in failed.stderr and "Traceback" not in failed.stderr
        assert not (tmp_path / "bad.pt").exists()


def test_a_model_soup_is_the_weighted_mean_of_its_models(tmp_path):
    import subprocess
    import sys

    from edgeface.errors import OptionError
    from edgeface.models.checkpoint import average_weights, interpolate_weights, save_checkpoint

    torch.manual_seed(0)
    models = [create_model("extd32") for _ in range(3)]
    models[-1].base[0][1].num_batches_tracked.fill_(7)
    states = [m.state_dict() for m in models]
    soup = average_weights(models, [1, 1, 2]).state_dict()
    for key, value in soup.items():
        if value.is_floating_point():
            expected = (states[0][key] + states[1][key] + 2 * states[2][key]) / 4
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(value, states[-1][key]), key  # integer buffers: the last model's
    for key in ("base.0.0.weight", "conf.0.weight"):  # equal weights by default = interpolation half-way
        torch.testing.assert_close(average_weights(models[:2]).state_dict()[key],
                                   interpolate_weights(models[0], models[1], 0.5).state_dict()[key])
    with pytest.raises(OptionError, match="one weight per model"):
        average_weights(models, [1, 2])
    with pytest.raises(OptionError, match="non-negative"):
        average_weights(models, [1, -1, 1])
    with pytest.raises(OptionError, match="not all 0"):
        average_weights(models, [0, 0, 0])
    with pytest.raises(ModelFileError, match="not the same architecture"):
        average_weights([models[0], create_model("extd64")])

    paths = []
    for i, model in enumerate(models):
        paths.append(str(tmp_path / f"m{i}.pt"))
        save_checkpoint(model, default_spec("extd32"), paths[-1])
    cli = [sys.executable, "-m", "edgeface", "average", *paths]
    done = subprocess.run([*cli, "--weights", "1", "1", "2", "-o", str(tmp_path / "soup.pt")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    loaded, spec = load_checkpoint(tmp_path / "soup.pt")
    assert spec.name == "extd32" and spec.model_version.endswith("-soup3")
    torch.testing.assert_close(loaded.state_dict()["loc.0.weight"], soup["loc.0.weight"])
    failed = subprocess.run([*cli, "--weights", "1", "-o", str(tmp_path / "bad.pt")], capture_output=True, text=True)
    assert failed.returncode == 1 and "one weight per model" in failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "bad.pt").exists()


def test_moved_boxes_sit_where_asked_and_nothing_else_changes(tmp_path):
    import subprocess
    import sys

    from edgeface.core.boxes import decode_boxes
    from edgeface.errors import OptionError
    from edgeface.models.checkpoint import move_boxes, save_checkpoint

    torch.manual_seed(0)
    spec = default_spec("extd32")
    model = create_model("extd32").eval()
    moved, moved_spec = move_boxes(model, spec, down=0.1, width=1.2, height=0.9)
    assert moved_spec == replace(spec, box_down=0.1)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        (loc, conf), (moved_loc, moved_conf) = model(x), moved(x)
    assert torch.equal(conf, moved_conf)  # only the boxes move
    anchors = generate_anchors(spec.anchors, 128, 128)
    before = decode_boxes(loc[0].numpy(), anchors, spec.variances)
    after = decode_boxes(moved_loc[0].numpy(), anchors, spec.variances, moved_spec.box_down)
    size, moved_size = before[:, 2:] - before[:, :2], after[:, 2:] - after[:, :2]
    np.testing.assert_allclose(moved_size, size * [1.2, 0.9], rtol=1e-4)
    centre, moved_centre = (before[:, :2] + before[:, 2:]) / 2, (after[:, :2] + after[:, 2:]) / 2
    np.testing.assert_allclose(moved_centre - centre, np.stack([0 * size[:, 1], 0.1 * moved_size[:, 1]], 1),
                               rtol=1e-4, atol=1e-3)  # in each box's own height, however far from its anchor's
    # a second move adds to the first, each in the heights of the boxes it moved
    again, again_spec = move_boxes(moved, moved_spec, down=-0.05, height=1.25)
    twice = decode_boxes(again(x)[0][0].detach().numpy(), anchors, spec.variances, again_spec.box_down)
    (cx, cy), (w, h) = moved_centre.T, moved_size.T
    cy, h = cy - 0.05 * 1.25 * h, 1.25 * h
    want = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    np.testing.assert_allclose(twice, want, rtol=1e-4, atol=2e-3)
    with pytest.raises(OptionError, match="would sit 0.6 lower"):
        move_boxes(moved, moved_spec, down=0.5)
    with pytest.raises(OptionError, match=r"down must be in \[-0.5, 0.5\]"):
        move_boxes(model, spec, down=0.6)
    for bad, why in ((float("nan"), "a finite number"), ("0.1", "a number"), (True, "a number")):
        with pytest.raises(OptionError, match=f"down must be {why}"):
            move_boxes(model, spec, down=bad)
    with pytest.raises(OptionError, match=r"width must be in \[0.5, 2\], got 3"):
        move_boxes(model, spec, width=3)
    with pytest.raises(OptionError, match="srn has no SSD box heads"):
        move_boxes(create_model("srn"), default_spec("srn"), down=0.1)

    save_checkpoint(model, spec, tmp_path / "a.pt")
    cli = [sys.executable, "-m", "edgeface", "move-boxes", str(tmp_path / "a.pt")]
    done = subprocess.run([*cli, "--down", "0.1", "--width", "1.2", "--height", "0.9", "-o", str(tmp_path / "b.pt")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded, loaded_spec = load_checkpoint(tmp_path / "b.pt")
    assert loaded_spec == replace(moved_spec, model_version=f"{spec.model_version}-boxes+0.1x1.2x0.9")
    for key, value in moved.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    failed = subprocess.run([*cli, "--height", "0", "-o", str(tmp_path / "bad.pt")], capture_output=True, text=True)
    assert failed.returncode == 2 and "--height: a box side's factor must be in [0.5, 2], got 0" in failed.stderr
    assert not (tmp_path / "bad.pt").exists()
    for mix in (["average", "a.pt", "b.pt"], ["interpolate", "a.pt", "b.pt", "--alpha", "0.5"]):
        failed = subprocess.run([sys.executable, "-m", "edgeface", *mix, "-o", "mix.pt"], capture_output=True,
                                text=True, cwd=tmp_path)
        assert failed.returncode == 1 and "moved by different shares of their height (a.pt 0, b.pt 0.1)" in \
            failed.stderr and "Traceback" not in failed.stderr
    assert not (tmp_path / "mix.pt").exists()


def test_batchnorm_baked_into_the_convolutions_keeps_the_function_and_the_names():
    from edgeface.models.checkpoint import bake_batchnorm, is_baked

    model = create_model("extd32-ssd-leaky").eval()
    perturb_batchnorm(model)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        names = list(model.state_dict())
        baked = bake_batchnorm(model)
        assert len(baked) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 21
        assert is_baked(model) and list(model.state_dict()) == names
        for a, b in zip(model(x), before):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not is_baked(create_model("extd32-ssd-leaky"))  # a fresh model's variance is 1, not 1 - eps


def test_only_unambiguous_convolution_batchnorm_pairs_are_folded():
    from edgeface.backends.torch_backend import fold_batchnorm
    from edgeface.models.checkpoint import conv_batchnorm_pairs

    class Shared(torch.nn.Module):
        """conv -> bn (a pair); shared -> bn_a and shared -> bn_b (one convolution, two BatchNorms); mixed takes a
        convolution's output once and a sum once."""

        def __init__(self):
            super().__init__()
            self.conv, self.shared, self.other = (torch.nn.Conv2d(3, 4, 3, padding=1) for _ in range(3))
            self.bn, self.bn_a, self.bn_b, self.mixed = (torch.nn.BatchNorm2d(4) for _ in range(4))

        def forward(self, x):
            y = self.bn(self.conv(x))
            shared = self.shared(x)
            z = self.mixed(self.other(x)) + self.mixed(y + 1)
            return self.bn_a(shared) + self.bn_b(shared) + z, y

    model = Shared().eval()
    assert conv_batchnorm_pairs(model) == [("conv", "bn")]
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == 1 and isinstance(model.bn, torch.nn.Identity)
        for a, b in zip(model(x), before):
            torch.testing.assert_close(a, b)
