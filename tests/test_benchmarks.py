"""The benchmark entry point runs, prints its table, and writes JSON naming the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DLIB_FACES, SHARED, need

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path, *args: str, shared: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m benchmarks ARGS` writing its results under `tmp_path`, reading `shared` as ../shared when given;
    `check`: assert that it succeeded."""
    env = {**os.environ, "EDGEFACE_RESULTS_DIR": str(tmp_path), **({"EDGEFACE_SHARED": str(shared)} if shared else {})}
    result = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True,
                            timeout=600, cwd=ROOT, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_size_and_latency_tables(tmp_path):
    pytest.importorskip("torch")
    out = bench(tmp_path, "size", "--models", "extd64", "extd32-ssd").stdout
    assert "| extd64 | 162,352 | 10.06 | 13.41 |" in out
    size = json.loads((tmp_path / "model_size.json").read_text())
    assert size["machine"]["cores"] and [r["model"] for r in size["rows"]] == ["extd64", "extd32-ssd"]
    bench(tmp_path, "latency", "--models", "extd32-relu", "--backends", "onnxruntime", "torch-plain", "--runs", "2",
          "--warmup", "0")
    latency = json.loads((tmp_path / "latency_cpu.json").read_text())
    row = latency["rows"][0]
    assert [r["backend"] for r in latency["rows"]] == ["onnxruntime", "torch-plain"]
    assert row["network_ms"] > 0 and row["total_ms"] >= row["network_ms"]
    assert "Machine:" in (tmp_path / "latency_cpu.md").read_text()


def test_machine_line_names_the_int8_dot_product_instructions():
    """INT8 scores depend on them (AVX2 without VNNI can saturate), so every results file records them."""
    from benchmarks.machine import int8_dot_product, machine_line

    zen3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx_vnni\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n"
    assert int8_dot_product(zen3) == []
    assert int8_dot_product(zen4) == ["avx512_vnni", "avx_vnni"]
    assert int8_dot_product(arm) == ["asimddp", "i8mm"]
    machine = {"cpu": "AMD EPYC", "cores": 2, "python": "3.11.7", "date": "2026-12-03 13:22 UTC"}
    assert "(INT8 dot-product instructions: unknown)" in machine_line(machine)  # results written before them
    assert "(INT8 dot-product instructions: none)" in machine_line({**machine, "int8_dot_product": []})
    vnni = {**machine, "int8_dot_product": ["avx512_vnni", "avx_vnni"]}
    assert "instructions: avx512_vnni, avx_vnni)" in machine_line(vnni)
    assert "GPU" not in machine_line(vnni)
    gpu = machine_line({**vnni, "gpu": "NVIDIA H200", "compute_capability": "9.0"})  # GPU results name their GPU
    assert gpu.startswith("GPU NVIDIA H200 (compute capability 9.0), AMD EPYC, 2 cores")


def test_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert ("{size,latency,speed,accuracy,big-photos,postprocess,positives,int8,data-loading,gpu,gpu-suite,"
            "gpu-training,heavy-training,wise-ft,wider-recall,false-boxes,all}") in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (("sizes",), 2, "python -m benchmarks: error: no benchmark called 'sizes'"),
    (("false-boxes", "--models", "lost.onnx"), 1,
     "python -m benchmarks false-boxes: error: no such model file: lost.onnx"),
    (("accuracy", "--models", "lost.onnx"), 1, "python -m benchmarks accuracy: error: no such model file: lost.onnx"),
    (("wise-ft", "--end", "lost.pt"), 1, "python -m benchmarks wise-ft: error: no such model file: lost.pt"),
    (("latency", "--runs", "0"), 2, "argument --runs: must be at least 1, got 0"),  # was a median of nothing
    (("latency", "--warmup", "-1"), 2, "argument --warmup: must be at least 0, got -1"),  # wrote results
])
def test_entry_point_reports_a_users_mistake_in_one_line(args, code, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "EDGEFACE_RESULTS_DIR": str(tmp_path)},
                            timeout=300)
    assert result.returncode == code and message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.json"))  # no results written


