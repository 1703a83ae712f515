"""TensorRT backend for edgeface engine files, on cuda-bindings (no pycuda): the engine deserialized once,
tensors bound by name, ``execute_async_v3`` on the pipeline's stream (TensorRT 8.5 and newer).

``run(batch)`` takes host arrays like every backend; :meth:`TensorRTBackend.gpu_pipeline` gives the
full GPU path (pre-processing, network, decode and NMS on the GPU, replayed as one CUDA graph per frame
size) that ``Detector`` uses for frames.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..errors import BackendError, ModelFileError
from ..spec import INPUT, LOC, TENSOR_NAMES
from .engine_file import check_engine_fits, read_engine_header

if TYPE_CHECKING:
    from .cuda.pipeline import GpuPipeline, NetworkRunner

RUN_SHAPES = 4  # input shapes whose buffers (and execution context) ``run`` keeps, least recently used evicted


class TensorRTBackend:
    """An edgeface engine file on GPU `ordinal`: the engine, its execution contexts, buffers and stream all live
    in that device's primary context, made current on the calling thread before each use. `runtime` is
    :mod:`edgeface.backends.cuda.runtime` (the default) or a stand-in with the same names (the tests' emulation).
    An execution context lives while ``run`` keeps its shape (the last :data:`RUN_SHAPES`) or a GPU pipeline has a
    plan at it, so images of ever new sizes do not pile up contexts and buffers."""

    def __init__(self, path: str, tensorrt: Any = None, ordinal: int = 0, runtime: Optional[ModuleType] = None):
        header, offset = read_engine_header(path)
        if tensorrt is None:
            import tensorrt as installed

            tensorrt = installed
        if runtime is None:
            from .cuda import runtime as cuda_runtime

            runtime = cuda_runtime
        self.rt, self.ordinal = runtime, ordinal
        runtime.context(ordinal)  # TensorRT deserializes into the current context
        name, capability = runtime.device_identity(ordinal)
        check_engine_fits(header, path, tensorrt.__version__, capability)
        self.trt, self.spec, self.header = tensorrt, header.spec, header
        with open(path, "rb") as f:
            f.seek(offset)
            plan = f.read()
        self.logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        self.runtime = tensorrt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError(f"TensorRT {tensorrt.__version__} could not deserialize {path} on {name}: rebuild "
                               "the engine on this machine with `edgeface build-engine`")
        tensors = sorted(self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
        if tensors != sorted(TENSOR_NAMES):
            raise ModelFileError(f"{path} holds an engine with tensors {tensors}, not the {list(TENSOR_NAMES)} of "
                                 "edgeface's exports; build it with `edgeface build-engine` from an edgeface ONNX")
        self.stream = runtime.Stream()
        self._contexts: dict[tuple[int, ...], Any] = {}
        self._buffers: OrderedDict[tuple[int, ...], tuple[Any, Any, Any]] = OrderedDict()  # run's, by shape
        self._piped: set[tuple[int, ...]] = set()  # shapes a GPU pipeline runs (until it releases them)
        self._lock = threading.RLock()  # an execution context runs one input at a time; run's buffers are shared
        self.name = f"tensorrt:{name}"

    def context_for(self, shape: tuple[int, ...]) -> Any:
        """The execution context of input `shape`, one per shape: a context whose input shape changes may need
        work (allocation, shape inference) that a CUDA graph captured for another shape would not replay."""
        if shape not in self._contexts:
            context = self.engine.create_execution_context()
            if not context.set_input_shape(INPUT, shape):
                lo, opt, hi = self.engine.get_tensor_profile_shape(INPUT, 0)
                raise BackendError(f"input {shape} is outside the engine's profile (min {tuple(lo)}, max "
                                   f"{tuple(hi)}); rebuild with a wider --max-size / --max-batch")
            self._contexts[shape] = context
        return self._contexts[shape]

    def release(self, width: int, height: int) -> None:
        """The GPU pipeline's last plan of one ``width`` x ``height`` input was evicted: free its execution
        context, unless ``run`` still keeps that shape."""
        shape = (1, 3, height, width)
        with self._lock:
            self._piped.discard(shape)
            if shape not in self._buffers:
                self._contexts.pop(shape, None)

    def output_anchors(self, width: int, height: int) -> int:
        """Boxes the engine writes for one ``width`` x ``height`` input."""
        return int(self.context_for((1, 3, height, width)).get_tensor_shape(LOC)[1])

    def _execute(self, shape: tuple[int, ...], input_ptr: int, loc_ptr: int, conf_ptr: int, stream_handle: Any) -> None:
        with self._lock:
            context = self.context_for(shape)
            for tensor, ptr in zip(TENSOR_NAMES, (input_ptr, loc_ptr, conf_ptr)):
                context.set_tensor_address(tensor, int(ptr))
            if not context.execute_async_v3(int(stream_handle)):
                raise BackendError("TensorRT execution failed (see the TensorRT log above)")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host batch in, host ``(loc, conf)`` out (copies both ways; frames should use :meth:`gpu_pipeline`)."""
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            return self._run(batch)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = batch.shape
        self.rt.context(self.ordinal)  # current on this thread too
        if key in self._buffers:
            self._buffers.move_to_end(key)
        else:
            while len(self._buffers) >= RUN_SHAPES:
                evicted, _ = self._buffers.popitem(last=False)  # its buffers go with it
                if evicted not in self._piped:
                    self._contexts.pop(evicted, None)
            n = int(np.prod(self.context_for(key).get_tensor_shape(LOC))) // 4
            self._buffers[key] = tuple(self.rt.DeviceBuffer(b) for b in (batch.nbytes, n * 16, n * 8))
        inp, loc, conf = self._buffers[key]
        inp.copy_from_host(batch, self.stream)
        self._execute(key, inp.ptr, loc.ptr, conf.ptr, self.stream.handle)
        anchors = loc.nbytes // 16 // len(batch)
        out_loc = np.empty((len(batch), anchors, 4), np.float32)
        out_conf = np.empty((len(batch), anchors, 2), np.float32)
        loc.copy_to_host(out_loc, self.stream)
        conf.copy_to_host(out_conf, self.stream)
        self.stream.synchronize()
        return out_loc, out_conf

    def network_runner(self) -> NetworkRunner:
        """The engine as a :class:`~edgeface.backends.cuda.pipeline.GpuPipeline` network step."""
        def run(input_ptr: int, loc_ptr: int, conf_ptr: int, width: int, height: int, stream: Any) -> None:
            shape = (1, 3, height, width)
            self._piped.add(shape)  # kept until the pipeline releases it
            self._execute(shape, input_ptr, loc_ptr, conf_ptr, stream.handle)

        runner: Any = run  # with what the pipeline asks of a network runner (pipeline.NetworkRunner)
        runner.capturable = True  # once its context has run at its shape, execute_async_v3 may be captured
        runner.output_anchors, runner.release = self.output_anchors, self.release
        return runner

    def gpu_pipeline(self, score_threshold: float, nms_iou: float, max_detections: int) -> GpuPipeline:
        from .cuda.pipeline import GpuPipeline

        return GpuPipeline(self.spec, self.network_runner(), score_threshold, nms_iou, max_detections,
                           runtime=self.rt, ordinal=self.ordinal)
