"""Shared fixtures. Real data comes from ../shared (never committed); tests that need it skip without it."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("EDGEFACE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DLIB_FACES = SHARED / "data" / "photos" / "dlib_examples_faces"
AUTHORS_WEIGHTS = SHARED / "weights" / "extd_official"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the shared data folder (../shared) is not beside the checkout")
    return path


@pytest.fixture(scope="session")
def dlib_testing() -> Path:
    return need(DLIB_FACES / "testing.xml")


@pytest.fixture(scope="session")
def photo_paths() -> list[str]:
    return [str(p) for p in sorted(need(DLIB_FACES).glob("*.jpg"))]


def authors_checkpoint(width: int, folder: Path) -> Path:
    """The authors' EXTD-`width` converted to an edgeface checkpoint in `folder` (temporary, never committed)."""
    pytest.importorskip("torch")
    from edgeface.models.checkpoint import convert_authors_checkpoint

    out = folder / f"extd{width}_authors.pt"
    convert_authors_checkpoint(need(AUTHORS_WEIGHTS / f"EXTD_{width}.pth"), out)
    return out


def authors_onnx(width: int, folder: Path, dlib_testing: Path) -> Path:
    """The converted EXTD-`width` exported to ONNX (dynamic H, W and batch), parity-checked on real photos."""
    from edgeface.export.onnx_export import export_onnx, load_model

    model, spec, _ = load_model(str(authors_checkpoint(width, folder)))
    out = folder / f"extd{width}.onnx"
    images = sorted(str(p) for p in dlib_testing.parent.glob("2008_*.jpg"))[:3]
    export_onnx(model, spec, out, check_images=images)
    return out


@pytest.fixture(scope="session")
def extd64_pt(tmp_path_factory) -> Path:
    return authors_checkpoint(64, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def extd64_onnx(dlib_testing, tmp_path_factory) -> Path:
    return authors_onnx(64, tmp_path_factory.mktemp("onnx"), dlib_testing)


@pytest.fixture(scope="session")
def extd32_onnx(dlib_testing, tmp_path_factory) -> Path:
    return authors_onnx(32, tmp_path_factory.mktemp("onnx"), dlib_testing)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def perturb_batchnorm(model, spread: float = 0.5, seed: int = 0) -> None:
    """Random BatchNorm statistics and affine values (and PReLU slopes), as a trained model has: means within
    +-`spread`, variances and scales within 1 -+ `spread`."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-spread, spread)
                module.running_var.uniform_(1 - spread, 1 + spread)
                module.weight.uniform_(1 - spread, 1 + spread)
                module.bias.uniform_(-spread, spread)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.05, 0.4)


def random_boxes(rng: np.random.Generator, n: int, extent: float = 200.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1, extent / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """JPEG bytes with an EXIF segment whose Orientation tag (0x0112) is `orientation`, as phones write them."""
    tiff = b"MM\x00*\x00\x00\x00\x08\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(app1)) + app1 + jpeg[2:]


def write_imglab(records, path: Path) -> Path:
    """Records as a dlib imglab XML file: a real reader on a tiny training set."""
    path.write_text("<dataset><images>" + "".join(
        f"<image file='{r.image_path}'>" + "".join(
            f"<box left='{b[0]}' top='{b[1]}' width='{b[2] - b[0]}' height='{b[3] - b[1]}'/>" for b in r.boxes)
        + "</image>" for r in records) + "</images></dataset>")
    return path


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """The CUDA kernels compiled as C++ for the CPU (tests/cuda_emulation/emulate.cpp)."""
    import ctypes
    import shutil
    import subprocess

    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CPU emulation of the CUDA kernels needs a C++ compiler")
    lib = tmp_path_factory.mktemp("emulation") / "emulate.so"
    source = Path(__file__).resolve().parent / "cuda_emulation" / "emulate.cpp"
    # no multiply-add contraction, like the cubins (NVRTC --fmad=false): one rounding per operation on both
    subprocess.run(["g++", "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++14", str(source), "-o", str(lib)],
                   check=True)
    return ctypes.CDLL(str(lib))


@pytest.fixture
def emulated_runtime(emulator, monkeypatch):
    """The CPU stand-in for edgeface.backends.cuda.runtime (discrete-GPU memory unless a test sets `integrated`)."""
    from cuda_emulation import runtime

    runtime.load(emulator)
    monkeypatch.setattr(runtime, "integrated", False)
    return runtime


@pytest.fixture(scope="session")
def gpu_runtime():
    """edgeface.backends.cuda.runtime on a real GPU; skips, saying why, without one."""
    try:
        from edgeface.backends.cuda import runtime

        runtime.context()
    except Exception as exc:  # no cuda-bindings, no driver or no device
        pytest.skip(f"no CUDA GPU here ({type(exc).__name__}: {exc})")
    return runtime
