"""The CUDA driver through NVIDIA's ``cuda-bindings``: context, stream, device and page-locked host
buffers, CUDA graphs and the kernels of ``kernels.cu`` loaded from their cubin. Imported only on GPU paths.

:class:`~edgeface.backends.cuda.pipeline.GpuPipeline` uses only the names this module shares with its CPU
stand-in, ``tests/cuda_emulation/runtime.py`` (which runs the kernels' source as C++ on the CPU).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable
from functools import cache
from typing import Any, Optional

import numpy as np

from ...errors import BackendError
from .nvrtc import compile_cubin


def _driver() -> Any:
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


_thread = threading.local()  # the device this thread last made current


@cache
def _primary_context(ordinal: int) -> tuple[Any, Any]:
    driver = _driver()
    check(driver.cuInit(0))
    count = check(driver.cuDeviceGetCount())
    if count == 0 or ordinal >= count:
        raise BackendError(f"no CUDA device {ordinal} (found {count}): use a CPU backend (an .onnx model)")
    device = check(driver.cuDeviceGet(ordinal))
    return device, check(driver.cuDevicePrimaryCtxRetain(device))


def context(ordinal: Optional[int] = None) -> tuple[Any, Any]:
    """The primary context of device `ordinal` (the one torch and TensorRT use), made current on this thread;
    default: the device this thread last made current (0 at first). Buffers, streams and graphs are created in
    the current context, so a pipeline on device 1 calls ``context(1)`` first."""
    if ordinal is None:
        ordinal = getattr(_thread, "ordinal", 0)
    device, ctx = _primary_context(ordinal)
    check(_driver().cuCtxSetCurrent(ctx))
    _thread.ordinal = ordinal
    return device, ctx


def is_integrated(ordinal: int = 0) -> bool:
    """Whether device `ordinal` shares memory with the CPU (Jetson): host memory mapped into it needs no copies."""
    device, _ = context(ordinal)
    attribute = _driver().CUdevice_attribute.CU_DEVICE_ATTRIBUTE_INTEGRATED
    return bool(check(_driver().cuDeviceGetAttribute(attribute, device)))


def device_identity(ordinal: int = 0) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device `ordinal`."""
    driver = _driver()
    device, _ = context(ordinal)
    name = check(driver.cuDeviceGetName(256, device)).split(b"\0")[0].decode()
    attr = driver.CUdevice_attribute
    major = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))
    minor = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))
    return name, f"{major}.{minor}"


def _release_with(owner: object, free: Callable[..., Any], *handles: Any) -> None:
    """Free `handles` with `free` when `owner` is collected, or at interpreter exit while modules still exist
    (``weakref.finalize``): a ``__del__`` that imports the driver fails during module teardown, once per object."""
    weakref.finalize(owner, free, *handles)


class DeviceBuffer:
    """Device memory owned by this object (freed with it)."""

    def __init__(self, nbytes: int):
        context()
        driver = _driver()
        self.nbytes = int(nbytes)
        self.ptr = int(check(driver.cuMemAlloc(max(self.nbytes, 1))))
        _release_with(self, driver.cuMemFree, self.ptr)

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


class HostBuffer:
    """Page-locked host memory owned by this object, so copies are asynchronous and can be captured in a graph.
    ``mapped`` also maps it into the device's address space (``device_ptr``): kernels then read and write it in
    place, which on an integrated GPU (Jetson) replaces the copy altogether."""

    def __init__(self, nbytes: int, mapped: bool = False):
        context()
        driver = _driver()
        self.nbytes = int(nbytes)
        flags = driver.CU_MEMHOSTALLOC_DEVICEMAP if mapped else 0
        self.ptr = int(check(driver.cuMemHostAlloc(max(self.nbytes, 1), flags)))
        _release_with(self, driver.cuMemFreeHost, self.ptr)
        self.device_ptr = int(check(driver.cuMemHostGetDevicePointer(self.ptr, 0))) if mapped else None

    def array(self, shape: tuple[int, ...], dtype: Any, offset: int = 0) -> np.ndarray:
        """A NumPy view of the buffer from byte `offset`."""
        raw: Any = (ctypes.c_char * self.nbytes).from_address(self.ptr)
        raw.owner = self  # the view keeps the page-locked memory alive (a plan evicted meanwhile frees it later)
        return np.frombuffer(raw, dtype, int(np.prod(shape)), offset).reshape(shape)


