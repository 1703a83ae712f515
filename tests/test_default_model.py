"""The model edgeface ships: present with its card, loaded by Detector() and the CLI without a path, and
clearly better than the EXTD authors' EXTD-64 on the face dataset's validation split."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import SHARED, need
from edgeface.weights import DEFAULT_MODEL, MODEL_CARD

FACEMASK = SHARED / "data" / "facemask"


def test_the_default_model_ships_with_its_card():
    import edgeface

    assert DEFAULT_MODEL.exists() and MODEL_CARD.exists()
    detector = edgeface.Detector()
    assert detector.spec.name == "extd64" and detector.backend.name.startswith("onnxruntime")
    card = MODEL_CARD.read_text()
    for fact in ("Validation AP", "Training data", "Recipe", "Hardware", "Wall time", detector.spec.model_version):
        assert fact in card, fact


def test_the_default_model_beats_the_authors_extd64_on_the_val_split(extd64_onnx):
    import edgeface
    from edgeface.data.voc import read_facemask
    from edgeface.eval.voc import voc_ap

    records = read_facemask(need(FACEMASK), "val")
    ours, authors = edgeface.Detector(score_threshold=0.05), edgeface.Detector(extd64_onnx, score_threshold=0.05)
    images = [edgeface.read_image(r.image_path) for r in records]
    ap_ours = voc_ap(records, [ours(im) for im in images]).ap
    ap_authors = voc_ap(records, [authors(im) for im in images]).ap
    assert ap_authors == pytest.approx(0.612, abs=0.01)  # the released EXTD-64, single scale, own size
    assert ap_ours > ap_authors + 0.15, (ap_ours, ap_authors)


def test_cli_detect_runs_the_default_model(tmp_path, photo_paths):
    result = subprocess.run([sys.executable, "-m", "edgeface", "detect", photo_paths[0], "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "detections.json").read_text())
    assert data["model"] == "extd64" and len(data["results"][photo_paths[0]]["faces"]) > 0
