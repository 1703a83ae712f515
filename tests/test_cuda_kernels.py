"""The CUDA kernels: compiled by NVRTC for every target architecture (resource use checked), and run
against their NumPy references on random and real inputs, twice: on the CPU through the emulation of
their grids (the same source compiled as C++, ``tests/cuda_emulation/``), and on a real GPU (the
``gpu``-marked cases, which skip, saying why, where there is none)."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from edgeface.backends.cuda import KERNEL_NAMES
from edgeface.backends.cuda.nvrtc import CUDA12_ARCHS, CUDA13_ARCHS
from edgeface.backends.cuda.pipeline import RESULT_HEADER, enqueue_nms, nms_mask_nbytes
from edgeface.backends.cuda.reference import (
    decode_reference,
    nms_bitmask_reference,
    preprocess_reference,
    rank_reference,
)
from edgeface.core.anchors import generate_anchors
from edgeface.core.letterbox import fit
from edgeface.core.preprocess import network_size, prepare_input
from edgeface.spec import ModelSpec

SPEC = ModelSpec(name="extd64")
UNIT_ROUNDOFF = 2.0**-24  # float32


def preprocess_atol(src_w: int, src_h: int, inv_std: float = 1.0) -> float:
    """The float32 error bound of ef_preprocess against its float64 reference, from its arithmetic.

    A sample position ``(i + 0.5) * (src / new) - 0.5`` takes three roundings (the ratio, the product, the
    difference), each at most ``u * position``, so it is off by at most ``3u * src`` pixels per axis; an
    interpolated value moves by at most 255 per pixel of position, hence ``255 * 3u * (src_w + src_h)``. The two
    blends round about 12 times on values below 256, and the normalisation once more; all scaled by 1/std.
    """
    u = UNIT_ROUNDOFF
    return (255 * 3 * u * (src_w + src_h) + 13 * 255 * u) * inv_std


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def cuda(request):
    """``(runtime, kernels, stream)`` on the CPU emulation or on a real GPU."""
    runtime = request.getfixturevalue("emulated_runtime" if request.param == "emulated" else "gpu_runtime")
    return runtime, runtime.Kernels(), runtime.Stream()


def upload(runtime, array: np.ndarray, stream):
    buffer = runtime.DeviceBuffer(array.nbytes)
    buffer.copy_from_host(np.ascontiguousarray(array), stream)
    return buffer


def download(buffer, shape, dtype, stream) -> np.ndarray:
    out = np.empty(shape, dtype)
    buffer.copy_to_host(out, stream)
    stream.synchronize()
    return out


@pytest.mark.parametrize("major,arch", [(12, a) for a in CUDA12_ARCHS] + [(13, a) for a in CUDA13_ARCHS])
def test_kernels_compile_for_every_target(major, arch, monkeypatch, tmp_path):
    from edgeface.backends.cuda import nvrtc
    from edgeface.backends.cuda.cubin import kernel_resources
    from edgeface.errors import BackendError

    monkeypatch.setattr(nvrtc, "CACHE", tmp_path)
    try:
        nvrtc.load_nvrtc(major)
    except BackendError as exc:
        pytest.skip(str(exc))
    cubin = nvrtc.compile_cubin(arch, major=major)
    resources = kernel_resources(cubin)
    assert set(resources) == set(KERNEL_NAMES)
    for name, used in resources.items():
        assert 8 <= used.registers <= 64, (name, used)  # 1024-thread blocks fit every listed GPU
        assert used.shared_bytes == 0
    assert nvrtc.compile_cubin(arch, major=major) == cubin and list(tmp_path.glob("*.cubin"))  # cached


def run_preprocess(cuda, image: np.ndarray, size, src_is_rgb=False, pitch_pad=0, half=False) -> np.ndarray:
    runtime, kernels, stream = cuda
    height, width, channels = image.shape
    pitched = np.zeros((height, width * channels + pitch_pad), np.uint8)
    pitched[:, : width * channels] = image.reshape(height, -1)
    size = size or (width, height)
    out_w, out_h = network_size(SPEC.input, size)
    new_w, new_h, pad_x, pad_y = fit(width, height, size)
    src, dst = upload(runtime, pitched, stream), runtime.DeviceBuffer(3 * out_w * out_h * (2 if half else 4))
    kernels.launch("ef_preprocess", ((out_w + 15) // 16, (out_h + 15) // 16, 1), (16, 16, 1), stream,
                   src.ptr, width, height, pitched.shape[1], channels, int(src_is_rgb), dst.ptr, int(half), out_w,
                   out_h, new_w, new_h, pad_x, pad_y, 1, *SPEC.input.mean, *(1 / s for s in SPEC.input.std))
    return download(dst, (3, out_h, out_w), np.float16 if half else np.float32, stream)


@pytest.mark.parametrize("shape,size", [((48, 64), None), ((37, 53), (64, 64)), ((120, 90), (80, 60)),
                                        ((31, 200), (96, 96))])
def test_preprocess_kernel_matches_its_reference(cuda, rng, shape, size):
    bgr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = preprocess_reference(bgr, SPEC.input, size)
    atol = preprocess_atol(shape[1], shape[0], max(1 / s for s in SPEC.input.std))
    np.testing.assert_allclose(run_preprocess(cuda, bgr, size, pitch_pad=13), expected, atol=atol)
    bgrx = np.concatenate([bgr, np.full((*shape, 1), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(run_preprocess(cuda, bgrx, size), expected, atol=atol)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    np.testing.assert_allclose(run_preprocess(cuda, rgb, size, src_is_rgb=True), expected, atol=atol)
    # and the reference is the runtime's OpenCV path, up to OpenCV's fixed-point uint8 rounding
    runtime, _ = prepare_input(bgr, SPEC.input, size)
    assert np.abs(runtime - expected).max() <= (1.01 if size else 0)


def test_half_conversion_rounds_like_numpy(emulator, rng):
    """ef_half_bits against NumPy's float16 (round to nearest even) on normals, subnormals, ties, extremes."""
    special = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 1e-9,
                        np.inf, -np.inf, 1 + 2**-11, 1 + 3 * 2**-11, 2**-24 * 1.5], np.float32)
    values = np.concatenate([special, rng.normal(0, 100, 5000).astype(np.float32),
                             (rng.normal(0, 1e-5, 2000)).astype(np.float32)])
    out = np.zeros(len(values), np.uint16)
    emulator.emulate_half_bits(values.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
                               len(values))
    with np.errstate(over="ignore"):  # values past 65519 are meant to become infinity
        np.testing.assert_array_equal(out, values.astype(np.float16).view(np.uint16))
    nan = np.array([np.nan], np.float32)
    emulator.emulate_half_bits(nan.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), 1)
    assert np.isnan(out[:1].view(np.float16)[0])