def test_data_loading_times_each_stage_and_the_trainers_loader(tmp_path):
    pytest.importorskip("torch")
    need(SHARED / "data" / "facemask")
    recipe = ROOT / "edgeface" / "train" / "recipes" / "facemask_extd32_finetune.yaml"
    bench(tmp_path, "data-loading", "--config", str(recipe), "--workers", "0", "1", "--batches", "1",
          "--samples", "3")
    result = json.loads((tmp_path / "data_loading.json").read_text())
    assert set(result["stage_ms"]) == {"decode", "augment", "targets", "normalise"}
    assert all(v > 0 for v in result["stage_ms"].values()) and set(result["loader_images_per_s"]) == {"0", "1"}
    assert all(v > 0 for v in result["loader_images_per_s"].values())


def test_speed_grid_cell_runs_in_its_own_process(tmp_path):
    pytest.importorskip("torch")
    bench(tmp_path, "speed", "--models", "extd32-relu", "--backends", "onnxruntime-1t", "--sizes", "160x120",
          "--batches", "1", "2", "--runs", "2", "--warmup", "0")
    rows = json.loads((tmp_path / "speed_grid_cpu.json").read_text())["rows"]
    assert [(r["size"], r["batch"]) for r in rows] == [("160x120", 1), ("160x120", 2)]
    assert all(r["total_p99_ms"] >= r["total_ms"] > 0 and 20 < r["peak_rss_mb"] < 4000 for r in rows)


def test_gpu_benchmark_says_what_it_skipped(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--runs", "2"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "EDGEFACE_RESULTS_DIR": str(tmp_path)}, timeout=600)
    assert result.returncode == 0, result.stderr
    if "skipped: no CUDA GPU" not in result.stdout:  # a GPU machine: the table was written
        assert (tmp_path / "gpu.json").exists()


def test_accuracy_benchmark_scores_wider_and_fddb_folders(tmp_path, photo_paths):
    """The official-protocol rows on folders in the real layouts: ground truth as detections scores ~1."""
    pytest.importorskip("scipy")
    import argparse
    import shutil

    import numpy as np

    from benchmarks.accuracy import score_official
    from conftest import SHARED, need
    from edgeface.core.detections import Detections
    from edgeface.data.fddb import ellipse_bounds, read_fddb
    from edgeface.eval.wider import load_ground_truth

    gt = load_ground_truth(need(SHARED / "data/widerface/eval_tools/ground_truth"))[:40:8]
    for image in gt:
        (tmp_path / "WIDER_val" / image.event).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo_paths[0], tmp_path / "WIDER_val" / image.event / f"{image.name}.jpg")
    boxes = {id(image): image.boxes for image in gt}
    queue = list(gt)

    def wider_truth(frame):  # called once per image, in ground-truth order
        b = boxes[id(queue.pop(0))]
        return Detections(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1).astype(np.float32),
                          np.linspace(1, 0.5, len(b)).astype(np.float32))

    args = argparse.Namespace(wider_images=str(tmp_path / "WIDER_val"))
    rows = score_official("wider", gt, wider_truth, args)
    assert [r[:2] for r in rows] == [("WIDER val easy", "AP (official)"), ("WIDER val medium", "AP (official)"),
                                     ("WIDER val hard", "AP (official)"), ("WIDER val all", "AP (every labelled face)")]
    assert all(r[2] > 0.99 for r in rows)

    fold = (need(SHARED / "data/fddb/FDDB-folds") / "FDDB-fold-01-ellipseList.txt").read_text().splitlines()
    (tmp_path / "fddb" / "FDDB-folds").mkdir(parents=True)
    for k in range(1, 11):  # fold 1 cut to its first image; the others empty
        text = "\n".join(fold[: 2 + int(fold[1])]) + "\n" if k == 1 else ""
        (tmp_path / "fddb" / "FDDB-folds" / f"FDDB-fold-{k:02d}-ellipseList.txt").write_text(text)
    image_path = tmp_path / "fddb" / "originalPics" / f"{fold[0]}.jpg"
    image_path.parent.mkdir(parents=True)
    import cv2

    cv2.imwrite(str(image_path), np.zeros((450, 450, 3), np.uint8))
    records = read_fddb(tmp_path / "fddb")
    truth = ellipse_bounds(records[0].ellipses).astype(np.float32)
    rows = score_official("fddb", records, lambda frame: Detections(truth, np.ones(len(truth), np.float32)), args)
    assert rows[0][1] == "TPR @ 1000 FP, discrete" and rows[0][2] == 1.0


