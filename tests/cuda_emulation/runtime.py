"""A CPU stand-in for :mod:`edgeface.backends.cuda.runtime`, with the same names: "device" memory is host
memory, kernels run through their C++ emulation (``emulate.cpp``, one thread at a time) and a stream runs
each operation when it is enqueued, or records it while a graph is being captured. The GPU pipeline runs
on it unchanged, so its launch sequence, buffer sizes and graph replay are tested without a GPU. Every
allocation has guard bytes on both sides, checked after every kernel, copy and replayed operation, so a write
past a buffer (an illegal address on a GPU) fails as :class:`BufferOverrun` instead of passing silently.

Call :func:`load` once with the compiled emulation library before use.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from edgeface.backends.cuda.runtime import CudaArrayView, kernel_arguments  # noqa: F401  (same names as runtime)

_library: Optional[ctypes.CDLL] = None
integrated = False  # set True to exercise the mapped (Jetson) memory path


def load(library: ctypes.CDLL) -> None:
    global _library
    library.emulate_error.restype = ctypes.c_char_p
    _library = library


contexts: list[Optional[int]] = []  # every context() call's ordinal, for tests


def context(ordinal: Optional[int] = None):
    contexts.append(ordinal)
    return ordinal or 0, None


def is_integrated(ordinal: Optional[int] = None) -> bool:
    return integrated


def device_identity(ordinal: int = 0) -> tuple[str, str]:
    return "CPU emulation", "0.0"


_streams: weakref.WeakValueDictionary[int, Stream] = weakref.WeakValueDictionary()


def stream_of(handle: int) -> Stream:
    """The stream whose ``handle`` a stand-in library (TensorRT's ``execute_async_v3``) was given."""
    return _streams[handle]


class Stream:
    def __init__(self):
        self.recording: Optional[list[Callable[[], None]]] = None
        self.waited_for: list[int] = []  # producer streams of device frames (CUDA array interface v3)
        self.handle = id(self)
        _streams[self.handle] = self

    def wait_for(self, producer: int) -> None:
        self.waited_for.append(int(producer))

    def enqueue(self, operation: Callable[[], None], name: str = "a copy") -> None:
        if self.recording is None:
            operation()
            check_all_guards(name)
        else:
            self.recording.append(operation)

    def synchronize(self) -> None:
        if self.recording is not None:
            raise RuntimeError("synchronize() while capturing a graph (a host read inside the captured sequence)")


GUARD = 256  # bytes of a known pattern on each side of every allocation, checked after every operation
GUARD_BYTE = 0x5A
_live: weakref.WeakSet[_Memory] = weakref.WeakSet()


class EmulationError(AssertionError):
    """A kernel did what a GPU would turn into undefined results (for example a warp diverging at a shuffle)."""


class BufferOverrun(AssertionError):
    """An operation wrote outside the allocation it was given: on a GPU, an illegal address or corrupted memory."""


class _Memory:
    def __init__(self, nbytes: int, fill: int):
        self.nbytes = int(nbytes)
        self._raw = np.full(GUARD + max(self.nbytes, 1) + GUARD, GUARD_BYTE, np.uint8)
        self._memory = self._raw[GUARD : GUARD + max(self.nbytes, 1)]
        self._memory[:] = fill
        self.ptr = self._memory.ctypes.data
        _live.add(self)

    def check_guards(self, after: str) -> None:
        for side, guard in (("before", self._raw[:GUARD]), ("after", self._raw[GUARD + max(self.nbytes, 1) :])):
            if (guard != GUARD_BYTE).any():
                raise BufferOverrun(f"{after} wrote {int((guard != GUARD_BYTE).sum())} byte(s) {side} a "
                                    f"{self.nbytes}-byte buffer")


def check_all_guards(after: str) -> None:
    """Raise :class:`BufferOverrun` if any live allocation's guard bytes changed."""
    for memory in list(_live):
        memory.check_guards(after)


class DeviceBuffer(_Memory):
    def __init__(self, nbytes: int):
        super().__init__(nbytes, 0xCD)  # not zeroed, like cuMemAlloc: nothing may rely on fresh memory

    def copy_from_host(self, array: np.ndarray, stream: Optional[Stream] = None) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise BufferOverrun(f"a {array.nbytes}-byte copy into a {self.nbytes}-byte buffer")
        _on(stream, lambda: ctypes.memmove(self.ptr, array.ctypes.data, array.nbytes))

    def copy_to_host(self, array: np.ndarray, stream: Optional[Stream] = None, nbytes: Optional[int] = None) -> None:
        nbytes = nbytes or array.nbytes
        if nbytes > min(self.nbytes, array.nbytes):
            raise BufferOverrun(f"a {nbytes}-byte copy from a {self.nbytes}-byte buffer into {array.nbytes} bytes")
        _on(stream, lambda: ctypes.memmove(array.ctypes.data, self.ptr, nbytes))

    def zero(self, stream: Stream, nbytes: Optional[int] = None) -> None:
        if (nbytes or 0) > self.nbytes:
            raise BufferOverrun(f"zeroing {nbytes} bytes of a {self.nbytes}-byte buffer")
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
        check_all_guards("a copy")
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
            stream.enqueue(operation, "a graph replay")


class Kernels:
    arch = "emulated"

    def __init__(self, ordinal: int = 0):
        assert _library is not None, "call load() with the compiled emulation library first"

    def launch(self, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], stream: Stream,
               *args: Any) -> None:
        assert grid[2] == 1 and block[2] == 1 and block[0] * block[1] <= 1024, (grid, block)
        values = kernel_arguments(name, args)
        function = getattr(_library, "emulate_" + name)

        def run() -> None:
            function(grid[0], grid[1], block[0], block[1], *values)
            error = _library.emulate_error()
            if error:
                raise EmulationError(f"{name}: {error.decode()}")

        stream.enqueue(run, name)
