"""The GPU pipeline (edgeface/backends/cuda/pipeline.py) end to end on the CPU stand-in runtime: the same
launch sequence, buffer sizes, device-side counts, page-locked / mapped staging and CUDA-graph replay as on
a GPU, with the kernels emulated and the network run by ONNX Runtime. The same pipeline on a real GPU is
tested in test_gpu.py."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest
from cuda_emulation import runtime as emulation

import edgeface
from edgeface.backends.cuda.pipeline import GpuPipeline
from edgeface.backends.onnx_backend import OnnxBackend
from edgeface.core.anchors import generate_anchors
from edgeface.weights import DEFAULT_MODEL


@pytest.fixture(scope="module")
def backend():
    return OnnxBackend(str(DEFAULT_MODEL))


def host_network(backend):
    """The ONNX model as a pipeline network step over emulated device memory, enqueued on the stream."""
    def run(input_ptr, loc_ptr, conf_ptr, width, height, stream):
        def step():
            x = np.ctypeslib.as_array((ctypes.c_float * (3 * width * height)).from_address(input_ptr))
            loc, conf = (np.ascontiguousarray(a, np.float32) for a in backend.run(x.reshape(1, 3, height, width)))
            ctypes.memmove(loc_ptr, loc.ctypes.data, loc.nbytes)
            ctypes.memmove(conf_ptr, conf.ctypes.data, conf.nbytes)
        stream.enqueue(step)

    run.capturable = True
    return run


def pipeline(runtime, backend, use_graphs=True, capturable=True, **overrides) -> GpuPipeline:
    spec = backend.spec
    settings = dict(score_threshold=spec.score_threshold, nms_iou=spec.nms_iou, max_detections=spec.max_detections)
    settings.update(overrides)
    network = host_network(backend)
    network.capturable = capturable
    return GpuPipeline(spec, network, runtime=runtime, use_graphs=use_graphs, **settings)


def assert_same(a, b, box_atol=0.5, score_atol=2e-3):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_atol)
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol)


@pytest.mark.parametrize("integrated", [False, True], ids=["discrete", "integrated"])
def test_gpu_pipeline_matches_the_cpu_detector(emulated_runtime, backend, photo_paths, integrated):
    emulated_runtime.integrated = integrated  # True: staging and result buffers mapped, no copies (Jetson)
    gpu = pipeline(emulated_runtime, backend)
    # the pipeline runs what it is given: compare with the detector at the frame's own size (no min_side upscaling)
    cpu, sized = edgeface.Detector(DEFAULT_MODEL, min_side=0), edgeface.Detector(DEFAULT_MODEL, input_size=(320, 240))
    for path in photo_paths[:3]:
        image = edgeface.read_image(path)
        expected = cpu(image)
        assert len(expected) > 0
        assert_same(gpu.detect(image, (320, 240)), sized(image))
        assert_same(gpu.detect(image), expected)  # at the frame's own size
    plan = next(iter(gpu._plans.values()))
    assert (plan.frame is None) == integrated and (plan.result_device is None) == integrated


def test_boxes_moved_by_the_spec_move_alike_on_both_paths(emulated_runtime, backend, photo_paths):
    from dataclasses import replace

    moved = OnnxBackend(str(DEFAULT_MODEL))
    moved.spec = replace(moved.spec, box_down=0.2)  # a label convention lower on the face, as the fast model's
    gpu = pipeline(emulated_runtime, moved)
    image = edgeface.read_image(photo_paths[0])
    plain, cpu = (edgeface.Detector(b, min_side=0)(image) for b in (backend, moved))
    got = gpu.detect(image)
    assert len(got) > 0
    assert_same(got, cpu)
    height = plain.boxes[:, 3] - plain.boxes[:, 1]
    np.testing.assert_allclose(got.boxes[:, 1] - plain.boxes[:, 1], 0.2 * height, atol=0.5)


@pytest.mark.parametrize("capturable", [True, False], ids=["whole-frame", "around-the-network"])
def test_graph_replay_equals_launching_each_kernel(emulated_runtime, backend, photo_paths, capturable):
    """Captured once at the second frame of a size, the graphs re-read the staging buffer and re-zero the
    counters on every replay: frames of the same size give what the kernel-by-kernel launch gives. A network that
    may not be captured with the rest (torch, which replays its own graph) runs between two graphs."""
    graphs = pipeline(emulated_runtime, backend, capturable=capturable)
    eager = pipeline(emulated_runtime, backend, use_graphs=False)
    import cv2

    frames = [cv2.resize(edgeface.read_image(p), (400, 300)) for p in photo_paths[:3]]
    frames.append(np.zeros_like(frames[0]))  # no faces: the replay must not keep the previous frame's boxes
    for i, frame in enumerate(frames + frames[:1]):
        got, expected = graphs.detect(frame), eager.detect(frame)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_array_equal(got.scores, expected.scores)
        assert len(graphs.plan((300, 400, 3), (400, 300)).graphs) == (0 if i == 0 else 1 if capturable else 3)
    assert len(graphs.detect(frames[-1])) == 0
    assert eager.plan((300, 400, 3), (400, 300)).graphs == ()


def test_results_own_their_memory_while_the_plan_is_reused(emulated_runtime, backend, photo_paths):
    """A frame's Detections are copies: the next frame of the same size, which rewrites the plan's page-locked
    result buffer, leaves them as they were."""
    gpu = pipeline(emulated_runtime, backend)
    image = edgeface.read_image(photo_paths[0])
    first = gpu.detect(image)
    boxes, scores = first.boxes.copy(), first.scores.copy()
    mirrored = gpu.detect(np.ascontiguousarray(image[:, ::-1]))  # same plan, other boxes
    assert len(first) > 0 and not np.array_equal(mirrored.boxes[:1], boxes[:1])
    np.testing.assert_array_equal(first.boxes, boxes)
    np.testing.assert_array_equal(first.scores, scores)


def test_max_detections_and_top_k_bound_the_result(emulated_runtime, backend, photo_paths):
    image = edgeface.read_image(photo_paths[0])
    everything = pipeline(emulated_runtime, backend, score_threshold=0.01, nms_iou=0.9).detect(image)
    capped = pipeline(emulated_runtime, backend, score_threshold=0.01, nms_iou=0.9, max_detections=3).detect(image)
    assert len(everything) > 3 and len(capped) == 3
    np.testing.assert_array_equal(capped.boxes, everything.boxes[:3])
    top = pipeline(emulated_runtime, backend, score_threshold=0.01, nms_iou=0.9, top_k=10).detect(image)
    assert len(top) <= 10
    with pytest.raises(ValueError, match="top_k"):
        pipeline(emulated_runtime, backend, top_k=6000)
    assert pipeline(emulated_runtime, backend).top_k == backend.spec.pre_nms_top_k == 5000  # as the CPU path


def test_thousands_of_candidates_select_the_cpu_paths_top_k(emulated_runtime, backend):
    """A network firing at every anchor of a 640x480 frame (its 640x512 network input: 27,300 candidates, distinct
    scores): the GPU path keeps the spec's 5,000 best for NMS as the CPU path does, so both find the same faces."""
    from edgeface.core.anchors import generate_anchors as anchors_of
    from edgeface.core.preprocess import network_size

    n = len(anchors_of(backend.spec.anchors, *network_size(backend.spec.input, (640, 480))))
    rng = np.random.default_rng(0)
    loc = rng.normal(0, 0.1, (1, n, 4)).astype(np.float32)
    conf = np.zeros((1, n, 2), np.float32)
    conf[0, :, 1] = rng.permutation(n).astype(np.float32) / n * 6 - 1  # distinct scores from 0.27 to 0.99

    def fires(input_ptr, loc_ptr, conf_ptr, width, height, stream):
        stream.enqueue(lambda: (ctypes.memmove(loc_ptr, loc.ctypes.data, loc.nbytes),
                                ctypes.memmove(conf_ptr, conf.ctypes.data, conf.nbytes)))

    gpu = GpuPipeline(backend.spec, fires, 0.2, 0.3, 750, runtime=emulated_runtime)
    frame = np.zeros((480, 640, 3), np.uint8)
    cpu = edgeface.Detector(backend, score_threshold=0.2, nms_iou=0.3, max_detections=750)
    cpu.infer = lambda batch: (loc, conf)
    expected = cpu(frame)
    assert n > 5000 and len(expected) > 100
    assert_same(gpu.detect(frame), expected, box_atol=1e-3, score_atol=1e-6)


