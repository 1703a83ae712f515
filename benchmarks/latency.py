"""CPU latency of `Detector` on one 640x480 frame, per EXTD variant and backend, split into
pre-processing, network and post-processing (median of --runs after warm-up).

Variants the authors released (extd32/48/64) use their converted checkpoints from ../shared when
present; the others have untrained weights, whose network time is representative but whose scores
are not (every anchor near 0.5). Their post-processing is therefore timed on the trained model's
outputs for the same frame (all EXTD variants share one anchor layout), and marked so.

Backends: ``onnxruntime``, ``torch`` (BatchNorm folded into the convolutions, channels-last: the defaults)
and ``torch-plain`` (the same checkpoint with its BatchNorm layers and NCHW tensors: their baseline).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edgeface import Detector, read_image
from edgeface.backends.torch_backend import TorchBackend
from edgeface.models.registry import model_names

from .machine import AUTHORS, DLIB_PHOTOS, at_least, describe_machine, markdown_table, write_results

Key = TypeVar("Key")  # how interleaved_ms's caller names its runs

PHOTO = DLIB_PHOTOS / "2008_002470.jpg"


def test_frame() -> tuple[np.ndarray, str]:
    if PHOTO.exists():
        return cv2.resize(read_image(PHOTO), (640, 480), interpolation=cv2.INTER_LINEAR), PHOTO.name
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), np.uint8), (0, 0), 2), "synthetic"


def interleaved_ms(runs: Mapping[Key, Callable[[np.ndarray], object]], frame: np.ndarray, rounds: int,
                   warmup: int = 2) -> dict[Key, float]:
    """Median milliseconds of each ``run(frame)``, timed in turns: every round calls each run twice in a row and
    times the second call, so a change in the machine's speed while they are measured (a VM's neighbours, a thermal
    limit) reaches every run alike and the ratios between them hold. The first call after another run's waits for
    that run's CPU: ONNX Runtime's threads keep spinning for a while after a session's run, which added about 30 ms
    to every model timed in single turns on a 2-core VM (the fast model 108 against 78 ms at 640x480)."""
    samples: dict[Key, list[float]] = {name: [] for name in runs}
    for i in range(warmup + rounds):
        for name, run in runs.items():
            run(frame)  # waits out the previous run's spinning threads
            start = time.perf_counter()
            run(frame)
            if i >= warmup:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times) for name, times in samples.items()}


def prepare_models(names: list[str], workdir: Path) -> dict[str, tuple[Path, Path, bool]]:
    """name -> (checkpoint, onnx, trained), converting the authors' weights where they exist."""
    from edgeface.export.onnx_export import export_onnx, load_model
    from edgeface.models.checkpoint import convert_authors_checkpoint, save_checkpoint

    out = {}
    for name in names:
        pt, onnx_path = workdir / f"{name}.pt", workdir / f"{name}.onnx"
        authors = AUTHORS / f"EXTD_{name[4:]}.pth"
        trained = name[4:].isdigit() and authors.exists()
        if trained:
            convert_authors_checkpoint(authors, pt)
        model, spec, _ = load_model(str(pt) if trained else name)
        if not trained:
            save_checkpoint(model, spec, pt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(model, spec, onnx_path, check_images=[test_frame()[0]], compare_detections=trained)
        out[name] = (pt, onnx_path, trained)
    return out


def time_stages(detector: Detector, frames: list[np.ndarray], runs: int, warmup: int,
                post_outputs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Median milliseconds of prepare, infer and decode of one batch of `frames` (and their sum, with its
    90th and 99th percentiles) over `runs`."""
    samples: dict[str, list[float]] = {"pre": [], "network": [], "post": [], "total": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        batch, transforms = detector.prepare(frames)
        t1 = time.perf_counter()
        loc, conf = detector.infer(batch)
        t2 = time.perf_counter()
        if post_outputs is not None:
            loc, conf = post_outputs
        detector.decode(loc, conf, transforms, batch.shape[3], batch.shape[2])
        t3 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                value_ms = value * 1e3
                samples[key].append(value_ms)
    result = {k: statistics.median(v) for k, v in samples.items()}
    result["total_p90"] = float(np.percentile(samples["total"], 90))
    result["total_p99"] = float(np.percentile(samples["total"], 99))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[n for n in model_names() if n.startswith("extd")],
                        help="registry names (default: every EXTD variant)")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torch", "torch-plain"],
                        choices=["onnxruntime", "torch", "torch-plain"])
    parser.add_argument("--runs", type=at_least(1), default=15, help="timed runs per cell (default: %(default)s)")
    parser.add_argument("--warmup", type=at_least(0), default=3)
    parser.add_argument("--threads", type=int, default=None, help="backend threads (default: all cores)")
    args = parser.parse_args(argv)

    frame, frame_name = test_frame()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"exporting {len(args.models)} models ...", flush=True)
        models = prepare_models(args.models, Path(tmp))
        reference_outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for backend in args.backends:
            for name, (pt, onnx_path, trained) in models.items():
                if backend == "torch-plain":
                    detector = Detector(TorchBackend(str(pt), threads=args.threads, fold_bn=False,
                                                     channels_last=False))
                else:
                    detector = Detector(onnx_path if backend == "onnxruntime" else pt, threads=args.threads)
                post_outputs = None
                if trained:
                    reference_outputs[backend] = detector.infer(detector.prepare([frame])[0])
                else:
                    post_outputs = reference_outputs.get(backend)
                stages = time_stages(detector, [frame], args.runs, args.warmup, post_outputs)
                batch, transforms = detector.prepare([frame])
                faces = len(detector.decode(*(post_outputs or detector.infer(batch)), transforms, batch.shape[3],
                                            batch.shape[2])[0])
                row = {"model": name, "backend": backend, "weights": "authors" if trained else "random",
                       "faces": faces, **{f"{k}_ms": v for k, v in stages.items()},
                       "pre_post_share": (stages["pre"] + stages["post"]) / stages["network"]}
                rows.append(row)
                print(f"{name:18s} {backend:12s} total {stages['total']:8.1f} ms", flush=True)
    table = markdown_table(
        ["model", "backend", "weights", "pre ms", "network ms", "post ms", "total ms (p90)", "(pre+post)/network"],
        [[r["model"], r["backend"], r["weights"], f"{r['pre_ms']:.2f}", f"{r['network_ms']:.1f}",
          f"{r['post_ms']:.2f}", f"{r['total_ms']:.1f} ({r['total_p90_ms']:.1f})", f"{100 * r['pre_post_share']:.1f} %"]
         for r in rows])
    print()
    print(table)
    payload = {"machine": describe_machine(), "frame": f"{frame_name} at 640x480", "runs": args.runs,
               "threads": args.threads, "rows": rows}
    print(f"\nwritten: {write_results('latency_cpu', payload, table)}")


if __name__ == "__main__":
    main()
