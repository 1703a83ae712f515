"""A CPU stand-in for :mod:`edgeface.backends.cuda.runtime`, with the same names: "device" memory is host
memory, kernels run through their C++ emulation (``emulate.cpp``, one thread at a time) and a stream runs
each operation when it is enqueued, or records it while a graph is being captured. The GPU pipeline runs
on it unchanged, so its launch sequence, buffer sizes and graph replay are tested without a GPU.

Call :func:`load` once with the compiled emulation library before use.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from edgeface.backends.cuda.runtime import CudaArrayView, kernel_arguments  # noqa: F401  (same names as runtime)

_library: Optional[ctypes.CDLL] = None
integrated = False  # set True to exercise the mapped (Jetson) memory path


def load(library: ctypes.CDLL) -> None:
    global _library
    _library = library


def context(ordinal: int = 0):
    return ordinal, None


def is_integrated(ordinal: int = 0) -> bool:
    return integrated


def device_identity(ordinal: int = 0) -> tuple[str, str]:
    return "CPU emulation", "0.0"


class Stream:
    def __init__(self):
        self.recording: Optional[list[Callable[[], None]]] = None

    def enqueue(self, operation: Callable[[], None]) -> None:
        if self.recording is None:
            operation()
        else:
            self.recording.append(operation)

    def synchronize(self) -> None:
        if self.recording is not None:
            raise RuntimeError("synchronize() while capturing a graph (a host read inside the captured sequence)")


class _Memory:
    def __init__(self, nbytes: int, fill: int):
        self.nbytes = int(nbytes)
        self._memory = np.full(max(self.nbytes, 1), fill, np.uint8)
        self.ptr = self._memory.ctypes.data


class DeviceBuffer(_Memory):
    def __init__(self, nbytes: int):
        super().__init__(nbytes, 0xCD)  # not zeroed, like cuMemAlloc: nothing may rely on fresh memory

    def copy_from_host(self, array: np.ndarray, stream: Optional[Stream] = None) -> None:
        array = np.ascontiguousarray(array)
        assert array.nbytes <= self.nbytes
        _on(stream, lambda: ctypes.memmove(self.ptr, array.ctypes.data, array.nbytes))

    def copy_to_host(self, array: np.ndarray, stream: Optional[Stream] = None, nbytes: Optional[int] = None) -> None:
        _on(stream, lambda: ctypes.memmove(array.ctypes.data, self.ptr, nbytes or array.nbytes))

    def zero(self, stream: Stream, nbytes: Optional[int] = None) -> None:
        _on(stream, lambda: ctypes.memset(self.ptr, 0, nbytes or self.nbytes))


class HostBuffer(_Memory):
    def __init__(self, nbytes: int, mapped: bool = False):
        super().__init__(nbytes, 0xAB)
        self.device_ptr = self.ptr if mapped else None

    def array(self, shape: tuple[int, ...], dtype: Any, offset: int = 0) -> np.ndarray:
        return np.frombuffer(self._memory, dtype, int(np.prod(shape)), offset).reshape(shape)


def _on(stream: Optional[Stream], operation: Callable[[], Any]) -> None:
    if stream is None:
        operation()
    else:
        stream.enqueue(operation)


class Graph:
    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        stream.recording = []
        try:
            enqueue()
        finally:
            self.operations, stream.recording = stream.recording, None

    def launch(self, stream: Stream) -> None:
        for operation in self.operations:
            stream.enqueue(operation)


class Kernels:
    arch = "emulated"

    def __init__(self, ordinal: int = 0):
        assert _library is not None, "call load() with the compiled emulation library first"

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], stream: Stream,
               *args: Any) -> None:
        assert grid[2] == 1 and block[2] == 1 and block[0] * block[1] <= 1024, (grid, block)
        values = kernel_arguments(name, args)
        function = getattr(_library, "emulate_" + name)
        stream.enqueue(lambda: function(grid[0], grid[1], block[0], block[1], *values))
