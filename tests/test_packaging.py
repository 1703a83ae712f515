"""The runtime as users install it: a wheel, from the package registry, on the oldest Python edgeface claims and
the newest there is here."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import DLIB_FACES, need

ROOT = Path(__file__).resolve().parents[1]
OLDEST_PYTHON = "3.9"  # pyproject's requires-python
NEWEST_PYTHON = "3.13"  # the newest Python this machine and CI have


def find_python(version: str) -> str | None:
    candidates = [shutil.which(f"python{version}"), *sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}*"
                                                                         f"/bin/python{version}")))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


def build_wheel(folder: Path) -> Path:
    """edgeface's wheel, built from a copy of the checkout in `folder` (building in the checkout would leave a
    build/ folder there)."""
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "edgeface", "export"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder / "wheels"),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = (folder / "wheels").glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_the_shipped_models_kernels_and_type_marker(wheel):
    """What the runtime reads besides Python files, and PEP 561's py.typed, which tells users' type checkers
    (mypy, pyright) to read edgeface's own annotations."""
    from edgeface.weights import SHIPPED

    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"edgeface/py.typed", "edgeface/backends/cuda/kernels.cu", "edgeface/export/onnx_import.py",
              *(f"edgeface/weights/{path.name}" for path in SHIPPED.values())}
    assert wanted <= names, sorted(wanted - names)


USER_APP = """
import numpy as np
import edgeface

detector = edgeface.Detector("fast", score_threshold=0.6)
image: np.ndarray = edgeface.read_image("group.jpg")
faces = detector(image)
reveal_type(faces)
for (x1, y1, x2, y2), score in faces:
    reveal_type(score)
reveal_type(detector.detect_batch([image, image]))
reveal_type(faces.crops(image, margin=0.2))
reveal_type(faces.to_json())
"""


def test_an_app_using_the_installed_runtime_passes_a_strict_type_check(wheel, tmp_path):
    """What a user's `mypy --strict` sees of the runtime from the wheel: precise types where an app meets edgeface
    (a frame in, Detections out), no Any."""
    pytest.importorskip("mypy")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    (tmp_path / "app.py").write_text(USER_APP)
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir",
                             str(tmp_path / "cache"), "app.py"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "MYPYPATH": str(tmp_path / "site")}, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    revealed = re.findall(r'Revealed type is "(.+)"', result.stdout)
    assert revealed == ["edgeface.core.detections.Detections", "float", "list[edgeface.core.detections.Detections]",
                        "list[numpy.ndarray[tuple[Any, ...], numpy.dtype[Any]]]", "str"]


def test_requires_python_is_the_oldest_tested():
    assert f'requires-python = ">={OLDEST_PYTHON}"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("python_version", [OLDEST_PYTHON, NEWEST_PYTHON], ids=["oldest", "newest"])
def test_the_cpu_runtime_installs_and_detects_on_the_oldest_and_newest_python(tmp_path, wheel, python_version):
    photo = need(DLIB_FACES / "2008_002506.jpg")
    python = find_python(python_version)
    if python is None:
        pytest.skip(f"no Python {python_version} interpreter on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0 and ("Could not find a version" in pip.stderr or "connection" in pip.stderr.lower()):
        pytest.skip(f"the package registry cannot serve the runtime's dependencies here: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr[-2000:]
    script = ("import sys, edgeface; from edgeface.weights import SHIPPED; image = edgeface.read_image(sys.argv[1]); "
              "faces = edgeface.Detector()(image); "
              "assert all(len(edgeface.Detector(name)(image)) > 0 for name in SHIPPED), 'a shipped model found none'; "
              "assert 'torch' not in sys.modules; print(sys.version_info[:2], len(faces))")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script, str(photo)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    version, faces = result.stdout.strip().rsplit(" ", 1)
    assert version == str(tuple(int(v) for v in python_version.split("."))) and int(faces) > 0