def test_frames_staged_in_place_and_device_frames(emulated_runtime, backend, photo_paths):
    """A frame decoded straight into `host_frame()` is not copied again; a device frame (here: emulated device
    memory, pitched rows) is read in place and gives the same faces."""
    gpu = pipeline(emulated_runtime, backend)
    image = edgeface.read_image(photo_paths[1])
    h, w = image.shape[:2]
    expected = gpu.detect(image)
    staged = gpu.host_frame(w, h)
    staged[:] = image
    assert_same(gpu.detect(staged), expected, 0, 0)
    sized = gpu.host_frame(w, h, input_size=(320, 240))
    sized[:] = image
    assert_same(gpu.detect(sized, (320, 240)), gpu.detect(image, (320, 240)), 0, 0)
    assert sized.ctypes.data == gpu.plan((h, w, 3), (320, 240)).staging.ptr != staged.ctypes.data
    pitched = np.zeros((h, w * 3 + 64), np.uint8)
    pitched[:, : w * 3] = image.reshape(h, -1)
    interface = {"data": (pitched.ctypes.data, False), "shape": (h, w, 3), "typestr": "|u1",
                 "strides": (pitched.shape[1], 3, 1), "version": 3}
    device_frame = type("DeviceFrame", (), {"__cuda_array_interface__": interface})()
    assert_same(gpu.detect(device_frame), expected, 0, 0)


