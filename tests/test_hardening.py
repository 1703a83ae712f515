"""Hostile options, files and outputs: one-line errors, never a silent wrong result, nothing overwritten."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeface
from conftest import DLIB_FACES, SHARED, need, with_exif_orientation
from edgeface import Detector
from edgeface.core.boxes import box_iou
from edgeface.core.image import check_image_output, is_truncated, list_inputs, write_image
from edgeface.errors import ImageError, ImageWarning, ModelFileError, OptionError
from edgeface.spec import TestTimeSpec
from edgeface.video import annotate_video, open_video_writer
from edgeface.weights import DEFAULT_MODEL, shipped_model

FACEMASK = SHARED / "data" / "facemask"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeface", *args], capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error of a failed command, checked to be short and traceback-free."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("options, message", [
    (dict(score_threshold=1.5), "score_threshold is a face probability in [0, 1], got 1.5"),
    (dict(score_threshold=-0.5), "score_threshold is a face probability in [0, 1], got -0.5"),
    (dict(score_threshold=math.nan), "score_threshold must be a finite number, got nan"),
    (dict(score_threshold="0.5"), "score_threshold must be a number"),
    (dict(nms_iou=2), "nms_iou is an overlap (IoU) in [0, 1], got 2"),
    (dict(nms_iou=-1), "nms_iou is an overlap (IoU) in [0, 1], got -1"),
    (dict(max_detections=-1), "max_detections must be at least 1, got -1"),
    (dict(max_detections=2.5), "max_detections must be a whole number"),
    (dict(input_size=320), "input_size must be a (width, height) pair"),
    (dict(input_size=(100_000, 100_000)), "input_size sides must be between 1 and 8192"),
    (dict(input_size=(0, 10)), "input_size sides must be between 1 and 8192"),
    (dict(max_side=10), "max_side must be between 32 and 8192"),
    (dict(min_side=10_000), "min_side must be between 32 and 8192"),
    (dict(device="tpu"), "device must be one of cpu, cuda, cuda:N, tensorrt, got 'tpu'"),
    (dict(threads=0), f"threads must be between 1 and {max(256, os.cpu_count())} (or None: the backend's own "
                      f"choice; this machine has {os.cpu_count()} CPUs), got 0"),
    (dict(threads=-1), "threads must be between 1 and"),
    (dict(threads=10**6), "threads must be between 1 and"),  # ONNX Runtime hung starting a million threads
    (dict(threads="2"), "threads must be a whole number"),
    (dict(test_time="flip"), "test_time must be an edgeface.spec.TestTimeSpec"),
    (dict(test_time=TestTimeSpec(())), "test_time has no pass: give at least one scale"),
    (dict(test_time=TestTimeSpec.from_scales((1.0, 0.0))), "a test-time scale is a resize factor above 0 and at "
                                                          "most 8, got 0"),
    (dict(test_time=TestTimeSpec.from_scales((1.0,), voting_iou=2)), "box voting's IoU is an overlap (IoU) in [0, "
                                                                      "1], got 2"),
    (dict(tile=True, max_side=None), "tile splits frames larger than max_side into tiles run at their own size"),
    (dict(tile=True, input_size=(640, 480)), "it needs max_side and no input_size"),
])
def test_out_of_range_options_are_errors_before_the_model_loads(options, message, tmp_path):
    with pytest.raises(OptionError) as info:
        Detector(tmp_path / "never_opened.onnx", **options)  # the check comes first: no "no such model file"
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_valid_options_are_kept_in_their_canonical_types():
    need(DEFAULT_MODEL)
    detector = Detector(score_threshold=1, nms_iou=np.float32(0.3), max_detections=np.int64(5), input_size=[64, 48])
    assert (detector.score_threshold, detector.max_detections, detector.input_size) == (1.0, 5, (64, 48))
    assert type(detector.max_detections) is int and type(detector.nms_iou) is float
    assert len(detector(np.zeros((48, 64, 3), np.uint8))) == 0  # threshold 1: nothing passes


@pytest.mark.parametrize("args, message", [
    (("--score-threshold", "1.5"), "score_threshold is a face probability in [0, 1], got 1.5"),
    (("--score-threshold", "nan"), "finite"),
    (("--nms-iou", "2"), "nms_iou is an overlap"),
    (("--nms-iou", "-1"), "nms_iou is an overlap"),
    (("--max-detections", "-1"), "max_detections must be at least 1"),
    (("--device", "tpu"), "device must be one of"),
    (("--input-size", "100000x100000"), "input_size sides must be between 1 and 8192"),
    (("--input-size", "320"), "expected WIDTHxHEIGHT"),
])
def test_cli_rejects_bad_options_in_one_line(args, message, tmp_path):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = run_cli("detect", str(image), "-o", str(tmp_path / "out"), *args)
    assert result.returncode == 2 and message in one_line_error(result)  # argparse's usage error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (("--iou", "2"), "iou is an overlap (IoU) in [0, 1], got 2"),
    (("--scales", "0.5", "-1"), "a test-time scale is a resize factor above 0 and at most 8, got -1"),
    (("--box-voting", "5"), "box voting's IoU is an overlap (IoU) in [0, 1], got 5"),
])
def test_eval_rejects_bad_matching_and_test_time_options_in_one_line(args, message, tmp_path):
    result = run_cli("eval", "--format", "imglab", f"xml={tmp_path / 'never_read.xml'}", *args)
    assert result.returncode == 2 and message in one_line_error(result)


def test_detect_leaves_its_own_output_folder_alone_and_says_so(tmp_path):
    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), np.zeros((64, 64, 3), np.uint8))
    before = photo.read_bytes()
    result = run_cli("detect", str(photo), "-o", str(tmp_path))  # its copy would overwrite the photo itself
    assert "every input is inside the output folder" in one_line_error(result) and photo.read_bytes() == before
    (tmp_path / "out").mkdir()
    cv2.imwrite(str(tmp_path / "out" / "earlier.jpg"), np.zeros((64, 64, 3), np.uint8))
    result = run_cli("detect", str(tmp_path), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 0, result.stderr
    assert "note: 1 inputs inside the output folder" in result.stderr and "1/1 inputs done" in result.stdout


def test_a_negative_seed_is_a_one_line_error(tmp_path):  # NumPy's generators take none
    result = run_cli("data", "show", "--format", "imglab", f"xml={tmp_path / 'never_read.xml'}", "--seed", "-1")
    assert result.returncode == 2 and "seed must be 0 or more, got -1" in one_line_error(result)


def test_cli_output_that_is_a_file_and_model_spec_mismatch_are_one_line_errors(tmp_path):
    onnx = pytest.importorskip("onnx")
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    result = run_cli("detect", str(image), "-o", str(taken))
    assert "a file of that name exists" in one_line_error(result) and taken.read_text() == "keep me"
    result = run_cli("detect", str(image), "-o", str(taken / "out"))  # under a file: no folder can be made there
    assert f"cannot make the output folder {taken / 'out'}" in one_line_error(result)
    (tmp_path / "run" / "detections.json").mkdir(parents=True)  # refused before the run, not after it
    result = run_cli("detect", str(image), "-o", str(tmp_path / "run"), "-q")
    assert "cannot write" in one_line_error(result) and "detections.json: it is a folder" in result.stderr
    assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "detections.json"]  # nothing done, nothing lost

    model = onnx.load(str(need(DEFAULT_MODEL)))  # its graph with a spec of one more anchor per cell
    entry = next(p for p in model.metadata_props if p.key == "edgeface.spec")
    spec = json.loads(entry.value)
    spec["anchors"]["ratios"] = [1.0, 1.5]
    entry.value = json.dumps(spec)
    wrong = tmp_path / "wrong_spec.onnx"
    onnx.save(model, str(wrong))
    with pytest.raises(ModelFileError, match="the model file and its spec disagree"):
        Detector(wrong)(np.zeros((64, 64, 3), np.uint8))
    result = run_cli("detect", str(image), "-m", str(wrong), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the model file and its spec disagree" in result.stderr


def truncated_copy(source: Path, target: Path, fraction: float = 0.4) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_truncated_images_are_flagged(tmp_path):
    photo = need(DLIB_FACES / "2008_002506.jpg")
    assert not is_truncated(photo.read_bytes())
    cut = truncated_copy(photo, tmp_path / "cut.jpg")
    assert is_truncated(cut.read_bytes())
    with pytest.warns(ImageWarning, match="truncated") as caught:
        image = edgeface.read_image(cut)
    assert image.shape == cv2.imread(str(photo)).shape  # it decodes: the lower part grey
    detector = edgeface.Detector("fast")
    with pytest.warns(ImageWarning, match="truncated") as through_detector:
        detector(cut)
    # both point at the caller's line (here), not at edgeface's inside
    assert {w.filename for w in [*caught, *through_detector]} == {__file__}
    png = tmp_path / "whole.png"
    cv2.imwrite(str(png), cv2.imread(str(photo)))
    assert not is_truncated(png.read_bytes()) and is_truncated(png.read_bytes()[:-20])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edgeface.read_image(photo)  # a whole file: no warning

    out = tmp_path / "out"
    result = run_cli("detect", str(cut), str(photo), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "truncated" in result.stderr and "1 flagged" in result.stdout
    entries = json.loads((out / "detections.json").read_text())["results"]
    assert "truncated" in entries[str(cut)]["warnings"][0] and entries[str(photo)]["warnings"] == []


def test_a_photo_stored_sideways_with_an_exif_orientation_is_detected_upright(tmp_path):
    """Phones store a photo as the sensor saw it and an EXIF tag saying how to turn it; viewers turn it, and so
    does read_image (OpenCV applies the tag), so the detector sees upright faces and the boxes are in the pixels
    the user sees."""
    photo = cv2.imread(str(need(DLIB_FACES / "2007_007763.jpg")))  # seven faces upright, one found sideways
    stored = cv2.rotate(photo, cv2.ROTATE_90_COUNTERCLOCKWISE)  # orientation 6: turn 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    jpeg = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    path.write_bytes(with_exif_orientation(jpeg, 6))
    assert edgeface.read_image(path).shape == photo.shape
    detector = Detector("fast")
    upright, sideways, seen = detector(photo), detector(stored), detector(path)
    assert len(upright) >= 5 and len(sideways) < len(upright)  # the tag matters: sideways faces are missed
    assert len(seen) == len(upright) and (box_iou(seen.boxes, upright.boxes).max(axis=1) > 0.8).all()


def test_detect_outputs_are_unique_and_the_json_has_one_schema(tmp_path):
    photo = cv2.imread(str(need(DLIB_FACES / "2008_002506.jpg")))
    for name in ("x/p.jpg", "x/p.png", "y/p.jpg", "y/deeper/q.jpg"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "in" / name), photo)
    (tmp_path / "in" / "x" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "in" / ".hidden").mkdir()
    cv2.imwrite(str(tmp_path / "in" / ".hidden" / "skip.jpg"), photo)
    out = tmp_path / "in" / "out"  # inside the input folder: a second run must not read its own outputs
    for _ in range(2):
        result = run_cli("detect", str(tmp_path / "in"), "-o", str(out), "-q")
        assert result.returncode == 2, result.stderr  # the broken file is reported, the rest done
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["detections.json", "x/p.jpg", "x/p.png", "y/deeper/q.jpg", "y/p.jpg"]
    report = json.loads((out / "detections.json").read_text())
    assert report["schema"] == 3 and report["complete"] is True and len(report["results"]) == 5
    for path, entry in report["results"].items():
        assert set(entry) == {"type", "annotated", "error", "warnings", "faces", "crops"}, path
        assert entry["crops"] is None  # not asked for
        if path.endswith("broken.jpg"):
            assert entry["error"] and entry["faces"] == [] and entry["annotated"] is None
        else:
            assert entry["error"] is None and len(entry["faces"]) > 0 and Path(entry["annotated"]).exists()


def test_detect_writes_each_face_of_an_image_beside_its_annotated_copy(tmp_path):
    photo = need(DLIB_FACES / "2007_007763.jpg")  # seven faces
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "group.jpg").write_bytes(photo.read_bytes())
    (tmp_path / "in" / "group.png").write_bytes(cv2.imencode(".png", cv2.imread(str(photo)))[1].tobytes())
    out = tmp_path / "out"
    stale = out / "group.jpg.faces" / "9.jpg"  # a previous run's, with more faces: replaced, not left
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (stale.parent / "notes.txt").write_text("the user's")  # not ours: kept
    result = run_cli("detect", str(tmp_path / "in"), "-o", str(out), "--crops", "--crop-margin", "0.1", "--no-draw",
                     "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "detections.json").read_text())["results"]
    image = edgeface.read_image(photo)
    for name in ("group.jpg", "group.png"):
        entry = report[str(tmp_path / "in" / name)]
        faces = edgeface.Detections.from_list(entry["faces"])
        assert len(faces) == 7 and entry["annotated"] is None
        assert entry["crops"] == [str(out / f"{name}.faces" / f"{i}{Path(name).suffix}") for i in range(7)]
        for crop_path, expected in zip(entry["crops"], faces.crops(image, margin=0.1)):
            crop = cv2.imread(crop_path)
            assert crop.shape == expected.shape
            if name.endswith(".png"):  # lossless: the very pixels
                assert np.array_equal(crop, expected)
    assert sorted(p.name for p in stale.parent.iterdir()) == [*(f"{i}.jpg" for i in range(7)), "notes.txt"]
    result = run_cli("detect", str(tmp_path / "in"), "-o", str(out), "--crops", "--crop-margin", "-1")
    assert "margin is a share of the box's width and height added on each side, in [0, 10], got -1" \
        in one_line_error(result)


def test_an_annotated_copy_that_cannot_be_written_keeps_the_faces_found(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(need(DLIB_FACES / "2007_007763.jpg").read_bytes())
    (tmp_path / "out" / "p.jpg").mkdir(parents=True)  # a folder where the annotated copy goes
    result = run_cli("detect", str(photo), "-o", str(tmp_path / "out"), "-q")
    assert result.returncode == 2 and "could not write" in result.stderr
    entry = json.loads((tmp_path / "out" / "detections.json").read_text())["results"][str(photo)]
    assert "could not write" in entry["error"] and len(entry["faces"]) == 7 and entry["annotated"] is None


def write_clip(path: Path, image: np.ndarray, frames: int) -> Path:
    """A video of `frames` copies of `image` at 5 fps."""
    writer = open_video_writer(path, 5.0, (image.shape[1], image.shape[0]))
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return path


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_detect_keeps_what_it_did(how, tmp_path, monkeypatch, capsys):
    """Ctrl-C, or SIGTERM from a scheduler, an hour into a folder of photos: detections.json holds the inputs
    done, marked "complete": false, and the exit status is 130 (the results were lost with the traceback)."""
    import signal

    from edgeface.cli import main

    calls = []
    detect = Detector.detect

    def detect_until_stopped(self, image):
        calls.append(1)
        if len(calls) == 3:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in this, the main, thread
            raise KeyboardInterrupt
        return detect(self, image)

    monkeypatch.setattr(Detector, "detect", detect_until_stopped)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["detect", str(need(DLIB_FACES)), "-o", str(tmp_path / "out"), "-q", "-m", "fast"]) == 130
    assert signal.getsignal(signal.SIGTERM) is before
    report = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert report["complete"] is False and len(report["results"]) == 2
    assert all(entry["faces"] and entry["error"] is None for entry in report["results"].values())
    assert "interrupted: the 10 inputs not done are not in detections.json" in capsys.readouterr().err


def test_files_whose_names_are_not_utf8_are_read_and_written(tmp_path):
    """A Linux file name in another encoding reaches Python with surrogate escapes, and OpenCV's conversion of such
    text ends the whole process with a segmentation fault: images and videos so named are read, detected and
    written like any other, by the API and by `edgeface detect`."""
    name = os.fsdecode(b"gr\xfcppe")  # 'grueppe' with a Latin-1 u-umlaut: not UTF-8
    photo = tmp_path / "in" / f"{name}.jpg"
    photo.parent.mkdir()
    try:
        photo.write_bytes(need(DLIB_FACES / "2008_002506.jpg").read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    image = edgeface.read_image(photo)
    copy = tmp_path / f"{name}.png"
    check_image_output(copy)
    write_image(copy, image)
    np.testing.assert_array_equal(edgeface.read_image(copy), image)
    clip = write_clip(tmp_path / f"{name}.avi", image, 3)
    model = tmp_path / f"{name}.onnx"
    model.write_bytes(Path(shipped_model("fast")).read_bytes())
    detector = Detector(model)  # ONNX Runtime takes only UTF-8 paths
    frames = annotate_video(detector, clip, tmp_path / f"{name}-annotated.avi", progress=False)
    assert len(frames) == 3 and all(frame["faces"] for frame in frames)
    result = run_cli("detect", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", "fast", "-q")
    assert result.returncode == 0, result.stderr
    ((key, entry),) = json.loads((tmp_path / "out" / "detections.json").read_text())["results"].items()
    assert len(entry["faces"]) == len(detector(image)) > 0 and Path(entry["annotated"]).is_file()
    assert os.fsencode(key) == os.fsencode(photo)  # the name's bytes, kept as surrogate escapes (\udcfc)


def test_a_video_that_cannot_be_opened_says_why(tmp_path):
    """A missing path, a folder, an empty file and a file that is no video each get their own reason (all were
    "missing file, or a codec OpenCV cannot read"); `edgeface detect` records it as the input's error."""
    from edgeface.video import open_video

    image = edgeface.read_image(need(DLIB_FACES / "2008_002506.jpg"))
    data = write_clip(tmp_path / "whole.avi", image, 3).read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "cut.avi").write_bytes(data[:200])  # the header cut: no stream to read
    (tmp_path / "folder.mp4").mkdir()
    for name, reason in [("lost.mp4", "no such video file: {}"), ("folder.mp4", "{} is a folder, not a video file"),
                         ("empty.mp4", "cannot open video {}: the file is empty"),
                         ("notes.mp4", "cannot open video {}: not a video OpenCV can read"),
                         ("cut.avi", "cannot open video {}: not a video OpenCV can read")]:
        with pytest.raises(ImageError) as error:
            open_video(tmp_path / name)
        assert str(error.value).startswith(reason.format(tmp_path / name))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.mp4").write_bytes(b"")
    assert run_cli("detect", str(inputs), "-o", str(tmp_path / "out"), "-m", "fast", "-q").returncode == 2
    (entry,) = json.loads((tmp_path / "out" / "detections.json").read_text())["results"].values()
    assert entry["error"].endswith("the file is empty") and entry["frames"] == []


