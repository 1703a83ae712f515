"""SRN, HR (Tiny Faces) and SHF: layouts, sizes against models.md, the selective two-step rules, the
clustered templates, the spec's test-time strategy and export parity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import SHARED, need, perturb_batchnorm  # noqa: E402
from edgeface.core.anchors import feature_sizes, generate_anchors  # noqa: E402
from edgeface.core.boxes import decode_boxes, xyxy_to_cxcywh  # noqa: E402
from edgeface.core.testtime import active_anchors, pass_size  # noqa: E402
from edgeface.models import create_model, default_spec, model_names  # noqa: E402
from edgeface.models.backbones import VGG16, ResNet, load_imagenet  # noqa: E402
from edgeface.models.complexity import count_macs, count_parameters  # noqa: E402
from edgeface.models.hr.templates import WIDER_TRAIN_TEMPLATES, cluster_shapes, kmedoids, shape_distance  # noqa: E402
from edgeface.spec import ModelSpec, PyramidScale  # noqa: E402

HEAVY = ["srn", "hr-res101", "hr-res50", "shf"]


def test_registry_lists_the_heavier_models():
    assert set(HEAVY) <= set(model_names())
    assert default_spec("srn").anchors.per_cell(0) == 2
    assert default_spec("hr-res101").anchors.per_cell(0) == 25
    assert default_spec("shf").anchors.cell_shapes(0) == ((16, 16), (32, 32), (64, 64))


@pytest.mark.parametrize("name", HEAVY)
def test_outputs_follow_the_anchor_layout_at_several_sizes(name):
    model = create_model(name).eval()
    spec = default_spec(name)
    for batch, height, width in ((1, 64, 96), (2, 131, 97), (1, 45, 200)):
        with torch.no_grad():
            loc, conf = model(torch.randn(batch, 3, height, width))
        n = len(generate_anchors(spec.anchors, width, height))
        assert loc.shape == (batch, n, 4) and conf.shape == (batch, n, 2)


def test_size_counts_agree_with_models_md():
    # models.md [calc]: SRN 53.4 M / ~189 GMACs, HR-ResNet101 27.6 M / ~43, SHF 17.9 M / ~115 per 640x480 pass
    for name, params, gmacs in (("srn", 53.4e6, 189), ("hr-res101", 27.6e6, 43), ("shf", 17.9e6, 115)):
        model = create_model(name)
        assert count_parameters(model) == pytest.approx(params, rel=0.03), name
        assert count_macs(model, 640, 480) / 1e9 == pytest.approx(gmacs, rel=0.03), name


def test_backbones_have_torchvision_layouts():
    # the trunks' well-known parameter counts (torchvision's resnet50 without fc; vgg16.features) and keys
    resnet, vgg = ResNet(50), VGG16()
    assert count_parameters(resnet) == 25_557_032 - 2_049_000
    assert count_parameters(vgg) == 14_714_688
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var"} <= set(resnet.state_dict())
    assert {"features.0.weight", "features.21.weight", "features.28.bias"} <= set(vgg.state_dict())
    assert len(ResNet(101, stages=3).layer3) == 23
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torchvision"):
            load_imagenet(resnet, "ResNet50_Weights.IMAGENET1K_V1")


def test_srn_compose_deltas_equals_decoding_twice(rng):
    from edgeface.models.srn import compose_deltas

    anchors = np.concatenate([rng.uniform(0, 500, (50, 2)), rng.uniform(8, 300, (50, 2))], axis=1)
    first, second = rng.normal(0, 0.5, (2, 50, 4))
    refined = xyxy_to_cxcywh(decode_boxes(first, anchors, (1.0, 1.0)).astype(np.float64))
    twice = decode_boxes(second, refined, (1.0, 1.0))
    composed = compose_deltas(torch.from_numpy(first), torch.from_numpy(second)).numpy()
    np.testing.assert_allclose(decode_boxes(composed, anchors, (1.0, 1.0)), twice, rtol=1e-5, atol=1e-3)
    # a first step past the cap refines like training does (refine_anchors)
    from edgeface.train.objectives import refine_anchors

    first[:, 2:] += 6.0
    refined = refine_anchors(anchors, first[None])[0]
    composed = compose_deltas(torch.from_numpy(first), torch.from_numpy(second)).numpy()
    np.testing.assert_allclose(decode_boxes(composed, anchors, (1.0, 1.0)), decode_boxes(second, refined, (1.0, 1.0)),
                               rtol=1e-5, atol=1e-2)


def test_srn_selective_rules_in_eval_mode():
    from edgeface.models import srn

    model = create_model("srn")
    x = torch.randn(1, 3, 64, 96)
    model.train()
    loc1, conf1, loc2, conf2 = model(x)
    assert loc1.shape == loc2.shape and conf1.shape == conf2.shape == (1, loc1.shape[1], 1)
    model.eval()
    with torch.no_grad():
        model.cls[-1].weight.zero_()  # every score is sigmoid(bias) ~4.5e-5 < 0.01: STC drops all low-level anchors
        model.cls[-1].bias.fill_(-10.0)
        loc, conf = model(x)
    spec = default_spec("srn")
    low = sum(spec.anchors.per_cell(k) * rows * cols
              for k, (rows, cols) in enumerate(feature_sizes(spec.anchors, 96, 64)) if k in srn.STC_LEVELS)
    assert (conf[0, :low, 1] == srn.FILTERED_LOGIT).all() and (conf[0, low:, 1] > -11).all()
    assert (conf[..., 0] == 0).all()


def test_hr_bilinear_upsampling_keeps_a_constant_map():
    import torch.nn.functional as F

    from edgeface.models.hr import bilinear_kernel

    up = F.conv_transpose2d(torch.ones(1, 3, 5, 7), bilinear_kernel(3), stride=2, padding=1, groups=3)
    assert up.shape == (1, 3, 10, 14)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], torch.ones(1, 3, 8, 12))


def test_kmedoids_recovers_separated_shapes(rng):
    centres = np.array([[10, 12], [40, 50], [120, 160]], float)
    shapes = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    medoids = kmedoids(shapes, 3, seed=1)
    assert shape_distance(medoids, centres).min(axis=1).max() < 0.1
    np.testing.assert_allclose(shape_distance(np.array([[10, 10.0]]), np.array([[10, 10.0], [5, 10]])), [[0, 0.5]])
    with pytest.raises(ValueError, match="cannot make"):
        kmedoids(shapes[:2], 3)


def test_templates_hybrid_resolution_and_pruned_sets():
    t = WIDER_TRAIN_TEMPLATES
    assert len(t.objects) == 25
    for i, (w, h) in enumerate(t.objects):
        tw, th = t.shapes[i]
        assert (tw / w, th / h) == (t.resolution(i), t.resolution(i))
    # hr_res101.m: A = templates 5-12, B = 19-25 by decreasing area (1-based); no template below 10 px
    by_area = sorted(range(25), key=lambda i: -t.objects[i][0] * t.objects[i][1])
    assert set(t.a_set) == {by_area[r - 1] for r in range(5, 13)} and len(t.a_set) == 8
    assert set(t.b_set) == {by_area[r - 1] for r in range(19, 26)} and len(t.b_set) == 7
    assert min(min(wh) for wh in t.objects) >= 10
    assert max(t.objects[i][1] for i in t.b_set) < min(t.objects[i][1] for i in t.a_set)
    pyramid = default_spec("hr-res101").test_time.pyramid
    assert [p.scale for p in pyramid] == [0.25, 0.5, 1.0, 2.0]
    assert set(pyramid[-1].anchors) == set(t.a_set) | set(t.b_set) and pyramid[0].anchors == t.a_set


@pytest.mark.slow
def test_templates_recomputed_from_wider_train():
    from edgeface.data.wider import read_wider_txt

    records = read_wider_txt(need(SHARED / "data/widerface/wider_face_split/wider_face_train_bbx_gt.txt"), "")
    boxes = np.concatenate([r.boxes[~r.ignore] for r in records])
    assert cluster_shapes(boxes[:, 2:] - boxes[:, :2]) == WIDER_TRAIN_TEMPLATES  # min cluster size 10, as official


def test_heavy_specs_round_trip_through_json():
    for name in HEAVY:
        spec = default_spec(name)
        assert ModelSpec.from_json(spec.to_json()) == spec


def test_pyramid_pass_sizes_and_anchor_subsets():
    assert pass_size(640, 480, PyramidScale(0.5)) == (320, 240)
    assert pass_size(640, 480, PyramidScale(short_side=100)) == (133, 100)
    spec = default_spec("shf").anchors
    mask = active_anchors(spec, 32, 16, (2,))  # stride 8: 2 x 4 cells of 3 anchors; only the 64 px ones
    assert mask.tolist() == [False, False, True] * 8


@pytest.mark.parametrize("name", ["srn", "hr-res50", "shf"])
def test_export_parity_and_runtime_detections(name, tmp_path, photo_paths):
    """Randomised heads (so scores spread out) exported; ONNX Runtime and torch give the same detections.
    SRN's first-step bias moves off its 0.01 threshold: a score on a threshold flips between runtimes."""
    import cv2

    from edgeface import Detector
    from edgeface.export.onnx_export import export_onnx, load_model
    from edgeface.spec import TestTimeSpec

    model, spec, _ = load_model(name)
    torch.manual_seed(0)
    std = {"srn": 0.01, "hr-res50": 0.01, "shf": 0.05}[name]  # logits spread without saturating (no exact ties)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels <= 125:  # score and delta predictors
            torch.nn.init.normal_(module.weight, std=std)
    if name == "srn":
        torch.nn.init.zeros_(model.cls[-1].bias)
    images = [cv2.resize(cv2.imread(p), (192, 144)) for p in photo_paths[:2]]
    report = export_onnx(model, spec, tmp_path / "m.onnx", check_images=images)
    assert report.detections_checked > 0
    onnx_dets = Detector(tmp_path / "m.onnx", test_time=TestTimeSpec())(images[0])
    assert len(onnx_dets) > 0


