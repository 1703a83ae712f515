"""Examples run as a user would run them, headless, on a short video made from real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeface
from conftest import SHARED, need

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                            timeout=300, cwd=EXAMPLES)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photo_paths) -> Path:
    """12 frames (320x240) panning across a real group photo."""
    photo = cv2.imread(photo_paths[4])
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (320, 240))
    for k in range(12):
        writer.write(cv2.resize(photo[:, k * 3 : k * 3 + photo.shape[1] - 40], (320, 240)))
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_detect_faces_example(extd64_onnx, photo_paths, tmp_path):
    out = tmp_path / "faces.jpg"
    result = run_example("detect_faces.py", str(extd64_onnx), photo_paths[0], "-o", str(out))
    assert "faces; wrote" in result.stdout and int(result.stdout.split("\n")[-2].split()[0]) > 0
    assert cv2.imread(str(out)).shape == cv2.imread(photo_paths[0]).shape


def run_failing_example(name: str, *args: str) -> str:
    """The one-line error of an example given bad input (no traceback, exit status 1)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                            timeout=300, cwd=EXAMPLES)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_detect_faces_example_says_what_is_wrong_in_one_line(extd64_onnx, photo_paths, tmp_path):
    assert run_failing_example("detect_faces.py", str(tmp_path / "lost.onnx"), photo_paths[0]) == (
        f"error: no such model file: {tmp_path / 'lost.onnx'}")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8 half a jpeg")
    assert "error: cannot decode" in run_failing_example("detect_faces.py", str(extd64_onnx), str(tmp_path / "cut.jpg"))
    unwritable = str(tmp_path / "absent" / "faces.jpg")
    assert run_failing_example("detect_faces.py", str(extd64_onnx), photo_paths[0], "-o", unwritable).startswith(
        f"error: could not write {unwritable}")


@pytest.mark.parametrize("name, args, error", [
    ("annotate_coco.py", ("{photos}", "-o", "{tmp}/absent/faces.json"), "error: cannot write {tmp}/absent/faces.json"),
    ("annotate_coco.py", ("{tmp}/absent",), "error: no such file or folder: {tmp}/absent"),
    ("face_tracker.py", ("{clip}", "-m", "{tmp}/lost.onnx"), "error: no such model file: {tmp}/lost.onnx"),
    ("face_tracker.py", ("{tmp}/lost.mp4",), "error: no such video file: {tmp}/lost.mp4"),
    ("triton_repository.py", ("{tmp}/lost.onnx",), "error: no such model file: {tmp}/lost.onnx"),
    ("camera_app.py", ("--source", "{tmp}/lost.mp4", "--headless"), "error: no such video file: {tmp}/lost.mp4"),
    ("camera_app.py", ("--source", "{tmp}", "--headless"), "error: {tmp} is a folder, not a video file"),
    ("camera_app.py", ("--source", "97", "--headless"), "error: no camera at index 97 (is it connected?"),
    ("camera_app.py", ("--source", "rtsp://127.0.0.1:9/none", "--headless"),
     "error: cannot open the stream rtsp://127.0.0.1:9/none (is it reachable"),
])
def test_the_other_examples_say_what_is_wrong_in_one_line(name, args, error, photo_paths, clip, tmp_path):
    fill = {"tmp": tmp_path, "photos": Path(photo_paths[0]).parent, "clip": clip}
    line = run_failing_example(name, *(arg.format(**fill) for arg in args))
    assert line.startswith(error.format(**fill)), line


def test_camera_app_headless_on_a_video(extd64_onnx, clip, tmp_path):
    out, log = tmp_path / "annotated.mp4", tmp_path / "log.json"
    run_example("camera_app.py", "--source", str(clip), "-m", str(extd64_onnx), "--headless", "--output", str(out),
                "--log", str(log))
    frames = read_frames(out)
    assert len(frames) == 12 and frames[0].shape == (240, 320, 3)  # every frame of a file, none dropped
    report = json.loads(log.read_text())
    assert [f["frame"] for f in report["frames"]] == list(range(12))
    ids = {face["id"] for f in report["frames"][2:] for face in f["faces"]}
    faces_per_frame = [len(f["faces"]) for f in report["frames"][2:]]
    assert min(faces_per_frame) > 0 and len(ids) <= max(faces_per_frame) + 2  # ids stay with their faces


def test_video_writers_take_the_containers_codec_or_say_why_not(tmp_path):
    from edgeface.errors import OutputError
    from edgeface.video import open_video_writer

    frames = [np.full((48, 64, 3), 40 * k, np.uint8) for k in range(5)]
    for name in ("a.mp4", "a.webm", "a.avi"):  # WebM takes VP8; OpenCV writes nothing into it with MPEG-4
        writer = open_video_writer(tmp_path / name, 10, (64, 48))
        for frame in frames:
            writer.write(frame)
        writer.release()
        assert len(read_frames(tmp_path / name)) == 5, name
    with pytest.raises(OutputError, match="cannot write video .*does its folder exist"):
        open_video_writer(tmp_path / "absent" / "a.mp4", 10, (64, 48))


