"""Training objectives of SHF, HR and SRN on hand-built cases, and every family overfitting real images."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import SHARED, need, write_imglab  # noqa: E402
from edgeface.models import default_spec  # noqa: E402
from edgeface.train.objectives import (  # noqa: E402
    HRObjective,
    SHFObjective,
    SRNObjective,
    focal_loss,
    match_iou,
    ohem_mask,
)

FACEMASK = SHARED / "data" / "facemask"


def test_match_iou_labels_ignores_and_best_anchor():
    anchors = np.array([[10, 10, 20, 20], [12, 10, 20, 20], [40, 40, 20, 20], [100, 100, 8, 8]], np.float32)
    faces = np.array([[0, 0, 20, 20], [96, 96, 112, 112]], np.float32)  # (cx, cy, w, h) = (10, 10, 20, 20) ...
    labels, assigned, best = match_iou(faces, anchors, positive=0.7, negative=0.3)
    # anchor 0 is exact (IoU 1), anchor 1 overlaps 0.82, anchor 2 not at all, anchor 3 is face 1's best (0.25)
    assert labels.tolist() == [1, 1, 0, 1] and assigned[[0, 1, 3]].tolist() == [0, 0, 1]
    assert best[1] == pytest.approx(18 * 20 / (2 * 400 - 18 * 20))
    labels, _, _ = match_iou(faces, anchors, 0.9, 0.5, best_anchor_positive=False)
    assert labels.tolist() == [1, -1, 0, 0]
    assert match_iou(np.zeros((0, 4), np.float32), anchors, 0.5, 0.4)[0].tolist() == [0, 0, 0, 0]


def test_ohem_takes_the_hardest_with_caps():
    loss = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.6, 0.02, 0.5]])
    labels = torch.tensor([[1, 1, 0, 0, 0, 0, -1]])
    assert ohem_mask(loss, labels, max_pos=1, total=3).tolist() == [[True, False, True, True, False, False, False]]
    assert ohem_mask(loss, labels, max_pos=5, max_neg=1).tolist() == [[True, True, True, False, False, False, False]]
    # balanced mining with a loss threshold: easy anchors (loss <= 0.03) are never taken
    assert ohem_mask(loss, labels, max_pos=5, max_neg=5, min_loss=0.03)[0].tolist() == [
        True, True, True, True, True, False, False]


def test_focal_loss_matches_its_definition():
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    p = torch.sigmoid(logits)
    expected = torch.stack([-0.25 * (1 - p[0]) ** 2 * torch.log(p[0]),
                            -0.75 * p[1] ** 2 * torch.log(1 - p[1]), -0.75 * p[2] ** 2 * torch.log(1 - p[2])])
    torch.testing.assert_close(focal_loss(logits, labels), expected)


def test_match_iou_forces_best_anchors_only_above_a_floor():
    anchors = np.array([[10, 10, 20, 20], [40, 40, 20, 20]], np.float32)
    face = np.array([[0, 0, 12, 12]], np.float32)  # IoU with anchor 0: 144 / 400 = 0.36
    assert match_iou(face, anchors, 0.7, 0.3)[0].tolist() == [1, 0]
    assert match_iou(face, anchors, 0.7, 0.3, min_forced_iou=0.3)[0].tolist() == [1, 0]
    assert match_iou(face, anchors, 0.7, 0.3, min_forced_iou=0.4)[0].tolist() == [-1, 0]  # between: ignored


def hr_objective(size=64):
    return HRObjective(default_spec("hr-res50"), size)


def test_hr_ignores_every_window_crossing_the_border():
    """cnn_get_batch_hardmine.m: clsmap(pad_viomask) = 0 (ignore) for positives and negatives alike."""
    from edgeface.core.boxes import cxcywh_to_xyxy

    objective = hr_objective()
    box = cxcywh_to_xyxy(objective.anchors)
    crossing = (box[:, :2] < 0).any(1) | (box[:, 2:] > 64).any(1)
    face = box[crossing & (box[:, 2] - box[:, 0] > 30)][0:1]  # a face exactly on a border-crossing template
    labels = objective.targets(face)["labels"]
    assert (labels[crossing] == -1).all() and (labels[~crossing] == 0).any()


def test_hr_forces_a_best_template_only_above_iou_0_3():
    """clsmap(fbest_idx(iou_ > opts.negThresh)) = 1: a face's best template is positive only above IoU 0.3."""
    from dataclasses import replace

    from edgeface.spec import AnchorSpec

    spec = replace(default_spec("hr-res50"), anchors=AnchorSpec((8,), shapes=(((40.0, 40.0),),)))
    objective = HRObjective(spec, 128)
    for height, positive in ((10, False), (16, True)):  # IoU with the 40 x 40 template on its centre: 0.25, 0.4
        face = np.array([[44, 60 - height / 2, 84, 60 + height / 2]], np.float32)  # centred on cell (8, 7)
        labels = objective.targets(face)["labels"]
        assert (labels == 1).any() == positive, height


