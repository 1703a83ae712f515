"""PyTorch backend for edgeface checkpoints (``.pt``)."""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from ..errors import BackendError
from ..spec import ModelSpec

if TYPE_CHECKING:  # torch is imported when a backend opens, not with edgeface
    import torch
    from torch import nn

    from .cuda.pipeline import GpuPipeline, NetworkRunner


@lru_cache(maxsize=1)
def avoid_mmap_churn() -> bool:
    """Stop glibc from mmap/munmap-ing torch's multi-megabyte CPU feature maps on every layer.

    With glibc's dynamic mmap threshold each large activation is mapped, freed and re-faulted per
    layer, which made a 640x480 EXTD-64 forward 3x slower here (system time above user time). This
    is the run-time equivalent of ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=268435456
    MALLOC_TRIM_THRESHOLD_=4000000000``. Returns whether it applied (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, 32 << 20), (m_top_pad, 256 << 20), (m_trim_threshold, 2**31 - 1)))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that takes a convolution's output into that convolution's weights and bias
    (the BatchNorm becomes ``nn.Identity``): one kernel less per pair at inference, the same outputs up to float
    rounding. Modules reused several times (EXTD's shared blocks) are folded once. Returns the number of pairs
    folded."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from ..models.checkpoint import conv_batchnorm_pairs

    folded = 0
    modules = dict(model.named_modules())
    for conv, norm in conv_batchnorm_pairs(model):
        if not modules[norm].training:
            for name, replacement in ((conv, fuse_conv_bn_eval(modules[conv], modules[norm])), (norm, nn.Identity())):
                parent, _, attribute = name.rpartition(".")
                setattr(modules[parent], attribute, replacement)
            folded += 1
    return folded


def _check_cuda_device(torch: ModuleType, device: torch.device) -> None:
    """Raise BackendError unless torch can run on the CUDA `device` (rather than its AssertionError or
    RuntimeError from deep inside the first transfer)."""
    if not torch.cuda.is_available():
        why = "is built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU (driver and device?)"
        raise BackendError(f"device {str(device)!r} asked for, but torch {torch.__version__} {why}; pass "
                           "device='cpu', or install a CUDA build of torch on a machine with an NVIDIA GPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BackendError(f"device {str(device)!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                           f"GPU(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")


class TorchBackend:
    """An edgeface checkpoint on PyTorch; ``device`` is any torch device string ("cpu", "cuda", "cuda:1").
    ``fp16`` runs the network with half weights (CUDA only; FP16 autocast measured twice as slow on an H200);
    outputs stay float32. ``fold_bn`` folds BatchNorm into the convolutions before them (:func:`fold_batchnorm`)
    and ``channels_last`` runs the network on NHWC tensors (both on by default: measured faster on the CPU, see the
    README's CPU latency table, and on an H200 in the CUDA graph the GPU pipeline replays: EXTD-64 at 640x480 2.23
    against 2.57 ms in FP32, 1.72 against 1.94 ms in FP16; benchmarks/results/gpu.md)."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None, fp16: bool = False,
                 fold_bn: bool = True, channels_last: bool = True):
        import torch

        from ..models.checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        device_type = torch.device(device).type
        if fp16 and device_type != "cuda":
            raise ValueError(f"fp16 needs a CUDA device (got {device!r}); on the CPU run float32")
        if device_type == "cuda":
            _check_cuda_device(torch, torch.device(device))
        self._setup(*load_checkpoint(path), device, fp16, fold_bn, channels_last)

    @classmethod
    def from_model(cls, model: nn.Module, spec: ModelSpec, device: str = "cpu", fold_bn: bool = False,
                   channels_last: bool = False) -> TorchBackend:
        """Wrap an in-memory model (e.g. during export or training) without a checkpoint file. By default the model
        runs as it is and inputs go in as they come (a trainer's model is channels-last already); ``fold_bn`` and
        ``channels_last`` as for a checkpoint file (they change the model in place)."""
        self = cls.__new__(cls)
        self._setup(model, spec, device, False, fold_bn, channels_last)
        return self

    def _setup(self, model: nn.Module, spec: ModelSpec, device: str, fp16: bool, fold_bn: bool,
               channels_last: bool) -> None:
        import torch

        avoid_mmap_churn()
        self.torch, self.device, self.spec, self.fp16 = torch, torch.device(device), spec, fp16
        model = model.eval()
        if fold_bn:
            fold_batchnorm(model)
        self.channels_last = channels_last
        layout = torch.channels_last if channels_last else None  # (torch's type stubs lack Module.to's memory_format)
        self.model = model.to(self.device, memory_format=layout)  # type: ignore[call-overload]
        if fp16:
            self.model.half()
        self.name = f"torch:{self.device}" + (":fp16" if fp16 else "")

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on a float32 input tensor: float32 ``(loc, conf)``."""
        x = x.half() if self.fp16 else x
        loc, conf = self.model(x.contiguous(memory_format=self.torch.channels_last) if self.channels_last else x)
        return loc.float(), conf.float()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            loc, conf = self._forward(self.torch.from_numpy(batch).to(self.device))
        return loc.cpu().numpy(), conf.cpu().numpy()

    def network_runner(self, use_graphs: bool = True) -> NetworkRunner:
        """The model as a :class:`~edgeface.backends.cuda.pipeline.GpuPipeline` network step: it reads and writes
        the pipeline's device buffers in place (``__cuda_array_interface__``) on the pipeline's stream.

        With `use_graphs` the pipeline captures the whole frame of a size (its pre-processing kernels, this forward
        pass and its post-processing kernels) as one graph through ``capture``, torch's CUDA graph API (so torch's
        allocator knows of the capture), at the second frame of that size (the first warms cuDNN and the allocator
        up), and replays it from then on: one launch per frame. Should that capture fail, the pipeline captures
        around the network instead and the forward pass is captured on its own here, per input size: it then
        reads a static copy of the input and its outputs are copied out, a few microseconds each. ``release(w,
        h)``, called by the pipeline when its last plan of a size goes, frees that size's graph (a whole-frame graph
        goes with its plan). All are captured on the pipeline's stream into one memory pool, which frames of
        different sizes can share since they run one at a time: a replay rewrites its intermediates before reading
        them, and the static outputs of the network's own graphs stay referenced, so no other capture takes their
        memory. No capture empties torch's caches, so a new size costs neither the memory nor the re-allocation of
        the sizes before it."""
        from .cuda.runtime import CudaArrayView

        torch = self.torch
        graphs: dict[tuple[int, int], tuple[Any, Any, tuple[Any, Any]]] = {}
        warmed: set[tuple[int, int]] = set()
        pool = torch.cuda.graph_pool_handle() if use_graphs else None  # this runner's graphs' memory
        capturing = {"frame": False}  # True while the pipeline captures a whole frame through `capture`

        def run(input_ptr: int, loc_ptr: int, conf_ptr: int, width: int, height: int, stream: Any) -> None:
            size = (width, height)
            with torch.cuda.stream(torch.cuda.ExternalStream(int(stream.handle), device=self.device)), \
                    torch.no_grad():
                x = torch.as_tensor(CudaArrayView(input_ptr, (1, 3, height, width)), device=self.device)
                # the network's own graph, unless it is being captured within the whole frame's
                replay = use_graphs and size in warmed and not capturing["frame"]
                if replay and size not in graphs:
                    graphs[size] = self._capture(x, pool, torch.cuda.current_stream(self.device))
                    runner.captures += 1  # (the runner is this function)
                if replay:
                    graph, static_input, (loc, conf) = graphs[size]
                    static_input.copy_(x)
                    graph.replay()  # on the current stream: the pipeline's
                else:
                    loc, conf = self._forward(x)
                    warmed.add(size)
                torch.as_tensor(CudaArrayView(loc_ptr, loc.shape), device=self.device).copy_(loc)
                torch.as_tensor(CudaArrayView(conf_ptr, conf.shape), device=self.device).copy_(conf)

        def capture(stream: Any, enqueue: Callable[[], None]) -> _FrameGraph:
            """`enqueue`'s work on the pipeline's `stream` (its kernels and this forward pass) as one torch CUDA
            graph; BackendError when torch cannot capture it."""
            on_stream = torch.cuda.ExternalStream(int(stream.handle), device=self.device)
            capturing["frame"] = True
            try:
                graph, _ = self._captured(enqueue, on_stream, pool)
            except RuntimeError as exc:
                raise BackendError(f"torch could not capture the frame in a CUDA graph: {exc}") from exc
            finally:
                capturing["frame"] = False
            return _FrameGraph(torch, graph, on_stream)

        def release(width: int, height: int) -> None:
            graphs.pop((width, height), None)
            warmed.discard((width, height))

        runner: Any = run  # with what the pipeline asks of a network runner (pipeline.NetworkRunner)
        runner.capturable, runner.capture = use_graphs, capture
        # the pipeline checks each new plan's anchor count: one forward pass per input size, not per plan
        runner.output_anchors = lru_cache(maxsize=None)(self.output_anchors)
        runner.release, runner.graphs, runner.captures = release, graphs, 0
        return runner

    def _captured(self, work: Callable[[], Any], stream: Any = None, pool: Any = None) -> tuple[Any, Any]:
        """``(graph, work())``: `work`'s CUDA work captured by torch on `stream` (default: a side stream, after a
        device synchronisation), in memory `pool` (default: the graph's own). Unlike ``torch.cuda.graph`` it
        leaves torch's memory caches as they are (emptied at every capture, they hand their blocks back to the
        driver only for the next frames to allocate them again)."""
        torch = self.torch
        if stream is None:
            torch.cuda.synchronize(self.device)  # the side stream does not wait for the work queued before
            stream = torch.cuda.Stream(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream), torch.no_grad():
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                result = work()
            except BaseException:
                try:  # leave capture mode; the capture itself is lost
                    graph.capture_end()
                except RuntimeError:
                    pass
                raise
            graph.capture_end()
        return graph, result

    def _capture(self, x: torch.Tensor, pool: Any = None, stream: Any = None) -> tuple[Any, torch.Tensor, Any]:
        """``(graph, static input, static outputs)``: the forward pass on a copy of `x`, captured on its own (on
        `stream`, default: a side stream, as :meth:`_captured`)."""
        static_input = x.clone()
        graph, outputs = self._captured(lambda: self._forward(static_input), stream, pool)
        return graph, static_input, outputs

    def output_anchors(self, width: int, height: int) -> int:
        """Boxes the model gives for one ``width`` x ``height`` input (one forward pass on zeros)."""
        torch = self.torch
        with torch.inference_mode():
            loc, _ = self._forward(torch.zeros((1, 3, height, width), device=self.device))
        return int(loc.shape[1])

    def gpu_pipeline(self, score_threshold: float, nms_iou: float, max_detections: int,
                     use_graphs: bool = True) -> GpuPipeline:
        """The whole pipeline on the GPU: edgeface's CUDA kernels around the torch model (a CUDA device only);
        `use_graphs` False launches everything eagerly (no CUDA graphs, for the network neither)."""
        if self.device.type != "cuda":
            raise ValueError("the GPU pipeline needs the torch backend on a CUDA device")
        from .cuda.pipeline import GpuPipeline

        return GpuPipeline(self.spec, self.network_runner(use_graphs), score_threshold, nms_iou, max_detections,
                           use_graphs=use_graphs, ordinal=self.device.index or 0)  # on the model's device


class _FrameGraph:
    """A whole frame captured by torch (:meth:`TorchBackend.network_runner`'s ``capture``), replayed on the
    pipeline's stream like the pipeline's own graphs."""

    def __init__(self, torch: ModuleType, graph: Any, stream: Any):
        self.torch, self.graph, self.stream = torch, graph, stream

    def launch(self, stream: Any) -> None:  # noqa: ARG002 - always the stream it was captured on
        with self.torch.cuda.stream(self.stream):
            self.graph.replay()