def test_bad_frames_are_refused(emulated_runtime, backend):
    gpu = pipeline(emulated_runtime, backend)
    with pytest.raises(ValueError, match="uint8 frame"):
        gpu.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 frame"):
        gpu.detect(np.zeros((10, 10), np.uint8))
    interface = {"data": (0, False), "shape": (4, 4, 3), "typestr": "<f4", "version": 3}
    with pytest.raises(ValueError, match="device frame"):
        gpu.detect(type("DeviceFrame", (), {"__cuda_array_interface__": interface})())


def test_detector_and_gpu_benchmark_stages_on_the_stand_in(emulated_runtime, backend, photo_paths):
    """Detector hands single-pass frames to its GPU pipeline; the GPU benchmark's stage timing (run on GPUs only)
    drives the same pipeline methods."""
    from benchmarks.gpu import _crowd_post_row, _time_stages, _wider_val_photos

    gpu, host = edgeface.Detector(DEFAULT_MODEL), edgeface.Detector(DEFAULT_MODEL)
    gpu.gpu_pipeline = pipeline(emulated_runtime, backend)
    image = edgeface.read_image(photo_paths[0])
    assert_same(gpu(image), host(image))
    row = _time_stages(gpu, host, image, runs=1, sync=lambda: None)
    assert row["faces"] == len(host(image)) > 0
    assert all(row[k] > 0 for k in ("gpu_pipeline_ms", "replay_ms", "numpy_pre_post_ms", "pre_ms", "network_ms",
                                    "post_ms", "post_eager_ms"))
    gpu.score_threshold = 0.01
    crowd = _crowd_post_row(gpu, _wider_val_photos(), runs=1)  # the most crowded WIDER val photo, at 1920x1080
    assert crowd["candidates"] > 1000 and crowd["faces"] > 50 and crowd["post_ms"] > crowd["top_k_ms"] > 0


