"""The runtime: torch and ONNX Runtime give the same faces, recall on real photos, and bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgeface
from conftest import DLIB_FACES, need
from edgeface import BackendError, Detector, ImageError, ModelFileError, OptionError
from edgeface.core.boxes import box_iou
from edgeface.data import read_imglab

SCORE_THRESHOLD = 0.5  # the spec default; recall is reported at it


def recall_at_05(records, detector) -> float:
    found = total = 0
    for record in records:
        dets = detector(edgeface.read_image(record.image_path))
        iou = box_iou(record.boxes, dets.boxes) if len(dets) else np.zeros((len(record.boxes), 0))
        taken: set[int] = set()
        for row in iou:  # one detection per face
            for j in np.argsort(-row):
                if row[j] >= 0.5 and j not in taken:
                    taken.add(int(j))
                    found += 1
                    break
        total += len(record.boxes)
    return found / total


def test_authors_extd64_finds_the_dlib_test_faces_on_torch_and_onnx(extd64_pt, extd64_onnx, dlib_testing):
    records = read_imglab(dlib_testing)
    assert sum(len(r.boxes) for r in records) == 25
    on_torch = Detector(extd64_pt, score_threshold=SCORE_THRESHOLD)
    on_onnx = Detector(extd64_onnx, score_threshold=SCORE_THRESHOLD)
    assert on_torch.backend.name == "torch:cpu" and on_onnx.backend.name == "onnxruntime:CPUExecutionProvider"
    assert recall_at_05(records, on_torch) >= 0.8
    assert recall_at_05(records, on_onnx) >= 0.8
    for record in records:
        image = edgeface.read_image(record.image_path)
        a, b = on_torch(image), on_onnx(image)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_batch_letterbox_and_thresholds(extd64_onnx, photo_paths):
    detector = Detector(extd64_onnx)
    images = [edgeface.read_image(p) for p in photo_paths[:4]]
    images.append(images[0].copy())  # same size as the first: shares its batch
    singles = [detector.detect(i) for i in images]
    for single, batched in zip(singles, detector.detect_batch(images)):
        np.testing.assert_allclose(single.boxes, batched.boxes, atol=1e-2)
    boxed = Detector(extd64_onnx, input_size=(640, 640))
    for image, native in zip(images, singles):
        dets = boxed(image)
        assert (dets.boxes[:, 2] <= image.shape[1]).all() and (dets.boxes[:, 3] <= image.shape[0]).all()
        if len(native):  # the same faces, in source pixels, whether letterboxed or not
            assert (box_iou(native.boxes, dets.boxes).max(axis=1) > 0.6).mean() >= 0.8
    # image files are read as read_image reads them, beside frames in one batch
    for single, from_file in zip(singles, detector.detect_batch([Path(photo_paths[0]), photo_paths[1], images[2]])):
        np.testing.assert_array_equal(single.boxes, from_file.boxes)
    strict = Detector(extd64_onnx, score_threshold=0.999, max_detections=2)
    assert all(len(strict(i)) <= 2 for i in images)
    assert all((strict(i).scores > 0.999).all() for i in images)


def test_bad_frames_get_clear_errors(extd64_onnx, tmp_path):
    detector = Detector(extd64_onnx)
    frame = np.zeros((48, 64, 3), np.uint8)
    cases = [
        (frame.astype(np.float32), r"uint8 image, got float32; convert with np.clip"),
        (frame.astype(np.uint16), r"16-bit image becomes 8-bit with \(image >> 8\)"),
        (frame[:, :, 0], "H x W x 3"),
        (np.zeros((48, 64, 4), np.uint8), "BGRA"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        (np.array(7, np.uint8), r"got shape \(\) \(a scalar\); a frame is rows x columns x 3"),
        (b"\xff\xd8 jpeg bytes", "NumPy array .* or an image file's path, got bytes; decode .* cv2.imdecode"),
        ([[0, 0, 0]], "got list; convert it to a BGR uint8 array"),
        (None, "got NoneType; cv2.imread returns None for a file it cannot read"),
        (np.zeros((2, 48, 64, 3), np.uint8), "shape 2x48x64x3; for several frames .* detect_batch"),
        (np.zeros((3, 48, 64), np.uint8), r"channels-first .*image.transpose\(1, 2, 0\)"),
        (str(tmp_path / "missing.jpg"), "no such image file"),
        (tmp_path, "is a folder"),
    ]
    for bad, message in cases:
        with pytest.raises(ImageError, match=message):
            detector.detect(bad)
    assert len(detector.detect_batch([])) == 0
    with pytest.raises(ImageError, match="^batch item 2: no such image file"):  # a batch says which item
        detector.detect_batch([frame, frame, tmp_path / "missing.jpg"])
    with pytest.raises(ImageError, match="^expected a uint8 image"):  # a batch of one says nothing more
        detector.detect_batch([frame.astype(np.float32)])
    for one in (frame, str(tmp_path / "a.jpg")):  # one frame where a batch belongs
        with pytest.raises(ImageError, match="^detect_batch takes a sequence of frames .*call detect\\(frame\\)$"):
            detector.detect_batch(one)
    stacked = detector.detect_batch(np.stack([frame, frame]))  # an N x H x W x 3 array is a batch
    assert len(stacked) == 2 and np.array_equal(stacked[1].boxes, detector.detect(frame).boxes)
    with pytest.raises(ImageError, match="no such image"):
        edgeface.read_image(tmp_path / "missing.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError, match="folder.jpg is a folder, not an image file"):
        edgeface.read_image(tmp_path / "folder.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError, match="cannot decode"):
        edgeface.read_image(corrupt)
    bomb = tmp_path / "bomb.png"  # a PNG header claiming 100,000 x 100,000 pixels: OpenCV raises, not returns None
    bomb.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(ImageError, match="bomb.png: OpenCV refused it \\(.*pixels"):
        edgeface.read_image(bomb)


@pytest.mark.parametrize("name, data, reason", [
    ("empty.jpg", b"", "the file is empty"),
    ("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC .* convert it to JPEG"),
    ("photo.avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64), "AVIF photo"),
    ("scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF document"),
    ("saved.jpg", b"\n<!DOCTYPE html><html><body>Not Found</body></html>", "a web page saved under an image's name"),
    ("noise.jpg", bytes(range(256)) * 4, "not an image OpenCV can read, or the file is corrupt"),
])
def test_an_undecodable_file_says_what_it_is(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageError, match=f"cannot decode .*{name}: .*{reason}"):
        edgeface.read_image(tmp_path / name)


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_model_files_get_clear_errors(extd64_onnx, tmp_path):
    import onnx

    with pytest.raises(ModelFileError, match="no such model file") as missing:
        Detector(tmp_path / "missing.onnx")
    assert "shipped" not in str(missing.value)
    with pytest.raises(ModelFileError, match="no such model file: fastt \\(nor a shipped model: 'default', 'fast'"
                       ".*did you mean 'fast'\\?"):
        Detector("fastt")  # a mistyped short name
    with pytest.raises(ModelFileError, match="shipped model: 'default'.*'fast-int8'\\)$"):
        Detector("yunet")  # nothing like a shipped name: no guess
    with pytest.raises(ModelFileError, match="is a folder, not a model file: name the ONNX"):
        Detector(tmp_path)
    for wrong in (3, ["fast"], b"fast"):  # not a name, a path nor a backend: said before anything is opened
        with pytest.raises(ModelFileError, match=f"shipped model's name \\('default'.*got {type(wrong).__name__}$"):
            Detector(wrong)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(extd64_onnx.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="cannot load"):
        Detector(corrupt)
    foreign = onnx.load(extd64_onnx)
    del foreign.metadata_props[:]
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(ModelFileError, match="without an edgeface spec"):
        Detector(tmp_path / "foreign.onnx")
    three_outputs = onnx.load(extd64_onnx)  # a graph that is not an edgeface export, with an edgeface spec
    three_outputs.graph.output.append(three_outputs.graph.output[0])
    three_outputs.graph.output[2].name = three_outputs.graph.input[0].name
    onnx.save(three_outputs, tmp_path / "three.onnx")
    with pytest.raises(ModelFileError, match=r"three.onnx has inputs \(\S+ tensor\(float\) of rank 4\) and 3 outputs, "
                                             "where edgeface exports have one float32 N x 3 x H x W input and two"):
        Detector(tmp_path / "three.onnx")  # (it was a ValueError unpacking the outputs at the first frame)
    engine = tmp_path / "extd64.engine"
    engine.write_bytes(b"a bare TensorRT plan")
    with pytest.raises(ModelFileError, match="not an edgeface engine"):
        Detector(engine)
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model file type '.tflite'; .*TensorRT engine \\(.engine"):
        Detector(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="device must be one of"):
        Detector(extd64_onnx, device="tpu")


def test_a_gpu_provider_that_does_not_run_is_an_error(extd64_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has a CUDA provider; the fallback check needs one without")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(BackendError, match="asked for CUDAExecutionProvider but .* runs CPUExecutionProvider"):
            Detector(extd64_onnx, device=device)


def test_a_gpu_index_reaches_every_gpu_provider():
    from edgeface.backends.onnx_backend import providers

    assert providers("cpu") == (["CPUExecutionProvider"], [{}])
    assert providers("cuda") == (["CUDAExecutionProvider", "CPUExecutionProvider"], [{}, {}])
    assert providers("cuda:2") == (["CUDAExecutionProvider", "CPUExecutionProvider"], [{"device_id": 2}, {}])
    assert providers("tensorrt") == (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                                     [{}, {}, {}])
    with pytest.raises(OptionError, match="device must be one of"):
        providers("gpu")
    from edgeface.options import gpu_ordinal

    assert [gpu_ordinal(d) for d in ("cpu", "cuda", "cuda:0", "cuda:12", "tensorrt")] == [None, None, 0, 12, None]


def test_onnx_runtime_path_works_without_torch(extd64_onnx, photo_paths):
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import edgeface
        dets = edgeface.Detector({str(extd64_onnx)!r})(edgeface.read_image({photo_paths[0]!r}))
        assert "torch" not in sys.modules
        print(len(dets))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0


def test_checkpoint_without_torch_says_what_to_install(extd64_pt):
    script = textwrap.dedent(f"""
        import sys, importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "torch" else real(name, *a)
        import edgeface
        try:
            edgeface.Detector({str(extd64_pt)!r})
        except edgeface.BackendError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "torch is not installed" in result.stdout, result.stderr


