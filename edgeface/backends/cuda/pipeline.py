"""The GPU pipeline around a network: frame -> ef_preprocess -> network -> ef_decode -> top-K selection
(ef_select_*: radix select, linear in the candidates) -> ef_rank (sorts the K) -> ef_nms_mask -> ef_nms_reduce ->
only the kept boxes copied back, with one synchronisation per frame.

Memory is allocated once per (frame size, input size), for at most ``max_plans`` sizes (least recently used
evicted), and owned here: device buffers, a page-locked staging buffer for host frames and a page-locked result
buffer (both mapped into the GPU on integrated GPUs such as Jetson, so the kernels read the frame and write the
result in place, with no copies). Every kernel reads its element counts from device memory, so the sequence never
waits on the host; for host frames it is captured in CUDA graphs after the first frame of a size and replayed: the
whole frame as one graph when the network may be captured with it (TensorRT: that first frame is the eager run and
synchronisation it needs at a shape before capture; torch, through its own graph API), otherwise the pre- and post-
processing as two graphs with the network run between them (a network whose capture failed, which may replay a
graph of its own). Device frames (``__cuda_array_interface__``) are read in place, after the stream that wrote
them; their address changes from frame to frame, so their sequence is launched kernel by kernel. A network runner
may say how many boxes it writes at a size (``output_anchors(w, h)``): a plan whose anchor layout disagrees is
refused, since the network would write past its output buffers; and it may keep state per input size, freed by
``release(w, h)`` when the last plan of that size goes.

The network is any runner that reads the input buffer and writes the ``loc`` / ``conf`` buffers on the
pipeline's stream (TensorRT, or torch on CUDA). The kernels have NumPy references in
:mod:`edgeface.backends.cuda.reference`.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Optional

import numpy as np

from ...core.anchors import generate_anchors
from ...core.detections import Detections
from ...core.letterbox import Letterbox, fit
from ...core.postprocess import in_source
from ...core.preprocess import network_size
from ...errors import BackendError, ModelFileError, user_stacklevel
from ...spec import ModelSpec
from . import SELECT_COUNT, SELECT_STATE_INTS

MAX_TOP_K = 5120  # ef_nms_reduce keeps its suppression bitset for at most this many candidates
DEFAULT_MAX_PLANS = 4  # frame sizes whose memory is kept (a 1080p plan holds about 50 MB of GPU and pinned memory)
BLOCK = 256
RESULT_HEADER = 16  # bytes before the kept rows in the result buffer: the int32 count, padded

# (input, loc, conf, width, height, stream) -> None. A runner with ``capturable = True`` may be captured in
# the pipeline's CUDA graph (its work is fixed for a given input size once it has run once), by the runner's own
# ``capture(stream, enqueue)`` when it has one (an object with ``launch(stream)``, like ``runtime.Graph``).
NetworkRunner = Callable[[int, int, int, int, int, Any], None]


def nms_mask_nbytes(capacity: int) -> int:
    """Bytes of the suppression bitmask for ``capacity`` ranked boxes: one 64-bit word per 64 boxes per row."""
    return capacity * ((capacity + 63) // 64) * 8


def enqueue_nms(kernels: Any, stream: Any, capacity: int, iou: float, max_keep: int, sorted_boxes: int,
                sorted_scores: int, num_sorted: int, mask: int, result: int) -> None:
    """ef_nms_mask (every pair's IoU, one bit each) then ef_nms_reduce (the greedy pass, one warp) over the
    ``num_sorted`` boxes already in score order. The kept count goes to ``result`` and the rows (x1, y1, x2, y2,
    score) after its ``RESULT_HEADER`` bytes. Pointers are device addresses; ``mask`` holds
    ``nms_mask_nbytes(capacity)`` bytes."""
    words = (capacity + 63) // 64
    kernels.launch("ef_nms_mask", (words, words, 1), (64, 1, 1), stream, sorted_boxes, num_sorted, iou, mask)
    kernels.launch("ef_nms_reduce", (1, 1, 1), (32, 1, 1), stream, mask, sorted_boxes, sorted_scores, num_sorted,
                   max_keep, result, result + RESULT_HEADER)


@dataclass
class Plan:
    """Everything one (frame size, input size) needs, allocated once."""

    frame_shape: tuple[int, int, int]  # h, w, channels
    input_size: tuple[int, int]  # w, h the frame is fitted into
    network_size: tuple[int, int]  # w, h of the network input: input_size padded at the right and bottom
    staging: Any  # HostBuffer: host frames are copied (or decoded by the caller) into it
    frame: Any  # DeviceBuffer the staging buffer is copied to; None when the staging buffer is mapped
    input: Any
    loc: Any
    conf: Any
    anchors: Any
    boxes: Any
    scores: Any
    anchor_index: Any
    count: Any
    select: Any  # the top-K selection's state (histogram, prefix, count)
    selected_boxes: Any
    selected_scores: Any
    selected_anchor: Any
    sorted_boxes: Any
    sorted_scores: Any
    sorted_anchor: Any
    num_sorted: Any
    mask: Any
    result: Any  # HostBuffer: int32 count, then (max_keep, 5) float32 rows x1, y1, x2, y2, score
    result_device: Any  # DeviceBuffer the kernels write the result to; None when the result buffer is mapped
    num_anchors: int
    graphs: tuple = ()  # captured stages, launched in order; None stands for the network, run between them
    runs: int = 0
    # what each frame reads on the host, made once: views of the staging and result buffers, the letterbox
    frame_view: np.ndarray = field(init=False)
    count_view: np.ndarray = field(init=False)
    rows_view: np.ndarray = field(init=False)
    transform: Letterbox = field(init=False)

    def __post_init__(self) -> None:
        self.frame_view = self.staging.array(self.frame_shape, np.uint8)
        self.count_view = self.result.array((1,), np.int32)
        self.rows_view = self.result.array(((self.result.nbytes - RESULT_HEADER) // 20, 5), np.float32, RESULT_HEADER)
        frame_h, frame_w = self.frame_shape[:2]
        new_w, new_h, pad_x, pad_y = fit(frame_w, frame_h, self.input_size)
        self.transform = Letterbox(new_w / frame_w, new_h / frame_h, float(pad_x), float(pad_y), frame_w, frame_h)


class GpuPipeline:
    """Frame in, :class:`Detections` out, on the GPU. `network(input_ptr, loc_ptr, conf_ptr, w, h, stream)` runs
    the model on a ``(1, 3, h, w)`` float32 input.

    `runtime` is :mod:`edgeface.backends.cuda.runtime` (the default) or a stand-in with the same names (the
    tests' CPU emulation). `use_graphs` replays host-frame sequences as CUDA graphs.
    """

    def __init__(self, spec: ModelSpec, network: NetworkRunner, score_threshold: float, nms_iou: float,
                 max_detections: int, top_k: Optional[int] = None, runtime: Optional[ModuleType] = None,
                 use_graphs: bool = True, ordinal: int = 0, max_plans: int = DEFAULT_MAX_PLANS):
        top_k = min(spec.pre_nms_top_k, MAX_TOP_K) if top_k is None else top_k  # as the CPU path
        if not 0 < top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be in 1..{MAX_TOP_K} (the GPU NMS keeps a fixed bitset), got {top_k}")
        if max_plans < 1:
            raise ValueError(f"max_plans must be at least 1, got {max_plans}")
        if runtime is None:
            from . import runtime as cuda_runtime

            runtime = cuda_runtime
        self.rt, self.spec, self.network, self.ordinal = runtime, spec, network, ordinal
        self.top_k, self.max_plans = top_k, max_plans
        self.use_graphs = use_graphs
        self.capture_network = bool(getattr(network, "capturable", False))
        runtime.context(ordinal)  # everything below lives on this device
        self.mapped = runtime.is_integrated(ordinal)
        self.kernels = runtime.Kernels(ordinal)
        self.stream = runtime.Stream()
        self._plans: OrderedDict[tuple[int, ...], Plan] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # one frame at a time: the plans' buffers, graphs and the stream are shared
        self.captures = 0  # graph captures so far (the GPU benchmark counts them per photo set)
        self.set_decode(score_threshold, nms_iou, max_detections)

    def set_decode(self, score_threshold: float, nms_iou: float, max_detections: int) -> None:
        """Change the decode settings. Captured graphs hold the old values as kernel arguments, so they are
        dropped (recaptured at the next frames of their size); a new `max_detections` reallocates the plans."""
        max_keep = min(max_detections, self.top_k) if max_detections > 0 else self.top_k
        with self._lock:
            if max_keep != getattr(self, "max_keep", max_keep):
                for key in list(self._plans):  # the result buffers are sized for max_keep
                    self._drop_plan(key)
            self.score_threshold, self.nms_iou, self.max_keep = float(score_threshold), float(nms_iou), max_keep
            for plan in self._plans.values():
                plan.graphs, plan.runs = (), 0

    @staticmethod
    def _source(frame: Any) -> tuple[Optional[int], tuple[int, int, int], int]:
        """``(device pointer or None for host frames, (h, w, channels), row pitch in bytes)``; the producer stream of
        a device frame is handled by :meth:`detect`."""
        interface = getattr(frame, "__cuda_array_interface__", None)
        if interface is None:
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
                    or frame.shape[2] not in (3, 4):
                got = f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
                raise ValueError(f"expected an H x W x 3 (or x 4) uint8 frame, got {got}")
            return None, frame.shape, frame.shape[1] * frame.shape[2]
        shape, strides = tuple(interface["shape"]), interface.get("strides")
        if interface["typestr"] not in ("|u1", "<u1") or len(shape) != 3 or shape[2] not in (3, 4):
            raise ValueError(f"expected an H x W x 3 (or x 4) uint8 device frame, got {interface['typestr']} {shape}")
        if strides is not None and tuple(strides[1:]) != (shape[2], 1):
            raise ValueError("device frames need contiguous pixels within a row (row pitch may differ)")
        return int(interface["data"][0]), shape, (strides[0] if strides else shape[1] * shape[2])

    def plan(self, frame_shape: tuple[int, int, int], input_size: tuple[int, int]) -> Plan:
        """The memory for frames of `frame_shape` (h, w, channels) run at `input_size` (w, h), allocated once."""
        key = (*frame_shape, *input_size)
        if key in self._plans:
            self._plans.move_to_end(key)
        else:
            while len(self._plans) >= self.max_plans:  # least recently used first; its memory goes with it
                self._drop_plan(next(iter(self._plans)))
            rt, k = self.rt, self.top_k
            (frame_h, frame_w, channels), (input_w, input_h) = frame_shape, input_size
            width, height = network_size(self.spec.input, input_size)
            anchors = generate_anchors(self.spec.anchors, width, height)
            n = len(anchors)
            produced = getattr(self.network, "output_anchors", None)
            if produced is not None and produced(width, height) != n:  # or the network writes past loc / conf
                raise ModelFileError(f"the network gives {produced(width, height)} boxes at {width}x{height} but "
                                     f"its spec's anchor layout has {n}: the model file and its spec disagree")
            staging = rt.HostBuffer(int(np.prod(frame_shape)), mapped=self.mapped)
            result = rt.HostBuffer(RESULT_HEADER + self.max_keep * 20, mapped=self.mapped)
            plan = Plan(
                frame_shape=(frame_h, frame_w, channels), input_size=(input_w, input_h), network_size=(width, height),
                staging=staging,
                frame=None if self.mapped else rt.DeviceBuffer(staging.nbytes),
                input=rt.DeviceBuffer(3 * width * height * 4), loc=rt.DeviceBuffer(n * 16),
                conf=rt.DeviceBuffer(n * 8), anchors=rt.DeviceBuffer(n * 16), boxes=rt.DeviceBuffer(n * 16),
                scores=rt.DeviceBuffer(n * 4), anchor_index=rt.DeviceBuffer(n * 4), count=rt.DeviceBuffer(4),
                select=rt.DeviceBuffer(SELECT_STATE_INTS * 4), selected_boxes=rt.DeviceBuffer(k * 16),
                selected_scores=rt.DeviceBuffer(k * 4), selected_anchor=rt.DeviceBuffer(k * 4),
                sorted_boxes=rt.DeviceBuffer(k * 16), sorted_scores=rt.DeviceBuffer(k * 4),
                sorted_anchor=rt.DeviceBuffer(k * 4), num_sorted=rt.DeviceBuffer(4),
                mask=rt.DeviceBuffer(nms_mask_nbytes(k)), result=result,
                result_device=None if self.mapped else rt.DeviceBuffer(result.nbytes), num_anchors=n)
            plan.anchors.copy_from_host(anchors, self.stream)
            self._plans[key] = plan
        return self._plans[key]

    def _drop_plan(self, key: tuple[int, ...]) -> None:
        """Free a plan's memory, and the network's per-size state (``release(w, h)``: TensorRT's execution
        context) once no other plan runs at its input size."""
        plan = self._plans.pop(key)
        release = getattr(self.network, "release", None)
        if release is not None and all(p.network_size != plan.network_size for p in self._plans.values()):
            release(*plan.network_size)

    def host_frame(self, width: int, height: int, channels: int = 3,
                   input_size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """The page-locked buffer that host frames of this size, run at `input_size` (default: their own size), are
        staged in. A camera app that decodes straight into it and passes it to :meth:`detect` with the same
        `input_size` saves the one host-side copy per frame."""
        return self.plan((height, width, channels), input_size or (width, height)).frame_view

    def _enqueue(self, plan: Plan, source: Optional[int], pitch: int) -> None:
        """Put the whole sequence for one frame on the stream. Nothing in it reads device memory on the host,
        so it can be captured in a graph."""
        self.enqueue_preprocess(plan, source, pitch)
        self.enqueue_network(plan)
        self.enqueue_postprocess(plan)

    def enqueue_preprocess(self, plan: Plan, source: Optional[int], pitch: int) -> None:
        """Stage 1: the frame (`source`, a device frame, or None for the staging buffer) -> the network input."""
        (frame_h, frame_w, channels), (width, height) = plan.frame_shape, plan.network_size
        if source is None:
            if plan.frame is None:
                source = plan.staging.device_ptr
            else:
                plan.frame.copy_from_host(plan.frame_view, self.stream)
                source = plan.frame.ptr
        new_w, new_h, pad_x, pad_y = fit(frame_w, frame_h, plan.input_size)
        inp = self.spec.input
        self.kernels.launch("ef_preprocess", ((width + 15) // 16, (height + 15) // 16, 1), (16, 16, 1), self.stream,
                            source, frame_w, frame_h, pitch, channels, 0, plan.input.ptr, 0, width, height, new_w,
                            new_h, pad_x, pad_y, int(inp.channel_order == "RGB"), *inp.mean,
                            *(1.0 / np.asarray(inp.std)))

    def enqueue_network(self, plan: Plan) -> None:
        """Stage 2: the network, input buffer -> ``loc`` / ``conf`` buffers."""
        width, height = plan.network_size
        self.network(plan.input.ptr, plan.loc.ptr, plan.conf.ptr, width, height, self.stream)

    def enqueue_postprocess(self, plan: Plan) -> None:
        """Stage 3: decode, rank, NMS and the kept rows into the result buffer."""
        s, launch, n, k = self.stream, self.kernels.launch, plan.num_anchors, self.top_k
        plan.count.zero(s)
        launch("ef_decode", ((n + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), s, plan.loc.ptr, plan.conf.ptr,
               plan.anchors.ptr, n, self.score_threshold, *self.spec.variances, self.spec.box_down, n, plan.boxes.ptr,
               plan.scores.ptr, plan.anchor_index.ptr, plan.count.ptr)
        self.enqueue_top_k(plan)
        launch("ef_rank", ((k + BLOCK - 1) // BLOCK, 1, 1), (BLOCK, 1, 1), s, plan.selected_boxes.ptr,
               plan.selected_scores.ptr, plan.selected_anchor.ptr, plan.select.ptr + 4 * SELECT_COUNT, k, k,
               plan.sorted_boxes.ptr, plan.sorted_scores.ptr, plan.sorted_anchor.ptr, plan.num_sorted.ptr)
        result = plan.result.device_ptr if plan.result_device is None else plan.result_device.ptr
        enqueue_nms(self.kernels, s, k, self.nms_iou, self.max_keep, plan.sorted_boxes.ptr, plan.sorted_scores.ptr,
                    plan.num_sorted.ptr, plan.mask.ptr, result)
        if plan.result_device is not None:
            plan.result_device.copy_to_host(plan.result.array((plan.result.nbytes,), np.uint8), s)

    def enqueue_top_k(self, plan: Plan) -> None:
        """The `top_k` best candidates (score, then lower anchor) of ef_decode's, unordered, into the plan's
        ``selected_*`` buffers and their count into its selection state: 8 radix passes, each linear in the
        candidates, so thousands of candidates cost no more than a few kernels (ef_rank then sorts only K)."""
        s, launch, n, k = self.stream, self.kernels.launch, plan.num_anchors, self.top_k
        grid = ((n + BLOCK - 1) // BLOCK, 1, 1)
        plan.select.zero(s)
        for radix_pass in range(8):
            launch("ef_select_histogram", grid, (BLOCK, 1, 1), s, plan.scores.ptr, plan.anchor_index.ptr,
                   plan.count.ptr, n, radix_pass, plan.select.ptr)
            launch("ef_select_pick", (1, 1, 1), (1, 1, 1), s, plan.count.ptr, n, k, radix_pass, plan.select.ptr)
        launch("ef_select_compact", grid, (BLOCK, 1, 1), s, plan.boxes.ptr, plan.scores.ptr, plan.anchor_index.ptr,
               plan.count.ptr, n, plan.select.ptr, plan.selected_boxes.ptr, plan.selected_scores.ptr,
               plan.selected_anchor.ptr)

    def _capture(self, plan: Plan, pitch: int) -> None:
        graph = self.rt.Graph
        self.captures += 1
        if self.capture_network:
            try:  # through the network's own capture when it has one (torch's, whose allocator must know)
                whole_frame = getattr(self.network, "capture", graph)
                plan.graphs = (whole_frame(self.stream, lambda: self._enqueue(plan, None, pitch)),)
                return
            except BackendError as exc:  # a network that cannot be captured: capture around it from now on
                warnings.warn(f"CUDA graph capture failed with the network; capturing the pre- and post-processing "
                              f"around it from now on: {exc}", stacklevel=user_stacklevel())
                self.capture_network = False
        try:
            plan.graphs = (graph(self.stream, lambda: self.enqueue_preprocess(plan, None, pitch)), None,
                           graph(self.stream, lambda: self.enqueue_postprocess(plan)))
        except BackendError as exc:
            warnings.warn(f"CUDA graph capture failed, launching kernel by kernel from now on: {exc}",
                          stacklevel=user_stacklevel())
            self.use_graphs = False

    def replay(self, plan: Plan) -> None:
        """Launch the plan's captured graphs (the network between them when it is not in one) on the stream: a
        host frame's whole sequence, once its graphs are captured."""
        for graph in plan.graphs:
            if graph is None:
                self.enqueue_network(plan)
            else:
                graph.launch(self.stream)

    def detect(self, frame: Any, input_size: Optional[tuple[int, int]] = None) -> Detections:
        """Faces in one BGR (or BGRx) uint8 frame, letterboxed to `input_size` or run at its own size. The frame
        is a NumPy array (staged in page-locked memory; see :meth:`host_frame`) or any device array with
        ``__cuda_array_interface__`` (CuPy, torch, numba: read in place, pitched rows allowed). Threads may share
        the pipeline: their frames run one at a time."""
        with self._lock:
            return self._detect(frame, input_size)

    def _detect(self, frame: Any, input_size: Optional[tuple[int, int]]) -> Detections:
        self.rt.context(self.ordinal)  # current on this thread too (camera apps call from their own threads)
        source, frame_shape, pitch = self._source(frame)
        producer = getattr(frame, "__cuda_array_interface__", {}).get("stream")
        if source is not None and producer:  # v3: wait for the stream that wrote the frame (None/0: no need)
            self.stream.wait_for(producer)
        frame_h, frame_w = frame_shape[:2]
        plan = self.plan(frame_shape, input_size or (frame_w, frame_h))
        if source is None:
            staged = plan.frame_view
            if frame.__array_interface__["data"][0] != staged.__array_interface__["data"][0]:
                np.copyto(staged, frame)
            if not plan.graphs and self.use_graphs and plan.runs > 0:  # the network has run once at this size
                self._capture(plan, pitch)
        if source is None and plan.graphs:
            self.replay(plan)
        else:
            self._enqueue(plan, source, pitch)
        self.stream.synchronize()
        plan.runs += 1
        kept = plan.rows_view[:int(plan.count_view[0])]  # in the result buffer: in_source copies what it keeps
        return in_source(plan.transform, kept[:, :4], kept[:, 4])