def test_gpu_benchmark_photo_set_counts_time_memory_and_captures_on_the_stand_in(emulated_runtime, backend,
                                                                                    photo_paths):
    """The photo-set measurement (run on GPUs only) on the stand-in: each path's time per photo, the device memory
    it holds (here the stand-in's live allocations), and its graph captures: a size's second photo captures, so
    photos A, A, B, B, A capture twice with graphs and never without them or on the NumPy path."""
    from benchmarks.gpu import _photo_set_rows

    def in_use() -> int:
        return sum(m.nbytes for m in list(emulated_runtime._live))

    numpy_path, eager, graphs = (edgeface.Detector(DEFAULT_MODEL) for _ in range(3))
    eager.gpu_pipeline = pipeline(emulated_runtime, backend, use_graphs=False)
    graphs.gpu_pipeline = pipeline(emulated_runtime, backend)
    photos = [photo_paths[i] for i in (0, 0, 1, 1, 0)]
    rows = _photo_set_rows({"numpy": numpy_path, "eager": eager, "graphs": graphs}, photos, in_use, lambda: None)
    assert [(r["path"], r["photos"], r["captures"]) for r in rows] == [("numpy", 5, 0), ("eager", 5, 0),
                                                                        ("graphs", 5, 2)]
    sizes = len({edgeface.read_image(p).shape[:2] for p in photos})
    assert all(r["sizes"] == sizes and r["median_ms"] > 0 and r["mean_ms"] > 0 for r in rows)
    assert rows[0]["peak_mb"] == 0 and rows[1]["peak_mb"] > 0 and rows[2]["last_mb"] > 0  # plans held on the GPU
    assert _photo_set_rows({"numpy": numpy_path}, [], in_use, lambda: None) == []  # no photos: no rows, no error


def test_a_network_with_its_own_capture_captures_the_whole_frame(emulated_runtime, backend, photo_paths):
    """A runner with ``capture`` (torch's graph API) captures the whole frame, pre- and post-processing kernels
    included, instead of the runtime's Graph: one graph per size, the same detections as kernel by kernel."""
    network, captured = host_network(backend), []

    def capture(stream, enqueue):
        captured.append(emulated_runtime.Graph(stream, enqueue))
        return captured[-1]

    network.capture = capture
    gpu = GpuPipeline(backend.spec, network, backend.spec.score_threshold, backend.spec.nms_iou,
                      backend.spec.max_detections, runtime=emulated_runtime)
    eager = pipeline(emulated_runtime, backend, use_graphs=False)
    image = edgeface.read_image(photo_paths[0])
    for _ in range(3):
        assert_same(gpu.detect(image), eager.detect(image), 0, 0)
    plan = next(iter(gpu._plans.values()))
    assert len(captured) == gpu.captures == 1 and plan.graphs == (captured[0],)
    whole = emulated_runtime.Graph(gpu.stream, lambda: gpu._enqueue(plan, None, image.shape[1] * 3))
    assert len(captured[0].operations) == len(whole.operations)  # copy, kernels, network, result copy


class FakeTorchCuda:
    """The slice of ``torch.cuda`` the torch runner's captures use, strict about what a capture may do: work runs
    on the stream being captured, capture ends on the stream it began on, nothing empties the caches."""

    def __init__(self):
        self.current, self.log, self.fail_with = "default", [], None  # fail_with: capture_end's error
        outer = self

        class CUDAGraph:
            def capture_begin(self, pool=None, capture_error_mode="global"):
                assert outer.current != "default", "capture on the legacy default stream"
                self.stream = outer.current
                outer.log.append(("begin", outer.current, pool, capture_error_mode))

            def capture_end(self):
                assert outer.current == self.stream, "capture ended on another stream"
                outer.log.append(("end", outer.current))
                if outer.fail_with:
                    raise RuntimeError(outer.fail_with)

            def replay(self):
                outer.log.append(("replay", outer.current))

        self.CUDAGraph = CUDAGraph

    def ExternalStream(self, handle, device=None):  # noqa: N802 - torch's name
        return f"stream {handle}"

    def stream(self, stream):
        import contextlib

        @contextlib.contextmanager
        def current():
            before, self.current = self.current, stream
            try:
                yield
            finally:
                self.current = before
        return current()

    def graph_pool_handle(self):
        return ("pool", 1)