def test_a_video_whose_frames_change_size_is_written_whole(tmp_path):
    """OpenCV's writer drops frames of another size than the first without a word; VideoOutput scales them."""
    from edgeface.errors import ImageWarning
    from edgeface.video import VideoOutput

    with pytest.warns(ImageWarning, match="the frames changed size from 64x48 to 128x96; they are written scaled"):
        with VideoOutput(tmp_path / "a.mp4", 10) as output:
            for k in range(6):
                output.write(np.full((48, 64, 3) if k < 3 else (96, 128, 3), 40 * k, np.uint8))
    written = read_frames(tmp_path / "a.mp4")
    assert len(written) == 6 and {frame.shape for frame in written} == {(48, 64, 3)}
    assert abs(float(written[-1].mean()) - 200) < 8  # the last frame, not a repeat of the third


def test_video_examples_say_when_they_cannot_write_their_video(extd64_onnx, clip, tmp_path):
    target = tmp_path / "absent" / "out.mp4"
    for name, args in (("anonymise.py", (str(clip), "-o", str(target))),
                       ("camera_app.py", ("--source", str(clip), "--headless", "--output", str(target)))):
        error = run_failing_example(name, *args, "-m", str(extd64_onnx))
        assert error.startswith(f"error: cannot write video {target}"), (name, error)


def test_gstreamer_pipelines_are_well_formed():
    from camera_app import gstreamer_csi, gstreamer_usb

    csi = gstreamer_csi(1, 1920, 1080, 30)
    assert csi.startswith("nvarguscamerasrc sensor-id=1") and "width=1920,height=1080" in csi
    assert csi.endswith("appsink drop=true max-buffers=1 sync=false") and "format=BGR" in csi
    assert gstreamer_usb("/dev/video2").startswith("v4l2src device=/dev/video2")


