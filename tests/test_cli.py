"""The command line, run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import AUTHORS_WEIGHTS, need


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeface", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("detect", "info", "convert", "export"):
        assert command in result.stdout
    assert "--check-images" in run("export", "onnx", "--help").stdout


def test_version_names_edgeface_and_what_it_runs_on():
    import onnxruntime

    import edgeface

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"edgeface {edgeface.__version__} (Python {sys.version.split()[0]}, ")
    assert f"  ONNX Runtime: {onnxruntime.__version__}\n" in result.stdout
    assert re.search(r"^  TensorRT: .+$", result.stdout, re.MULTILINE)  # a version, or that it is not installed


def test_version_tells_a_module_without_package_metadata_from_a_missing_one(monkeypatch):
    """JetPack installs TensorRT's Python module with apt, without pip's metadata: present, version unknown."""
    from edgeface import cli

    monkeypatch.setattr(cli, "RUNTIME_PACKAGES", (("apt-installed", ("no-such-distribution",), "json"),
                                                  ("absent", ("no-such-distribution",), "no_such_module.sub"),
                                                  ("pip-installed", ("numpy", "json"), "numpy")))
    lines = cli.version_text().splitlines()[1:]
    assert lines == ["  apt-installed: installed (version not recorded)", "  absent: not installed",
                     f"  pip-installed: {np.__version__}"]


def test_info_on_a_registry_name_and_a_model_file(extd64_onnx):
    pytest.importorskip("torch")
    result = run("info", "extd64", "--json")
    info = json.loads(result.stdout)
    assert info["parameters"] == 162_352 and info["gmacs_640x480"] == pytest.approx(10.06, rel=0.01)
    result = run("info", str(extd64_onnx))
    assert result.returncode == 0 and "authors-release" in result.stdout and "162,352" in result.stdout
    result = run("info", "nosuchmodel")
    assert result.returncode == 1 and "neither a model file nor a registered model" in result.stderr


def test_info_reads_an_engine_without_tensorrt(tmp_path):
    """What an engine file was built for (the question when it will not load) is in its header, which needs
    neither TensorRT nor a GPU: `info` shows it (it used to stop at "TensorRT is not installed here")."""
    from edgeface.backends.engine_file import EngineHeader, write_engine_file
    from edgeface.spec import ModelSpec

    spec = ModelSpec(name="extd32").with_input_shape((640, 480), batch=1)
    write_engine_file(tmp_path / "m.engine", EngineHeader(spec, "10.3.0", compute_capability="8.7",
                                                          device_name="Jetson AGX Orin", precision="fp16"), b"plan")
    result = run("info", str(tmp_path / "m.engine"))
    assert result.returncode == 0, result.stderr
    assert "engine:      TensorRT 10.3.0, fp16, for Jetson AGX Orin (sm_87)" in result.stdout
    assert "640x480, batch 1" in result.stdout and "frames:" not in result.stdout  # static: nothing resized
    info = json.loads(run("info", str(tmp_path / "m.engine"), "--json").stdout)
    assert info["engine"] == {"tensorrt_flavour": "tensorrt", "tensorrt_version": "10.3.0",
                              "compute_capability": "8.7", "device_name": "Jetson AGX Orin", "precision": "fp16"}


def test_warnings_are_one_line_and_export_options_are_checked_before_the_model_loads(tmp_path):
    pytest.importorskip("torch")
    result = run("export", "onnx", "extd32", "-o", str(tmp_path / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert "\nwarning: no check images given: checking parity on synthetic frames" in result.stderr
    assert "UserWarning" not in result.stderr and "export_onnx(" not in result.stderr  # not Python's format
    result = run("export", "onnx", "extd32", "-o", str(tmp_path / "m2.onnx"), "--opset", "5")
    assert result.returncode == 1 and "error: opset must be between 13" in result.stderr
    assert "registry name" not in result.stderr and not (tmp_path / "m2.onnx").exists()


@pytest.mark.parametrize("blocked, args, message", [
    ("torch", ("train", "--config", "recipe.yaml"), "needs torch, which is not installed: pip install "
                                                    "'edgeface[train]'"),
    ("torch", ("export", "onnx", "extd32", "-o", "m.onnx"), "pip install 'edgeface[export]'"),
    ("onnx", ("export", "int8", "m.onnx", "-o", "q.onnx", "--calibration-images", "."), "needs onnx, which is not "
                                                                                     "installed: pip install "
                                                                                     "'edgeface[export]'"),
    ("scipy", ("eval-wider", "submission", "--ground-truth", "gt"), "needs scipy, which is not installed: pip "
                                                                   "install 'edgeface[eval]'"),
])
def test_a_command_whose_extra_is_not_installed_says_which_to_install(blocked, args, message, tmp_path):
    (tmp_path / "recipe.yaml").write_text("model: extd32\n")
    (tmp_path / "gt").mkdir()
    (tmp_path / "submission" / "event").mkdir(parents=True)
    script = (f"import sys; sys.modules[{blocked!r}] = None  # as in a runtime-only install\n"
              "from edgeface.cli import main\nsys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr


def test_export_int8_quantises_an_export_for_the_cpu_and_checks_it_on_held_out_photos(tmp_path, photo_paths, capsys):
    """`edgeface export int8`: the shipped fast model quantised on two photos, its heads in FP32 by default, checked
    against FP32 on two others; bad options and modules are one-line errors that leave no file."""
    import onnx

    from edgeface.cli import main
    from edgeface.export.precision import HEADS, nodes_of
    from edgeface.weights import FAST_MODEL

    out = tmp_path / "fast_int8.onnx"
    assert main(["export", "int8", str(FAST_MODEL), "-o", str(out), "--calibration", "minmax",
                 "--calibration-images", *photo_paths[:2], "--check-images", *photo_paths[2:4]]) == 0
    printed = capsys.readouterr()
    assert "calibrating on 2 photos (minmax ranges; FP32: loc, conf)" in printed.err
    assert "fast_int8.onnx: INT8 for ONNX Runtime on CPUs" in printed.out
    assert "int8 vs fp32 on 2 held-out images" in printed.out and "of FP32's faces kept" in printed.out
    model = onnx.load(out)
    producers = {name: n.op_type for n in model.graph.node for name in n.output}
    convs = {n.name: producers.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv"}  # weights
    float_convs = {name for name, source in convs.items() if source != "DequantizeLinear"}
    assert float_convs == set(nodes_of(model, HEADS)) & set(convs) and len(float_convs) == 12
    # percentile ranges (the default): ONNX Runtime's calibrator prints a line per image, kept out of stdout
    assert main(["export", "int8", str(FAST_MODEL), "-o", str(tmp_path / "percentile.onnx"),
                 "--calibration-images", *photo_paths[:2]]) == 0
    printed = capsys.readouterr()
    assert "calibrating on 2 photos (percentile ranges; FP32: loc, conf)" in printed.err
    assert len(printed.out.splitlines()) == 1 and "percentile.onnx: INT8 for ONNX Runtime" in printed.out
    assert main(["export", "int8", str(FAST_MODEL), "-o", str(tmp_path / "x.onnx"), "--keep-float", "backbone",
                 "--calibration-images", photo_paths[0]]) == 1
    assert "error: no operations of module(s) backbone in this ONNX graph" in capsys.readouterr().err
    assert main(["export", "int8", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.onnx"),
                 "--calibration-images", photo_paths[0]]) == 1
    assert "missing.onnx: no such ONNX file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "int8", str(FAST_MODEL), "-o", str(tmp_path / "x.onnx"), "--calibration", "entropy",
              "--calibration-images", photo_paths[0]])
    assert "calibration must be one of minmax, percentile, got 'entropy'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast_int8.onnx", "percentile.onnx"]


def test_convert_export_and_detect_end_to_end(tmp_path, photo_paths):
    pytest.importorskip("torch")
    checkpoint, model = tmp_path / "extd32.pt", tmp_path / "extd32.onnx"
    result = run("convert", str(need(AUTHORS_WEIGHTS / "EXTD_32.pth")), "-o", str(checkpoint))
    assert result.returncode == 0 and "extd32" in result.stdout
    result = run("export", "onnx", str(checkpoint), "-o", str(model), "--check-images", *photo_paths[:2])
    assert result.returncode == 0, result.stderr
    assert "detections identical" in result.stdout

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photo_paths[:3]:
        (folder / path.split("/")[-1]).write_bytes(open(path, "rb").read())
    (folder / "broken.jpg").write_bytes(b"not an image")
    video = tmp_path / "clip.mp4"
    frame = cv2.resize(cv2.imread(photo_paths[0]), (320, 240))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for shift in range(5):
        writer.write(np.roll(frame, shift * 4, axis=1))
    writer.release()
    truncated = tmp_path / "cut.avi"  # a recording cut short: its header counts 20 frames, half are there
    writer = cv2.VideoWriter(str(truncated), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(20):
        writer.write(frame)
    writer.release()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    out = tmp_path / "out"
    result = run("detect", "-m", str(model), str(folder), str(video), str(truncated), "-o", str(out), "-q")
    assert result.returncode == 2, result.stderr  # one broken input: reported, the rest done
    assert "broken.jpg" in result.stderr and "cannot decode" in result.stderr
    assert "cut.avi: decoding stopped after" in result.stderr and "of its 20 frames" in result.stderr
    assert re.search(r"5/6 inputs done, \d+ faces in images, \d+ in \d+ video frames, 1 flagged", result.stdout)
    report = json.loads((out / "detections.json").read_text())
    assert report["model"] == "extd32"
    results = report["results"]
    assert results[str(folder / "broken.jpg")]["error"]
    assert sum(len(v["faces"]) for k, v in results.items() if k.endswith(".jpg")) > 0
    frames = results[str(video)]["frames"]
    assert [f["frame"] for f in frames] == list(range(5))
    # annotated copies mirror the inputs below their common folder (here tmp_path)
    assert (out / "clip.mp4").stat().st_size > 0 and len(list((out / "photos").glob("*.jpg"))) == 3


def test_detect_tiles_big_images_on_request(tmp_path):
    """--tile: a crowd photo larger than --max-side runs in tiles at full resolution and finds more faces."""
    from edgeface.weights import DEFAULT_MODEL

    need(DEFAULT_MODEL)
    photo = need(AUTHORS_WEIGHTS.parents[1] / "data" / "widerface" / "WIDER_val" / "images" / "58--Hockey"
                 / "58_Hockey_icehockey_puck_58_680.jpg")
    found = {}
    for tile in (False, True):
        out = tmp_path / f"tile_{tile}"
        result = run("detect", str(photo), "--max-side", "512", *(["--tile"] if tile else []), "-o", str(out), "-q",
                     "--no-draw")
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "detections.json").read_text())
        assert report["tile"] is tile and report["max_side"] == 512
        found[tile] = len(report["results"][str(photo)]["faces"])
    assert found[True] > 2 * found[False] > 0
    result = run("detect", str(photo), "--max-side", "0", "--tile", "-o", str(tmp_path / "x"))
    assert result.returncode == 1 and "tile splits frames larger than max_side" in result.stderr
    assert "Traceback" not in result.stderr


def test_detect_with_a_missing_model_fails_cleanly(tmp_path):
    result = run("detect", "-m", str(tmp_path / "none.onnx"), str(tmp_path))
    assert result.returncode == 1 and "no such model file" in result.stderr


def test_data_show_renders_augmented_samples(tmp_path):
    root = need(AUTHORS_WEIGHTS.parents[1] / "data" / "facemask")
    out = tmp_path / "aug.png"
    result = run("data", "show", "--format", "facemask", f"root={root}", "split=train", "-o", str(out),
                 "--count", "6", "--size", "128")
    assert result.returncode == 0, result.stderr
    grid = cv2.imread(str(out))
    assert grid.shape == (256, 512, 3)  # 6 tiles in 4 columns: two rows, the last padded
    assert (grid[..., 1] == 255).any()  # green boxes were drawn
    for option, key in (("--blur", "blur_prob"), ("--occlude", "occlude_prob"),
                        ("--background", "background_crop_prob")):
        changed = tmp_path / f"{key}.png"
        assert run("data", "show", "--format", "facemask", f"root={root}", "split=train", "-o", str(changed),
                   "--count", "6", "--size", "128", option, "1").returncode == 0
        assert not np.array_equal(cv2.imread(str(changed)), grid)
        result = run("data", "show", "--format", "facemask", f"root={root}", option, "2")
        assert result.returncode == 2 and f"{key} is a share of samples in [0, 1], got 2" in result.stderr
    for option, value, message in (("--count", "0", "samples must be at least 1, got 0"),
                                   ("--size", "5", "input side (input_size) must be between 32 and 8192")):
        result = run("data", "show", "--format", "facemask", f"root={root}", option, value)
        assert result.returncode == 2 and message in result.stderr
    # a grid it could not write is an error, not a success line
    for target in (tmp_path / "absent" / "aug.png", tmp_path / "aug.xyz"):
        result = run("data", "show", "--format", "facemask", f"root={root}", "split=train", "-o", str(target),
                     "--count", "1", "--size", "128")
        assert result.returncode == 1 and f"write {target}" in result.stderr and not target.exists()
    # boxes a dataset marks ignored are drawn in orange (the same samples as with no boxes: they choose no crop)
    image = next(p for p in sorted((root / "images").iterdir()))
    grids = []
    for boxes in ("", "".join(f"<box left='{x}' top='20' width='60' height='60' ignore='1'/>" for x in (10, 90))):
        xml = tmp_path / "ignored.xml"
        xml.write_text(f"<dataset><images><image file='{image}'>{boxes}</image></images></dataset>")
        assert run("data", "show", "--format", "imglab", f"xml={xml}", "-o", str(out), "--count", "4",
                   "--size", "128").returncode == 0
        grids.append(cv2.imread(str(out)).astype(int))
    drawn = (grids[0] != grids[1]).any(axis=2)
    blue, green, red = grids[1][drawn].mean(axis=0)
    assert drawn.sum() > 50 and red > green + 30 > blue + 60  # orange (blended with the photo at the edges)