@pytest.mark.parametrize("reported", [float("nan"), 0.0, -1.0, 1000.0])
def test_a_video_reporting_no_usable_frame_rate_is_annotated_at_the_default(reported, tmp_path, monkeypatch):
    """A damaged or variable-rate video reports a rate OpenCV's writers refuse (NaN, 0, negative, 1000): the
    annotated video is written at 25 fps (it was an OutputError at the first frame, after the model loaded). A
    frame count of NaN is taken as unknown (it was a ValueError)."""
    import edgeface.video

    image = edgeface.read_image(need(DLIB_FACES / "2008_002506.jpg"))
    clip = write_clip(tmp_path / "clip.avi", image, 2)

    class Damaged:  # the capture of `clip`, reporting `reported` frames per second and no frame count
        def __init__(self, source):
            self.capture = cv2.VideoCapture(str(source))

        def get(self, prop):
            unknown = {cv2.CAP_PROP_FPS: reported, cv2.CAP_PROP_FRAME_COUNT: float("nan")}
            return unknown[prop] if prop in unknown else self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(edgeface.video, "open_video", Damaged)
    frames = annotate_video(Detector("fast"), clip, tmp_path / "annotated.avi", progress=False)
    assert [frame["time"] for frame in frames] == [0.0, 0.04]
    annotated = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert annotated.get(cv2.CAP_PROP_FPS) == 25.0 and annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 2


