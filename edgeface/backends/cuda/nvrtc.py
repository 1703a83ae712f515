"""NVRTC compilation of ``kernels.cu`` to cubins, with an on-disk cache per architecture.

NVRTC needs no GPU. CUDA 13's NVRTC targets sm_75 and newer; Jetson Nano / TX2 / Xavier (sm_53 /
sm_62 / sm_72) need CUDA 12's, and an older driver cannot load PTX from a newer NVRTC, so edgeface
always compiles to cubins (SASS) for the exact architecture. The NVRTC library is found in NVIDIA's
wheels (``nvidia-cuda-nvrtc`` for 13, ``nvidia-cuda-nvrtc-cu12`` for 12) or the system's CUDA.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
from functools import cache
from pathlib import Path

from ...errors import BackendError
from . import KERNELS

CUDA12_ARCHS = ("sm_53", "sm_62", "sm_72", "sm_87")  # Jetson Nano, TX2, Xavier, Orin (JetPack 4-6)
CUDA13_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")  # desktops, Orin, Hopper
CACHE = Path(os.environ.get("EDGEFACE_CUBIN_CACHE", Path.home() / ".cache" / "edgeface" / "cubins"))


def _candidates(major: int) -> list[str]:
    roots = [Path(p) / "nvidia" for p in sys.path if p and (Path(p) / "nvidia").is_dir()]
    patterns = [f"cu{major}/lib/libnvrtc.so.{major}", f"cuda_nvrtc/lib/libnvrtc.so.{major}"]
    found = [str(r / p) for r in roots for p in patterns if (r / p).exists()]
    return found + sorted(glob.glob(f"/usr/local/cuda*/lib64/libnvrtc.so.{major}*")) + [f"libnvrtc.so.{major}"]


def _version(lib: ctypes.CDLL) -> tuple[int, int]:
    v_major, v_minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(v_major), ctypes.byref(v_minor))
    return v_major.value, v_minor.value


@cache
def load_nvrtc(major: int) -> ctypes.CDLL:
    """The NVRTC library of CUDA `major` (12 or 13); BackendError saying what to install if none is found."""
    for path in _candidates(major):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if _version(lib)[0] == major:
            return lib
    wheel = "nvidia-cuda-nvrtc" if major >= 13 else f"nvidia-cuda-nvrtc-cu{major}"
    raise BackendError(f"NVRTC {major}.x not found: pip install {wheel} (or install the CUDA {major} toolkit)")


def nvrtc_version(major: int) -> str:
    return "{}.{}".format(*_version(load_nvrtc(major)))


def nvrtc_major_for(arch: str) -> int:
    """CUDA 13's NVRTC where it targets `arch`, else CUDA 12's."""
    return 13 if arch in CUDA13_ARCHS else 12


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise BackendError(f"NVRTC {what} failed: {lib.nvrtcGetErrorString(status).decode()}")


def compile_cubin(arch: str, source: str | None = None, major: int | None = None, use_cache: bool = True) -> bytes:
    """Compile the kernels (or `source`) for `arch` (e.g. "sm_87") to a cubin, cached on disk."""
    source = KERNELS.read_text() if source is None else source
    major = major or nvrtc_major_for(arch)
    key = hashlib.sha256(f"{source}|{arch}|{nvrtc_version(major)}".encode()).hexdigest()[:24]
    cached = CACHE / f"{key}_{arch}.cubin"
    if use_cache and cached.exists():
        return cached.read_bytes()
    lib = load_nvrtc(major)
    program = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernels.cu", 0, None, None),
           "create")
    options = [f"--gpu-architecture={arch}".encode(), b"--std=c++14", b"-default-device", b"--use_fast_math"]
    status = lib.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
    if status != 0:
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        lib.nvrtcDestroyProgram(ctypes.byref(program))
        raise BackendError(f"NVRTC {major} could not compile the kernels for {arch}:\n{log.value.decode()}")
    size = ctypes.c_size_t()
    _check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "cubin size")
    cubin = ctypes.create_string_buffer(size.value)
    _check(lib, lib.nvrtcGetCUBIN(program, cubin), "cubin")
    lib.nvrtcDestroyProgram(ctypes.byref(program))
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(cubin.raw)
        os.replace(tmp, cached)
    return cubin.raw
