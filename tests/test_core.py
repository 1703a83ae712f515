"""Torch-free detection parts against brute-force references on random inputs."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_boxes
from edgeface.core.anchors import feature_sizes, generate_anchors
from edgeface.core.boxes import box_iou, cxcywh_to_xyxy, decode_boxes, encode_boxes, xyxy_to_cxcywh
from edgeface.core.detections import Detections
from edgeface.core.letterbox import Letterbox, letterbox
from edgeface.core.nms import nms, nms_reference
from edgeface.core.postprocess import decode_detections, face_scores, in_source
from edgeface.core.preprocess import pad_colour_bgr, prepare_input
from edgeface.core.tiling import WHOLE_FRAME_FACE, plan_tiles
from edgeface.errors import ImageError, OptionError
from edgeface.spec import AnchorSpec, ModelSpec

SPEC = ModelSpec(name="extd64")


def iou_scalar(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_nms_scalar(boxes, scores, threshold) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    keep: list[int] = []
    for i in order:
        if all(iou_scalar(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("width,height", [(640, 480), (97, 131), (1, 1), (1280, 721)])
def test_anchors_match_brute_force(width, height):
    spec = AnchorSpec(sizes=((16, 24), (32,), (64,), (128,), (256,), (512,)), ratios=(1.0, 1.25))
    expected = []
    for level, stride in enumerate(spec.strides):
        rows, cols = height, width
        for _ in range(int(math.log2(stride))):
            rows, cols = math.ceil(rows / 2), math.ceil(cols / 2)
        for r in range(rows):
            for c in range(cols):
                for size in spec.sizes[level]:
                    for ratio in spec.ratios:
                        expected.append(((c + 0.5) * stride, (r + 0.5) * stride,
                                         size / math.sqrt(ratio), size * math.sqrt(ratio)))
    anchors = generate_anchors(spec, width, height)
    np.testing.assert_allclose(anchors, np.array(expected, np.float32), rtol=1e-6)
    assert generate_anchors(spec, width, height) is anchors  # cached
    assert not anchors.flags.writeable


def test_feature_sizes_640():
    assert feature_sizes(AnchorSpec(), 640, 640) == [(160, 160), (80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 60))
def test_encode_decode_round_trip_and_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n)
    anchors = xyxy_to_cxcywh(random_boxes(rng, n))
    variances = (0.1, 0.2)
    offsets = encode_boxes(boxes, anchors, variances)
    np.testing.assert_allclose(decode_boxes(offsets, anchors, variances), boxes, atol=2e-3)
    for (cx, cy, w, h), off, box in zip(anchors, offsets, decode_boxes(offsets, anchors, variances)):
        bcx, bcy = cx + off[0] * 0.1 * w, cy + off[1] * 0.1 * h
        bw, bh = w * math.exp(off[2] * 0.2), h * math.exp(off[3] * 0.2)
        np.testing.assert_allclose(box, [bcx - bw / 2, bcy - bh / 2, bcx + bw / 2, bcy + bh / 2], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(anchors)), anchors, atol=1e-4)


def test_decoded_sizes_are_capped_so_wild_outputs_stay_finite():
    from edgeface.core.boxes import MAX_LOG_SIZE

    anchors = np.array([[50, 50, 16, 16], [50, 50, 16, 16], [50, 50, 32, 64]], np.float32)
    offsets = np.array([[0, 0, 1e4, 500], [0, 0, -1e4, 0], [0, 0, 5, 5]], np.float32)  # exp(2000) is inf in float32
    boxes = decode_boxes(offsets, anchors, (0.1, 0.2))
    half = 8 * math.exp(MAX_LOG_SIZE)  # the largest box: e^MAX_LOG_SIZE x the 16 px anchor per side
    assert np.isfinite(boxes).all() and 1e5 < 2 * half < 1e6
    np.testing.assert_allclose(boxes[0], [50 - half, 50 - half, 50 + half, 50 + half], rtol=1e-5)
    assert boxes[1, 2] - boxes[1, 0] == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(boxes[2, 2:] - boxes[2, :2], [32 * math.e, 64 * math.e], rtol=1e-5)  # untouched


def test_iou_matches_scalar(rng):
    a, b = random_boxes(rng, 30), random_boxes(rng, 40)
    b[0] = a[0]
    iou = box_iou(a, b)
    for i in range(len(a)):
        for j in range(len(b)):
            assert iou[i, j] == pytest.approx(iou_scalar(a[i].tolist(), b[j].tolist()), abs=1e-9)
    assert iou[0, 0] == pytest.approx(1.0)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 120), st.floats(0.05, 0.9), st.integers(0, 30), st.booleans())
def test_nms_opencv_keeps_exactly_the_reference_boxes(seed, n, threshold, max_keep, ties):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, n, extent=120)
    scores = rng.random(n).astype(np.float32)
    if ties:  # repeated and non-positive scores: order must follow input order, as in the reference
        scores = (np.round(scores * 4) - 1).astype(np.float32)
    reference = nms_reference(boxes, scores, threshold, max_keep)
    np.testing.assert_array_equal(nms(boxes, scores, threshold, max_keep), reference)
    brute = greedy_nms_scalar(boxes.tolist(), scores.tolist(), threshold)
    np.testing.assert_array_equal(reference, brute[:max_keep] if max_keep else brute)


def test_letterbox_round_trip_and_placement(rng):
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    boxed, transform = letterbox(image, (640, 640), pad_value=(1, 2, 3))
    assert boxed.shape == (640, 640, 3)
    assert transform.scale_x == pytest.approx(640 / 500) and transform.pad_x == 0
    top = int(transform.pad_y)
    assert (boxed[:top] == (1, 2, 3)).all() and (boxed[top + 384 :] == (1, 2, 3)).all()
    np.testing.assert_array_equal(boxed[top : top + 384], cv2.resize(image, (640, 384)))
    boxes = random_boxes(rng, 20, extent=250)
    np.testing.assert_allclose(transform.to_source(transform.to_input(boxes)), np.clip(boxes, 0, [500, 300] * 2),
                               atol=1e-3)
    ident = Letterbox.identity(500, 300)
    np.testing.assert_allclose(ident.to_source(np.array([[-5, -5, 600, 400]], np.float32)), [[0, 0, 500, 300]])


def test_prepare_input_normalises_rgb_and_pads_to_zero(rng):
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    x, transform = prepare_input(image, SPEC.input)
    # at its own size, padded at the right and bottom to the size multiple (128), where EXTD's feature maps align
    assert x.shape == (3, 128, 128) and x.dtype == np.float32 and SPEC.input.size_multiple == 128
    np.testing.assert_array_equal(x[0, :48, :64], image[:, :, 2].astype(np.float32) - 123)  # R first
    np.testing.assert_array_equal(x[2, :48, :64], image[:, :, 0].astype(np.float32) - 104)
    assert np.abs(x[:, 48:]).max() == 0 and np.abs(x[:, :, 64:]).max() == 0  # padding normalises to 0
    assert transform == Letterbox.identity(64, 48)
    x, transform = prepare_input(image, SPEC.input, size=(64, 64))  # letterboxed into 64 x 64, then padded
    assert x.shape == (3, 128, 128) and np.abs(x[:, :8]).max() == 0 and np.abs(x[:, 56:]).max() == 0
    aligned = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)
    x, transform = prepare_input(aligned, SPEC.input)
    assert x.shape == (3, 128, 256) and transform == Letterbox.identity(256, 128)
    fixed = SPEC.with_input_shape((64, 64)).input  # a static-shape export: its own size, never padded
    assert prepare_input(image, fixed, size=(64, 64))[0].shape == (3, 64, 64)
    assert pad_colour_bgr(SPEC.input) == (104.0, 117.0, 123.0)


def test_boxes_in_the_inputs_padding_are_dropped_and_the_rest_clipped():
    boxes = np.float32([[70, 10, 90, 30],   # wholly right of a 64 x 48 frame (in its padding): no area left
                        [10, 50, 30, 70],   # wholly below it
                        [50, 10, 80, 30],   # across its right edge: clipped
                        [10, 10, 30, 30]])
    found = in_source(Letterbox.identity(64, 48), boxes, np.float32([0.9, 0.8, 0.7, 0.6]))
    np.testing.assert_array_equal(found.boxes, [[50, 10, 64, 30], [10, 10, 30, 30]])
    np.testing.assert_array_equal(found.scores, np.float32([0.7, 0.6]))


def test_decode_detections_recovers_a_planted_face():
    anchors = generate_anchors(SPEC.anchors, 320, 240)
    target = np.array([[100.0, 60.0, 140.0, 110.0]], np.float32)
    idx = int(np.argmax(box_iou(target, cxcywh_to_xyxy(anchors))[0]))
    loc = np.zeros((len(anchors), 4), np.float32)
    conf = np.zeros((len(anchors), 2), np.float32)
    conf[:, 0] = 5.0  # background everywhere
    loc[idx] = encode_boxes(target, anchors[idx : idx + 1], SPEC.variances)[0]
    conf[idx] = (-3.0, 3.0)
    transform = Letterbox(0.5, 0.5, 0, 0, 640, 480)  # the 320x240 input was the 640x480 frame halved
    dets = decode_detections(loc, conf, anchors, SPEC, transform, 0.5, 0.3, 10)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], target[0] * 2, atol=1e-3)
    assert dets.scores[0] == pytest.approx(1 / (1 + math.exp(-6)), rel=1e-5)
    np.testing.assert_allclose(face_scores(np.array([[0.0, 0.0], [1.0, 3.0]])), [0.5, 1 / (1 + math.exp(-2))])
    with pytest.raises(ValueError, match="disagree"):
        decode_detections(loc[:-1], conf[:-1], anchors, SPEC, transform, 0.5, 0.3, 10)


def test_detections_container():
    dets = Detections(np.array([[1, 2, 11, 22], [5, 5, 9, 9]], np.float32), np.array([0.9, 0.6], np.float32))
    assert len(dets) == 2 and [f.score for f in dets] == pytest.approx([0.9, 0.6])
    assert dets[dets.scores > 0.7].boxes.tolist() == [[1, 2, 11, 22]]
    np.testing.assert_allclose(dets.xywh[0], [1, 2, 10, 20])
    back = Detections.from_list(dets.to_list())
    np.testing.assert_allclose(back.boxes, dets.boxes)
    np.testing.assert_allclose(back.scores, dets.scores, atol=1e-5)
    canvas = np.zeros((40, 40, 3), np.uint8)
    drawn = dets.draw(canvas)
    assert drawn.any() and not canvas.any()
    assert len(Detections.empty()) == 0 and Detections.from_list([]).boxes.shape == (0, 4)
    assert Detections([[1, 2, 3, 4]], [0.5]).boxes.dtype == np.float32  # lists and other dtypes become float32
    for boxes, scores in (((2, 3), (2,)), ((2, 4), (3,)), ((4,), (1,))):
        with pytest.raises(ValueError, match=f"Detections takes \\(N, 4\\) boxes and \\(N,\\) scores, got "
                                             f"{re.escape(str(boxes))}"):
            Detections(np.zeros(boxes), np.zeros(scores))
    dets = Detections([[1, 2, 3, 4]], [0.5])
    assert Detections.from_list(dets.to_list()).to_list() == dets.to_list()
    for items in ([{"box": [1, 2, 3]}], [{"bx": [1, 2, 3, 4], "score": 1}], "x", [{"box": [1, 2, 3, 4], "score": "a"}]):
        with pytest.raises(ValueError, match="Detections.from_list takes \\[{'box': \\[x1, y1, x2, y2\\], 'score'"):
            Detections.from_list(items)
    from edgeface import ImageError

    assert dets.draw(np.zeros((8, 8), np.uint8), colour=(255, 255, 255)).any()  # gray canvases are drawn on
    with pytest.raises(ImageError, match="expected a uint8 image, got float32"):
        dets.draw(np.zeros((8, 8, 3), np.float32))  # (OpenCV's putText asserted)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="finite boxes and scores"):
            Detections([[1, 2, bad, 4]], [0.5])
        with pytest.raises(ValueError, match="finite boxes and scores"):
            Detections([[1, 2, 3, 4]], [bad])
    # a box far past the canvas (OpenCV's int coordinates overflowed) is drawn as the part inside: here its
    # top and bottom edges, every column of the canvas crossed
    wide = Detections([[-1e30, 10, 1e30, 30]], [0.5]).draw(np.zeros((40, 40, 3), np.uint8), show_scores=False)
    assert wide[10, :, 1].all() and wide[30, :, 1].all() and not wide[20].any()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-60, 160, width=32)] * 4), max_size=6),
       st.sampled_from([0.0, 0.15, 0.5, 2.0]), st.integers(1, 90), st.integers(1, 90))
def test_face_regions_hold_exactly_the_pixels_each_grown_box_touches(corners, margin, width, height):
    boxes = np.array([[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in corners],
                     np.float32).reshape(-1, 4)
    dets = Detections(boxes, np.linspace(0.9, 0.5, len(boxes)))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    regions, crops = dets.regions((width, height), margin), dets.crops(image, margin)
    assert regions.shape == (len(boxes), 4) and len(crops) == len(boxes)
    for box, region, crop in zip(boxes.astype(np.float64), regions.tolist(), crops):
        grow = (box[2:] - box[:2]) * margin
        low, high = box[:2] - grow, box[2:] + grow
        columns = [i for i in range(width) if low[0] < i + 1 and i < high[0]]  # pixel cells the box overlaps
        rows = [j for j in range(height) if low[1] < j + 1 and j < high[1]]
        if columns and rows:
            assert region == [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1]
            assert np.array_equal(crop, image[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1])
        else:
            assert crop.size == 0 and 0 <= region[0] <= region[2] <= width and 0 <= region[1] <= region[3] <= height


def test_face_crops_take_any_image_array_and_refuse_bad_margins():
    dets = Detections([[2.5, 3.5, 6.2, 8.0]], [0.9])
    gray = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert np.array_equal(dets.crops(gray)[0], gray[3:8, 2:7])
    assert dets.regions((10, 10), 0.5).tolist() == [[0, 1, 9, 10]]  # 0.65, 1.25, 8.05, 10.25 cut at the edges
    for margin, message in ((-0.1, "in \\[0, 10\\], got -0.1"), (math.nan, "finite"), ("0.1", "a number")):
        with pytest.raises(OptionError, match=message):
            dets.regions((10, 10), margin)
    for size in ((0, 10), (10.5, 10), (-3, 4)):
        with pytest.raises(OptionError, match="image_size is an image's \\(width, height\\) in pixels"):
            dets.regions(size)
    with pytest.raises(ImageError, match="expected a NumPy array"):
        dets.crops(None)
    assert Detections.empty().regions((10, 10)).shape == (0, 4) and Detections.empty().crops(gray) == []


def test_spec_round_trips_through_json():
    spec = SPEC.with_input_shape((640, 480), batch=2)
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="newer"):
        ModelSpec.from_dict({**spec.to_dict(), "spec_version": 99})


def test_spec_is_written_in_the_oldest_version_that_holds_it():
    """A spec that leaves box_down (version 5) at 0 is written as version 4 without the key, which an edgeface of
    version 4 parses (it passed every key to the dataclass, so an unknown one failed); one that moves boxes is 5."""
    from dataclasses import fields

    from edgeface.spec import NEUTRAL_SINCE, SPEC_VERSION

    plain = SPEC.to_dict()
    assert plain["spec_version"] == 4 and set(plain) == {f.name for f in fields(ModelSpec)} - set(NEUTRAL_SINCE)
    assert ModelSpec.from_dict(plain) == SPEC
    moved = replace(SPEC, box_down=0.05)
    assert moved.to_dict()["spec_version"] == SPEC_VERSION == 5 and moved.to_dict()["box_down"] == 0.05
    assert ModelSpec.from_json(moved.to_json()) == moved
    assert ModelSpec.from_dict({**moved.to_dict(), "spec_version": 5, "box_down": 0.0}).to_dict() == plain


def _changed(spec: dict, path: str, value: object) -> dict:
    """`spec` with the key at dotted `path` set to `value`."""
    *parents, key = path.split(".")
    if not parents:
        return {**spec, key: value}
    return {**spec, parents[0]: _changed(spec[parents[0]], ".".join([*parents[1:], key]), value)}


@pytest.mark.parametrize("path, value, message", [
    ("score_threshold", float("nan"), "score_threshold must be a finite number, got nan"),
    ("score_threshold", -1, "score_threshold is a face probability in \\[0, 1\\], got -1"),
    ("nms_iou", 1.5, "nms_iou is an overlap \\(IoU\\) in \\[0, 1\\], got 1.5"),
    ("max_detections", 0, "max_detections must be at least 1"),
    ("pre_nms_top_k", 0, "pre_nms_top_k must be above 0"),
    ("anchors.strides", [0, 8, 16, 32, 64, 128], "anchors.strides are above 0"),
    ("anchors.strides", [4, 8], "6 levels of anchor sizes for 2 strides"),
    ("anchors.sizes", [[16], [32], [64], [128], [256], [-512]], "anchor sizes are above 0"),
    ("input.std", [0, 1, 1], "input.std is 3 numbers above 0"),
    ("input.channel_order", "YUV", "RGB or BGR"),
    ("input.size_multiple", 0, "size_multiple must be above 0"),
    ("box_coding", "yolo", "decodes SSD boxes"),
    ("box_down", 0.7, "box_down must be in \\[-0.5, 0.5\\] \\(a share of the box's height\\), got 0.7"),
    ("box_down", float("nan"), "box_down must be a finite number, got nan"),
    ("box_down", "0.1", "box_down must be a number, got '0.1'"),
    ("box_down", True, "box_down must be a number, got True"),
    ("test_time.pyramid", [], "test_time has no pass"),
    ("anchors", "x", "malformed model spec"),
    ("surprise", 1, "unexpected keyword argument 'surprise'"),
])
def test_a_spec_the_runtime_cannot_use_is_refused_when_read(path, value, message):
    """A model file's spec is checked when it is read, so a corrupt or hand-edited one is a clear error, not a
    silent wrong decoding (a NaN threshold kept no face, a negative one every anchor)."""
    assert ModelSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict(_changed(SPEC.to_dict(), path, value))
    with pytest.raises(ValueError, match="the model spec is not JSON"):
        ModelSpec.from_json("{not json")


def test_atomic_write_replaces_only_a_complete_file(tmp_path):
    from edgeface.core.files import atomic_write

    target = tmp_path / "model.bin"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt  # cut short mid-write: the previous file stays, no temporary file is left
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as tmp:
        Path(tmp).write_bytes(b"complete")
    assert target.read_bytes() == b"complete" and list(tmp_path.iterdir()) == [target]
    # a missing folder is named before anything is written (so before a long computation that would write there)
    from edgeface.errors import OutputError

    with pytest.raises(OutputError, match=f"its folder {tmp_path / 'absent'} does not exist"):
        with atomic_write(tmp_path / "absent" / "model.bin"):
            raise AssertionError("never reached")


@settings(max_examples=150, deadline=None)
@given(width=st.integers(1, 20_000), height=st.integers(1, 20_000), max_side=st.integers(640, 8192))
def test_tiles_cover_the_frame_and_hold_whole_every_small_face_they_answer_for(width, height, max_side):
    plan = plan_tiles(width, height, max_side)
    if max(width, height) <= max_side:
        assert plan is None
        return
    core_area = 0.0
    for tile in plan.tiles:
        assert 0 <= tile.x0 < tile.x1 <= width and 0 <= tile.y0 < tile.y1 <= height
        assert tile.x1 - tile.x0 <= max_side and tile.y1 - tile.y0 <= max_side
        x0, y0, x1, y1 = tile.core
        core_area += (x1 - x0) * (y1 - y0)
        # a face no longer than small_face centred in the core stays inside the tile, half its size to spare,
        # wherever the tile was cut out of the frame (the frame's own borders bound every face anyway)
        for core_edge, tile_edge, border in ((x0, tile.x0, 0), (y0, tile.y0, 0)):
            assert core_edge == border if tile_edge == border else core_edge - tile_edge >= plan.small_face
        for core_edge, tile_edge, border in ((x1, tile.x1, width), (y1, tile.y1, height)):
            assert core_edge == border if tile_edge == border else tile_edge - core_edge >= plan.small_face
    assert core_area == pytest.approx(width * height)  # cores of a grid: a partition of the frame
    centres = np.array([[t.core[0], t.core[1]] for t in plan.tiles])
    assert len(np.unique(centres, axis=0)) == len(plan.tiles)
    overlap_capped = plan.small_face * 2 >= max_side // 2
    if not overlap_capped:  # faces left to the whole frame scaled down are not too small there
        assert plan.small_face * max_side / max(width, height) >= WHOLE_FRAME_FACE


def test_tile_plan_keeps_each_face_in_one_place():
    plan = plan_tiles(4000, 3000, 1920)
    assert len(plan.tiles) == 6 and plan.small_face == 67
    boxes = np.float32([[10, 10, 50, 50],        # small, in the first tile's core
                        [1345, 100, 1385, 140],  # small, centred just past the first core's right edge
                        [1200, 500, 1700, 1000]])  # large: the whole frame's
    first, second = plan.tiles[0], plan.tiles[1]
    assert first.core[2] == second.core[0] < 1365 < second.core[2]
    assert plan.tile_keeps(boxes, first).tolist() == [True, False, False]
    assert plan.tile_keeps(boxes, second).tolist() == [False, True, False]
    assert plan.whole_frame_keeps(boxes).tolist() == [False, False, True]
    assert plan.whole_frame_keeps(np.float32([[0, 0, 60, 60]])).tolist() == [True]  # the hand-over band


def test_write_image_writes_or_says_why_not(tmp_path):
    from edgeface.core.image import read_image, write_image
    from edgeface.errors import OutputError

    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    for path in (tmp_path / "absent" / "a.png", tmp_path / "a.xyz"):
        with pytest.raises(OutputError, match=f"could not write {path}"):
            write_image(path, image)
        assert not path.exists()