def test_a_model_file_with_a_corrupt_spec_is_a_model_file_error_naming_it(tmp_path):
    onnx = pytest.importorskip("onnx")
    from edgeface.spec import SPEC_KEY

    proto = onnx.load(str(shipped_model("fast")))
    entry = next(p for p in proto.metadata_props if p.key == SPEC_KEY)
    entry.value = json.dumps({**json.loads(entry.value), "score_threshold": -1})  # would keep every anchor
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    with pytest.raises(ModelFileError, match="edited.onnx carries a model spec this edgeface cannot use: .*"
                                             "score_threshold is a face probability in"):
        Detector(tmp_path / "edited.onnx")
    torch = pytest.importorskip("torch")
    from edgeface.models.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "spec": {"name": "extd32", "nms_iou": 2.0}, "state_dict": {}},
               tmp_path / "edited.pt")
    with pytest.raises(ModelFileError, match="edited.pt carries a model spec .*nms_iou is an overlap"):
        Detector(tmp_path / "edited.pt")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_or_a_device_named_as_an_image_is_an_image_error(tmp_path):
    os.mkfifo(tmp_path / "camera.jpg")  # reading it would wait forever for a writer
    for path in (tmp_path / "camera.jpg", "/dev/null"):
        with pytest.raises(edgeface.ImageError, match="is a device, a pipe or a socket, not an image file"):
            edgeface.read_image(path)


