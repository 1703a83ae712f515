"""Examples run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_detect_faces_example(extd64_onnx, photo_paths, tmp_path):
    out = tmp_path / "faces.jpg"
    result = subprocess.run([sys.executable, str(EXAMPLES / "detect_faces.py"), str(extd64_onnx), photo_paths[0],
                             "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "faces; wrote" in result.stdout and int(result.stdout.split("\n")[-2].split()[0]) > 0
    assert cv2.imread(str(out)).shape == cv2.imread(photo_paths[0]).shape
