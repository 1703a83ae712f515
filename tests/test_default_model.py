"""The models edgeface ships (default: EXTD-64, fast: EXTD-32): present with their cards, loaded by short name
by Detector() and the CLI, and at least the authors' release of the same width on the face dataset's val split
and on WIDER FACE val."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import SHARED, need
from edgeface.errors import ModelFileError
from edgeface.weights import SHIPPED

FACEMASK = SHARED / "data" / "facemask"
WIDER = SHARED / "data" / "widerface"


@pytest.mark.parametrize("short, name", [("default", "extd64"), ("fast", "extd32")])
def test_the_shipped_models_ship_with_their_cards(short, name):
    import edgeface

    path = SHIPPED[short]
    assert path.exists() and path.with_suffix(".md").exists()
    detector = edgeface.Detector() if short == "default" else edgeface.Detector(short)
    assert detector.spec.name == name and detector.backend.name.startswith("onnxruntime")
    card = path.with_suffix(".md").read_text()
    for fact in ("Validation AP", "Training data", "Recipe", "Hardware", "Wall time", "WIDER FACE",
                 "non-commercial", detector.spec.model_version):
        assert fact in card, fact


def test_a_file_named_like_a_short_name_wins(tmp_path, monkeypatch):
    import edgeface

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"not a model")
    with pytest.raises(ModelFileError) as error:
        edgeface.Detector("fast")
    assert str(SHIPPED["fast"]) not in str(error.value)


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