def test_the_torch_runner_captures_the_whole_frame_on_the_pipelines_stream():
    """TorchBackend's ``capture`` (run on a GPU in test_gpu.py), against a strict stand-in of torch.cuda: captured
    on the pipeline's stream into the runner's pool, thread-local, replayed there; a failed capture leaves capture
    mode and is a BackendError (so the pipeline falls back to capturing around the network)."""
    import contextlib
    import types

    from edgeface.backends.torch_backend import TorchBackend
    from edgeface.errors import BackendError

    cuda = FakeTorchCuda()
    backend = TorchBackend.__new__(TorchBackend)
    backend.torch, backend.device = types.SimpleNamespace(cuda=cuda, no_grad=contextlib.nullcontext), "cuda:0"
    run = backend.network_runner()
    stream = types.SimpleNamespace(handle=7)
    graph = run.capture(stream, lambda: cuda.log.append(("work", cuda.current)))
    graph.launch(stream)
    assert cuda.log == [("begin", "stream 7", ("pool", 1), "thread_local"), ("work", "stream 7"),
                        ("end", "stream 7"), ("replay", "stream 7")]
    cuda.log.clear()
    cuda.fail_with = "operation not permitted when stream is capturing"
    with pytest.raises(BackendError, match="torch could not capture the frame"):
        run.capture(stream, lambda: None)
    cuda.fail_with = None

    def interrupted():
        raise RuntimeError("an operation that is not capturable")

    with pytest.raises(BackendError, match="not capturable"):
        run.capture(stream, interrupted)
    assert cuda.log[-1] == ("end", "stream 7") and cuda.current == "default"  # capture mode left, stream restored


def test_a_network_that_cannot_be_captured_runs_between_graphs(emulated_runtime, backend, photo_paths):
    from edgeface.errors import BackendError

    network = host_network(backend)

    def refuses_capture(*args):
        if args[-1].recording is not None:
            raise BackendError("operation not permitted when stream is capturing")
        network(*args)

    refuses_capture.capturable = True
    gpu = GpuPipeline(backend.spec, refuses_capture, backend.spec.score_threshold, backend.spec.nms_iou,
                      backend.spec.max_detections, runtime=emulated_runtime)
    image = edgeface.read_image(photo_paths[0])
    first = gpu.detect(image)
    with pytest.warns(UserWarning, match="capturing the pre- and post-processing around it"):
        second = gpu.detect(image)
    assert_same(second, first, 0, 0)
    assert gpu.use_graphs and not gpu.capture_network and len(gpu.detect(image)) == len(first)
    assert [g is None for g in next(iter(gpu._plans.values())).graphs] == [False, True, False]


def test_the_pipeline_lives_on_its_device_and_waits_for_a_frame_producer(emulated_runtime, backend, photo_paths):
    """Device ordinal: everything is created and run with device 1's context current. Device frames carrying a
    stream (CUDA array interface v3) are read after that stream's queued work, not before."""
    emulated_runtime.contexts.clear()
    gpu = pipeline(emulated_runtime, backend, ordinal=1)
    image = edgeface.read_image(photo_paths[0])
    frame = gpu.host_frame(image.shape[1], image.shape[0])
    frame[:] = image
    interface = {"data": (frame.ctypes.data, False), "shape": image.shape, "typestr": "|u1", "version": 3}
    for stream in (None, 0, 7):
        device_frame = type("DeviceFrame", (), {"__cuda_array_interface__": {**interface, "stream": stream}})()
        gpu.detect(device_frame)
    assert gpu.stream.waited_for == [7]  # None and 0: the producer asks for no synchronisation
    assert emulated_runtime.contexts and set(emulated_runtime.contexts) == {1}


def test_a_network_whose_outputs_disagree_with_the_spec_is_refused(emulated_runtime, backend):
    from edgeface.errors import ModelFileError

    network = host_network(backend)
    network.output_anchors = lambda width, height: 7  # not the spec's layout: it would write past loc / conf
    gpu = GpuPipeline(backend.spec, network, 0.5, 0.3, 10, runtime=emulated_runtime)
    with pytest.raises(ModelFileError, match="the model file and its spec disagree"):
        gpu.detect(np.zeros((48, 64, 3), np.uint8))


