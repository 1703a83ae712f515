"""TensorRT backend for edgeface engine files, on cuda-bindings (no pycuda): the engine deserialized once,
tensors bound by name, ``execute_async_v3`` on the pipeline's stream (TensorRT 8.5 and newer).

``run(batch)`` takes host arrays like every backend; :meth:`TensorRTBackend.gpu_pipeline` gives the
full GPU path (pre-processing, network, decode and NMS on the GPU, replayed as one CUDA graph per frame
size) that ``Detector`` uses for frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendError
from .cuda.runtime import DeviceBuffer, Stream, device_identity
from .engine_file import check_engine_fits, read_engine_header


class TensorRTBackend:
    def __init__(self, path: str, tensorrt: Any = None):
        header, offset = read_engine_header(path)
        if tensorrt is None:
            import tensorrt
        name, capability = device_identity()
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
        self.context = self.engine.create_execution_context()
        self.stream = Stream()
        self._buffers: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self.name = f"tensorrt:{name}"

    def _bind(self, input_ptr: int, loc_ptr: int, conf_ptr: int, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape("input", shape):
            lo, opt, hi = self.engine.get_tensor_profile_shape("input", 0)
            raise BackendError(f"input {shape} is outside the engine's profile (min {tuple(lo)}, max {tuple(hi)}); "
                               "rebuild with a wider --max-size / --max-batch")
        for tensor, ptr in (("input", input_ptr), ("loc", loc_ptr), ("conf", conf_ptr)):
            self.context.set_tensor_address(tensor, int(ptr))

    def _execute(self, stream_handle: Any) -> None:
        if not self.context.execute_async_v3(int(stream_handle)):
            raise BackendError("TensorRT execution failed (see the TensorRT log above)")

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Host batch in, host ``(loc, conf)`` out (copies both ways; frames should use :meth:`gpu_pipeline`)."""
        batch = np.ascontiguousarray(batch, np.float32)
        key = batch.shape
        if key not in self._buffers:
            self.context.set_input_shape("input", key)
            n = int(np.prod(self.context.get_tensor_shape("loc"))) // 4
            self._buffers[key] = tuple(DeviceBuffer(b) for b in (batch.nbytes, n * 16, n * 8))
        inp, loc, conf = self._buffers[key]
        self._bind(inp.ptr, loc.ptr, conf.ptr, key)
        inp.copy_from_host(batch, self.stream)
        self._execute(self.stream.handle)
        anchors = loc.nbytes // 16 // len(batch)
        out_loc = np.empty((len(batch), anchors, 4), np.float32)
        out_conf = np.empty((len(batch), anchors, 2), np.float32)
        loc.copy_to_host(out_loc, self.stream)
        conf.copy_to_host(out_conf, self.stream)
        self.stream.synchronize()
        return out_loc, out_conf

    def network_runner(self):
        """The engine as a :class:`~edgeface.backends.cuda.pipeline.GpuPipeline` network step."""
        def run(input_ptr, loc_ptr, conf_ptr, width, height, stream):
            self._bind(input_ptr, loc_ptr, conf_ptr, (1, 3, height, width))
            self._execute(stream.handle)

        run.capturable = True  # once it has run at a shape, execute_async_v3 may be captured in a CUDA graph
        return run

    def gpu_pipeline(self, score_threshold: float, nms_iou: float, max_detections: int):
        from .cuda.pipeline import GpuPipeline

        return GpuPipeline(self.spec, self.network_runner(), score_threshold, nms_iou, max_detections)
