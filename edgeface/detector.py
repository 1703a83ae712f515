"""`Detector`: frame in, faces out, on whichever backend the model file calls for."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import cv2
import numpy as np

from .backends import Backend, open_backend
from .core.anchors import generate_anchors
from .core.detections import Detections
from .core.image import check_image, read_image
from .core.letterbox import Letterbox, fit_within
from .core.postprocess import decode_detections
from .core.preprocess import prepare_input
from .core.testtime import active_anchors, merge_passes, pass_size
from .core.tiling import plan_tiles
from .errors import ImageError, ModelFileError, OptionError
from .options import (
    DEFAULT_MAX_SIDE,
    check_device,
    check_input_size,
    check_max_detections,
    check_max_side,
    check_min_side,
    check_nms_iou,
    check_score_threshold,
    check_test_time,
    check_threads,
)
from .spec import TestTimeSpec
from .weights import SHIPPED_QUOTED, shipped_model

if TYPE_CHECKING:
    from .backends.cuda.pipeline import GpuPipeline

Frame = Union[np.ndarray, str, os.PathLike]  # a BGR uint8 H x W x 3 frame, or an image file's path


class Detector:
    """Face detector for an edgeface model file.

    Args:
        path: ``.onnx`` (ONNX Runtime, no torch needed), ``.engine`` (TensorRT) or ``.pt`` edgeface checkpoint
            (torch), an already open :class:`~edgeface.backends.Backend`, or a shipped model's short name:
            ``"default"`` (EXTD-64 trained by edgeface, the default when `path` is omitted) or ``"fast"``
            (EXTD-32, 2.5x fewer MACs); their model cards lie beside them in ``edgeface/weights/``.
        score_threshold: keep faces whose probability is above this, in [0, 1] (default: the spec's).
        nms_iou: suppress boxes overlapping a better one by more than this IoU, in [0, 1] (default: the spec's).
        max_detections: at most this many faces per frame, >= 1 (default: the spec's).
        input_size: ``(w, h)`` to letterbox every frame to; default: frames run at their own size, bounded by
            `max_side` (or at the fixed size of a static-shape export).
        max_side: when frames run at their own size, a frame whose longest side exceeds this many pixels is
            scaled down to it first (default 1920: memory grows about 0.9 GB per megapixel of network input on
            the CPU, so a 48 MP photo at its own size needs over 40 GB). Boxes still come back in the frame's own
            pixels. ``None`` (or 0) runs every frame at its full size.
        min_side: when frames run at their own size in one pass, a frame whose longest side is below this many
            pixels is upscaled to it first, so that its small faces reach the smallest anchors (default: the
            model's ``spec.input.min_side``: 640 for the shipped models, none for others; 0: never upscale).
            `max_side` wins over it.
        device: "cpu" (default), "cuda", "cuda:N", or for ONNX files "tensorrt". A GPU that was asked for but
            is not what runs is an error, never a silent CPU fallback. Engine files always run on a GPU: "cuda:N"
            picks which (otherwise GPU 0).
        threads: CPU threads for the backend (default: the backend's own choice).
        test_time: passes per frame (pyramid, flip, box voting); default: the model's own strategy from
            its spec (one pass for EXTD; HR's pyramid with 2x interpolation, ...). ``TestTimeSpec()``
            forces a single pass. A fixed ``input_size`` always runs one pass. Every pass's input is bounded by
            `max_side` too.
        tile: run a frame larger than `max_side` at its full resolution in overlapping tiles of at most
            `max_side` x `max_side`, plus once whole scaled down to `max_side` for the faces too large for the
            tiles: the small faces of a big photo are found at the memory of `max_side`, for a time that grows
            with the number of tiles (default False: scale such frames down). Needs `max_side`, frames at their
            own size (no `input_size`) and one pass per frame.
        gpu_pipeline: on a GPU backend (an engine, torch on CUDA), run the pre-processing, decode and NMS on the
            GPU around the network, with memory and CUDA graphs kept per frame size: the fast path for video and
            for photos of a few sizes (default True). False keeps them on the CPU, only the network on the GPU:
            for photos of many different sizes, where each size's GPU set-up is paid once and not repaid
            (validation runs so). The pipeline, when there is one, is the ``gpu_pipeline`` attribute.

    Out-of-range options raise :class:`~edgeface.errors.OptionError` (a ``ValueError``) saying the allowed range.
    ``detect(frame)`` takes an OpenCV BGR uint8 ``H x W x 3`` frame (on the GPU runtime also a device array
    with ``__cuda_array_interface__``: CuPy, torch) or an image file's path (read by :func:`read_image`, which
    raises :class:`~edgeface.errors.ImageError` for a missing or corrupt file) and returns :class:`Detections`
    in that frame's pixels.
    The pipeline is ``prepare`` -> ``infer`` -> ``decode``, each public so benchmarks and custom pipelines
    can time or replace one stage. ``score_threshold``, ``nms_iou`` and ``max_detections`` may be changed later
    (checked as here); a change reaches the CPU and the GPU path alike.
    """

    def __init__(self, path: str | os.PathLike | Backend | None = None, score_threshold: Optional[float] = None,
                 nms_iou: Optional[float] = None, max_detections: Optional[int] = None,
                 input_size: Optional[tuple[int, int]] = None, device: str = "cpu",
                 threads: Optional[int] = None, test_time: Optional[TestTimeSpec] = None,
                 max_side: Optional[int] = DEFAULT_MAX_SIDE, min_side: Optional[int] = None,
                 tile: bool = False, gpu_pipeline: bool = True):
        # every option is checked before the model is opened: a typo costs no model load
        score_threshold = None if score_threshold is None else check_score_threshold(score_threshold)
        nms_iou = None if nms_iou is None else check_nms_iou(nms_iou)
        max_detections = None if max_detections is None else check_max_detections(max_detections)
        input_size = None if input_size is None else check_input_size(input_size)
        self.max_side = check_max_side(max_side)
        min_side = check_min_side(min_side)  # None: the model's; 0: never upscale
        device = check_device(device)
        threads = check_threads(threads)
        test_time = check_test_time(test_time)
        if tile and (self.max_side is None or input_size is not None):
            raise OptionError("tile splits frames larger than max_side into tiles run at their own size: it needs "
                              "max_side and no input_size")
        opened = hasattr(path, "run")  # an open backend rather than a model file or a shipped model's name
        if not opened and path is not None and not isinstance(path, (str, os.PathLike)):
            raise ModelFileError(f"expected a model file's path, a shipped model's name ({SHIPPED_QUOTED}) or an open "
                                 f"backend, got {type(path).__name__}")
        file = cast("str | os.PathLike", path)
        shipped = None if opened else shipped_model(file)
        # what another process needs to open the same detector (pickling: multiprocessing's spawn, Ray, Dask, ...);
        # a model file by its absolute path, as a worker may run in another folder
        self._reopen = None if opened else dict(
            path=path if shipped is not None else os.path.abspath(file), input_size=input_size, device=device,
            threads=threads, test_time=test_time, max_side=self.max_side, min_side=min_side, tile=tile,
            gpu_pipeline=gpu_pipeline)
        if shipped is not None:
            if not shipped.exists():
                raise ModelFileError(f"this edgeface install does not ship the {path or 'default'!r} model ({shipped}"
                                     " is missing); pass a model file, e.g. Detector('extd64.onnx')")
            file = shipped
        self.backend: Backend = cast(Backend, path) if opened and hasattr(path, "spec") else open_backend(
            file, device=device, threads=threads, varying_sizes=input_size is None)
        self.spec = self.backend.spec
        fixed = self.spec.input.size
        if input_size is not None and fixed is not None and tuple(fixed) != input_size:
            raise OptionError(f"{path} was exported for input {fixed[0]}x{fixed[1]} only; "
                              "drop input_size, or re-export without --input-size for any size")
        self.input_size = input_size or ((fixed[0], fixed[1]) if fixed else None)
        self.min_side = self.spec.input.min_side if min_side is None else (min_side or None)
        self._decode = (self.spec.score_threshold if score_threshold is None else score_threshold,
                        self.spec.nms_iou if nms_iou is None else nms_iou,
                        self.spec.max_detections if max_detections is None else max_detections)
        if test_time is not None and not test_time.single_pass and self.input_size is not None:
            raise OptionError("test-time passes resize the frame, so they need a model that runs at any input "
                              "size: drop input_size (or use a dynamic-shape export)")
        self.test_time = TestTimeSpec() if self.input_size is not None else (test_time or self.spec.test_time)
        if tile and (self.input_size is not None or not self.test_time.single_pass):
            raise OptionError(f"tile runs each tile at its own size in one pass; {self.spec.name} "
                              + ("runs at a fixed input size" if self.input_size else "runs several test-time "
                                 "passes per frame (test_time=TestTimeSpec() makes it one)"))
        self.tile = bool(tile)
        self.gpu_pipeline = self._open_gpu_pipeline() if gpu_pipeline else None

    # The decode settings: one set for the CPU and GPU paths. Changing one after construction is checked like the
    # constructor's argument and reaches the GPU pipeline too (which recaptures its CUDA graphs).
    @property
    def score_threshold(self) -> float:
        """The face probability a box needs to be kept, in [0, 1]."""
        return self._decode[0]

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self._set_decode(check_score_threshold(value), self.nms_iou, self.max_detections)

    @property
    def nms_iou(self) -> float:
        """The overlap (IoU) above which a box is suppressed by a better-scoring one, in [0, 1]."""
        return self._decode[1]

    @nms_iou.setter
    def nms_iou(self, value: float) -> None:
        self._set_decode(self.score_threshold, check_nms_iou(value), self.max_detections)

    @property
    def max_detections(self) -> int:
        """The most faces returned per frame (the best-scoring ones)."""
        return self._decode[2]

    @max_detections.setter
    def max_detections(self, value: int) -> None:
        self._set_decode(self.score_threshold, self.nms_iou, check_max_detections(value))

    def _set_decode(self, score_threshold: float, nms_iou: float, max_detections: int) -> None:
        self._decode = (score_threshold, nms_iou, max_detections)
        if self.gpu_pipeline is not None:
            self.gpu_pipeline.set_decode(score_threshold, nms_iou, max_detections)

    def run_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` a ``width`` x ``height`` frame is sized to: the fixed `input_size`, else the frame's own size,
        upscaled to `min_side` when smaller and bounded by `max_side`. The network input is this padded at the right
        and bottom to the spec's size multiple (:func:`~edgeface.core.preprocess.network_size`)."""
        return self.input_size or fit_within(width, height, self.max_side, self.min_side)

    def _open_gpu_pipeline(self) -> Optional[GpuPipeline]:
        """The all-GPU path (CUDA pre-processing, network, decode and NMS) for TensorRT engines, and for torch on
        CUDA when cuda-bindings is installed; None for CPU backends."""
        import importlib.util

        name = getattr(self.backend, "name", "")
        wanted = name.startswith("tensorrt") or (name.startswith("torch:cuda")
                                                 and importlib.util.find_spec("cuda") is not None)
        if not wanted or not hasattr(self.backend, "gpu_pipeline"):
            return None
        return self.backend.gpu_pipeline(self.score_threshold, self.nms_iou, self.max_detections)

    def __reduce__(self) -> tuple:
        """Pickled as how to open it again (the model file and every option, decode settings as they are now): a
        worker process of multiprocessing, Ray or Dask opens its own copy of the model."""
        if self._reopen is None:
            raise TypeError("a Detector made from an open Backend cannot be pickled; make it from a model file")
        score_threshold, nms_iou, max_detections = self._decode
        return (_reopen, (self._reopen, score_threshold, nms_iou, max_detections))

    def __repr__(self) -> str:
        size = "native" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        return f"Detector({self.spec.name}, backend={self.backend.name}, input={size})"

    def __call__(self, image: Frame) -> Detections:
        return self.detect(image)

    def detect(self, image: Frame) -> Detections:
        """Faces in one BGR uint8 frame (or image file)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Union[Sequence[Frame], np.ndarray]) -> list[Detections]:
        """Faces in each frame (or image file) of `images`, a sequence of them or an N x H x W x 3 array; frames of
        one size (or all, when letterboxing) share a network run."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim != 4):
            raise ImageError("detect_batch takes a sequence of frames (a list, or an N x H x W x 3 array), got "
                             f"{_describe(images)}; for one frame call detect(frame)")
        on_gpu = self.gpu_pipeline is not None and self.test_time.single_pass  # device arrays stay on the GPU
        images = list(images)
        several = len(images) > 1
        images = [self._batch_item(image, i if several else None, on_gpu) for i, image in enumerate(images)]
        if self.tile:
            return [self._detect_tiled(image, on_gpu) for image in images]
        return self._detect_frames(images, on_gpu)

    def _detect_frames(self, images: list, on_gpu: bool) -> list[Detections]:
        """Faces in each checked frame, each run whole (bounded by `max_side`)."""
        pipeline = self.gpu_pipeline if on_gpu else None
        if pipeline is not None:
            return [pipeline.detect(frame, self._gpu_input_size(frame)) for frame in images]
        if not self.test_time.single_pass:
            return [self._detect_passes(image) for image in images]
        results: list[Optional[Detections]] = [None] * len(images)
        for indices in self._groups(images):
            batch, transforms = self.prepare([images[i] for i in indices])
            loc, conf = self.infer(batch)
            for i, dets in zip(indices, self.decode(loc, conf, transforms, batch.shape[3], batch.shape[2])):
                results[i] = dets
        return results  # type: ignore[return-value]

    @staticmethod
    def _batch_item(image: Frame, index: Optional[int], device_arrays: bool) -> Frame:
        """Item `index` of a batch (None: a batch of one) read (a path) and checked (not a device array, when
        `device_arrays`), before any is run; an error says which item it is."""
        try:
            if isinstance(image, (str, os.PathLike)):
                image = read_image(image)
            return image if device_arrays and hasattr(image, "__cuda_array_interface__") else check_image(image)
        except ImageError as exc:
            if index is None:
                raise
            raise ImageError(f"batch item {index}: {exc}") from None

    def _detect_tiled(self, frame: Any, on_gpu: bool) -> Detections:
        """A frame larger than `max_side` as tiles at full resolution plus the whole scaled down (see `tile`)."""
        device = hasattr(frame, "__cuda_array_interface__")
        height, width = (frame.__cuda_array_interface__["shape"] if device else frame.shape)[:2]
        assert self.max_side is not None  # tile needs it (checked when opened)
        plan = plan_tiles(width, height, self.max_side)
        if plan is not None and device:
            raise OptionError("tile cuts frames larger than max_side from host memory (NumPy arrays or image "
                              "files); this one is a device array")
        whole = self._detect_frames([frame], on_gpu)[0]
        if plan is None:
            return whole
        passes = [whole[plan.whole_frame_keeps(whole.boxes)]]
        for tile in plan.tiles:
            window = np.ascontiguousarray(frame[tile.y0 : tile.y1, tile.x0 : tile.x1])
            found = self._detect_frames([window], on_gpu)[0]
            boxes = found.boxes + np.array([tile.x0, tile.y0] * 2, np.float32)
            keep = plan.tile_keeps(boxes, tile)
            passes.append(Detections(boxes[keep], found.scores[keep]))
        return merge_passes(passes, self.nms_iou, self.max_detections, top_k=self.spec.pre_nms_top_k)

    def _detect_passes(self, image: np.ndarray) -> Detections:
        """The test-time strategy: one network run per pyramid scale (and mirror), merged."""
        height, width = image.shape[:2]
        # candidates per pass: the spec's pre-NMS budget shared by the passes (at least max_detections each), so
        # post-processing stays bounded when a model fires on every anchor of a 10-pass pyramid
        runs = len(self.test_time.pyramid) * (2 if self.test_time.flip else 1)
        per_pass = max(-(-self.spec.pre_nms_top_k // runs), self.max_detections)
        passes = []
        for p in self.test_time.pyramid:
            size = fit_within(*pass_size(width, height, p), self.max_side)
            scaled = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            for mirrored in (False, True) if self.test_time.flip else (False,):
                frame = np.ascontiguousarray(scaled[:, ::-1]) if mirrored else scaled
                batch, transforms = self.prepare([frame])
                loc, conf = self.infer(batch)
                dets = self.decode(loc, conf, transforms, batch.shape[3], batch.shape[2], p.anchors, per_pass)[0]
                boxes = dets.boxes
                if mirrored:
                    boxes[:, [0, 2]] = size[0] - boxes[:, [2, 0]]
                to_frame = np.array([width / size[0], height / size[1]] * 2, np.float32)
                passes.append(Detections(boxes * to_frame, dets.scores))
        return merge_passes(passes, self.nms_iou, self.max_detections, self.test_time.voting_iou,
                            self.spec.pre_nms_top_k)

    def _gpu_input_size(self, frame: Any) -> Optional[tuple[int, int]]:
        """The GPU pipeline's input size for a host or device frame (None: its own size)."""
        shape = frame.__cuda_array_interface__["shape"] if hasattr(frame, "__cuda_array_interface__") else frame.shape
        size = self.run_size(int(shape[1]), int(shape[0]))
        return None if size == (int(shape[1]), int(shape[0])) else size

    def _groups(self, images: list[np.ndarray]) -> list[list[int]]:
        """Indices of frames that can share one batch (same input size, at most the fixed batch)."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(self.run_size(image.shape[1], image.shape[0]), []).append(i)
        step = self.spec.input.batch or max(len(images), 1)
        return [group[k : k + step] for group in by_size.values() for k in range(0, len(group), step)]

    def prepare(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Frames of one input size -> ``(N, 3, H, W)`` float32 batch and each frame's letterbox."""
        pairs = [prepare_input(image, self.spec.input, self.run_size(image.shape[1], image.shape[0]))
                 for image in images]
        batch = np.stack([p[0] for p in pairs])
        fixed_batch = self.spec.input.batch
        if fixed_batch and len(batch) < fixed_batch:  # a static-batch export: pad with empty frames
            batch = np.concatenate([batch, np.zeros((fixed_batch - len(batch), *batch.shape[1:]), np.float32)])
        return batch, [p[1] for p in pairs]

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the network: raw ``loc (N, A, 4)`` and ``conf (N, A, 2)``."""
        return self.backend.run(batch)

    def decode(self, loc: np.ndarray, conf: np.ndarray, transforms: Sequence[Letterbox], width: int,
               height: int, anchor_subset: Optional[tuple[int, ...]] = None,
               top_k: Optional[int] = None) -> list[Detections]:
        """Raw outputs of a ``width`` x ``height`` batch -> one :class:`Detections` per frame, from the
        anchors whose index within their cell is in `anchor_subset` (default: all), at most `top_k` candidates
        entering NMS (default: the spec's ``pre_nms_top_k``)."""
        anchors = generate_anchors(self.spec.anchors, width, height)
        active = None if anchor_subset is None else active_anchors(self.spec.anchors, width, height, anchor_subset)
        return [decode_detections(loc[i], conf[i], anchors, self.spec, transform, self.score_threshold,
                                  self.nms_iou, self.max_detections, active, top_k)
                for i, transform in enumerate(transforms)]


def _reopen(options: dict, score_threshold: float, nms_iou: float, max_detections: int) -> Detector:
    """A pickled :class:`Detector` opened again (see ``Detector.__reduce__``)."""
    return Detector(**options, score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections)


def _describe(value: object) -> str:
    """`value` in a few words for an error: an array's shape, else its type."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {'x'.join(map(str, value.shape))}"
    return f"a {type(value).__name__}"