def test_hr_loss_is_a_per_image_sum_over_randomly_sampled_locations():
    objective = hr_objective()
    n = len(objective.anchors)
    labels = torch.zeros(2, n, dtype=torch.long)
    labels[:, :5] = 1
    labels[:, 5:10] = -1
    logits = torch.zeros(2, n, 2)  # every location's logistic loss: log 2 (> 0.03: all eligible)
    targets = {"labels": labels, "loc": torch.zeros(2, n, 4)}
    terms = objective.loss((torch.zeros(2, n, 4), logits), targets)
    # per image: 5 positives + 128 negatives sampled, summed, divided by the 2 images (not by the 266 samples)
    assert terms["conf"].item() == pytest.approx((5 + 128) * np.log(2), rel=1e-5)
    loss = torch.rand(1, 2000) + 0.1
    picks = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        picks.append(ohem_mask(loss, torch.zeros(1, 2000, dtype=torch.long), 128, 128, min_loss=0.03, random=True))
    assert picks[0].sum() == 128 and torch.equal(picks[0], picks[2]) and not torch.equal(picks[0], picks[1])
    hardest = ohem_mask(loss, torch.zeros(1, 2000, dtype=torch.long), 128, 128, min_loss=0.03)
    assert not torch.equal(picks[0], hardest)  # random, not the top losses (those concentrate on missed faces)


def test_shf_positives_only_at_iou_0_5_and_256_anchors_per_image():
    spec = default_spec("shf")
    objective = SHFObjective(spec, 320)
    from edgeface.core.boxes import box_iou, cxcywh_to_xyxy

    big = np.array([[100, 100, 260, 260]], np.float32)  # 160 px: the 64 px anchors reach IoU 0.16 at best
    labels = objective.targets(big)["labels"]
    best = box_iou(big, cxcywh_to_xyxy(objective.anchors))[0]
    assert not (labels == 1).any() and best.max() < 0.5  # no forced positive (the official anchor layer has none)
    faces = np.array([[100, 100, 132, 132], [200, 60, 264, 124], [10, 200, 26, 216]], np.float32)
    targets = {k: torch.as_tensor(v)[None] for k, v in objective.targets(faces).items()}
    assert (targets["labels"][0][torch.from_numpy(box_iou(faces, cxcywh_to_xyxy(objective.anchors)).max(0) < 0.5)]
            != 1).all()
    n = len(objective.anchors)
    outputs = (torch.zeros(1, n, 4, requires_grad=True), torch.randn(1, n, 2, requires_grad=True))
    terms = objective.loss(outputs, targets)
    assert set(terms) == {"conf", "loc"} and all(torch.isfinite(t) for t in terms.values())
    terms["conf"].backward()
    used = outputs[1].grad.abs().sum(-1)[0] > 0
    positives_used = used & (targets["labels"][0] == 1)
    assert used.sum() == 256 and 0 < positives_used.sum() <= 64  # one level, three anchors per cell: per image


