"""The GPU pipeline around a network: frame -> ef_preprocess -> network -> ef_decode -> ef_rank ->
ef_nms_mask -> ef_nms_reduce -> only the kept boxes copied back. Buffers are allocated once per input
size and owned here; everything runs on one stream. The network is any runner that reads the input
buffer and writes the ``loc`` / ``conf`` buffers on that stream (TensorRT, or torch on CUDA).

The same steps have NumPy references in :mod:`edgeface.backends.cuda.reference`; GPU tests compare
them (``pytest -m gpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...core.anchors import generate_anchors
from ...core.detections import Detections
from ...core.letterbox import Letterbox, fit
from ...errors import BackendError
from ...spec import ModelSpec
from .runtime import DeviceBuffer, Kernels, Stream, context

MAX_TOP_K = 4096  # ef_nms_reduce keeps its suppression bitset for at most this many candidates
BLOCK = 256


@dataclass
class Buffers:
    """Device memory for one (frame size, input size)."""

    frame: DeviceBuffer
    input: DeviceBuffer
    loc: DeviceBuffer
    conf: DeviceBuffer
    anchors: DeviceBuffer
    boxes: DeviceBuffer
    scores: DeviceBuffer
    anchor_index: DeviceBuffer
    count: DeviceBuffer
    sorted_boxes: DeviceBuffer
    sorted_scores: DeviceBuffer
    sorted_anchor: DeviceBuffer
    mask: DeviceBuffer
    keep: DeviceBuffer
    num_keep: DeviceBuffer
    num_anchors: int


NetworkRunner = Callable[[int, int, int, int, int, Stream], None]  # (input, loc, conf, width, height, stream)


class GpuPipeline:
    """Frame in, :class:`Detections` out, on the GPU. `network(input_ptr, loc_ptr, conf_ptr, w, h, stream)` runs
    the model on a ``(1, 3, h, w)`` float32 input."""

    def __init__(self, spec: ModelSpec, network: NetworkRunner, score_threshold: float, nms_iou: float,
                 max_detections: int, top_k: int = MAX_TOP_K):
        if not 0 < top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be in 1..{MAX_TOP_K} (the GPU NMS keeps a fixed bitset), got {top_k}")
        self.spec, self.network = spec, network
        self.score_threshold, self.nms_iou, self.max_detections, self.top_k = (
            score_threshold, nms_iou, max_detections, top_k)
        self.kernels = Kernels()
        self.stream = Stream()
        self._buffers: dict[tuple[int, int, int, int], Buffers] = {}
        self._count = np.zeros(1, np.int32)

    @staticmethod
    def _source(frame) -> tuple[int | None, tuple[int, int, int], int]:
        """``(device pointer or None for host frames, (h, w, channels), row pitch in bytes)``."""
        interface = getattr(frame, "__cuda_array_interface__", None)
        if interface is None:
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
                    or frame.shape[2] not in (3, 4):
                got = f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
                raise ValueError(f"expected an H x W x 3 (or x 4) uint8 frame, got {got}")
            frame = np.ascontiguousarray(frame)
            return None, frame.shape, frame.shape[1] * frame.shape[2]
        shape, strides = tuple(interface["shape"]), interface.get("strides")
        if interface["typestr"] not in ("|u1", "<u1") or len(shape) != 3 or shape[2] not in (3, 4):
            raise ValueError(f"expected an H x W x 3 (or x 4) uint8 device frame, got {interface['typestr']} {shape}")
        if strides is not None and tuple(strides[1:]) != (shape[2], 1):
            raise ValueError("device frames need contiguous pixels within a row (row pitch may differ)")
        return int(interface["data"][0]), shape, (strides[0] if strides else shape[1] * shape[2])

    def _buffers_for(self, frame_w: int, frame_h: int, width: int, height: int) -> Buffers:
        key = (frame_w, frame_h, width, height)
        if key not in self._buffers:
            anchors = generate_anchors(self.spec.anchors, width, height)
            n, k = len(anchors), self.top_k
            words = (k + 63) // 64
            buffers = Buffers(
                frame=DeviceBuffer(frame_w * frame_h * 4), input=DeviceBuffer(3 * width * height * 4),
                loc=DeviceBuffer(n * 16), conf=DeviceBuffer(n * 8), anchors=DeviceBuffer(n * 16),
                boxes=DeviceBuffer(n * 16), scores=DeviceBuffer(n * 4), anchor_index=DeviceBuffer(n * 4),
                count=DeviceBuffer(4), sorted_boxes=DeviceBuffer(k * 16), sorted_scores=DeviceBuffer(k * 4),
                sorted_anchor=DeviceBuffer(k * 4), mask=DeviceBuffer(k * words * 8), keep=DeviceBuffer(k * 4),
                num_keep=DeviceBuffer(4), num_anchors=n)
            buffers.anchors.copy_from_host(anchors, self.stream)
            self._buffers[key] = buffers
        return self._buffers[key]

    def detect(self, frame, input_size: tuple[int, int] | None = None) -> Detections:
        """Faces in one BGR (or BGRx) uint8 frame, letterboxed to `input_size` or run at its own size. The frame
        is a NumPy array (copied to the GPU) or any device array with ``__cuda_array_interface__`` (CuPy, torch,
        numba: read in place, pitched rows allowed)."""
        context()  # current on this thread too (camera apps call from their own threads)
        source, (frame_h, frame_w, channels), pitch = self._source(frame)
        width, height = input_size or (frame_w, frame_h)
        new_w, new_h, pad_x, pad_y = fit(frame_w, frame_h, (width, height))
        b = self._buffers_for(frame_w, frame_h, width, height)
        s, inp = self.stream, self.spec.input
        if source is None:
            b.frame.copy_from_host(frame, s)
            source = b.frame.ptr
        self.kernels.launch("ef_preprocess", ((width + 15) // 16, (height + 15) // 16, 1), (16, 16, 1), s,
                            source, frame_w, frame_h, pitch, channels, 0, b.input.ptr, 0, width, height,
                            new_w, new_h, pad_x, pad_y, int(inp.channel_order == "RGB"), *inp.mean,
                            *(1.0 / np.asarray(inp.std)))
        self.network(b.input.ptr, b.loc.ptr, b.conf.ptr, width, height, s)
        b.count.zero(s)
        n = b.num_anchors
        self.kernels.launch("ef_decode", ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), s, b.loc.ptr, b.conf.ptr,
                            b.anchors.ptr, n, self.score_threshold, *self.spec.variances, n, b.boxes.ptr,
                            b.scores.ptr, b.anchor_index.ptr, b.count.ptr)
        b.count.copy_to_host(self._count, s)
        s.synchronize()
        candidates = min(int(self._count[0]), n)
        if candidates == 0:
            return Detections.empty()
        k = min(candidates, self.top_k)
        self.kernels.launch("ef_rank", ((candidates + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), s, b.boxes.ptr,
                            b.scores.ptr, b.anchor_index.ptr, candidates, k, b.sorted_boxes.ptr, b.sorted_scores.ptr,
                            b.sorted_anchor.ptr)
        words = (k + 63) // 64
        self.kernels.launch("ef_nms_mask", ((k + 63) // 64, words, 1), (64, 1, 1), s, b.sorted_boxes.ptr, k,
                            self.nms_iou, b.mask.ptr)
        self.kernels.launch("ef_nms_reduce", (1, 1, 1), (1, 1, 1), s, b.mask.ptr, k, self.max_detections,
                            b.keep.ptr, b.num_keep.ptr)
        num_keep, boxes, scores = np.zeros(1, np.int32), np.empty((k, 4), np.float32), np.empty(k, np.float32)
        keep = np.empty(k, np.int32)
        b.num_keep.copy_to_host(num_keep, s)
        b.keep.copy_to_host(keep, s)
        b.sorted_boxes.copy_to_host(boxes, s)
        b.sorted_scores.copy_to_host(scores, s)
        s.synchronize()
        if num_keep[0] < 0:
            raise BackendError(f"GPU NMS got {k} candidates, more than its {MAX_TOP_K}-box bitset")
        kept = keep[: num_keep[0]]
        transform = Letterbox(new_w / frame_w, new_h / frame_h, float(pad_x), float(pad_y), frame_w, frame_h)
        return Detections(transform.to_source(boxes[kept]), scores[kept])