class FakeTensorRTEngine:
    """A TensorRT engine stand-in on emulated device memory: its network is ONNX Runtime, and a context whose input
    shape changed must run eagerly (and be synchronised) before any capture, as TensorRT requires."""

    def __init__(self, backend, tensors=("input", "loc", "conf")):
        self.backend, self.contexts, self.tensors = backend, [], tensors

    @property
    def num_io_tensors(self):
        return len(self.tensors)

    def get_tensor_name(self, index):
        return self.tensors[index]

    def create_execution_context(self):
        engine = self

        class Context:
            def __init__(self):
                self.shape, self.addresses, self.needs_eager_run = None, {}, False
                engine.contexts.append(self)

            def set_input_shape(self, name, shape):
                self.shape, self.needs_eager_run = tuple(shape), True
                return True

            def get_tensor_shape(self, name):
                n, _, h, w = self.shape
                return (n, len(generate_anchors(engine.backend.spec.anchors, w, h)), 4 if name == "loc" else 2)

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, stream_handle):
                stream = emulation.stream_of(stream_handle)
                if stream.recording is not None and self.needs_eager_run:
                    raise AssertionError("captured right after set_input_shape, without an eager run first")
                _, _, h, w = self.shape
                host_network(engine.backend)(self.addresses["input"], self.addresses["loc"], self.addresses["conf"],
                                             w, h, stream)
                if stream.recording is None:
                    self.needs_eager_run = False
                return True

        return Context()


class FakeTensorRT:
    """The few names of the ``tensorrt`` module that the backend uses; its engines are :class:`FakeTensorRTEngine`."""

    __version__ = "10.3.0"

    def __init__(self, backend):
        self.backend, self.deserialized_on = backend, []

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    def Runtime(self, logger):
        trt = self

        class Runtime:
            def deserialize_cuda_engine(self, plan):
                trt.deserialized_on.append(emulation.contexts[-1])  # the device current when TensorRT loads it
                known = {b"plan": ("input", "loc", "conf"), b"foreign plan": ("images", "output0")}
                return FakeTensorRTEngine(trt.backend, known[plan]) if plan in known else None

        return Runtime()


def test_an_engine_on_gpu_n_lives_and_runs_there(emulated_runtime, backend, photo_paths, tmp_path, monkeypatch):
    """``Detector("m.engine", device="cuda:1")``: the engine is deserialized, and its buffers, stream, graphs and
    every run use device 1's context; host batches (``run``) and frames give what the CPU detector gives, through
    the GPU pipeline or (``gpu_pipeline=False``) through the network alone."""
    import sys

    import edgeface.backends.cuda
    from edgeface.backends.engine_file import EngineHeader, write_engine_file

    trt = FakeTensorRT(backend)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(edgeface.backends.cuda, "runtime", emulated_runtime)  # the backend's default runtime
    path = tmp_path / "m.engine"
    write_engine_file(path, EngineHeader(backend.spec, trt.__version__, compute_capability="0.0"), b"plan")
    emulated_runtime.contexts.clear()
    gpu = edgeface.Detector(path, device="cuda:1", min_side=0)  # the frame's own size, as `cpu`
    assert trt.deserialized_on == [1] and gpu.backend.ordinal == gpu.gpu_pipeline.ordinal == 1
    cpu = edgeface.Detector(DEFAULT_MODEL, min_side=0)
    image = edgeface.read_image(photo_paths[0])
    assert_same(gpu(image), cpu(image))
    # gpu_pipeline=False (validation's choice, for images of many sizes): only the network on the GPU
    from edgeface.eval.validation import ValidationSet

    network_only = edgeface.Detector(path, device="cuda:1", min_side=0, gpu_pipeline=False)
    assert network_only.gpu_pipeline is None
    assert ValidationSet("v", None, []).detector(network_only.backend).gpu_pipeline is None
    assert_same(network_only(image), cpu(image))
    # threads sharing the detector (a camera app's workers) get what each frame gets alone: the pipeline's
    # buffers, graphs and stream, and the engine's contexts, serve one frame at a time
    from concurrent.futures import ThreadPoolExecutor

    photos = [edgeface.read_image(path) for path in photo_paths[:3]]
    frames = [np.ascontiguousarray(photo[:h, :w]) for w, h in ((320, 240), (256, 192)) for photo in photos] * 2
    alone = [gpu(frame).to_list() for frame in frames]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often, as on a GPU where kernels overlap host work
    try:
        with ThreadPoolExecutor(3) as pool:
            together = [found.to_list() for found in pool.map(gpu, frames)]
    finally:
        sys.setswitchinterval(interval)
    assert together == alone
    batch = np.random.default_rng(0).normal(size=(1, 3, 96, 128)).astype(np.float32)
    for ours, reference in zip(gpu.backend.run(batch), backend.run(batch)):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert set(emulated_runtime.contexts) == {1}
    path.write_bytes(path.read_bytes()[:-4] + b"junk")  # a plan this TensorRT cannot load: a clear error
    with pytest.raises(edgeface.BackendError, match="could not deserialize"):
        edgeface.Detector(path, device="cuda:1")
    write_engine_file(path, EngineHeader(backend.spec, trt.__version__), b"foreign plan")  # another tool's engine
    with pytest.raises(edgeface.ModelFileError, match=r"holds an engine with tensors \['images', 'output0'\], not"):
        edgeface.Detector(path, device="cuda:1")


