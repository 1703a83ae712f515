"""Evaluation protocols against ground truth and hand-computed cases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED, need
from edgeface.core.detections import Detections
from edgeface.data.records import FaceRecord
from edgeface.data.voc import read_facemask
from edgeface.eval.plots import plot_pr_curves
from edgeface.eval.voc import interpolated_ap, iou_matrix, voc_ap


def dets(boxes, scores) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32))


def test_voc_ap_hand_computed():
    record = FaceRecord("a.jpg", [[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]], [False, False, True])
    found = dets([[0, 0, 9, 9], [40, 40, 49, 49], [50, 50, 59, 59], [20, 20, 29, 29]], [0.9, 0.85, 0.8, 0.7])
    curve = voc_ap([record], [found])
    # the ignored face's detection counts for nothing: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0])
    assert curve.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3) and curve.num_faces == 2
    duplicate = voc_ap([record], [dets([[0, 0, 9, 9], [1, 1, 9, 9]], [0.9, 0.8])])  # second match of a face: FP
    assert duplicate.ap == pytest.approx(0.5) and duplicate.precision.tolist() == [1.0, 0.5]
    # pixel-inclusive IoU: two 10x10 boxes overlapping by 5 columns -> 50 / 150
    assert iou_matrix(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]), inclusive=True)[0, 0] == pytest.approx(1 / 3)
    assert interpolated_ap(np.array([0.5, 1.0]), np.array([0.4, 0.8])) == pytest.approx(0.8)


def test_voc_ap_is_one_for_ground_truth_on_the_real_split():
    records = read_facemask(need(SHARED / "data" / "facemask"), "val")
    truth = [dets(r.boxes, np.linspace(1, 0.5, len(r.boxes))) for r in records]
    assert voc_ap(records, truth).ap == pytest.approx(1.0)
    assert voc_ap(records, [Detections.empty() for _ in records]).ap == 0.0


def test_pr_plot_is_a_png(tmp_path):
    plot_pr_curves([("a AP 0.5", np.linspace(0, 1, 20), np.linspace(1, 0, 20))], tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_reproduces_the_authors_extd64_on_the_face_dataset(extd64_onnx, tmp_path):
    root = need(SHARED / "data" / "facemask")
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, "-m", "edgeface", "eval", "-m", str(extd64_onnx), "--format", "facemask",
                             f"root={root}", "split=val", "--plot", str(tmp_path / "pr.png"), "--json", str(out), "-q"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["ap"] == pytest.approx(0.61, abs=0.01)  # the reference figure