def test_folders_are_searched_recursively_by_one_rule(tmp_path):
    for name in ("a.jpg", "sub/b.PNG", "sub/deep/c.mp4", "sub/notes.txt", ".git/d.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_inputs([tmp_path])] == \
        ["a.jpg", "sub/b.PNG", "sub/deep/c.mp4"]
    assert list_inputs([tmp_path / "sub" / "notes.txt"]) == [tmp_path / "sub" / "notes.txt"]  # named: taken
    with pytest.raises(edgeface.ImageError, match="no such file or folder"):
        list_inputs([tmp_path / "missing"])
    for name in ("IMG_0001.HEIC", "sub/IMG_0002.heic", ".trash/IMG_0003.heic"):  # phones' photos: said, not silent
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(ImageWarning, match="2 HEIF / HEIC / AVIF photo\\(s\\) skipped.*convert them to JPEG or PNG"):
        assert len(list_inputs([tmp_path])) == 3


def test_info_without_a_model_describes_the_shipped_one():
    need(DEFAULT_MODEL)
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "extd64" in result.stdout and "edgeface_default.onnx" in result.stdout
    assert "longest side under 640 px upscaled to it, padded at the right and bottom to multiples of 128" \
        in result.stdout  # how the runtime sizes frames


def test_big_photos_run_bounded_and_boxes_come_back_in_their_own_pixels():
    need(DEFAULT_MODEL)
    photo = cv2.imread(str(need(DLIB_FACES / "bald_guys.jpg")))  # 1986 x 1545, a crowd
    big = cv2.resize(photo, (photo.shape[1] * 2, photo.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    detector = Detector()
    assert detector.max_side == 1920 and detector.run_size(8000, 6000) == (1920, 1440)
    assert detector.run_size(640, 480) == (640, 480)
    seen = []
    run = detector.backend.run
    detector.backend.run = lambda batch: seen.append(batch.shape) or run(batch)
    faces_big = detector(big)
    assert seen == [(1, 3, 1536, 1920)]  # 3972 x 3090 scaled to 1920 x 1494, padded to multiples of 128
    small = cv2.resize(big, (1920, 1494), interpolation=cv2.INTER_LINEAR)
    faces_small = detector(small)
    assert len(faces_big) == len(faces_small) > 20
    np.testing.assert_allclose(faces_big.boxes, faces_small.boxes * (big.shape[1] / 1920), rtol=0.02, atol=2)
    native = Detector(max_side=None)
    assert native.run_size(3972, 3090) == (3972, 3090) and native.max_side is None


def test_tiles_find_the_small_faces_of_a_big_photo_at_the_memory_of_max_side(tmp_path):
    """A mosaic of four WIDER crowd photos (2000 x 1500, 403 faces) at max_side 1024: tiled, it finds what the
    full-size run finds (and more, where the whole frame scaled down finds the larger faces better), every network
    input within the bound; scaled down whole, far fewer."""
    need(DEFAULT_MODEL)
    from benchmarks.big_photos import build_mosaic
    from edgeface.data.records import FaceRecord
    from edgeface.data.wider import read_wider
    from edgeface.eval.voc import voc_ap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only some of the val images are in ../shared
        records = read_wider(need(SHARED / "data" / "widerface" / "WIDER_val" / "images").parents[1], "val")
    records.sort(key=lambda r: -int((~r.ignore).sum()))
    path = tmp_path / "mosaic.jpg"
    truth = FaceRecord(str(path), build_mosaic(records, 2, 2, path))
    photo = cv2.imread(str(path))

    def recall(**options) -> tuple[float, list[tuple[int, ...]]]:
        detector = Detector(score_threshold=0.05, **options)
        seen = []
        run = detector.backend.run
        detector.backend.run = lambda batch: seen.append(batch.shape) or run(batch)
        return float(voc_ap([truth], [detector(photo)]).recall.max()), seen

    tiled, inputs = recall(max_side=1024, tile=True)
    full_size, _ = recall(max_side=None)
    scaled_down, _ = recall(max_side=1024)
    assert len(inputs) == 7 and inputs[0] == (1, 3, 768, 1024)  # the whole, then six tiles of at most 1024
    assert all(max(shape[2:]) <= 1024 for shape in inputs)
    assert tiled >= full_size - 0.01 and tiled > scaled_down + 0.15, (tiled, full_size, scaled_down)


@pytest.mark.parametrize("photo", ["58--Hockey/58_Hockey_icehockey_puck_58_680.jpg",
                                   "12--Group/12_Group_Large_Group_12_Group_Large_Group_12_315.jpg"])
def test_tiles_report_each_face_once_and_whole_where_a_tile_cuts_it(photo):
    """WIDER crowd photos (1024 px wide, some 90 faces) in tiles of at most 512 px give the full-size run's
    faces: those the tiles' cuts cross come back whole (IoU >= 0.7 with the full-size box), none twice."""
    need(DEFAULT_MODEL)
    from edgeface.core.boxes import box_iou
    from edgeface.core.tiling import plan_tiles

    image = cv2.imread(str(need(SHARED / "data" / "widerface" / "WIDER_val" / "images" / photo)))
    height, width = image.shape[:2]
    full_size = Detector(max_side=None)(image)
    tiled = Detector(max_side=512, tile=True)(image)
    tiles = plan_tiles(width, height, 512).tiles
    cuts_x = {t.x0 for t in tiles if t.x0 > 0} | {t.x1 for t in tiles if t.x1 < width}
    cuts_y = {t.y0 for t in tiles if t.y0 > 0} | {t.y1 for t in tiles if t.y1 < height}
    crossing = np.array([any(x1 < c < x2 for c in cuts_x) or any(y1 < c < y2 for c in cuts_y)
                         for x1, y1, x2, y2 in full_size.boxes])
    iou = box_iou(full_size.boxes, tiled.boxes)
    assert len(tiles) == 6 and crossing.sum() >= 5 and len(full_size) > 80
    assert (iou.max(axis=1)[crossing] >= 0.7).all()
    # nearly every full-size face found alike; the tiles add a few the full-size run's one pass does not keep
    assert (iou.max(axis=1) >= 0.7).mean() >= 0.93 and (iou.max(axis=0) >= 0.7).mean() >= 0.85
    assert len(Detector(max_side=512)(image)) < 0.6 * len(tiled)  # what tiling is for


def test_small_frames_run_upscaled_to_min_side_in_one_pass(extd64_onnx):
    """A frame smaller than min_side runs as if the caller had upscaled it, with boxes in its own pixels."""
    photo = cv2.imread(str(need(FACEMASK / "images" / "maksssksksss0.jpg")))  # 512 x 366
    height, width = photo.shape[:2]
    upscaled = Detector(extd64_onnx, min_side=640)
    assert upscaled.run_size(width, height) == (640, round(height * 640 / width))
    assert upscaled.run_size(1024, 768) == (1024, 768)  # large frames are left alone
    capped = Detector(extd64_onnx, min_side=640, max_side=416)  # max_side wins
    assert capped.run_size(width, height) == (416, round(height * 416 / width))
    assert Detector(extd64_onnx).min_side is None  # the authors' spec has none
    assert Detector().run_size(400, 300) == (640, 480) and Detector(min_side=0).run_size(400, 300) == (400, 300)
    size = upscaled.run_size(width, height)
    by_hand = Detector(extd64_onnx)(cv2.resize(photo, size, interpolation=cv2.INTER_LINEAR))
    faces = upscaled(photo)
    assert len(faces) == len(by_hand) > 0
    np.testing.assert_allclose(faces.boxes, by_hand.boxes * np.float32([width / size[0], height / size[1]] * 2),
                               atol=1e-3)

    from edgeface.spec import ModelSpec

    spec = upscaled.spec.with_min_side(640)
    assert ModelSpec.from_dict(spec.to_dict()) == spec and spec.input.min_side == 640
    old = spec.to_dict()
    del old["input"]["min_side"]  # a spec written before min_side existed
    assert ModelSpec.from_dict(old).input.min_side is None
