"""The CUDA kernels without a GPU: compiled by NVRTC for every target architecture (resource use
checked), and run on the CPU by emulating their grids (the same source compiled as C++) against their
NumPy references on random and real inputs. On a GPU, tests marked `gpu` run them for real."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeface.backends.cuda import KERNEL_NAMES
from edgeface.backends.cuda.reference import (
    decode_reference,
    nms_bitmask_reference,
    preprocess_reference,
    rank_reference,
)
from edgeface.core.anchors import generate_anchors
from edgeface.core.letterbox import fit
from edgeface.core.preprocess import prepare_input
from edgeface.spec import ModelSpec

HERE = Path(__file__).resolve().parent
SPEC = ModelSpec(name="extd64")
ATOL = 5e-3  # pre-processing: the kernel computes sample positions in float32, the reference in float64


def ptr(array: np.ndarray, ctype=ctypes.c_void_p):
    return array.ctypes.data_as(ctype)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CPU emulation of the kernels needs a C++ compiler")
    lib = tmp_path_factory.mktemp("emulation") / "emulate.so"
    subprocess.run(["g++", "-O2", "-shared", "-fPIC", "-std=c++14", str(HERE / "cuda_emulation" / "emulate.cpp"),
                    "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize("major,arch", [(12, a) for a in ("sm_53", "sm_62", "sm_72", "sm_87")]
                         + [(13, a) for a in ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")])
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


def run_preprocess(emulator, image: np.ndarray, size, src_is_rgb=False, pitch_pad=0, half=False) -> np.ndarray:
    height, width, channels = image.shape
    pitched = np.zeros((height, width * channels + pitch_pad), np.uint8)
    pitched[:, : width * channels] = image.reshape(height, -1)
    out_w, out_h = size or (width, height)
    new_w, new_h, pad_x, pad_y = fit(width, height, (out_w, out_h))
    dst = np.full((3, out_h, out_w), np.nan, np.float16 if half else np.float32)
    mean, inv_std = SPEC.input.mean, [1 / s for s in SPEC.input.std]
    emulator.emulate_preprocess(
        (out_w + 15) // 16, (out_h + 15) // 16, 16, 16, ptr(pitched), width, height, pitched.shape[1], channels,
        int(src_is_rgb), ptr(dst), int(half), out_w, out_h, new_w, new_h, pad_x, pad_y, 1,
        *(ctypes.c_float(v) for v in (*mean, *inv_std)))
    return dst


@pytest.mark.parametrize("shape,size", [((48, 64), None), ((37, 53), (64, 64)), ((120, 90), (80, 60)),
                                        ((31, 200), (96, 96))])
def test_preprocess_kernel_matches_its_reference(emulator, rng, shape, size):
    bgr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = preprocess_reference(bgr, SPEC.input, size)
    np.testing.assert_allclose(run_preprocess(emulator, bgr, size, pitch_pad=13), expected, atol=ATOL)
    bgrx = np.concatenate([bgr, np.full((*shape, 1), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(run_preprocess(emulator, bgrx, size), expected, atol=ATOL)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    np.testing.assert_allclose(run_preprocess(emulator, rgb, size, src_is_rgb=True), expected, atol=ATOL)
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
    emulator.emulate_half_bits(ptr(values), ptr(out), len(values))
    np.testing.assert_array_equal(out, values.astype(np.float16).view(np.uint16))
    nan = np.array([np.nan], np.float32)
    emulator.emulate_half_bits(ptr(nan), ptr(out), 1)
    assert np.isnan(out[:1].view(np.float16)[0])


def test_preprocess_kernel_writes_fp16(emulator, rng):
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    half = run_preprocess(emulator, bgr, (64, 64), half=True)
    full = run_preprocess(emulator, bgr, (64, 64))
    np.testing.assert_array_equal(half, full.astype(np.float16))  # the same values, rounded once


def test_preprocess_kernel_on_a_real_photo(emulator, photo_paths):
    import cv2

    photo = cv2.imread(photo_paths[0])
    expected = preprocess_reference(photo, SPEC.input, (320, 320))
    np.testing.assert_allclose(run_preprocess(emulator, photo, (320, 320)), expected, atol=ATOL)


def run_decode(emulator, loc, conf, anchors, threshold, capacity):
    boxes = np.zeros((capacity, 4), np.float32)
    scores = np.zeros(capacity, np.float32)
    anchor = np.zeros(capacity, np.int32)
    count = np.zeros(1, np.int32)
    n = len(anchors)
    emulator.emulate_decode((n + 255) // 256, 256, ptr(loc), ptr(conf), ptr(anchors), n, ctypes.c_float(threshold),
                            ctypes.c_float(0.1), ctypes.c_float(0.2), capacity, ptr(boxes), ptr(scores), ptr(anchor),
                            ptr(count))
    k = min(int(count[0]), capacity)
    return boxes[:k], scores[:k], anchor[:k], int(count[0])


def test_decode_kernel_matches_its_reference(emulator, rng):
    anchors = np.ascontiguousarray(generate_anchors(SPEC.anchors, 160, 120))
    loc = rng.normal(0, 1, (len(anchors), 4)).astype(np.float32)
    conf = rng.normal(0, 2, (len(anchors), 2)).astype(np.float32)
    boxes, scores, anchor, count = run_decode(emulator, loc, conf, anchors, 0.8, len(anchors))
    ref_boxes, ref_scores, ref_anchor = decode_reference(loc, conf, anchors, 0.8, SPEC.variances)
    assert count == len(ref_anchor) > 0
    order = np.argsort(anchor)  # compaction order is arbitrary on a GPU
    np.testing.assert_array_equal(anchor[order], ref_anchor)
    np.testing.assert_allclose(boxes[order], ref_boxes, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scores[order], ref_scores, rtol=1e-5)
    assert run_decode(emulator, loc, conf, anchors, 0.8, 10)[3] == count  # overflow is counted, not written


def test_rank_and_bitmask_nms_match_their_references(emulator, rng):
    for n, k, iou, max_keep in ((300, 200, 0.3, 0), (700, 700, 0.5, 20), (1, 1, 0.3, 0), (130, 64, 0.1, 5)):
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 60, (n, 2))], axis=1).astype(np.float32)
        scores = np.round(rng.random(n), 2).astype(np.float32)  # many ties
        anchor = rng.permutation(10 * n)[:n].astype(np.int32)
        sorted_boxes = np.zeros((k, 4), np.float32)
        sorted_scores = np.zeros(k, np.float32)
        sorted_anchor = np.zeros(k, np.int32)
        emulator.emulate_rank((n + 127) // 128, 128, ptr(boxes), ptr(scores), ptr(anchor), n, k, ptr(sorted_boxes),
                              ptr(sorted_scores), ptr(sorted_anchor))
        order = rank_reference(scores, anchor, k)
        np.testing.assert_array_equal(sorted_anchor, anchor[order])
        np.testing.assert_array_equal(sorted_boxes, boxes[order])
        words = (k + 63) // 64
        mask = np.zeros((k, words), np.uint64)
        keep = np.zeros(k, np.int32)
        num_keep = np.zeros(1, np.int32)
        emulator.emulate_nms((k + 63) // 64, words, 64, ptr(sorted_boxes), k, ctypes.c_float(iou), max_keep,
                             ptr(mask), ptr(keep), ptr(num_keep))
        expected = nms_bitmask_reference(sorted_boxes, iou, max_keep)
        np.testing.assert_array_equal(keep[: num_keep[0]], expected)
