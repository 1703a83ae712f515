"""The cuda-bindings runtime's object lifetimes, on a stand-in ``cuda.bindings.driver`` (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FAKE_DRIVER = '''
"""Just enough of cuda.bindings.driver for edgeface's runtime to allocate and free; it counts frees."""
import enum, itertools

class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0

class CUstream_flags(enum.IntEnum):
    CU_STREAM_DEFAULT = 0
    CU_STREAM_NON_BLOCKING = 1

CU_MEMHOSTALLOC_DEVICEMAP = 2
_next = itertools.count(4096, 4096)
stream_flags = []
freed = []

def _ok(*values):
    return (CUresult.CUDA_SUCCESS, *values)

def cuInit(flags): return _ok()
def cuDeviceGet(ordinal): return _ok(ordinal)
def cuDevicePrimaryCtxRetain(device): return _ok(f"context{device}")
current = []
def cuCtxSetCurrent(ctx): current.append(ctx); return _ok()
allocated_in = []
def cuMemAlloc(n): allocated_in.append(current[-1]); return _ok(next(_next))
def cuDeviceGetCount(): return _ok(2)

class CUevent_flags(enum.IntEnum):
    CU_EVENT_DISABLE_TIMING = 2

events = []
def cuEventCreate(flags): return _ok("event")
def cuEventRecord(event, stream): events.append(("record", stream)); return _ok()
def cuStreamWaitEvent(stream, event, flags): events.append(("wait", stream)); return _ok()
def cuEventDestroy(event): return _ok()
def cuMemHostAlloc(n, flags): return _ok(next(_next))
def cuStreamCreate(flags):
    stream_flags.append(int(flags))
    return _ok(next(_next))
def cuMemFree(p): freed.append(p); return _ok()
def cuMemFreeHost(p): freed.append(p); return _ok()
def cuStreamDestroy(s): freed.append(s); return _ok()
'''


def run_on_fake_driver(script: str, tmp_path) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter whose ``cuda.bindings.driver`` is FAKE_DRIVER."""
    package = tmp_path / "cuda" / "bindings"
    package.mkdir(parents=True)
    (tmp_path / "cuda" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "driver.py").write_text(FAKE_DRIVER)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_gpu_objects_are_freed_when_collected_and_exit_is_silent(tmp_path):
    script = textwrap.dedent("""
        import gc
        from cuda.bindings import driver
        from edgeface.backends.cuda.runtime import DeviceBuffer, HostBuffer, Stream

        kept = [DeviceBuffer(64) for _ in range(100)] + [HostBuffer(64) for _ in range(100)] + [Stream()]
        dropped = DeviceBuffer(8)
        ptr = dropped.ptr
        del dropped
        gc.collect()
        assert driver.freed == [ptr], driver.freed
        assert driver.stream_flags == [driver.CUstream_flags.CU_STREAM_NON_BLOCKING]
        print("ok")
    """)
    result = run_on_fake_driver(script, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert result.stderr == ""  # module teardown frees the kept objects without a word


def test_buffers_follow_the_device_made_current_and_streams_wait_for_producers(tmp_path):
    script = textwrap.dedent("""
        from cuda.bindings import driver
        from edgeface.backends.cuda.runtime import DeviceBuffer, Stream, context

        context(1)
        DeviceBuffer(16)  # no ordinal: the device this thread made current, not device 0
        stream = Stream()
        stream.wait_for(7)
        assert driver.allocated_in == ["context1"], driver.allocated_in
        assert driver.events == [("record", 7), ("wait", stream.handle)], driver.events
        print("ok")
    """)
    result = run_on_fake_driver(script, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