class CudaArrayView:
    """A device pointer with a shape, exposed through ``__cuda_array_interface__`` (CuPy, torch, numba read it)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32):
        self.__cuda_array_interface__ = {"data": (int(ptr), False), "shape": tuple(int(s) for s in shape),
                                         "typestr": np.dtype(dtype).str, "version": 3}


class Stream:
    """A CUDA stream: everything one pipeline enqueues runs on it, in order. Non-blocking: it does not
    synchronise with the legacy default stream, so while it captures a graph other threads' default-stream
    work (torch's, CuPy's) goes on."""

    def __init__(self) -> None:
        context()
        driver = _driver()
        self.handle = check(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING))
        _release_with(self, driver.cuStreamDestroy, self.handle)

    def synchronize(self) -> None:
        check(_driver().cuStreamSynchronize(self.handle))

    def wait_for(self, producer: int) -> None:
        """Make this stream wait for the work queued so far on stream handle `producer` (the ``stream`` of a CUDA
        array interface v3: 1 is the legacy default stream, 2 the per-thread default stream)."""
        driver = _driver()
        event = check(driver.cuEventCreate(driver.CUevent_flags.CU_EVENT_DISABLE_TIMING))
        try:
            check(driver.cuEventRecord(event, producer))
            check(driver.cuStreamWaitEvent(self.handle, event, 0))
        finally:
            driver.cuEventDestroy(event)  # released once the wait has happened


class Graph:
    """The work `enqueue()` puts on `stream`, captured once as a CUDA graph and replayed by :meth:`launch` with one
    driver call. Everything captured (kernel arguments, buffer addresses, copy sizes) is fixed at capture, and
    host copies must use page-locked memory."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        driver = _driver()
        thread_local = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        check(driver.cuStreamBeginCapture(stream.handle, thread_local))
        try:
            enqueue()
        except BaseException:
            err, partial = driver.cuStreamEndCapture(stream.handle)  # leave capture mode, drop what was captured
            if err == driver.CUresult.CUDA_SUCCESS and partial is not None:
                driver.cuGraphDestroy(partial)
            raise
        self.graph = check(driver.cuStreamEndCapture(stream.handle))
        _release_with(self, driver.cuGraphDestroy, self.graph)
        self.exec = check(driver.cuGraphInstantiate(self.graph, 0))
        _release_with(self, driver.cuGraphExecDestroy, self.exec)  # finalizers run last-registered first

    def launch(self, stream: Stream) -> None:
        check(_driver().cuGraphLaunch(self.exec, stream.handle))


POINTER, INT, FLOAT = "p", "i", "f"
SIGNATURES = {  # the kernels' parameters, in order
    "ef_preprocess": (POINTER, INT, INT, INT, INT, INT, POINTER, INT, INT, INT, INT, INT, INT, INT, INT,
                      FLOAT, FLOAT, FLOAT, FLOAT, FLOAT, FLOAT),
    "ef_decode": (POINTER, POINTER, POINTER, INT, FLOAT, FLOAT, FLOAT, FLOAT, INT, POINTER, POINTER, POINTER,
                  POINTER),
    "ef_select_histogram": (POINTER, POINTER, POINTER, INT, INT, POINTER),
    "ef_select_pick": (POINTER, INT, INT, INT, POINTER),
    "ef_select_compact": (POINTER, POINTER, POINTER, POINTER, INT, POINTER, POINTER, POINTER, POINTER),
    "ef_rank": (POINTER, POINTER, POINTER, POINTER, INT, INT, POINTER, POINTER, POINTER, POINTER),
    "ef_nms_mask": (POINTER, POINTER, FLOAT, POINTER),
    "ef_nms_reduce": (POINTER, POINTER, POINTER, POINTER, INT, POINTER, POINTER),
}


def kernel_arguments(name: str, args: tuple) -> list:
    """`args` of kernel `name` as ctypes values (device pointers as ints, then ints and floats per its signature)."""
    kinds = SIGNATURES[name]
    if len(args) != len(kinds):
        raise BackendError(f"{name} takes {len(kinds)} arguments, got {len(args)}")
    return [ctypes.c_uint64(int(a)) if k == POINTER else ctypes.c_int(int(a)) if k == INT else ctypes.c_float(float(a))
            for a, k in zip(args, kinds)]


class Kernels:
    """The kernels of ``kernels.cu``, from the cubin for this GPU's architecture (NVRTC, cached on disk)."""

    def __init__(self, ordinal: int = 0):
        driver = _driver()
        _, capability = device_identity(ordinal)
        self.arch = "sm_" + capability.replace(".", "")
        cubin = compile_cubin(self.arch, driver_version=check(driver.cuDriverGetVersion()))
        self._cubin = ctypes.create_string_buffer(cubin, len(cubin))
        self.module = check(driver.cuModuleLoadData(ctypes.addressof(self._cubin)))
        self.functions = {name: check(driver.cuModuleGetFunction(self.module, name.encode()))
                          for name in SIGNATURES}

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], stream: Stream,
               *args: Any) -> None:
        """Launch kernel `name` with `args` (device pointers as ints, then ints and floats per its signature)."""
        values = kernel_arguments(name, args)
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        check(_driver().cuLaunchKernel(self.functions[name], *grid, *block, 0, stream.handle,
                                       ctypes.addressof(pointers), 0))