def test_shf_backbone_learns_at_twice_the_rate(tmp_path):
    from edgeface.train.config import TrainConfig
    from edgeface.train.trainer import Trainer

    trainer = Trainer(TrainConfig(model="shf", output=str(tmp_path), input_size=64))
    rates = {id(p): g["multiplier"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert rates[id(p)] == (2.0 if name.startswith("backbone.") else 1.0), name


def test_srn_sample_matching_per_step_and_no_forced_positives_for_tiny_faces():
    spec = default_spec("srn")
    objective = SRNObjective(spec, 320)
    assert objective.first_step == (0.7, 0.3) and objective.refined_step == (0.5, 0.4)
    from edgeface.core.boxes import box_iou, cxcywh_to_xyxy

    # a face at IoU 0.6 with a stride-8 anchor: ignored in the first step (0.3-0.7), positive in the second
    anchor = cxcywh_to_xyxy(objective.anchors)[objective.low][5000]
    w = anchor[2] - anchor[0]
    face = (anchor + np.float32([0, 0, w * 0.25, 0]))[None]  # 1.25x as wide: IoU 0.8 ... shift to 0.6
    face[0, 0] += w * 0.2
    iou = box_iou(face, cxcywh_to_xyxy(objective.anchors))[0]
    k = int(iou.argmax())
    assert 0.5 <= iou[k] < 0.7
    targets = objective.targets(face)
    assert targets["labels"][k] == 1  # forced: the face's best anchor, IoU above the first step's 0.3
    others = (iou >= 0.5) & (iou < 0.7)
    others[k] = False
    assert (targets["labels"][others] == -1).all() and (targets["labels2"][iou >= 0.5] == 1).all()
    # a 12 px face: no STR (stride 32-128) anchor is forced positive in the second step (best IoU 0.04)
    tiny = np.array([[150, 150, 162, 165]], np.float32)
    high = ~objective.low
    lab, _ = objective.match_step(tiny, objective.anchors[high], objective.refined_step)
    assert not (lab == 1).any() and box_iou(tiny, cxcywh_to_xyxy(objective.anchors[high])).max() < 0.4


def test_faces_too_small_to_learn_are_ignored_not_background(rng):
    from edgeface.data.augment import AugmentConfig, augment_sample
    from edgeface.train.objectives import SSDObjective

    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    boxes = np.array([[50, 50, 55, 55], [100, 100, 160, 160]], np.float32)  # a 5 px face and a 60 px one
    cfg = AugmentConfig(size=200, recipe="rescale_crop", rescales=(1.0,))
    _, faces, ignored = augment_sample(image, boxes, np.random.default_rng(0), cfg)
    assert len(faces) == 1 and len(ignored) == 1 and (ignored[0, 2:] - ignored[0, :2]).max() < 6
    for objective in (SSDObjective(default_spec("extd32"), 200), SHFObjective(default_spec("shf"), 200),
                      HRObjective(default_spec("hr-res50"), 200), SRNObjective(default_spec("srn"), 200)):
        from edgeface.core.boxes import cxcywh_to_xyxy

        box, (x1, y1, x2, y2) = cxcywh_to_xyxy(objective.anchors), ignored[0]
        area = (x2 - x1) * (y2 - y1)
        inside = (np.clip(np.minimum(box[:, 2], x2) - np.maximum(box[:, 0], x1), 0, None)
                  * np.clip(np.minimum(box[:, 3], y2) - np.maximum(box[:, 1], y1), 0, None))
        near = (inside >= 0.5 * area) & (objective.anchors[:, 2] * objective.anchors[:, 3] <= 25 * area)
        assert near.any()
        with_ignored, without = objective.targets(faces, ignored)["labels"], objective.targets(faces)["labels"]
        assert (with_ignored[near & (without == 0)] == -1).all() and (without[near] == 0).any()
        assert (with_ignored[~near] == without[~near]).all()


def test_srn_square_crops_keep_face_aspect(rng):
    from edgeface.data.augment import AugmentConfig, augment

    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    boxes = np.array([[200, 100, 240, 150]], np.float32)  # 40 x 50: h = 1.25 w, SRN's anchor shape
    cfg = AugmentConfig(size=320, recipe="square_crop")
    for seed in range(12):
        _, out = augment(image, boxes, np.random.default_rng(seed), cfg)
        for x1, y1, x2, y2 in out:
            if 0.5 < x1 and x2 < 319.5 and 0.5 < y1 and y2 < 319.5:  # not clipped by the crop
                assert (y2 - y1) / (x2 - x1) == pytest.approx(1.25, rel=0.02)


@pytest.mark.parametrize("name,steps,lr", [("shf", 40, 0.01), ("hr-res50", 30, 1e-3), ("srn", 30, 0.01)])
def test_loss_falls_when_overfitting_a_few_real_images(name, steps, lr, tmp_path):
    from edgeface.data.voc import read_facemask
    from edgeface.train.config import TrainConfig
    from edgeface.train.trainer import Trainer

    xml = write_imglab(read_facemask(need(FACEMASK), "train")[:2], tmp_path / "two.xml")
    cfg = TrainConfig(model=name, train_data=[{"format": "imglab", "xml": str(xml)}], output=str(tmp_path / "run"),
                      input_size=128, batch_size=2, steps=steps, lr=lr, warmup_steps=3,
                      schedule="step", lr_steps=[], checkpoint_every=1000, val_every=1000, log_every=1, workers=0,
                      data_anchor_sampling_prob=0.0, clip_grad_norm=10.0)
    Trainer(cfg).fit(progress=False)
    losses = [float(line.split(",")[2]) for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
