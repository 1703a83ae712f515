"""PyTorch backend for edgeface checkpoints (``.pt``)."""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache
from typing import Optional

import numpy as np


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


class TorchBackend:
    """An edgeface checkpoint on PyTorch; ``device`` is any torch device string ("cpu", "cuda", "cuda:1").
    ``fp16`` runs the network under FP16 autocast (CUDA only); outputs stay float32."""

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None, fp16: bool = False):
        import torch

        from ..models.checkpoint import load_checkpoint

        if threads:
            torch.set_num_threads(threads)
        avoid_mmap_churn()
        self.torch = torch
        self.device = torch.device(device)
        if fp16 and self.device.type != "cuda":
            raise ValueError(f"fp16 needs a CUDA device (got {device!r}); on the CPU run float32")
        self.fp16 = fp16
        model, self.spec = load_checkpoint(path)
        self.model = model.to(self.device)
        self.name = f"torch:{self.device}" + (":fp16" if fp16 else "")

    @classmethod
    def from_model(cls, model, spec, device: str = "cpu") -> TorchBackend:
        """Wrap an in-memory model (e.g. during export or training) without a checkpoint file."""
        import torch

        avoid_mmap_churn()
        self = cls.__new__(cls)
        self.torch, self.device, self.spec, self.fp16 = torch, torch.device(device), spec, False
        self.model = model.eval().to(self.device)
        self.name = f"torch:{self.device}"
        return self

    def _autocast(self):
        return self.torch.autocast(self.device.type, dtype=self.torch.float16, enabled=self.fp16)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode(), self._autocast():
            loc, conf = self.model(self.torch.from_numpy(batch).to(self.device))
        return loc.float().cpu().numpy(), conf.float().cpu().numpy()

    def network_runner(self):
        """The model as a :class:`~edgeface.backends.cuda.pipeline.GpuPipeline` network step: it reads and writes
        the pipeline's device buffers in place (``__cuda_array_interface__``) on the pipeline's stream."""
        from .cuda.runtime import CudaArrayView

        torch = self.torch

        def run(input_ptr, loc_ptr, conf_ptr, width, height, stream):
            with torch.cuda.stream(torch.cuda.ExternalStream(int(stream.handle), device=self.device)), \
                    torch.no_grad(), self._autocast():
                x = torch.as_tensor(CudaArrayView(input_ptr, (1, 3, height, width)), device=self.device)
                loc, conf = self.model(x)
                torch.as_tensor(CudaArrayView(loc_ptr, loc.shape), device=self.device).copy_(loc)
                torch.as_tensor(CudaArrayView(conf_ptr, conf.shape), device=self.device).copy_(conf)

        run.output_anchors = self.output_anchors
        return run

    def output_anchors(self, width: int, height: int) -> int:
        """Boxes the model gives for one ``width`` x ``height`` input (one forward pass on zeros)."""
        torch = self.torch
        with torch.inference_mode(), self._autocast():
            loc, _ = self.model(torch.zeros((1, 3, height, width), device=self.device))
        return int(loc.shape[1])

    def gpu_pipeline(self, score_threshold: float, nms_iou: float, max_detections: int):
        """The whole pipeline on the GPU: edgeface's CUDA kernels around the torch model (a CUDA device only)."""
        if self.device.type != "cuda":
            raise ValueError("the GPU pipeline needs the torch backend on a CUDA device")
        from .cuda.pipeline import GpuPipeline

        return GpuPipeline(self.spec, self.network_runner(), score_threshold, nms_iou, max_detections,
                           ordinal=self.device.index or 0)  # buffers and stream on the model's device