def test_preprocess_kernel_writes_fp16(cuda, rng):
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    half = run_preprocess(cuda, bgr, (64, 64), half=True)
    full = run_preprocess(cuda, bgr, (64, 64))
    np.testing.assert_array_equal(half, full.astype(np.float16))  # the same values, rounded once


def test_preprocess_kernel_on_a_real_photo(cuda, photo_paths):
    import cv2

    photo = cv2.imread(photo_paths[0])
    expected = preprocess_reference(photo, SPEC.input, (320, 320))
    got = run_preprocess(cuda, photo, (320, 320))
    atol = preprocess_atol(photo.shape[1], photo.shape[0], max(1 / s for s in SPEC.input.std))
    np.testing.assert_allclose(got, expected, atol=atol)
    # the bound is loose for the average pixel: a systematic error (a half-pixel shift) would show here
    assert np.abs(got - expected).mean() < 1e-3


def run_decode(cuda, loc, conf, anchors, threshold, capacity, down=0.0):
    runtime, kernels, stream = cuda
    n = len(anchors)
    inputs = [upload(runtime, a, stream) for a in (loc, conf, anchors)]
    boxes, scores, anchor, count = (runtime.DeviceBuffer(capacity * s) for s in (16, 4, 4, 4))
    count.zero(stream)
    kernels.launch("ef_decode", ((n + 255) // 256, 1, 1), (256, 1, 1), stream, *(b.ptr for b in inputs), n,
                   threshold, *SPEC.variances, down, capacity, boxes.ptr, scores.ptr, anchor.ptr, count.ptr)
    total = int(download(count, 1, np.int32, stream)[0])
    k = min(total, capacity)
    return (download(boxes, (capacity, 4), np.float32, stream)[:k], download(scores, capacity, np.float32, stream)[:k],
            download(anchor, capacity, np.int32, stream)[:k], total)


@pytest.mark.parametrize("down", [0.0, 0.05, -0.3])
def test_decode_kernel_matches_its_reference(cuda, rng, down):
    anchors = np.ascontiguousarray(generate_anchors(SPEC.anchors, 160, 120))
    loc = rng.normal(0, 1, (len(anchors), 4)).astype(np.float32)
    loc[::7, 2:] = rng.uniform(20, 1e4, (len(loc[::7]), 2))  # log-sizes that overflow exp unless both clamp
    conf = rng.normal(0, 2, (len(anchors), 2)).astype(np.float32)
    boxes, scores, anchor, count = run_decode(cuda, loc, conf, anchors, 0.8, len(anchors), down)
    ref_boxes, ref_scores, ref_anchor = decode_reference(loc, conf, anchors, 0.8, SPEC.variances, down)
    assert count == len(ref_anchor) > 0 and np.isfinite(ref_boxes).all() and np.isfinite(boxes).all()
    order = np.argsort(anchor)  # compaction order is arbitrary on a GPU
    np.testing.assert_array_equal(anchor[order], ref_anchor)
    np.testing.assert_allclose(boxes[order], ref_boxes, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scores[order], ref_scores, rtol=1e-5)
    assert run_decode(cuda, loc, conf, anchors, 0.8, 10)[3] == count  # overflow is counted, not written


@pytest.mark.parametrize("n,capacity,k,iou,max_keep", [(300, 300, 200, 0.3, 300), (700, 700, 700, 0.5, 20),
                                                       (1, 1, 1, 0.3, 5), (130, 100, 64, 0.1, 5),
                                                       (0, 50, 50, 0.3, 10), (5000, 5000, 4096, 0.4, 750),
                                                       (6000, 6000, 5120, 0.5, 5120), (900, 900, 65, 0.05, 64)])
def test_rank_and_bitmask_nms_match_their_references(cuda, rng, n, capacity, k, iou, max_keep):
    """Counts come from device memory (as in the pipeline); `capacity` < n is a decode overflow: only the first
    `capacity` candidates exist."""
    runtime, kernels, stream = cuda
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], axis=1).astype(np.float32).reshape(n, 4)
    scores = np.round(rng.random(n), 2).astype(np.float32)  # many ties
    anchor = rng.permutation(10 * n)[:n].astype(np.int32)
    slots = max(capacity, 1)
    on_device = [upload(runtime, np.resize(a, (slots, *a.shape[1:])), stream) for a in (boxes, scores, anchor)]
    count = upload(runtime, np.array([n], np.int32), stream)
    sorted_boxes, sorted_scores, sorted_anchor = (runtime.DeviceBuffer(k * s) for s in (16, 4, 4))
    num_sorted = runtime.DeviceBuffer(4)  # one int32 count
    kernels.launch("ef_rank", ((slots + 127) // 128, 1, 1), (128, 1, 1), stream, *(b.ptr for b in on_device),
                   count.ptr, capacity, k, sorted_boxes.ptr, sorted_scores.ptr, sorted_anchor.ptr, num_sorted.ptr)
    m = min(n, capacity)
    order = rank_reference(scores[:m], anchor[:m], k)
    assert download(num_sorted, 1, np.int32, stream)[0] == len(order)
    np.testing.assert_array_equal(download(sorted_anchor, k, np.int32, stream)[: len(order)], anchor[order])
    got_boxes = download(sorted_boxes, (k, 4), np.float32, stream)[: len(order)]
    np.testing.assert_array_equal(got_boxes, boxes[order])
    mask, result = runtime.DeviceBuffer(nms_mask_nbytes(k)), runtime.DeviceBuffer(RESULT_HEADER + max_keep * 20)
    enqueue_nms(kernels, stream, k, iou, max_keep, sorted_boxes.ptr, sorted_scores.ptr, num_sorted.ptr, mask.ptr,
                result.ptr)
    raw = download(result, result.nbytes, np.uint8, stream)
    kept = raw[RESULT_HEADER:].view(np.float32).reshape(max_keep, 5)[: raw[:4].view(np.int32)[0]]
    expected = nms_bitmask_reference(got_boxes, iou, max_keep)
    np.testing.assert_array_equal(kept[:, :4], got_boxes[expected])
    np.testing.assert_array_equal(kept[:, 4], scores[order][expected])


def test_the_emulated_warp_exchanges_like_a_gpu_and_refuses_divergence(emulator):
    import ctypes

    out = (ctypes.c_int * 32)()
    emulator.emulate_error.restype = ctypes.c_char_p
    emulator.emulate_test_shuffle(7, -1, -1, out)
    assert emulator.emulate_error() == b"" and list(out) == [7 + lane for lane in range(32)]
    emulator.emulate_test_shuffle(39, -1, -1, out)  # the source lane is taken modulo 32
    assert list(out) == [7 + lane for lane in range(32)]
    emulator.emulate_test_shuffle(0, 5, -1, out)
    assert b"returned" in emulator.emulate_error()
    emulator.emulate_test_shuffle(0, -1, 9, out)
    assert b"different __shfl_sync" in emulator.emulate_error()


def test_the_nms_reduction_is_refused_in_other_than_one_warp(emulated_runtime):
    from cuda_emulation.runtime import EmulationError

    runtime, kernels, stream = emulated_runtime, emulated_runtime.Kernels(), emulated_runtime.Stream()
    num, result = upload(runtime, np.array([0], np.int32), stream), runtime.DeviceBuffer(16 + 20)
    buffers = [runtime.DeviceBuffer(64) for _ in range(3)]
    with pytest.raises(EmulationError, match="32 threads"):
        kernels.launch("ef_nms_reduce", (1, 1, 1), (64, 1, 1), stream, *(b.ptr for b in buffers), num.ptr, 1,
                       result.ptr, result.ptr + 16)


def test_the_nvrtc_follows_the_driver():
    from edgeface.backends.cuda.nvrtc import nvrtc_major_for
    from edgeface.errors import BackendError

    assert nvrtc_major_for("sm_89", 13000) == 13 and nvrtc_major_for("sm_110", 13020) == 13
    assert nvrtc_major_for("sm_89", 12080) == 12  # a 575 desktop driver cannot load CUDA 13 cubins
    assert nvrtc_major_for("sm_87", 12060) == 12  # JetPack 6 Orin
    with pytest.raises(BackendError, match="no sm_110 target on a CUDA 12 driver"):
        nvrtc_major_for("sm_110", 12080)
    with pytest.raises(BackendError, match="driver is 11.x"):
        nvrtc_major_for("sm_87", 11040)  # JetPack 5


def test_nvrtc_is_loaded_after_its_builtins_from_the_same_folder(tmp_path, monkeypatch):
    """NVRTC 13.0.88 has no RPATH: loaded by path it cannot find libnvrtc-builtins unless that is loaded first."""
    from edgeface.backends.cuda import nvrtc

    lib = tmp_path / "cu13" / "lib"
    lib.mkdir(parents=True)
    for name in ("libnvrtc.so.13", "libnvrtc-builtins.so.13.0"):
        (lib / name).write_bytes(b"")
    loaded = []

    def fake_cdll(path, mode=0):
        loaded.append((os.path.basename(path), mode))
        raise OSError("stand-in")

    monkeypatch.setattr(nvrtc.ctypes, "CDLL", fake_cdll)
    monkeypatch.setattr(nvrtc, "_candidates", lambda major: [str(lib / "libnvrtc.so.13")])
    nvrtc.load_nvrtc.cache_clear()
    try:
        with pytest.raises(nvrtc.BackendError, match="pip install nvidia-cuda-nvrtc"):
            nvrtc.load_nvrtc(13)
    finally:
        nvrtc.load_nvrtc.cache_clear()
    assert loaded == [("libnvrtc-builtins.so.13.0", ctypes.RTLD_GLOBAL), ("libnvrtc.so.13", 0)]


@pytest.mark.parametrize("n,capacity,k", [(0, 50, 10), (1, 1, 1), (300, 300, 1), (3000, 3000, 5000),
                                          (20000, 20000, 5000), (20000, 15000, 64), (6000, 6000, 6000 - 1)])
def test_top_k_selection_then_rank_matches_the_reference(cuda, rng, n, capacity, k):
    """Radix select (8 passes) + compaction + ef_rank over the K: exactly rank_reference's top K, ties included
    (scores rounded to 2 decimals: hundreds of candidates share each score), counts read from device memory."""
    from edgeface.backends.cuda import SELECT_COUNT, SELECT_STATE_INTS

    runtime, kernels, stream = cuda
    k = min(k, 5120)
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], axis=1).astype(np.float32).reshape(n, 4)
    scores = (np.round(rng.random(n), 2) + 0.01).astype(np.float32)
    anchor = rng.permutation(10 * max(n, 1))[:n].astype(np.int32)
    slots = max(capacity, 1)
    on_device = [upload(runtime, np.resize(a, (slots, *a.shape[1:])), stream) for a in (boxes, scores, anchor)]
    count = upload(runtime, np.array([n], np.int32), stream)
    state = runtime.DeviceBuffer(SELECT_STATE_INTS * 4)
    state.zero(stream)
    selected = [runtime.DeviceBuffer(k * s) for s in (16, 4, 4)]
    grid = ((slots + 255) // 256, 1, 1)
    for radix_pass in range(8):
        kernels.launch("ef_select_histogram", grid, (256, 1, 1), stream, on_device[1].ptr, on_device[2].ptr,
                       count.ptr, capacity, radix_pass, state.ptr)
        kernels.launch("ef_select_pick", (1, 1, 1), (1, 1, 1), stream, count.ptr, capacity, k, radix_pass, state.ptr)
    kernels.launch("ef_select_compact", grid, (256, 1, 1), stream, *(b.ptr for b in on_device), count.ptr, capacity,
                   state.ptr, *(b.ptr for b in selected))
    m = min(n, capacity)
    assert download(state, SELECT_STATE_INTS, np.int32, stream)[SELECT_COUNT] == min(m, k)
    sorted_boxes, sorted_scores, sorted_anchor = (runtime.DeviceBuffer(k * s) for s in (16, 4, 4))
    num_sorted = runtime.DeviceBuffer(4)
    kernels.launch("ef_rank", ((k + 127) // 128, 1, 1), (128, 1, 1), stream, *(b.ptr for b in selected),
                   state.ptr + 4 * SELECT_COUNT, k, k, sorted_boxes.ptr, sorted_scores.ptr, sorted_anchor.ptr,
                   num_sorted.ptr)
    order = rank_reference(scores[:m], anchor[:m], k)
    assert download(num_sorted, 1, np.int32, stream)[0] == len(order)
    np.testing.assert_array_equal(download(sorted_anchor, k, np.int32, stream)[: len(order)], anchor[order])
    np.testing.assert_array_equal(download(sorted_boxes, (k, 4), np.float32, stream)[: len(order)], boxes[order])