def test_fixed_shape_export_rejects_another_input_size(tmp_path):
    pytest.importorskip("torch")
    from edgeface.export.onnx_export import export_onnx, load_model

    model, spec, _ = load_model("extd32")
    path = tmp_path / "fixed.onnx"
    export_onnx(model, spec, path, input_size=(160, 120), batch=2, compare_detections=False,
                check_images=[np.full((120, 160, 3), 128, np.uint8)])
    detector = Detector(path)
    assert detector.input_size == (160, 120) and detector.spec.input.batch == 2
    frames = [np.full((90, 200, 3), v, np.uint8) for v in (0, 80, 160)]  # 3 frames: batches of 2, padded
    assert len(detector.detect_batch(frames)) == 3
    with pytest.raises(ValueError, match="exported for input 160x120"):
        Detector(path, input_size=(320, 240))
    image = cv2.resize(frames[0], (30, 20))
    assert isinstance(detector(image), edgeface.Detections)


def test_detector_without_a_path_uses_the_shipped_model_or_says_none_ships():
    from edgeface.weights import DEFAULT_MODEL

    if DEFAULT_MODEL.exists():
        assert len(Detector().detect(np.zeros((64, 64, 3), np.uint8))) == 0
    else:
        with pytest.raises(ModelFileError, match="ships no default model"):
            Detector()


