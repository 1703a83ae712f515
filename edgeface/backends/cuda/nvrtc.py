"""NVRTC compilation of ``kernels.cu`` to cubins, with an on-disk cache per architecture.

NVRTC needs no GPU. A cubin (SASS for one exact architecture) loads on any driver of the CUDA major that
compiled it or newer, never on an older one: cubins from CUDA 13's NVRTC need a driver of 580 or newer.
So the NVRTC is chosen by the driver (:func:`nvrtc_major_for`): CUDA 13's on 13.x drivers (desktops with
driver 580+, JetPack 7), CUDA 12's on 12.x drivers (desktop drivers 525-575, JetPack 6). The library is
found in NVIDIA's wheels (``nvidia-cuda-nvrtc`` for 13, ``nvidia-cuda-nvrtc-cu12`` for 12) or the system's
CUDA (JetPack's ``/usr/local/cuda``).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
from functools import cache
from pathlib import Path
from typing import Optional

from ...core.files import atomic_write
from ...errors import BackendError
from . import KERNELS

# The architectures each NVRTC compiles edgeface's kernels for (nvrtcGetSupportedArchs, within the platforms
# edgeface's GPU runtime supports): CUDA 12 for desktop GPUs on drivers 525-575 and Orin on JetPack 6; CUDA 13
# for desktop GPUs on drivers 580+, Orin and Thor on JetPack 7. (CUDA 13 has no Maxwell/Pascal/Volta; Jetson
# Nano / TX2 / Xavier run JetPack 4-5, whose Python edgeface does not support.)
CUDA12_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")
CUDA13_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_110", "sm_120")
# --fmad=false: no multiply-add contraction, so the GPU rounds every product and sum as the C++ emulation
# (compiled with -ffp-contract=off) and the float32 error bounds of the tests hold on both
COMPILE_OPTIONS = (b"--std=c++14", b"-default-device", b"--use_fast_math", b"--fmad=false")
CACHE = Path(os.environ.get("EDGEFACE_CUBIN_CACHE", Path.home() / ".cache" / "edgeface" / "cubins"))
INSTALL = {13: "pip install nvidia-cuda-nvrtc (CUDA 13)", 12: "pip install nvidia-cuda-nvrtc-cu12 (CUDA 12)"}


def _candidates(major: int) -> list[str]:
    roots = [Path(p) / "nvidia" for p in sys.path if p and (Path(p) / "nvidia").is_dir()]
    patterns = [f"cu{major}/lib/libnvrtc.so.{major}", f"cuda_nvrtc/lib/libnvrtc.so.{major}"]
    found = [str(r / p) for r in roots for p in patterns if (r / p).exists()]
    return found + sorted(glob.glob(f"/usr/local/cuda*/lib64/libnvrtc.so.{major}*")) + [f"libnvrtc.so.{major}"]


def _preload_builtins(library_path: str, major: int) -> None:
    """Load ``libnvrtc-builtins`` from the folder of `library_path` first (``RTLD_GLOBAL``): some NVRTC wheels
    (13.0.88, the one PyTorch's cu130 wheels pin) carry no RPATH, so NVRTC loaded by path cannot find it."""
    folder = os.path.dirname(library_path)
    if not folder:
        return
    for builtins in sorted(glob.glob(os.path.join(folder, f"libnvrtc-builtins.so.{major}*")), key=len):
        try:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            continue


def _version(lib: ctypes.CDLL) -> tuple[int, int]:
    v_major, v_minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(v_major), ctypes.byref(v_minor))
    return v_major.value, v_minor.value


@cache
def load_nvrtc(major: int) -> ctypes.CDLL:
    """The NVRTC library of CUDA `major` (12 or 13); BackendError saying what to install if none is found."""
    for path in _candidates(major):
        _preload_builtins(path, major)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if _version(lib)[0] == major:
            return lib
    raise BackendError(f"NVRTC {major}.x not found: {INSTALL[major]}, or install the CUDA {major} toolkit")


def nvrtc_version(major: int) -> str:
    return "{}.{}".format(*_version(load_nvrtc(major)))


def nvrtc_major_for(arch: str, driver_version: Optional[int] = None) -> int:
    """The CUDA major whose NVRTC compiles `arch` into cubins that the driver of `driver_version` (as
    ``cuDriverGetVersion`` gives it: 12060 is 12.6) can load: 13 on a 13.x driver, 12 on a 12.x driver. Without
    a driver version (compiling ahead of time), the newest NVRTC that targets `arch`."""
    driver_major = 13 if driver_version is None else driver_version // 1000
    if driver_major >= 13 and arch in CUDA13_ARCHS:
        return 13
    if driver_major >= 12 and arch in CUDA12_ARCHS:
        return 12
    if driver_major < 12:
        raise BackendError(f"the CUDA driver is {driver_major}.x; edgeface's GPU runtime needs a CUDA 12 driver "
                           "(525 or newer; JetPack 6) or newer: update the driver, or use the CPU runtime (.onnx)")
    raise BackendError(f"edgeface's kernels have no {arch} target on a CUDA {driver_major} driver "
                       f"(CUDA 12: {', '.join(CUDA12_ARCHS)}; CUDA 13: {', '.join(CUDA13_ARCHS)})")


def _check(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise BackendError(f"NVRTC {what} failed: {lib.nvrtcGetErrorString(status).decode()}")


def compile_cubin(arch: str, source: str | None = None, major: int | None = None, use_cache: bool = True,
                  driver_version: Optional[int] = None) -> bytes:
    """Compile the kernels (or `source`) for `arch` (e.g. "sm_87") to a cubin, cached on disk, with NVRTC `major`
    (default: the one for `driver_version`, see :func:`nvrtc_major_for`)."""
    source = KERNELS.read_text() if source is None else source
    major = major or nvrtc_major_for(arch, driver_version)
    options = [f"--gpu-architecture={arch}".encode(), *COMPILE_OPTIONS]
    key = hashlib.sha256(f"{source}|{options}|{nvrtc_version(major)}".encode()).hexdigest()[:24]
    cached = CACHE / f"{key}_{arch}.cubin"
    if use_cache and cached.exists():
        return cached.read_bytes()
    lib = load_nvrtc(major)
    program = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernels.cu", 0, None, None),
           "create")
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
        with atomic_write(cached) as tmp:
            Path(tmp).write_bytes(cubin.raw)
    return cubin.raw