def test_anonymise_covers_every_face(extd64_onnx, clip, tmp_path):
    out = tmp_path / "anonymised.mp4"
    run_example("anonymise.py", str(clip), "-o", str(out), "-m", str(extd64_onnx), "--mode", "blur")
    originals, covered = read_frames(clip), read_frames(out)
    assert len(covered) == len(originals) and covered[0].shape == originals[0].shape
    detector = edgeface.Detector(extd64_onnx)
    for before, after in zip(originals, covered):
        faces = detector(before)
        assert len(faces) > 0
        for x1, y1, x2, y2 in faces.boxes.astype(int).tolist():
            sharp = cv2.Laplacian(cv2.cvtColor(before[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
            blurred = cv2.Laplacian(cv2.cvtColor(after[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
            assert blurred < 0.35 * sharp
        outside = np.ones(before.shape[:2], bool)
        for x1, y1, x2, y2 in faces.boxes.astype(int).tolist():
            mx, my = (x2 - x1) // 3, (y2 - y1) // 3
            outside[max(y1 - my, 0) : y2 + my, max(x1 - mx, 0) : x2 + mx] = False
        assert np.abs(before.astype(int) - after.astype(int))[outside].mean() < 6  # the rest is left as it was


def test_anonymise_an_image_folder_skips_undecodable_files(extd64_onnx, photo_paths, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "sub" / "a.jpg").write_bytes(Path(photo_paths[0]).read_bytes())
    result = run_example("anonymise.py", str(folder), "-o", str(tmp_path / "out"), "-m", str(extd64_onnx))
    assert "skipped" in result.stderr and "broken.jpg" in result.stderr and "1 images anonymised" in result.stdout
    assert cv2.imread(str(tmp_path / "out" / "sub" / "a.jpg")).shape == cv2.imread(photo_paths[0]).shape


def test_anonymise_one_photo_and_never_reports_a_copy_it_could_not_write(extd64_onnx, photo_paths, tmp_path):
    out = tmp_path / "covered.png"
    result = run_example("anonymise.py", photo_paths[0], "-o", str(out), "-m", str(extd64_onnx))
    original, covered = cv2.imread(photo_paths[0]), cv2.imread(str(out))
    assert f"anonymised into {out}" in result.stdout and covered.shape == original.shape
    assert np.abs(covered.astype(int) - original.astype(int)).max() > 50  # faces were covered
    for target in (tmp_path / "absent" / "covered.jpg", tmp_path / "covered.xyz"):
        error = run_failing_example("anonymise.py", photo_paths[0], "-o", str(target), "-m", str(extd64_onnx))
        assert error.startswith(f"error: could not write {target}") and not target.exists()
    before = out.read_bytes()  # the output named as the input: refused, the original kept
    for name, args in (("anonymise.py", (str(out), "-o", str(out))),
                       ("detect_faces.py", ("m.onnx", str(out), "-o", str(out)))):
        error = run_failing_example(name, *args)
        assert error.startswith(f"error: the output {out} is an input: writing it would replace the original")
        assert out.read_bytes() == before


def test_anonymise_tiles_big_photos_so_small_faces_are_covered(extd64_onnx, tmp_path):
    """A 3072 x 1980 photo (a WIDER hockey crowd, three by three): tiled, more of its faces get blurred than when
    it is scaled down to 1920 px first (--no-tile); faces of 12 px and more of one copy, ground truth from WIDER."""
    import warnings

    from edgeface.data.wider import read_wider

    photo = need(SHARED / "data" / "widerface" / "WIDER_val" / "images" / "58--Hockey"
                 / "58_Hockey_icehockey_puck_58_680.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only some of the val images are in ../shared
        record = next(r for r in read_wider(photo.parents[3], "val") if r.image_path == str(photo))
    faces = record.boxes[~record.ignore]
    faces = faces[faces[:, 2] - faces[:, 0] >= 12].astype(int)
    big = np.tile(cv2.imread(str(photo)), (3, 3, 1))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "crowd.png"), big)
    covered = {}
    for flags in ((), ("--no-tile",)):
        out = tmp_path / f"out{len(flags)}"
        run_example("anonymise.py", str(tmp_path / "in"), "-o", str(out), "-m", str(extd64_onnx), *flags)
        changed = np.abs(cv2.imread(str(out / "crowd.png")).astype(int) - big).mean(axis=2) > 3
        covered[flags] = np.mean([changed[y1:y2, x1:x2].mean() > 0.5 for x1, y1, x2, y2 in faces])
    assert len(faces) > 50 and covered[()] > covered[("--no-tile",)] + 0.1, covered


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_explains_itself_with_help(name):
    result = run_example(name, "--help")
    assert result.stdout.startswith("usage:") and len(result.stdout.splitlines()) > 3


def test_face_tracker_prints_tracks_of_a_video(extd64_onnx, clip):
    result = run_example("face_tracker.py", str(clip), "-m", str(extd64_onnx), "--max-frames", "4")
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"frame {i}" for i in range(4)]
    assert "#1 [" in lines[-1]  # tracks are confirmed from the second frame on


def test_annotate_folder_to_coco(extd64_onnx, photo_paths, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photo_paths[:3]:
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    out = tmp_path / "coco.json"
    run_example("annotate_coco.py", str(folder), "-o", str(out), "-m", str(extd64_onnx))
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 3 and coco["categories"][0]["name"] == "face" and coco["info"]["complete"]
    assert len(coco["annotations"]) > 0
    for ann in coco["annotations"]:
        image = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.01 and ann["area"] == pytest.approx(w * h, rel=1e-3)


def test_annotate_coco_stopped_by_ctrl_c_writes_the_images_done(photo_paths, tmp_path, monkeypatch, capsys):
    """Ctrl-C an hour into a folder: the file holds the images done, marked incomplete, and the exit status is 130
    (the annotations were lost with the traceback)."""
    import annotate_coco

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photo_paths[:4]:
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    calls = []
    detect = edgeface.Detector.__call__

    def detect_until_stopped(self, image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return detect(self, image)

    monkeypatch.setattr(edgeface.Detector, "__call__", detect_until_stopped)
    out = tmp_path / "coco.json"
    monkeypatch.setattr(sys, "argv", ["annotate_coco.py", str(folder), "-o", str(out), "-m", "fast"])
    with pytest.raises(SystemExit) as stopped:
        annotate_coco.main()
    assert stopped.value.code == 130 and "interrupted" in capsys.readouterr().err
    coco = json.loads(out.read_text())
    assert coco["info"]["complete"] is False and len(coco["images"]) == 2
    assert {ann["image_id"] for ann in coco["annotations"]} <= {image["id"] for image in coco["images"]}


def test_tracker_keeps_ids_smooths_and_bridges_gaps():
    from face_tracker import IouTracker

    tracker = IouTracker(smoothing=0.5, max_missed=2, min_hits=2)

    def frame(*boxes):
        return edgeface.Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32))

    assert tracker.update(frame([0, 0, 10, 10], [50, 50, 60, 60])) == []  # not confirmed yet
    tracks = tracker.update(frame([2, 0, 12, 10], [50, 50, 60, 60]))
    assert sorted(t.id for t in tracks) == [1, 2]
    np.testing.assert_allclose(next(t for t in tracks if t.id == 1).box, [1, 0, 11, 10])  # smoothed
    assert [t.id for t in tracker.update(frame([50, 51, 60, 61]))] == [2]  # face 1 missed a frame
    tracks = tracker.update(frame([2, 0, 12, 10], [50, 51, 60, 61]))
    assert sorted(t.id for t in tracks) == [1, 2]  # and came back with its id
    for _ in range(3):
        tracker.update(frame())
    assert tracker.tracks == [] and tracker.update(frame([0, 0, 10, 10])) == []  # new face, new id later


def test_triton_repository(extd64_onnx, tmp_path):
    from triton_repository import write_repository

    folder = write_repository(extd64_onnx, tmp_path / "repo", max_batch=4)
    config = (folder / "config.pbtxt").read_text()
    assert (folder / "1" / "model.onnx").read_bytes() == extd64_onnx.read_bytes()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 4" in config
    assert 'dims: [ 3, -1, -1 ]' in config and "dynamic_batching" in config
    spec_json = json.loads(config.split("string_value: ")[1].rsplit(" }", 2)[0])
    assert edgeface.ModelSpec.from_json(spec_json).name == "extd64"