def test_torch_fp16_needs_a_cuda_device(extd64_pt):
    from edgeface.backends.torch_backend import TorchBackend

    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TorchBackend(str(extd64_pt), device="cpu", fp16=True)


def test_a_checkpoint_on_a_cuda_device_torch_cannot_use_is_a_backend_error(extd64_pt):
    import torch

    from edgeface.errors import BackendError

    if torch.cuda.is_available():
        wanted, message = f"cuda:{torch.cuda.device_count()}", "CUDA GPU\\(s\\)"  # one past the last GPU
    else:
        wanted, message = "cuda", "is built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU"
    with pytest.raises(BackendError, match=f"device '{wanted}' asked for, but torch .*{message}"):
        Detector(extd64_pt, device=wanted)


def test_torch_backend_says_how_many_boxes_it_writes(extd64_pt):
    """What the GPU pipeline checks against its plan's anchors before the network may write into its buffers."""
    from edgeface.backends.torch_backend import TorchBackend
    from edgeface.core.anchors import generate_anchors

    backend = TorchBackend(str(extd64_pt))
    assert backend.output_anchors(64, 48) == len(generate_anchors(backend.spec.anchors, 64, 48)) > 0


def test_folded_channels_last_network_keeps_the_outputs_and_training_models_are_left_alone(extd64_pt, photo_paths):
    import torch

    from edgeface.backends.torch_backend import TorchBackend, fold_batchnorm
    from edgeface.core.image import read_image
    from edgeface.models.registry import create_model

    folded, kept = TorchBackend(str(extd64_pt)), TorchBackend(str(extd64_pt), fold_bn=False, channels_last=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    convs = [m.weight for m in folded.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert folded.channels_last and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in kept.model.modules()) == 20
    batch, _ = Detector(kept).prepare([read_image(photo_paths[0])])
    for a, b in zip(folded.run(batch), kept.run(batch)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    training = create_model("extd32").train()
    assert fold_batchnorm(training) == 0  # batch statistics are not constants: nothing to fold


def _detect_in_worker(detector: Detector, path: str) -> list:
    return detector.detect(path).to_list()


def test_a_detector_pickles_as_its_model_and_options_for_worker_processes(photo_paths, tmp_path):
    """multiprocessing's spawn (macOS and Windows), Ray and Dask pickle what they send a worker: a Detector goes as
    its model file and options, decode settings changed after construction included, and the worker finds the
    same faces (ONNX Runtime's session itself cannot be pickled)."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from edgeface.backends import open_backend
    from edgeface.spec import TestTimeSpec
    from edgeface.weights import shipped_model

    detector = Detector("fast", max_side=800, min_side=0, test_time=TestTimeSpec())
    detector.score_threshold, detector.nms_iou = 0.3, 0.4
    copy = pickle.loads(pickle.dumps(detector))
    assert (copy.score_threshold, copy.nms_iou, copy.max_detections) == (0.3, 0.4, detector.max_detections)
    assert (copy.max_side, copy.min_side, copy.test_time, copy.tile) == (800, None, detector.test_time, False)
    path = str(photo_paths[0])
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_detect_in_worker, detector, path).result() == detector.detect(path).to_list()
    with pytest.raises(TypeError, match="made from an open Backend cannot be pickled; make it from a model file"):
        pickle.dumps(Detector(open_backend(str(shipped_model("fast")))))


def test_a_detector_from_a_relative_path_opens_in_a_worker_running_elsewhere(photo_paths, tmp_path, monkeypatch):
    """A worker process may start in another folder than its parent: the pickled detector names its model file
    by the absolute path it had when it was made."""
    import pickle
    import shutil

    from edgeface.weights import shipped_model

    (tmp_path / "models").mkdir()
    shutil.copy(shipped_model("fast"), tmp_path / "models" / "fast.onnx")
    monkeypatch.chdir(tmp_path)
    data = pickle.dumps(Detector("models/fast.onnx"))
    monkeypatch.chdir(Path(photo_paths[0]).parent)
    path = str(photo_paths[0])
    assert pickle.loads(data).detect(path).to_list() == Detector("fast").detect(path).to_list()


def test_one_detector_serves_several_threads_at_once(photo_paths):
    """A web server's or camera app's worker threads may share one detector: each frame's faces are what it gets
    alone (frames of different sizes interleaved, so no per-size state can leak between them)."""
    from concurrent.futures import ThreadPoolExecutor

    detector = Detector("fast")
    frames = [edgeface.read_image(p) for p in photo_paths[:4]]
    frames += [cv2.resize(frame, None, fx=0.5, fy=0.5) for frame in frames]
    alone = [detector(frame).to_list() for frame in frames]
    with ThreadPoolExecutor(4) as pool:
        assert [d.to_list() for d in pool.map(detector, frames * 3)] == alone * 3


def test_the_readmes_python_example_runs_as_written(tmp_path, monkeypatch):
    """The first thing a new user copies: README's "Use" snippet, run on a real group photo."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "edgeface.Detector()" in snippet and 'read_image("group.jpg")' in snippet
    (tmp_path / "group.jpg").write_bytes(need(DLIB_FACES / "2007_007763.jpg").read_bytes())  # seven faces
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert len(scope["faces"]) == 7 and cv2.imread("faces.jpg").shape == scope["image"].shape
    regions = scope["faces"].regions((500, 375), margin=0.2).tolist()
    assert [t.shape[:2] for t in scope["thumbnails"]] == [(y2 - y1, x2 - x1) for x1, y1, x2, y2 in regions]
