"""The CUDA kernels and the GPU pipeline on a real GPU, against the NumPy references and the CPU path.
Marked ``gpu``: they skip, saying why, on machines without a CUDA device (``pytest -m gpu`` runs them).
``python -m benchmarks gpu-suite`` runs these tests and the GPU benchmarks in one go."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.backends.cuda.reference import (
    decode_reference,
    nms_bitmask_reference,
    preprocess_reference,
    rank_reference,
)
from edgeface.core.anchors import generate_anchors
from edgeface.models.registry import default_spec

pytestmark = pytest.mark.gpu
SPEC = default_spec("extd64")


def _cuda():
    try:
        from edgeface.backends.cuda import runtime

        runtime.context()
        return runtime
    except Exception as exc:  # no cuda-bindings, no driver or no device
        pytest.skip(f"no CUDA GPU here ({type(exc).__name__}: {exc})")


@pytest.fixture(scope="module")
def cuda():
    runtime = _cuda()
    return runtime, runtime.Kernels(), runtime.Stream()


def _to_device(runtime, array):
    buf = runtime.DeviceBuffer(array.nbytes)
    buf.copy_from_host(np.ascontiguousarray(array))
    return buf


def _from_device(buf, shape, dtype, stream):
    out = np.empty(shape, dtype)
    buf.copy_to_host(out, stream)
    stream.synchronize()
    return out


@pytest.mark.parametrize("channels,rgb", [(3, False), (4, False), (3, True)])
@pytest.mark.parametrize("shape,size", [((97, 131), (160, 120)), ((480, 640), (640, 480)), ((300, 200), (64, 256))])
def test_preprocess_kernel_on_the_gpu(cuda, rng, shape, size, channels, rgb):
    from edgeface.core.letterbox import fit

    runtime, kernels, stream = cuda
    frame = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
    half = size[0] % 128 == 0  # some cells write FP16
    bgr = frame[..., 2::-1] if rgb else frame[..., :3]
    expected = preprocess_reference(np.ascontiguousarray(bgr), SPEC.input, size)
    src, dst = _to_device(runtime, frame), runtime.DeviceBuffer(3 * size[0] * size[1] * 4)
    new_w, new_h, pad_x, pad_y = fit(shape[1], shape[0], size)
    kernels.launch("ef_preprocess", ((size[0] + 15) // 16, (size[1] + 15) // 16, 1), (16, 16, 1), stream,
                   src.ptr, shape[1], shape[0], shape[1] * channels, channels, int(rgb), dst.ptr, int(half), size[0],
                   size[1],
                   new_w, new_h, pad_x, pad_y, 1, *SPEC.input.mean, 1.0, 1.0, 1.0)
    got = _from_device(dst, expected.shape, np.float16 if half else np.float32, stream).astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=5e-3, rtol=1e-3 if half else 0)


def test_decode_rank_and_nms_kernels_on_the_gpu(cuda, rng):
    runtime, kernels, stream = cuda
    anchors = generate_anchors(SPEC.anchors, 320, 240)
    n = len(anchors)
    loc = rng.normal(0, 0.5, (n, 4)).astype(np.float32)
    conf = rng.normal(0, 2, (n, 2)).astype(np.float32)
    bufs = [_to_device(runtime, a) for a in (loc, conf, anchors)]
    boxes, scores, index, count = (runtime.DeviceBuffer(n * s) for s in (16, 4, 4, 4))
    count.zero(stream)
    kernels.launch("ef_decode", ((n + 255) // 256, 1, 1), (256, 1, 1), stream, *(b.ptr for b in bufs), n, 0.8,
                   *SPEC.variances, n, boxes.ptr, scores.ptr, index.ptr, count.ptr)
    m = int(_from_device(count, 1, np.int32, stream)[0])
    ref_boxes, ref_scores, ref_index = decode_reference(loc, conf, anchors, 0.8, SPEC.variances)
    got_index = _from_device(index, n, np.int32, stream)[:m]
    order = np.argsort(got_index)
    assert m == len(ref_index) and (got_index[order] == ref_index).all()
    np.testing.assert_allclose(_from_device(boxes, (n, 4), np.float32, stream)[:m][order], ref_boxes, rtol=1e-4,
                               atol=1e-2)
    k = min(m, 4096)
    sorted_boxes, sorted_scores, sorted_index = (runtime.DeviceBuffer(k * s) for s in (16, 4, 4))
    kernels.launch("ef_rank", ((m + 255) // 256, 1, 1), (256, 1, 1), stream, boxes.ptr, scores.ptr, index.ptr, m, k,
                   sorted_boxes.ptr, sorted_scores.ptr, sorted_index.ptr)
    host_scores = _from_device(scores, n, np.float32, stream)[:m]
    expected_rank = rank_reference(host_scores, got_index, k)
    assert (_from_device(sorted_index, k, np.int32, stream) == got_index[expected_rank]).all()
    words = (k + 63) // 64
    mask, keep, num_keep = runtime.DeviceBuffer(k * words * 8), runtime.DeviceBuffer(k * 4), runtime.DeviceBuffer(4)
    kernels.launch("ef_nms_mask", (words, words, 1), (64, 1, 1), stream, sorted_boxes.ptr, k, 0.3, mask.ptr)
    kernels.launch("ef_nms_reduce", (1, 1, 1), (1, 1, 1), stream, mask.ptr, k, 750, keep.ptr, num_keep.ptr)
    kept = int(_from_device(num_keep, 1, np.int32, stream)[0])
    expected = nms_bitmask_reference(_from_device(sorted_boxes, (k, 4), np.float32, stream), 0.3, 750)
    assert (_from_device(keep, k, np.int32, stream)[:kept] == expected).all()


def test_gpu_pipeline_with_torch_matches_the_cpu_path(extd64_pt, photo_paths):
    _cuda()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    import edgeface
    from edgeface.backends.torch_backend import TorchBackend

    gpu = edgeface.Detector(TorchBackend(str(extd64_pt), device="cuda"))
    cpu = edgeface.Detector(extd64_pt)
    assert gpu.gpu_pipeline is not None
    for path in photo_paths[:6]:
        image = edgeface.read_image(path)
        a, b = cpu(image), gpu(image)
        assert len(a) == len(b), path
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
        np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)
        on_device = gpu(torch.from_numpy(image).cuda())  # a device frame, read in place
        np.testing.assert_allclose(on_device.boxes, b.boxes, atol=1e-4)
