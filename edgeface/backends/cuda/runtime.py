"""The CUDA driver through NVIDIA's ``cuda-bindings``: context, stream, device buffers and the kernels of
``kernels.cu`` loaded from their cubin. Imported only on GPU paths.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any, Optional

import numpy as np

from ...errors import BackendError
from .nvrtc import compile_cubin


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise BackendError("the GPU runtime needs cuda-bindings: pip install edgeface[cuda]") from exc
    return driver


def check(result: tuple) -> Any:
    """Unwrap a cuda-bindings ``(CUresult, *values)`` tuple, raising :class:`BackendError` on an error."""
    driver = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, text = driver.cuGetErrorString(err)
        raise BackendError(f"CUDA error {int(err)}: {text.decode() if text else err}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


@cache
def _primary_context(ordinal: int):
    driver = _driver()
    check(driver.cuInit(0))
    count = check(driver.cuDeviceGetCount())
    if count == 0 or ordinal >= count:
        raise BackendError(f"no CUDA device {ordinal} (found {count}): use a CPU backend (an .onnx model)")
    device = check(driver.cuDeviceGet(ordinal))
    return device, check(driver.cuDevicePrimaryCtxRetain(device))


def context(ordinal: int = 0):
    """The primary context of device `ordinal` (the one torch and TensorRT use), made current on this thread."""
    device, ctx = _primary_context(ordinal)
    check(_driver().cuCtxSetCurrent(ctx))
    return device, ctx


def device_identity(ordinal: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device `ordinal`."""
    driver = _driver()
    device, _ = context(ordinal)
    name = check(driver.cuDeviceGetName(256, device)).split(b"\0")[0].decode()
    attr = driver.CUdevice_attribute
    major = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))
    minor = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))
    return name, f"{major}.{minor}"


class DeviceBuffer:
    """Device memory owned by this object (freed with it)."""

    def __init__(self, nbytes: int):
        context()
        self.nbytes = int(nbytes)
        self.ptr = int(check(_driver().cuMemAlloc(max(self.nbytes, 1))))

    def copy_from_host(self, array: np.ndarray, stream: Optional[Stream] = None) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise BackendError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        check(_driver().cuMemcpyHtoDAsync(self.ptr, array.ctypes.data, array.nbytes, stream.handle if stream else 0))

    def copy_to_host(self, array: np.ndarray, stream: Optional[Stream] = None, nbytes: Optional[int] = None) -> None:
        check(_driver().cuMemcpyDtoHAsync(array.ctypes.data, self.ptr, nbytes or array.nbytes,
                                          stream.handle if stream else 0))

    def zero(self, stream: Stream, nbytes: Optional[int] = None) -> None:
        check(_driver().cuMemsetD8Async(self.ptr, 0, nbytes or self.nbytes, stream.handle))

    def __del__(self):
        if getattr(self, "ptr", None):
            _driver().cuMemFree(self.ptr)
            self.ptr = 0


class CudaArrayView:
    """A device pointer with a shape, exposed through ``__cuda_array_interface__`` (CuPy, torch, numba read it)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32):
        self.__cuda_array_interface__ = {"data": (int(ptr), False), "shape": tuple(int(s) for s in shape),
                                         "typestr": np.dtype(dtype).str, "version": 3}


class Stream:
    def __init__(self):
        context()
        self.handle = check(_driver().cuStreamCreate(0))

    def synchronize(self) -> None:
        check(_driver().cuStreamSynchronize(self.handle))

    def __del__(self):
        if getattr(self, "handle", None) is not None:
            _driver().cuStreamDestroy(self.handle)
            self.handle = None


POINTER, INT, FLOAT = "p", "i", "f"


class Kernels:
    """The kernels of ``kernels.cu``, from the cubin for this GPU's architecture (NVRTC, cached on disk)."""

    SIGNATURES = {
        "ef_preprocess": (POINTER, INT, INT, INT, INT, INT, POINTER, INT, INT, INT, INT, INT, INT, INT, INT,
                          FLOAT, FLOAT, FLOAT, FLOAT, FLOAT, FLOAT),
        "ef_decode": (POINTER, POINTER, POINTER, INT, FLOAT, FLOAT, FLOAT, INT, POINTER, POINTER, POINTER, POINTER),
        "ef_rank": (POINTER, POINTER, POINTER, INT, INT, POINTER, POINTER, POINTER),
        "ef_nms_mask": (POINTER, INT, FLOAT, POINTER),
        "ef_nms_reduce": (POINTER, INT, INT, POINTER, POINTER),
    }

    def __init__(self, ordinal: int = 0):
        driver = _driver()
        _, capability = device_identity(ordinal)
        self.arch = "sm_" + capability.replace(".", "")
        cubin = compile_cubin(self.arch)
        self._cubin = ctypes.create_string_buffer(cubin, len(cubin))
        self.module = check(driver.cuModuleLoadData(ctypes.addressof(self._cubin)))
        self.functions = {name: check(driver.cuModuleGetFunction(self.module, name.encode()))
                          for name in self.SIGNATURES}

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], stream: Stream,
               *args: Any) -> None:
        """Launch kernel `name` with `args` (device pointers as ints, then ints and floats per its signature)."""
        kinds = self.SIGNATURES[name]
        if len(args) != len(kinds):
            raise BackendError(f"{name} takes {len(kinds)} arguments, got {len(args)}")
        values = [ctypes.c_uint64(int(a)) if k == POINTER else ctypes.c_int(int(a)) if k == INT
                  else ctypes.c_float(float(a)) for a, k in zip(args, kinds)]
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        check(_driver().cuLaunchKernel(self.functions[name], *grid, *block, 0, stream.handle,
                                       ctypes.addressof(pointers), 0))
