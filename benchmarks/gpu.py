"""GPU benchmarks, with the GPU named: end-to-end latency and frames/s of the GPU pipeline (CUDA
pre-processing + torch network + CUDA decode/NMS) by model, precision (FP32, FP16 half weights) and input size,
split into its pre / network / post stages, against the same network with the NumPy pre/post-processing;
the network's throughput by batch size; the NMS kernels against torchvision's NMS (when installed) and the
NumPy path; the post-processing of a real crowd photo at 1920x1080 with score threshold 0.01; 100 photos of
different sizes one by one (time per photo, device memory, graph captures) with and without CUDA graphs and through
the NumPy path; and FP16 against FP32 detections on real photos. Medians of --runs runs after a warm-up.

``python -m benchmarks gpu`` measures; ``python -m benchmarks gpu-suite`` first runs every GPU test
(``pytest -m gpu``), then measures, then times training (``gpu-training``): the one call to make on a machine
with a GPU. A GPU machine without ../shared
gets what both read (about 20 MB) from a folder made here:

    python -m benchmarks gpu --prepare .device/shared          # here: copy it out of ../shared (git-ignored)
    EDGEFACE_SHARED=.device/shared python -m benchmarks gpu-suite   # there
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import gpu_training

if TYPE_CHECKING:  # torch and the GPU runtime: imported when the benchmark runs
    from edgeface import Detector
    from edgeface.backends.torch_backend import TorchBackend
    from edgeface.export.precision import PrecisionReport

from .machine import AUTHORS, DLIB_PHOTOS, SHARED, WIDER, at_least, describe_machine, markdown_table, write_results

SIZES = ((320, 240), (640, 480), (1280, 720))


def _median_ms(run: Callable[[], object], runs: int, sync: Callable[[], object] = lambda: None) -> float:
    run()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


BATCHES = (1, 4, 8)


def _checkpoint(model: str, folder: Path) -> tuple[Path, str]:
    """The authors' trained weights when ../shared has them (realistic candidate counts for the decode and NMS
    kernels), else random weights."""
    from edgeface.models.checkpoint import convert_authors_checkpoint, save_checkpoint
    from edgeface.models.registry import create_model, default_spec

    path = folder / f"{model}.pt"
    authors = AUTHORS / f"EXTD_{model[4:]}.pth"
    if model.startswith("extd") and authors.exists():
        convert_authors_checkpoint(authors, path)
        return path, "authors' weights"
    save_checkpoint(create_model(model), default_spec(model), path)
    return path, "random weights"


def _frame(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    photos = sorted(DLIB_PHOTOS.glob("*.jpg"))
    if not photos:
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    import cv2

    from edgeface import read_image

    return cv2.resize(read_image(photos[0]), (width, height))


def _time_graph(pipeline: Any, enqueue: Callable[[], object], runs: int) -> float:
    """Median ms of `enqueue`'s work captured as a CUDA graph on the pipeline's stream and replayed, as `detect` replays
    its stages (the pipeline's runtime: the real driver, or the tests' stand-in)."""
    stream = pipeline.stream
    graph = pipeline.rt.Graph(stream, enqueue)
    return _median_ms(lambda: graph.launch(stream), runs, stream.synchronize)


def _time_stages(gpu: Detector, host: Detector, frame: np.ndarray, runs: int, sync: Callable[[], object]) -> dict:
    """One frame size: the GPU pipeline end to end; ``replay_ms``, the frame's captured graphs alone (no staging
    copy, no result read: end to end less this is the host's work per frame); the stages one by one, pre- and
    post-processing each replayed as a graph and the network as it runs between them (a graph of its own); and the
    same network with the NumPy pre/post-processing. ``post_eager_ms``: the post-processing launched kernel by
    kernel (device frames)."""
    pipeline = gpu.gpu_pipeline
    assert pipeline is not None  # a detector on a GPU backend
    h, w = frame.shape[:2]
    row = {"faces": len(gpu(frame)),
           "gpu_pipeline_ms": _median_ms(lambda: gpu(frame), runs, sync),
           "numpy_pre_post_ms": _median_ms(lambda: host(frame), runs, sync)}
    plan = next(reversed(pipeline._plans.values()))  # the frame's (most recently used)
    stream = pipeline.stream
    replayed = _median_ms(lambda: pipeline.replay(plan), runs, stream.synchronize) if plan.graphs else math.nan
    row.update(replay_ms=replayed,
               pre_ms=_time_graph(pipeline, lambda: pipeline.enqueue_preprocess(plan, None, w * 3), runs),
               network_ms=_median_ms(lambda: pipeline.enqueue_network(plan), runs, stream.synchronize),
               post_ms=_time_graph(pipeline, lambda: pipeline.enqueue_postprocess(plan), runs),
               post_eager_ms=_median_ms(lambda: pipeline.enqueue_postprocess(plan), runs, stream.synchronize))
    row["frames_per_s"] = 1e3 / row["gpu_pipeline_ms"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=at_least(1), default=50, help="timed runs per cell (default: %(default)s)")
    parser.add_argument("--models", nargs="*", default=["extd32", "extd64"],
                        help="registry names (EXTD: the authors' weights from ../shared when present)")
    parser.add_argument("--prepare", metavar="FOLDER", help="copy what the GPU tests and benchmarks read from "
                        "../shared into FOLDER (for a GPU machine without it; point EDGEFACE_SHARED there) and stop")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return
    try:
        import torch

        from edgeface.backends.cuda.runtime import device_identity
        name, capability = device_identity()
        if not torch.cuda.is_available():
            raise RuntimeError("torch has no CUDA")
    except Exception as exc:  # noqa: BLE001 - any missing piece means: no GPU benchmark here
        print(f"skipped: no CUDA GPU with torch and cuda-bindings here ({type(exc).__name__}: {exc})")
        return
    from edgeface import Detector
    from edgeface.backends.torch_backend import TorchBackend

    rows, batch_rows = [], []
    rng = np.random.default_rng(0)
    sync = torch.cuda.synchronize
    wider = _wider_val_photos()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {model: _checkpoint(model, Path(tmp)) for model in {*args.models, "extd64"}}
        for model in args.models:
            path, weights = checkpoints[model]
            for precision in ("fp32", "fp16"):
                backend = TorchBackend(str(path), device="cuda", fp16=precision == "fp16")
                gpu = Detector(backend)
                host = Detector(backend, gpu_pipeline=False)  # the same torch network, NumPy pre/post-processing
                for w, h in SIZES:
                    frame = _frame(w, h, rng)
                    row = {"model": model, "weights": weights, "precision": precision, "size": f"{w}x{h}",
                           **_time_stages(gpu, host, frame, args.runs, sync),
                           "network_alone_ms": _network_graph_ms(backend, host.prepare([frame])[0], args.runs,
                                                                 torch)}
                    row["over_network"] = row["gpu_pipeline_ms"] / row["network_alone_ms"]
                    rows.append(row)
                    print(f"{model} {precision} {w}x{h}: GPU pipeline {row['gpu_pipeline_ms']:.2f} ms (pre "
                          f"{row['pre_ms']:.2f} / network {row['network_ms']:.2f} / post {row['post_ms']:.2f}), "
                          f"{row['over_network']:.2f}x the network alone in a graph; NumPy pre/post "
                          f"{row['numpy_pre_post_ms']:.2f} ms", flush=True)
                for batch_size in BATCHES:  # the network alone, batched: throughput
                    batch, _ = host.prepare([_frame(640, 480, rng)] * batch_size)
                    ms = _median_ms(partial(host.infer, batch), args.runs, sync)
                    batch_rows.append({"model": model, "precision": precision, "size": "640x480",
                                       "batch": batch_size, "network_ms": ms, "frames_per_s": batch_size * 1e3 / ms})
        forms = _network_form_rows(checkpoints["extd64"][0], args.runs, torch)
        nms = _nms_rows(args.runs, torch)
        fp32, fp16 = (TorchBackend(str(checkpoints["extd64"][0]), device="cuda", fp16=half) for half in (False, True))
        crowd = _crowd_post_row(Detector(fp32, score_threshold=0.01), wider, args.runs)
        photo_set = _photo_set_rows(_photo_set_detectors(fp32), wider[:100] or sorted(DLIB_PHOTOS.glob("*.jpg")),
                                    lambda: _gpu_memory_in_use(torch), torch.cuda.empty_cache)
        precision = _fp16_against_fp32(fp32, fp16, wider)
    print(f"crowd frame: {crowd}\nFP16: {precision}")
    table = markdown_table(
        ["model", "precision", "size", "faces", "GPU pipeline ms (frames/s)", "its graphs alone ms",
         "pre / network / post ms (graphs)",
         "network alone, CUDA graph ms (pipeline / it)", "post, kernel by kernel ms", "NumPy pre/post ms"],
        [[r["model"], r["precision"], r["size"], r["faces"], f"{r['gpu_pipeline_ms']:.2f} ({r['frames_per_s']:.0f})",
          f"{r['replay_ms']:.2f}", f"{r['pre_ms']:.2f} / {r['network_ms']:.2f} / {r['post_ms']:.2f}",
          f"{r['network_alone_ms']:.2f} ({r['over_network']:.2f}x)", f"{r['post_eager_ms']:.2f}",
          f"{r['numpy_pre_post_ms']:.2f}"]
         for r in rows])
    table += "\n\n" + markdown_table(
        ["model", "precision", "size", "batch", "network ms", "frames/s"],
        [[r["model"], r["precision"], r["size"], r["batch"], f"{r['network_ms']:.2f}", f"{r['frames_per_s']:.0f}"]
         for r in batch_rows])
    table += "\n\n" + markdown_table(["EXTD-64 network alone, 640x480", "eager ms", "CUDA graph ms"],
                                      [[k, f"{v['eager']:.2f}", f"{v['graph']:.2f}"] for k, v in forms.items()])
    table += "\n\n" + markdown_table(["NMS, 4096 boxes", "ms"], [[k, f"{v:.3f}"] for k, v in nms.items()])
    table += "\n\n" + markdown_table(["EXTD-64", "result"], [
        [f"post-processing, 1920x1080 crowd photo, threshold 0.01 ({crowd['candidates']} candidates, "
         f"{crowd['faces']} faces): CUDA graph (its top-K selection alone) / kernel by kernel",
         f"{crowd['post_ms']:.3f} ({crowd['top_k_ms']:.3f}) / {crowd['post_eager_ms']:.3f} ms"],
        [f"FP16 against FP32 on {precision.images} photos", precision.summary()]])
    table += "" if not photo_set else "\n\n" + markdown_table(
        [f"EXTD-64 FP32, {photo_set[0]['photos']} photos of {photo_set[0]['sizes']} sizes, one by one",
         "ms per photo (median / mean)", "device memory MB (peak / after)", "graph captures"],
        [[r["path"], f"{r['median_ms']:.1f} / {r['mean_ms']:.1f}", f"{r['peak_mb']:.0f} / {r['last_mb']:.0f}",
          r["captures"]] for r in photo_set])
    print(table)
    payload = {"machine": {**describe_machine(), "gpu": name, "compute_capability": capability}, "rows": rows,
               "batch_rows": batch_rows, "network_forms_ms": forms, "nms_ms": nms, "crowd_1080p": crowd,
               "photo_set": photo_set, "fp16": vars(precision)}
    print(f"written: {write_results('gpu', payload, table)}")


def prepare(destination: Path, crowded: int = 130) -> None:
    """Copy into `destination` what the GPU tests and benchmarks read from ../shared: the authors' EXTD-32 and -64
    weights, the dlib photos, and the `crowded` WIDER val photos with the most faces (the crowd frame, the photo
    set, FP16 against FP32) with the val labels and the official ground truth."""
    import shutil

    photos = _wider_val_photos()[:crowded]
    if not photos or not (AUTHORS / "EXTD_64.pth").exists() or not DLIB_PHOTOS.exists():
        raise SystemExit(f"{SHARED} lacks the authors' weights, the dlib photos or WIDER val: nothing to prepare")
    copies = [AUTHORS / f"EXTD_{w}.pth" for w in (32, 64)] + sorted(p for p in DLIB_PHOTOS.iterdir() if p.is_file())
    copies += photos
    copies += [WIDER / "wider_face_split" / "wider_face_val_bbx_gt.txt",
               *sorted((WIDER / "eval_tools" / "ground_truth").glob("*.mat"))]
    for path in copies:
        target = destination / path.relative_to(SHARED)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    size = sum(p.stat().st_size for p in destination.rglob("*") if p.is_file())
    print(f"copied {len(copies)} files to {destination} ({size / 1e6:.1f} MB): run the GPU suite with "
          f"EDGEFACE_SHARED={destination}")


def _network_form_rows(path: Path, runs: int, torch: Any) -> dict[str, dict[str, float]]:
    """The network alone as loaded (BatchNorm, NCHW), with BatchNorm folded into the convolutions, and folded and
    channels-last; FP32 and FP16; launched eagerly and replayed from a CUDA graph (as the pipeline runs it)."""
    from edgeface import Detector
    from edgeface.backends.torch_backend import TorchBackend

    timings = {}
    for fp16 in (False, True):
        for fold, channels_last in ((False, False), (True, False), (True, True)):
            backend = TorchBackend(str(path), device="cuda", fp16=fp16, fold_bn=fold, channels_last=channels_last)
            detector = Detector(backend)
            batch, _ = detector.prepare([_frame(640, 480, np.random.default_rng(0))])
            name = (f"{'FP16' if fp16 else 'FP32'}, BatchNorm {'folded' if fold else 'kept'}, "
                    f"{'channels-last' if channels_last else 'NCHW'}")
            eager = _median_ms(partial(detector.infer, batch), runs, torch.cuda.synchronize)
            timings[name] = {"eager": eager, "graph": _network_graph_ms(backend, batch, runs, torch)}
    return timings


def _network_graph_ms(backend: TorchBackend, batch: np.ndarray, runs: int, torch: Any) -> float:
    """Median ms of the torch `backend`'s forward pass on `batch` (prepared input), captured alone in a CUDA graph
    and replayed: the floor the whole pipeline is compared with."""
    with torch.no_grad():
        graph, _, _ = backend._capture(torch.from_numpy(batch).cuda())
    return _median_ms(graph.replay, runs, torch.cuda.synchronize)


def _nms_rows(runs: int, torch: Any) -> dict[str, float]:
    """ef_nms_mask + ef_nms_reduce against torchvision.ops.nms and the NumPy NMS, 4096 boxes."""
    from edgeface.backends.cuda.pipeline import RESULT_HEADER, enqueue_nms, nms_mask_nbytes
    from edgeface.backends.cuda.runtime import DeviceBuffer, Kernels, Stream
    from edgeface.core.nms import nms

    rng = np.random.default_rng(1)
    k = 4096
    xy = rng.uniform(0, 600, (k, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(8, 80, (k, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, k).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    kernels, stream = Kernels(), Stream()
    sorted_boxes, sorted_scores, num = DeviceBuffer(k * 16), DeviceBuffer(k * 4), DeviceBuffer(4)
    sorted_boxes.copy_from_host(boxes[order], stream)
    sorted_scores.copy_from_host(scores[order], stream)
    num.copy_from_host(np.array([k], np.int32), stream)
    mask, result = DeviceBuffer(nms_mask_nbytes(k)), DeviceBuffer(RESULT_HEADER + 750 * 20)

    def ours() -> None:
        enqueue_nms(kernels, stream, k, 0.3, 750, sorted_boxes.ptr, sorted_scores.ptr, num.ptr, mask.ptr, result.ptr)

    timings = {"edgeface kernels (mask + reduce)": _median_ms(ours, runs, stream.synchronize),
               "NumPy (edgeface.core.nms)": _median_ms(lambda: nms(boxes, scores, 0.3, 750), runs)}
    try:
        import torchvision

        tb, ts = torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda()
        timings["torchvision.ops.nms"] = _median_ms(lambda: torchvision.ops.nms(tb, ts, 0.3), runs,
                                                    torch.cuda.synchronize)
    except ImportError:
        timings["torchvision.ops.nms"] = float("nan")  # not installed
    return timings


def _wider_val_photos() -> list[Path]:
    """The WIDER FACE val photos in ../shared (different sizes), most faces first; empty without them."""
    import warnings

    from edgeface.data.wider import read_wider

    try:
        with warnings.catch_warnings():  # ../shared holds a few of the listed images
            warnings.simplefilter("ignore")
            records = read_wider(WIDER, "val")
    except (OSError, ValueError):
        return []
    return [Path(r.image_path) for r in sorted(records, key=lambda r: -len(r.boxes))]


def _crowd_post_row(detector: Detector, wider: list[Path], runs: int) -> dict:
    """Decode + top-K + NMS alone for the most crowded WIDER val photo resized to 1920x1080 (a synthetic frame
    without ../shared), at the detector's score threshold: the candidates the kernels sort through. Captured as a
    CUDA graph and replayed, as `detect` runs it, and launched kernel by kernel."""
    import cv2

    from edgeface import read_image

    photo = read_image(wider[0]) if wider else _frame(1920, 1080, np.random.default_rng(0))
    frame = cv2.resize(photo, (1920, 1080))
    pipeline = detector.gpu_pipeline
    assert pipeline is not None  # a detector on a GPU backend
    stream = pipeline.stream
    faces = len(detector(frame))
    plan = next(reversed(pipeline._plans.values()))  # the frame's, its network outputs in place
    candidates = np.empty(1, np.int32)
    plan.count.copy_to_host(candidates, stream)
    stream.synchronize()
    return {"size": "x".join(map(str, plan.input_size)), "faces": faces, "candidates": int(candidates[0]),
            "post_ms": _time_graph(pipeline, lambda: pipeline.enqueue_postprocess(plan), runs),
            "top_k_ms": _time_graph(pipeline, lambda: pipeline.enqueue_top_k(plan), runs),  # its share of the post
            "post_eager_ms": _median_ms(lambda: pipeline.enqueue_postprocess(plan), runs, stream.synchronize)}


def _photo_set_rows(detectors: dict[str, Detector], photos: list[Path], in_use: Callable[[], int],
                    release: Callable[[], object]) -> list[dict]:
    """Photos of many sizes one after another (a photo collection, or validation at each image's own size) through
    each of `detectors` (name -> Detector): ms per photo (median and mean), device memory over what was in use before
    (`in_use()`, bytes; after `release()` returns cached memory), peak and after the last photo, and the CUDA graph
    captures made (the pipeline's and its network's). The first row is a cold pass (each size new to cuDNN); the
    photos are read once beforehand, so decoding is not timed."""
    import gc

    from edgeface import read_image

    images = [read_image(p) for p in photos]
    rows = []
    for name, detector in detectors.items() if images else ():
        gc.collect()
        release()
        before = in_use()
        times, peak = [], 0
        for image in images:
            start = time.perf_counter()
            detector(image)
            times.append((time.perf_counter() - start) * 1e3)
            peak = max(peak, in_use() - before)
        pipeline = detector.gpu_pipeline
        captures = 0 if pipeline is None else pipeline.captures + getattr(pipeline.network, "captures", 0)
        rows.append({"path": name, "photos": len(images), "sizes": len({i.shape[:2] for i in images}),
                     "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
                     "peak_mb": peak / 2**20, "last_mb": (in_use() - before) / 2**20, "captures": captures})
        print(f"photo set, {name}: {rows[-1]}", flush=True)
    return rows


def _photo_set_detectors(backend: TorchBackend) -> dict[str, Detector]:
    """The torch backend's detectors a photo set runs through: cold (sizes new to cuDNN), then warm: NumPy pre/post
    (``gpu_pipeline=False``, as validation runs), the GPU pipeline without and with CUDA graphs (default
    ``max_plans``)."""
    from edgeface import Detector

    numpy_cold, numpy_warm, eager = (Detector(backend, gpu_pipeline=False) for _ in range(3))
    graphs = Detector(backend)
    # the eager path gets a pipeline without graphs (no default one is opened only to be dropped)
    eager.gpu_pipeline = backend.gpu_pipeline(eager.score_threshold, eager.nms_iou, eager.max_detections,
                                              use_graphs=False)
    return {"first pass, NumPy pre/post (sizes new to cuDNN)": numpy_cold, "NumPy pre/post": numpy_warm,
            "GPU pipeline, no CUDA graphs": eager, "GPU pipeline, CUDA graphs (the default)": graphs}


def _gpu_memory_in_use(torch: Any) -> int:
    """Bytes of device memory in use, the driver's count (the pipeline's plans and torch's pools alike)."""
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free


def _fp16_against_fp32(fp32: TorchBackend, fp16: TorchBackend, wider: list[Path], count: int = 20) -> PrecisionReport:
    """The half-weight network's detections against the float32 one's on real photos (faces kept, score change)."""
    from edgeface.export.precision import compare_precisions

    photos = [str(p) for p in sorted(DLIB_PHOTOS.glob("*.jpg"))] + [str(p) for p in wider]
    return compare_precisions(fp32, fp16, "fp16 (torch, half weights)", photos[:count])


def suite(argv: list[str] | None = None) -> None:
    """Every GPU test, then the GPU benchmarks (pipeline, then training): one call on a machine with a GPU."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    code = subprocess.call([sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rs", str(tests)])
    print(f"GPU tests: pytest exit code {code}")
    main(argv)
    gpu_training.main([])
    if code not in (0, 5):
        sys.exit(code)