def test_plot_labels_do_not_overlap():
    from benchmarks.accuracy import place_labels

    points = [(100, 100)] * 5 + [(395, 300), (390, 302)]  # five on one spot, two near the right edge
    sizes = [(120, 10)] * 7
    bounds = (0, 0, 400, 400)
    boxes = [(x, y - h, x + w, y) for (x, y), (w, h) in zip(place_labels(points, sizes, bounds), sizes)]
    dots = [(x - 6, y - 6, x + 6, y + 6) for x, y in points]  # no label covers any point either
    for i, a in enumerate(boxes):
        assert bounds[0] <= a[0] and a[2] <= bounds[2] and bounds[1] <= a[1] and a[3] <= bounds[3], a
        for b in boxes[i + 1 :] + dots:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_worst_case_postprocessing_benchmark(tmp_path):
    bench(tmp_path, "postprocess", "--models", "shf", "--sizes", "80x60", "--runs", "1")
    rows = json.loads((tmp_path / "postprocess_worst_case.json").read_text())["rows"]
    assert [(r["fires"], r["passes"]) for r in rows] == [(False, 10), (True, 10)]  # 5 short sides x flip
    assert rows[0]["faces"] == 0 < rows[1]["faces"] <= 750 and rows[1]["edgeface_ms"] > 0