def test_tensorrt_runs_each_frame_size_on_its_own_context_alternating_sizes(emulated_runtime, backend, photo_paths):
    """Sizes A, B, A, B, ...: one execution context per size, so each graph is captured on a context that already
    ran eagerly at its shape, and replays give what launching each kernel gives."""

    trt = engine_half(backend)
    graphs = GpuPipeline(backend.spec, trt.network_runner(), 0.5, 0.3, 50, runtime=emulated_runtime)
    eager = pipeline(emulated_runtime, backend, use_graphs=False)
    image = edgeface.read_image(photo_paths[0])
    sizes = [(320, 240), (256, 192)] * 3
    for size in sizes:
        assert_same(graphs.detect(image, size), eager.detect(image, size), 0, 0)
    assert len(trt.engine.contexts) == 2 and graphs.use_graphs
    assert all(len(plan.graphs) == 1 for plan in graphs._plans.values())
    # the plan cache bounds TensorRT's contexts too: an evicted size's context goes with its plan
    trt = engine_half(backend)
    bounded = GpuPipeline(backend.spec, trt.network_runner(), 0.5, 0.3, 50, runtime=emulated_runtime, max_plans=2)
    for size in [(128, 96), (256, 192), (384, 288), (512, 384)]:  # network inputs padded to multiples of 128
        bounded.detect(image, size)
    assert sorted(trt._contexts) == [(1, 3, 384, 384), (1, 3, 384, 512)]


def engine_half(backend, runtime=None):
    """TensorRTBackend's engine-facing half on a :class:`FakeTensorRTEngine`, without an engine file."""
    from collections import OrderedDict

    from edgeface.backends.tensorrt_backend import TensorRTBackend

    trt = TensorRTBackend.__new__(TensorRTBackend)
    trt.spec, trt.engine, trt._contexts, trt._lock = backend.spec, FakeTensorRTEngine(backend), {}, threading.RLock()
    trt._buffers, trt._piped, trt.rt, trt.ordinal = OrderedDict(), set(), runtime, 0
    if runtime is not None:
        trt.stream = runtime.Stream()
    return trt


def test_tensorrt_host_runs_keep_a_few_shapes_and_the_pipelines_contexts(emulated_runtime, backend):
    """``run`` over images of ever new sizes (validation, ``edgeface eval`` on an engine) keeps the buffers and
    context of its last RUN_SHAPES shapes only, and never frees a context a pipeline plan still runs on."""
    from edgeface.backends.tensorrt_backend import RUN_SHAPES

    trt = engine_half(backend, emulated_runtime)
    gpu = GpuPipeline(backend.spec, trt.network_runner(), 0.5, 0.3, 50, runtime=emulated_runtime)
    gpu.detect(np.zeros((96, 128, 3), np.uint8))  # a plan at (1, 3, 128, 128)
    piped = (1, 3, 128, 128)
    rng = np.random.default_rng(0)
    shapes = [(1, 3, 128, 128 * k) for k in range(1, 8)]
    for shape in shapes:
        batch = rng.normal(size=shape).astype(np.float32)
        for ours, reference in zip(trt.run(batch), backend.run(batch)):
            np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert list(trt._buffers) == shapes[-RUN_SHAPES:]
    assert set(trt._contexts) == {*shapes[-RUN_SHAPES:], piped}  # the pipeline's context stays
    trt.release(128, 128)  # the pipeline's plan goes: so does its context, run no longer keeping its shape
    assert set(trt._contexts) == set(shapes[-RUN_SHAPES:])


