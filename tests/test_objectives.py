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
    objective_for,
    ohem_mask,
    refine_anchors,
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


def test_hr_ignores_negatives_crossing_the_border():
    objective = HRObjective(default_spec("hr-res50"), 64)
    targets = objective.targets(np.array([[20, 20, 44, 52]], np.float32))
    from edgeface.core.boxes import cxcywh_to_xyxy

    box = cxcywh_to_xyxy(objective.anchors)
    crossing = (box[:, :2] < 0).any(1) | (box[:, 2:] > 64).any(1)
    assert (targets["labels"][crossing] != 0).all() and (targets["labels"][~crossing] == 0).any()
    assert (targets["labels"] == 1).any()


def test_shf_mines_256_anchors_per_branch_with_a_quarter_positive():
    spec = default_spec("shf")
    objective = SHFObjective(spec, 320)
    faces = np.array([[100, 100, 132, 132], [200, 60, 264, 124], [10, 200, 26, 216]], np.float32)
    targets = {k: torch.as_tensor(v)[None] for k, v in objective.targets(faces).items()}
    n = len(objective.anchors)
    outputs = (torch.zeros(1, n, 4, requires_grad=True), torch.randn(1, n, 2, requires_grad=True))
    terms = objective.loss(outputs, targets)
    assert set(terms) == {"conf", "loc"} and all(torch.isfinite(t) for t in terms.values())
    terms["conf"].backward()
    used = outputs[1].grad.abs().sum(-1)[0] > 0
    per_branch = used.reshape(-1, 3).sum(0)
    assert per_branch.tolist() == [256, 256, 256]
    positives_used = (used & (targets["labels"][0] == 1)).reshape(-1, 3).sum(0)
    assert (positives_used <= 64).all() and positives_used.sum() > 0


def test_srn_second_step_matches_the_refined_anchors():
    spec = default_spec("srn")
    objective = SRNObjective(spec, 128)
    anchors = objective.anchors
    deltas = np.zeros((1, len(anchors), 4), np.float32)
    deltas[..., 2:] = np.log(2)  # the first step doubles every anchor
    refined = refine_anchors(anchors, deltas)[0]
    np.testing.assert_allclose(refined[:, 2:], anchors[:, 2:] * 2, rtol=1e-6)
    faces = np.array([[30, 30, 94, 110]], np.float32)
    targets = {k: torch.as_tensor(v)[None] for k, v in objective.targets(faces).items()}
    n = len(anchors)
    outputs = [torch.zeros(1, n, 4), torch.zeros(1, n, 1), torch.zeros(1, n, 4), torch.zeros(1, n, 1)]
    for t in outputs:
        t.requires_grad_(True)
    terms = objective.loss(outputs, targets)
    assert set(terms) == {"stc", "str"} and terms["stc"] > 0
    (terms["stc"] + terms["str"]).backward()
    # the first-step classification is trained on the STC levels only, its regression on the STR levels only
    assert (outputs[1].grad[0, ~torch.from_numpy(objective.low)] == 0).all()
    assert (outputs[0].grad[0, torch.from_numpy(objective.low)] == 0).all()
    assert objective_for(spec, 128).terms == ("stc", "str")
    with pytest.raises(ValueError, match="no training objective"):
        objective_for(default_spec("extd32").__class__(name="yolo"), 128)


@pytest.mark.parametrize("name,steps", [("shf", 40), ("hr-res50", 30), ("srn", 30)])
def test_loss_falls_when_overfitting_a_few_real_images(name, steps, tmp_path):
    from edgeface.data.voc import read_facemask
    from edgeface.train.trainer import TrainConfig, Trainer

    xml = write_imglab(read_facemask(need(FACEMASK), "train")[:2], tmp_path / "two.xml")
    cfg = TrainConfig(model=name, train_data=[{"format": "imglab", "xml": str(xml)}], output=str(tmp_path / "run"),
                      input_size=128, batch_size=2, steps=steps, lr=0.01, warmup_steps=3,
                      schedule="step", lr_steps=[], checkpoint_every=1000, val_every=1000, log_every=1, workers=0,
                      data_anchor_sampling_prob=0.0, clip_grad_norm=10.0)
    Trainer(cfg).fit(progress=False)
    losses = [float(line.split(",")[2]) for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