def test_heavy_training_script_runs_end_to_end_at_toy_sizes(tmp_path):
    """The one-call GPU training of SHF / HR / SRN (issue 14), at toy sizes on the CPU: it prepares its inputs,
    trains, validates both ways and returns at most 8 parsable files."""
    need(SHARED / "data" / "facemask")
    data, out = tmp_path / "facemask", tmp_path / "out"
    for args in (["--prepare", str(data)], ["--data", str(data), "--out", str(out), "--tiny", "--workers", "0",
                                             "--families", "shf", "hr-res50"]):
        result = subprocess.run([sys.executable, "-m", "benchmarks", "heavy-training", *args], capture_output=True,
                                text=True, cwd=ROOT, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["heavy_training.json", "heavy_training.md", "hr-res50_curves.png", "hr-res50_log.csv",
                     "shf_curves.png", "shf_log.csv"]
    rows = json.loads((out / "heavy_training.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["shf", "hr-res50"]
    assert all(0 <= r["ap50_single"] <= 1 and 0 <= r["ap50_own_strategy"] <= 1 and r["steps"] == 3 for r in rows)
    assert sum(p.stat().st_size for p in out.iterdir()) < 8 * 16 << 20


def small_shared(tmp_path: Path, face_images: int, wider_images: int, holdout_images: int = 0) -> Path:
    """A ../shared with the first `face_images` of the face dataset's val split, `wider_images` WIDER val images
    and `holdout_images` WIDER train images of the benchmarks' held-out fold 0."""
    import shutil

    from benchmarks.machine import HOLDOUT_FOLDS
    from edgeface.data.sources import fold_of

    facemask, widerface = need(SHARED / "data" / "facemask"), need(SHARED / "data" / "widerface")
    root = tmp_path / "shared"
    val = json.loads((facemask / "split.json").read_text())["val"][:face_images]
    for folder, suffix in (("images", ".jpg"), ("annotations", ".xml")):
        (root / "data/facemask" / folder).mkdir(parents=True)
        for stem in val:
            shutil.copy(facemask / folder / f"{stem}{suffix}", root / "data/facemask" / folder)
    (root / "data/facemask/split.json").write_text(json.dumps({"train": [], "val": val}))
    for folder in ("eval_tools", "wider_face_split"):
        shutil.copytree(widerface / folder, root / "data/widerface" / folder)
    for jpg in sorted((widerface / "WIDER_val/images").glob("*/*.jpg"))[:wider_images]:
        (root / "data/widerface/WIDER_val/images" / jpg.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(jpg, root / "data/widerface/WIDER_val/images" / jpg.parent.name)
    held = [jpg for jpg in sorted((widerface / "WIDER_train/images").glob("*/*.jpg"))
            if fold_of(f"{jpg.parent.name}/{jpg.name}", HOLDOUT_FOLDS) == 0]
    for jpg in held[:holdout_images]:
        (root / "data/widerface/WIDER_train/images" / jpg.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(jpg, root / "data/widerface/WIDER_train/images" / jpg.parent.name)
    return root


def release_and_lost(tmp_path: Path) -> tuple[Path, Path]:
    """The authors' EXTD-32 and, saved as ``lost.pt``, a "fine-tune" of it that lost every face (background
    logits +50, face logits -50)."""
    import torch

    from edgeface.models.checkpoint import load_authors_checkpoint, save_checkpoint

    release = need(SHARED / "weights" / "extd_official" / "EXTD_32.pth")
    model, spec = load_authors_checkpoint(release)
    with torch.no_grad():
        for conf in model.conf:
            conf.bias.fill_(50.0)
            conf.bias[-1] = -50.0
    save_checkpoint(model, spec, tmp_path / "lost.pt")
    return release, tmp_path / "lost.pt"


def test_wise_ft_scores_the_line_from_release_to_fine_tune_on_both_validations(tmp_path):
    """alpha 0 is the release itself and alpha 1 the fine-tune: scored in the same run, on both kinds of set."""
    release, _ = release_and_lost(tmp_path)
    shared = small_shared(tmp_path, face_images=3, wider_images=2)
    bench(tmp_path, "wise-ft", "--start", str(release), "--end", str(tmp_path / "lost.pt"), "--alphas", "0", "1",
          "--wider-max-side", "320", shared=shared)
    payload = json.loads((tmp_path / "wise_ft.json").read_text())
    assert payload["validation_images"] == {"face_val": 3, "wider": 2}
    first, last = payload["rows"]
    metrics = ["face_val_ap50", "wider_easy", "wider_medium", "wider_hard", "wider_all"]
    assert first["alpha"] == 0 and first["face_val_ap50"] > 0.3 and max(first[m] for m in metrics[1:]) > 0
    assert last["alpha"] == 1 and all(last[m] == 0 for m in metrics)
    assert (tmp_path / "wise_ft.png").exists()
    # the fine-tune lost every face through its classification heads alone: kept as released, it is the release
    bench(tmp_path, "wise-ft", "--start", str(release), "--end", str(tmp_path / "lost.pt"), "--alphas", "1",
          "--wider-max-side", "320", "--module-scale", "conf=0", "--name", "heads", shared=shared)
    payload = json.loads((tmp_path / "heads.json").read_text())
    assert payload["module_scales"] == {"conf": 0.0}
    assert all(payload["rows"][0][m] == first[m] for m in metrics)
    for option, value, message in (("--keep", "0", "--keep must be in (0, 1], got 0"),
                                   ("--module-scale", "conf=2", "the factor of conf must be a number in [0, 1]"),
                                   ("--wider-holdout", "5", "--wider-holdout must be a fold in 0 .. 4, got 5")):
        result = bench(tmp_path, "wise-ft", "--end", str(tmp_path / "lost.pt"), option, value, shared=shared,
                       check=False)
        assert result.returncode == 2 and message in result.stderr


def test_wider_recall_splits_found_faces_by_wider_labels_against_the_first_model(tmp_path):
    import cv2
    import torch

    from edgeface.models.checkpoint import load_authors_checkpoint, save_checkpoint

    release, lost = release_and_lost(tmp_path)
    save_checkpoint(*load_authors_checkpoint(release), tmp_path / "release.pt")
    model, spec = load_authors_checkpoint(release)
    with torch.no_grad():  # a model that sees a face everywhere: every anchor scores 1
        for conf in model.conf:
            conf.bias.fill_(-50.0)
            conf.bias[-1] = 50.0
    save_checkpoint(model, spec, tmp_path / "everywhere.pt")
    # scored on a held-out fold of WIDER train: its per-face labels come from the train txt, its settings by height
    shared = small_shared(tmp_path, face_images=0, wider_images=0, holdout_images=3)
    bench(tmp_path, "wider-recall", "--models", str(tmp_path / "release.pt"), str(lost),
          str(tmp_path / "everywhere.pt"), "--max-side", "320", "--min-event-faces", "1", "--wider-holdout", "0",
          shared=shared)
    payload = json.loads((tmp_path / "wider_recall.json").read_text())
    assert payload["images"] == 3 and payload["ap"]["lost"] == {"easy": 0.0, "medium": 0.0, "hard": 0.0, "all": 0.0}
    assert payload["wider_holdout_fold"] == 0 and payload["ap"]["release"]["hard"] > 0
    found = payload["found"]
    assert found["all faces"]["release"] > 0 and all(group["lost"] == 0 for group in found.values())
    assert sum(found[f"blur {b}"]["faces"] for b in ("clear", "normal", "heavy")) == found["all faces"]["faces"]
    assert any(group.startswith("event ") for group in found)
    assert "(-" in (tmp_path / "wider_recall.md").read_text()  # the lost model's differences from the first
    lost_hard = payload["ap_difference"]["lost"]["hard"]  # with their interval over resamples of the images
    assert lost_hard["difference"] == -payload["ap"]["release"]["hard"] and lost_hard["low"] <= lost_hard["high"] <= 0
    assert "95%: " in (tmp_path / "wider_recall.md").read_text()
    strays = payload["stray_boxes"]  # boxes on no labelled face, by score
    assert strays["lost"] == {"0.5": 0, "0.7": 0, "0.9": 0}
    assert strays["release"]["0.5"] >= strays["release"]["0.7"] >= strays["release"]["0.9"]
    assert strays["everywhere"]["0.9"] > max(50, 10 * strays["release"]["0.5"])
    assert "Boxes on no labelled face" in (tmp_path / "wider_recall.md").read_text()
    assert cv2.imread(str(tmp_path / "wider_recall.png")).shape[0] > 60 + 18 * len(found)  # a bar row per group
    # one model on low-resolution frames letterboxed to a fixed input: no difference to draw or resample
    bench(tmp_path, "wider-recall", "--models", str(tmp_path / "release.pt"), "--frame-side", "160", "--input-size",
          "192", "160", "--wider-holdout", "0", "--name", "framed", shared=shared)
    payload = json.loads((tmp_path / "framed.json").read_text())
    assert payload["frame_side"] == 160 and payload["input_size"] == [192, 160]
    assert payload["ap_difference"] == {} and not (tmp_path / "framed.png").exists()
    bench(tmp_path, "wider-recall", "--models", str(tmp_path / "release.pt"), "--frame-size", "160", "160",
          "--wider-holdout", "0", "--resamples", "0", "--name", "squashed", shared=shared)
    squashed_payload = json.loads((tmp_path / "squashed.json").read_text())
    assert squashed_payload["frame_size"] == [160, 160] and squashed_payload["frame_side"] is None
    assert squashed_payload["ap"] != payload["ap"]  # the squashed frames reached the detector
    bad = bench(tmp_path, "wider-recall", "--models", "fast", "--input-size", "0", "160", "--wider-holdout", "0",
                shared=shared, check=False)
    assert bad.returncode == 2 and "input_size sides must be between 1 and" in bad.stderr  # a usage error


def test_wider_recall_names_missing_face_labels():
    import numpy as np

    from benchmarks.wider_recall import face_table
    from edgeface.eval.wider import WiderImage

    image = WiderImage("0--Parade", "a", np.zeros((1, 4)), {"hard": np.array([0])}, {"blur": np.array([0])})
    with pytest.raises(ValueError, match="0--Parade/a has no occlusion, pose, illumination, expression labels"):
        face_table([image], "hard")


def test_accuracy_summary_has_a_line_per_model_and_a_column_per_set_and_mode():
    from benchmarks.accuracy import summary_table

    rows = [{"model": m, "set": s, "mode": mode, "metric": "AP", "score": score, "latency_ms_640x480": ms}
            for m, ms in (("a", 10.0), ("b", 20.0))
            for (s, mode, score) in (("faces", "single-scale", 0.5), ("faces", "flip + scales 1,2 + voting", 0.6),
                                     ("WIDER val hard", "single-scale, 416 px", 0.7),
                                     ("WIDER val hard", "single-scale, 416 px frames", 0.8))]
    rows[-1]["score"] = 0.9
    lines = summary_table(rows).splitlines()
    assert lines[0] == ("| model | faces | faces, TTA | WIDER val hard, 416 px | WIDER val hard, 416 px frames "
                        "| CPU ms, 640x480 |")
    assert lines[2:] == ["| a | 0.500 | 0.600 | 0.700 | 0.800 | 10 |", "| b | 0.500 | 0.600 | 0.700 | 0.900 | 20 |"]


def test_accuracy_summary_bolds_a_score_at_or_above_the_release_of_the_model():
    from benchmarks.accuracy import summary_table

    scores = {"release": (0.5, 0.7), "tuned": (0.5, 0.69), "other": (0.9, 0.9)}
    rows = [{"model": m, "set": s, "mode": "single-scale", "metric": "AP", "score": score, "latency_ms_640x480": 5.0}
            for m, pair in scores.items() for s, score in zip(("x", "y"), pair)]
    lines = summary_table(rows, {"tuned": "release", "other": "absent"}).splitlines()
    assert lines[2:] == ["| release | 0.500 | 0.700 | 5 |", "| tuned | **0.500** | 0.690 | 5 |",
                         "| other | 0.900 | 0.900 | 5 |"]


def test_accuracy_rewrites_only_the_readme_table_between_its_markers(tmp_path):
    from benchmarks.accuracy import readme_markers, rewrite_between

    markers = start, end = readme_markers("accuracy")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\ntext {start} old\ntable\n{end}\nafter\n{end}\n")
    assert rewrite_between(readme, markers, "| new |")
    assert readme.read_text() == f"# x\n\ntext {start}\n| new |\n{end}\nafter\n{end}\n"
    for text in ("# x\n", f"{end}\n{start}\n", f"{readme_markers('targets')[0]}\n{end}\n"):  # none, wrong order
        readme.write_text(text)
        assert not rewrite_between(readme, markers, "| new |") and readme.read_text() == text
    assert not rewrite_between(tmp_path / "missing.md", markers, "| new |")


def test_accuracy_targets_table_puts_each_release_above_its_models_wider_settings_in_one_cell():
    from benchmarks.accuracy import targets_table

    scores = {("facemask val", "single-scale"): (0.7, 0.8123),
              ("facemask val", "flip + scales 1,2 + voting"): (0.1, 0.1), ("dlib testing", "single-scale"): (1.0, 1.0),
              **{(f"WIDER val {s}", mode): (0.9, value) for mode in ("single-scale", "single-scale, 416 px frames")
                 for s, value in (("easy", 0.95), ("medium", 0.9), ("hard", 0.85), ("all", 0.8))}}
    rows = [{"model": m, "set": s, "mode": mode, "score": pair[i]}
            for i, m in enumerate(("release", "tuned")) for (s, mode), pair in scores.items()]
    assert targets_table(rows, {"tuned": "release"}).splitlines() == [
        "| model | facemask val | WIDER easy / medium / hard / all | WIDER easy / medium / hard / all, 416 px frames |",
        "|---|---|---|---|",
        "| release | 0.7000 | 0.9000 / 0.9000 / 0.9000 / 0.9000 | 0.9000 / 0.9000 / 0.9000 / 0.9000 |",
        "| tuned | **0.8123** | **0.9500** / **0.9000** / 0.8500 / 0.8000 | **0.9500** / **0.9000** / 0.8500 / 0.8000 "
        "|"]


def test_accuracy_remeasures_only_the_models_asked_for():
    from benchmarks.accuracy import kept_rows, provenance_line, when_measured
    from benchmarks.machine import machine_line

    previous = [{"model": m, "set": s, "score": 0.1} for m in ("a", "b", "c") for s in ("x", "y")]
    previous[0]["measured"] = previous[1]["measured"] = "2026-11-30 09:00 UTC"
    measured = [{"model": m, "set": s, "score": 0.9, "measured": "2026-12-01 10:00 UTC", "hardware": "AMD EPYC"}
                for m in ("b", "d") for s in ("x", "y")]
    rows = kept_rows(previous, measured, ["b", "d"])
    assert [(r["model"], r["set"], r["score"]) for r in rows] == [
        ("a", "x", 0.1), ("a", "y", 0.1), ("b", "x", 0.9), ("b", "y", 0.9), ("c", "x", 0.1), ("c", "y", 0.1),
        ("d", "x", 0.9), ("d", "y", 0.9)]
    assert when_measured(rows) == ("2026-11-30 09:00 UTC: a; 2026-12-01 10:00 UTC on AMD EPYC: b, d; "
                                   "at an unrecorded time: c")
    rows[0]["hardware"] = "Intel Xeon"  # one run's rows from two machines are two runs
    assert when_measured(rows) == ("2026-11-30 09:00 UTC: a; 2026-11-30 09:00 UTC on Intel Xeon: a; "
                                   "2026-12-01 10:00 UTC on AMD EPYC: b, d; at an unrecorded time: c")
    machine = {"cpu": "AMD EPYC", "cores": 2, "python": "3.11.7", "date": "2026-12-01 10:00 UTC"}
    assert provenance_line({"machine": machine, "rows": rows}) == (
        f"Machine: {machine_line(machine)}; runs begun {when_measured(rows)}.")
    # a whole run's rows: the machine line alone says where and when
    assert provenance_line({"machine": machine, "rows": measured}) == f"Machine: {machine_line(machine)}."


def test_false_boxes_counts_boxes_on_face_free_photos_against_the_first_model(tmp_path):
    import cv2
    import numpy as np
    import torch

    from benchmarks.false_boxes import image_files
    from edgeface.models.checkpoint import load_authors_checkpoint, save_checkpoint

    release, lost = release_and_lost(tmp_path)
    model, spec = load_authors_checkpoint(release)
    with torch.no_grad():  # a model that sees a face everywhere
        for conf in model.conf:
            conf.bias.fill_(-50.0)
            conf.bias[-1] = 50.0
    save_checkpoint(model, spec, tmp_path / "everywhere.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    dogs = need(DLIB_FACES / "dogs.jpg")
    (photos / "dogs.jpg").write_bytes(dogs.read_bytes())
    ramp = np.tile(np.arange(256, dtype=np.uint8), (200, 1))
    cv2.imwrite(str(photos / "gradient.png"), cv2.merge([ramp, ramp, ramp]))
    (photos / "notes.txt").write_text("not a photo")
    out = bench(tmp_path, "false-boxes", "--images", str(photos), "--authors", "--models", str(lost),
                str(tmp_path / "everywhere.pt")).stdout
    payload = json.loads((tmp_path / "false_boxes.json").read_text())
    assert payload["images"] == ["dogs.jpg", "gradient.png"]
    models = payload["models"]
    assert models[0] == "edgeface default" and models[-2:] == ["lost", "everywhere"]
    counts = payload["counts"]
    assert set(counts["lost"].values()) == {0} and payload["highest_score"]["lost"] == [0.0, 0.0]
    assert counts["everywhere"]["boxes >= 0.9"] >= 2 and counts["everywhere"]["photos with a box >= 0.5"] == 2
    for model_counts in counts.values():
        assert model_counts["boxes >= 0.5"] >= model_counts["boxes >= 0.7"] >= model_counts["boxes >= 0.9"]
    default = counts["edgeface default"]["boxes >= 0.5"]
    assert f"| lost | 0 (-{default}) |" in out if default else "| lost | 0 (+0) |" in out
    sheet = cv2.imread(str(tmp_path / "false_boxes.jpg"))  # one column per model, one row per photo with a box
    assert sheet.shape[1] == 222 * len(models) and sheet.shape[0] >= 28 + 222
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        image_files([str(tmp_path / "missing")])


def test_int8_benchmark_saves_the_recipe_the_shipped_int8_model_names(tmp_path):
    from benchmarks.int8_cpu import int8_variants

    stem, heads = tmp_path / "fast", ["loc", "conf"]
    every_layer = int8_variants(stem, heads, save="default_int8.onnx")  # default-int8's recipe until 2026-12-03
    assert list(every_layer) == ["INT8", "INT8, FP32 loc, conf", "INT8, percentile calibration"]
    assert every_layer["INT8, percentile calibration"] == (Path("default_int8.onnx"), {"calibration": "percentile"})
    partly = int8_variants(stem, heads, percentile_keep_float=True, save="fast_int8.onnx")  # both shipped ones'
    assert partly["INT8, percentile calibration, FP32 loc, conf"] == (
        Path("fast_int8.onnx"), {"calibration": "percentile", "keep_float": heads})
    assert partly["INT8, percentile calibration"][0].parent == tmp_path  # the every-layer one is not kept
    files = [file for file, _ in int8_variants(stem, [], percentile_keep_float=True).values()]
    assert len(set(files)) == 4 and all(f.parent == tmp_path and f.name.startswith("fast_int8") for f in files)


def test_interleaved_latency_times_every_run_in_turns_after_an_untimed_call_and_reports_medians(monkeypatch):
    import numpy as np

    from benchmarks import latency

    clock, calls = [0.0], []

    def run_taking(name: str, seconds: list[float]):
        def run(frame):
            calls.append(name)
            clock[0] += seconds[len([c for c in calls if c == name]) - 1]
        return run

    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    # each turn is two calls, the first untimed (it follows another model's run, whose threads may still hold the
    # CPU); the slow model's warm-up turn is the slowest and its last timed call an outlier: neither reaches the median
    runs = {"slow": run_taking("slow", [9.0, 9.0, 3.0, 0.2, 3.0, 0.2, 3.0, 5.0]),
            "fast": run_taking("fast", [0.1, 0.1, 1.0, 0.1, 1.0, 0.1, 1.0, 0.1])}
    result = latency.interleaved_ms(runs, np.zeros((4, 4, 3), np.uint8), rounds=3, warmup=1)
    assert calls == ["slow", "slow", "fast", "fast"] * 4
    assert result == pytest.approx({"slow": 200.0, "fast": 100.0})


def test_false_boxes_keeps_the_whole_sets_results_when_photos_are_missing(tmp_path):
    """Without scikit-image's photos the default set shrinks to one photo: no results file of that name is
    overwritten with it unless --name asks for the partial set."""
    need(DLIB_FACES / "dogs.jpg")
    env = {**os.environ, "EDGEFACE_RESULTS_DIR": str(tmp_path)}
    refused = subprocess.run([sys.executable, "-m", "benchmarks", "false-boxes", "--skimage-data", str(tmp_path)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert refused.returncode == 2 and "20 of the default photos not found" in refused.stderr
    assert "pip install scikit-image" in refused.stderr and not list(tmp_path.iterdir())


def test_gpu_benchmark_prepares_what_a_gpu_machine_without_shared_reads(tmp_path):
    """--prepare copies the weights, the dlib photos and the most crowded WIDER val photos (with labels and the
    official ground truth), so the GPU suite runs there with EDGEFACE_SHARED pointing at the copy."""
    from benchmarks.gpu import _wider_val_photos, prepare
    from benchmarks.machine import AUTHORS
    from edgeface.data.wider import read_wider
    from edgeface.eval.wider import load_ground_truth

    if not (AUTHORS / "EXTD_64.pth").exists() or not DLIB_FACES.exists() or not _wider_val_photos():
        pytest.skip("../shared lacks the authors' weights, the dlib photos or WIDER val")
    prepare(tmp_path, crowded=3)
    copied = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert {AUTHORS.relative_to(SHARED) / f"EXTD_{w}.pth" for w in (32, 64)} <= copied
    assert {p.relative_to(SHARED) for p in _wider_val_photos()[:3]} <= copied
    with pytest.warns(UserWarning, match="using the 3 present"):
        assert len(read_wider(tmp_path / "data" / "widerface", "val")) == 3
    assert load_ground_truth(tmp_path / "data" / "widerface" / "eval_tools" / "ground_truth")


def test_gpu_training_benchmark_runs_end_to_end_at_toy_sizes(tmp_path):
    """gpu-training on the CPU: without --tiny it says it needs a GPU; with it, three runs (batch 2 and 8 with a loader
    process, batch 2 without) give a row each, the first with its validation time per photo, and nothing is kept."""
    from benchmarks.machine import AUTHORS, WIDER

    torch = pytest.importorskip("torch")
    need(AUTHORS / "EXTD_64.pth")
    need(WIDER / "WIDER_val")
    if not torch.cuda.is_available():
        assert "skipped: no CUDA GPU here" in bench(tmp_path, "gpu-training").stdout
    out = bench(tmp_path, "gpu-training", "--tiny").stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| batch ")]
    assert [r[0] for r in rows] == ["| batch 2, 1 workers", "| batch 8, 1 workers", "| batch 2, 0 workers"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    assert float(rows[0][4].rstrip(" |")) > 0 and [r[4].rstrip(" |") for r in rows[1:]] == ["-", "-"]
    assert not list(tmp_path.glob("gpu_training.*"))