def test_detector_runs_the_models_own_pyramid_with_its_template_subsets():
    """HR's spec: A templates at 0.25x, 0.5x, 1x and A + B at 2x. A fake network that fires every anchor shows
    which (template, scale) pairs the detector used."""
    from dataclasses import replace

    from edgeface import Detector
    from edgeface.spec import TestTimeSpec

    spec = replace(default_spec("hr-res101"), pre_nms_top_k=10**6)  # no candidate budget: every box is seen

    class EveryAnchorFires:
        name, sizes = "fake", []

        def __init__(self):
            self.spec = spec

        def run(self, batch):
            n = len(generate_anchors(spec.anchors, batch.shape[3], batch.shape[2]))
            self.sizes.append((batch.shape[3], batch.shape[2]))
            conf = np.zeros((len(batch), n, 2), np.float32)
            conf[..., 1] = 10.0
            return np.zeros((len(batch), n, 4), np.float32), conf

    backend = EveryAnchorFires()
    dets = Detector(backend, max_detections=100_000, nms_iou=1.0)(np.zeros((300, 400, 3), np.uint8))
    assert backend.sizes == [(112, 80), (208, 160), (400, 304), (800, 608)]  # padded to multiples of 16
    allowed = {(round(w / s, 3), round(h / s, 3)) for p in spec.test_time.pyramid for s in [p.scale]
               for i, (w, h) in enumerate(spec.anchors.shapes[0]) if i in p.anchors}
    inside = (dets.boxes[:, :2] > 0).all(1) & (dets.boxes[:, 2] < 400) & (dets.boxes[:, 3] < 300)
    sizes = {(round(float(w), 3), round(float(h), 3)) for w, h in dets.boxes[inside, 2:] - dets.boxes[inside, :2]}
    assert sizes <= allowed
    b_at_2x, a_at_quarter = spec.anchors.shapes[0][0], spec.anchors.shapes[0][spec.test_time.pyramid[0].anchors[0]]
    assert (b_at_2x[0] / 2, b_at_2x[1] / 2) in sizes and (a_at_quarter[0] * 4, a_at_quarter[1] * 4) in sizes
    single = Detector(backend, test_time=TestTimeSpec())
    backend.sizes.clear()
    single(np.zeros((300, 400, 3), np.uint8))
    assert backend.sizes == [(400, 304)]