def test_plans_are_an_lru_cache_and_their_memory_goes_with_them(emulated_runtime, backend, photo_paths):
    import gc

    gpu = pipeline(emulated_runtime, backend, max_plans=2)
    image = edgeface.read_image(photo_paths[0])
    sizes = [(160, 120), (192, 144), (224, 168)]
    for size in sizes:
        gpu.detect(image, size)
    gc.collect()
    live = len(emulated_runtime._live)
    assert [key[3:] for key in gpu._plans] == [(192, 144), (224, 168)]
    gpu.detect(image, (192, 144))  # used again: now the most recent
    for size in [(256, 192), (288, 216), (320, 240), (352, 264)]:  # four more sizes: still two plans of memory
        gpu.detect(image, size)
    gc.collect()
    assert len(gpu._plans) == 2 and len(emulated_runtime._live) <= live
    with pytest.raises(ValueError, match="max_plans"):
        pipeline(emulated_runtime, backend, max_plans=0)


def test_decode_settings_changed_later_reach_the_gpu_path(emulated_runtime, backend, photo_paths):
    from edgeface.errors import OptionError

    image = edgeface.read_image(photo_paths[4])
    gpu, host = edgeface.Detector(DEFAULT_MODEL), edgeface.Detector(DEFAULT_MODEL)
    gpu.gpu_pipeline = pipeline(emulated_runtime, backend)
    for _ in range(2):
        assert_same(gpu(image), host(image))  # the second frame replays a captured graph
    assert next(iter(gpu.gpu_pipeline._plans.values())).graphs != ()
    for name, value in (("score_threshold", 0.9), ("nms_iou", 0.1), ("max_detections", 3)):
        setattr(gpu, name, value)
        setattr(host, name, value)
        for _ in range(2):
            assert_same(gpu(image), host(image))
    assert len(gpu(image)) == 3
    with pytest.raises(OptionError, match="score_threshold"):
        gpu.score_threshold = 1.5
    assert gpu.score_threshold == gpu.gpu_pipeline.score_threshold == 0.9


def test_the_gpu_path_bounds_big_frames_like_the_cpu_path(emulated_runtime, backend, photo_paths):
    """max_side on the GPU path: a 2400 x 1800 frame (host or device) runs at 1920 x 1440, boxes in its own
    pixels, as the CPU path; the GPU's bilinear resize is not OpenCV's fixed-point one, hence a box tolerance."""
    import cv2

    photo = edgeface.read_image(photo_paths[4])
    big = cv2.resize(photo, (2400, 1800), interpolation=cv2.INTER_LINEAR)
    gpu, host = edgeface.Detector(DEFAULT_MODEL), edgeface.Detector(DEFAULT_MODEL)
    gpu.gpu_pipeline = pipeline(emulated_runtime, backend)
    faces, expected = gpu(big), host(big)
    assert next(iter(gpu.gpu_pipeline._plans))[3:] == (1920, 1440)
    assert len(expected) > 0 and abs(len(faces) - len(expected)) <= 1
    from edgeface.core.boxes import box_iou

    assert (box_iou(expected.boxes, faces.boxes).max(axis=1) > 0.9).mean() >= 0.9
    interface = {"data": (big.ctypes.data, False), "shape": big.shape, "typestr": "|u1", "version": 3}
    device_frame = type("DeviceFrame", (), {"__cuda_array_interface__": interface})()
    assert_same(gpu(device_frame), faces, 0, 0)  # a device frame of that size takes the same bounded plan
