"""The whole GPU pipeline on a real GPU against the CPU path (the kernels' own GPU cases are in
test_cuda_kernels.py, the pipeline's CPU-emulated run in test_gpu_pipeline.py). Marked ``gpu``: they skip,
saying why, on machines without a CUDA device (``pytest -m gpu`` runs them). ``python -m benchmarks
gpu-suite`` runs every GPU test and the GPU benchmarks in one go."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def assert_same_faces(cpu, gpu, threshold: float, min_iou: float, score_atol: float) -> None:
    """Faces that clear `threshold` by more than `score_atol` on one side are found on the other (IoU >= `min_iou`,
    score within `score_atol`); faces nearer the threshold may be on one side only. Face counts are not compared:
    cuDNN's TF32 convolutions (Ampere and newer) move scores by about 1e-3, enough to cross a threshold."""
    from edgeface.core.boxes import box_iou

    for a, b in ((cpu, gpu), (gpu, cpu)):
        clear = a.scores > threshold + score_atol
        if not clear.any():
            continue
        assert len(b) > 0
        iou = box_iou(a.boxes[clear], b.boxes)
        assert (iou.max(1) >= min_iou).all(), iou.max(1)
        np.testing.assert_allclose(a.scores[clear], b.scores[iou.argmax(1)], atol=score_atol)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_gpu_pipeline_with_torch_matches_the_cpu_path(gpu_runtime, extd64_pt, photo_paths, fp16):
    """FP32 (TF32 convolutions on Ampere+): the same faces as the CPU path, boxes within a tolerance. FP16
    (half weights): every clear CPU face found again (IoU > 0.8, score within 0.02). The second frame of a size
    replays the whole frame as one CUDA graph captured by torch: the same detections as the first."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    import edgeface
    from edgeface.backends.torch_backend import TorchBackend

    gpu = edgeface.Detector(TorchBackend(str(extd64_pt), device="cuda", fp16=fp16))
    cpu = edgeface.Detector(extd64_pt)
    assert gpu.gpu_pipeline is not None
    for path in photo_paths[:6]:
        image = edgeface.read_image(path)
        a, b = cpu(image), gpu(image)
        replayed = gpu(image)
        np.testing.assert_allclose(replayed.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(replayed.scores, b.scores, atol=1e-4)
        if fp16:
            assert_same_faces(a, b, cpu.score_threshold, min_iou=0.8, score_atol=0.02)
            continue
        assert_same_faces(a, b, cpu.score_threshold, min_iou=0.95, score_atol=5e-3)
        on_device = gpu(torch.from_numpy(image).cuda())  # a device frame, read in place
        np.testing.assert_allclose(on_device.boxes, b.boxes, atol=1e-4)
    # host frames: from the second of a size the whole frame is one graph, captured through torch's graph API
    assert all(len(plan.graphs) == 1 for plan in gpu.gpu_pipeline._plans.values())
    if not fp16:  # device frames: the network alone replays its graph, captured per input size
        assert gpu.gpu_pipeline.network.graphs


def test_graph_replay_on_the_gpu(gpu_runtime, photo_paths):
    """The captured CUDA graph against launching each kernel, on the real driver. The network step copies fixed
    outputs (ONNX Runtime's, for the first photo, from page-locked memory: a capturable copy), so every frame
    must give the CPU post-processing of those outputs, replay after replay."""
    import cv2
    from cuda.bindings import driver

    import edgeface
    from edgeface.backends.cuda.pipeline import GpuPipeline
    from edgeface.weights import DEFAULT_MODEL

    cpu = edgeface.Detector(DEFAULT_MODEL, input_size=(320, 240))
    frames = [cv2.resize(edgeface.read_image(p), (400, 300)) for p in photo_paths[:3]]
    batch, transforms = cpu.prepare(frames[:1])
    loc, conf = (np.ascontiguousarray(a[0], np.float32) for a in cpu.infer(batch))
    outputs = [gpu_runtime.HostBuffer(a.nbytes) for a in (loc, conf)]
    for buffer, array in zip(outputs, (loc, conf)):
        buffer.array(array.shape, np.float32)[:] = array

    def fixed_network(input_ptr, loc_ptr, conf_ptr, width, height, stream):
        for ptr, buffer in zip((loc_ptr, conf_ptr), outputs):
            gpu_runtime.check(driver.cuMemcpyHtoDAsync(ptr, buffer.ptr, buffer.nbytes, stream.handle))

    fixed_network.capturable = True
    spec = cpu.spec
    graphs, eager = (GpuPipeline(spec, fixed_network, cpu.score_threshold, cpu.nms_iou, cpu.max_detections,
                                 use_graphs=use) for use in (True, False))
    expected = cpu.decode(loc[None], conf[None], transforms, batch.shape[3], batch.shape[2])[0]
    assert len(expected) > 0
    for i, frame in enumerate(frames * 2):
        got = graphs.detect(frame, (320, 240))
        np.testing.assert_array_equal(got.boxes, eager.detect(frame, (320, 240)).boxes)
        np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)
        assert (graphs.plan((300, 400, 3), (320, 240)).graphs != ()) == (i > 0)