def test_test_time_postprocessing_stays_bounded_when_every_anchor_fires(monkeypatch):
    """SHF's strategy is 10 passes (5 short sides x flip): each pass may bring at most its share of the spec's
    pre-NMS budget (and at least max_detections), the merge at most the budget itself."""
    from benchmarks.postprocess import FiresEverywhere
    from edgeface import Detector
    from edgeface.core import postprocess, testtime

    spec = default_spec("shf")
    seen = {"pass": [], "merge": []}
    def counting(nms, key):
        return lambda boxes, *args: seen[key].append(len(boxes)) or nms(boxes, *args)

    for module, key in ((postprocess, "pass"), (testtime, "merge")):
        monkeypatch.setattr(module, "nms", counting(module.nms, key))
    detector = Detector(FiresEverywhere(spec))
    faces = detector(np.zeros((240, 320, 3), np.uint8))
    per_pass = max(-(-spec.pre_nms_top_k // 10), detector.max_detections)
    assert len(seen["pass"]) == 10 and max(seen["pass"]) <= per_pass
    assert seen["merge"] == [min(10 * detector.max_detections, spec.pre_nms_top_k)]
    assert len(faces) == detector.max_detections


def test_a_model_family_is_one_folder_found_by_the_registry(tmp_path, monkeypatch):
    """A fifth family: one folder with its registration, network and objective; objectives are named by the
    registry entry, never guessed from a name prefix (a model called "shf2" is not SHF)."""
    import edgeface.models
    from edgeface.models import registry
    from edgeface.spec import ModelSpec
    from edgeface.train.objectives import objective_for

    with pytest.raises(ValueError, match="not a registered model"):
        objective_for(ModelSpec(name="shf2"), 64)
    family = tmp_path / "toy"
    family.mkdir()
    (family / "__init__.py").write_text(
        "from edgeface.models.registry import ModelEntry, forward_to, register\n"
        "from edgeface.spec import ModelSpec\n"
        "register(ModelEntry(name='toy', family='toy', builder='toy.network:Toy', kwargs={'width': 3},\n"
        "                    objective='toy.objective:ToyObjective', spec=ModelSpec(name='toy'), description='toy'))\n"
        "__getattr__ = forward_to(__name__)\n")
    (family / "network.py").write_text("import torch\nclass Toy(torch.nn.Conv2d):\n"
                                       "    def __init__(self, width):\n        super().__init__(3, width, 1)\n")
    (family / "objective.py").write_text("from edgeface.train.objectives import Objective\n"
                                         "class ToyObjective(Objective):\n    terms = ('toy',)\n")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(edgeface.models, "__path__", [*edgeface.models.__path__, str(tmp_path)])
    registry.load_families([str(tmp_path)])
    assert "toy" in registry.model_names() and registry.get_entry("toy").family == "toy"
    assert registry.create_model("toy").out_channels == 3
    assert objective_for(registry.default_spec("toy"), 64).terms == ("toy",)
    from edgeface.models.toy import Toy  # the package forwards its network's names

    assert Toy(2).out_channels == 2


def test_batchnorm_called_after_a_convolution_folds_too():
    """ResNet calls bn1 after conv1 outside any nn.Sequential: inference folds those pairs as well."""
    from edgeface.backends.torch_backend import fold_batchnorm
    from edgeface.models.checkpoint import conv_batchnorm_pairs

    model = create_model("hr-res50").eval()
    perturb_batchnorm(model, spread=0.1)
    assert ("backbone.conv1", "backbone.bn1") in conv_batchnorm_pairs(model)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == 43
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        for a, b in zip(model(x), before):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
