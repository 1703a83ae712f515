"""Latency and throughput over model x backend x input size x batch, with the pre / network / post
split, percentiles and peak memory. Each cell runs in its own process (clean thread settings and a
peak resident-set size that is the cell's own).

Backends: ``onnxruntime`` (all cores), ``onnxruntime-1t`` (one thread), ``torch``. Frames are the
benchmark photo resized to each size; models are the authors' converted checkpoints where present
(see benchmarks.latency), else untrained weights of the named variants.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from .latency import prepare_models, test_frame, time_stages
from .machine import at_least, describe_machine, markdown_table, write_results

SIZES = ("320x240", "640x480", "1280x720")
BACKENDS = ("onnxruntime", "onnxruntime-1t", "torch", "torch-cuda", "onnxruntime-cuda")


def unavailable(backend: str) -> str | None:
    """Why `backend` cannot run here, or None."""
    if backend == "torch-cuda":
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    if backend == "onnxruntime-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDA provider (pip install onnxruntime-gpu on a GPU machine)"
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it does not carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_cell(cell: dict) -> dict:
    """Time one cell in this process; returns its stats and this process's peak RSS."""
    from edgeface import Detector

    width, height = (int(v) for v in cell["size"].split("x"))
    path = cell["onnx"] if cell["backend"].startswith("onnxruntime") else cell["checkpoint"]
    device = "cuda" if cell["backend"].endswith("-cuda") else "cpu"
    detector = Detector(path, threads=1 if cell["backend"] == "onnxruntime-1t" else None, device=device)
    frame = cv2.resize(test_frame()[0], (width, height), interpolation=cv2.INTER_AREA)
    stages = time_stages(detector, [frame] * cell["batch"], cell["runs"], cell["warmup"])
    peak_mb = peak_rss_mb()
    return {**{k: cell[k] for k in ("model", "backend", "size", "batch")}, **{f"{k}_ms": v for k, v in stages.items()},
            "images_per_s": 1000 * cell["batch"] / stages["total"], "peak_rss_mb": peak_mb}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["extd32", "extd48", "extd64"])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WxH (default: %(default)s)")
    parser.add_argument("--batches", nargs="+", type=at_least(1), default=[1, 4])
    parser.add_argument("--runs", type=at_least(1), default=10)
    parser.add_argument("--warmup", type=at_least(0), default=2)
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell (JSON) and print its result
    args = parser.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    rows = []
    backends = []
    for backend in args.backends:
        reason = unavailable(backend)
        if reason:
            print(f"skipped backend {backend}: {reason}")
        else:
            backends.append(backend)
    with tempfile.TemporaryDirectory() as tmp:
        models = prepare_models(args.models, Path(tmp))
        for name, (checkpoint, onnx_path, _) in models.items():
            for backend in backends:
                for size in args.sizes:
                    for batch in args.batches:
                        cell = {"model": name, "backend": backend, "size": size, "batch": batch, "runs": args.runs,
                                "warmup": args.warmup, "onnx": str(onnx_path), "checkpoint": str(checkpoint)}
                        command = [sys.executable, "-m", "benchmarks.speed_grid", "--cell", json.dumps(cell)]
                        done = subprocess.run(command, capture_output=True, text=True)
                        if done.returncode != 0:
                            print(f"skipped {name} {backend} {size} x{batch}: {done.stderr.strip()[-300:]}")
                            continue
                        row = json.loads(done.stdout.strip().splitlines()[-1])
                        rows.append(row)
                        print(f"{name:8s} {backend:15s} {size:9s} x{batch}  {row['total_ms']:8.1f} ms  "
                              f"{row['images_per_s']:6.1f} img/s  {row['peak_rss_mb']:6.0f} MB", flush=True)
    table = markdown_table(
        ["model", "backend", "size", "batch", "pre ms", "network ms", "post ms", "total ms", "p90", "p99", "img/s",
         "peak RSS MB"],
        [[r["model"], r["backend"], r["size"], r["batch"], f"{r['pre_ms']:.1f}", f"{r['network_ms']:.1f}",
          f"{r['post_ms']:.1f}", f"{r['total_ms']:.1f}", f"{r['total_p90_ms']:.1f}", f"{r['total_p99_ms']:.1f}",
          f"{r['images_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in rows])
    print()
    print(table)
    gpu = any(r["backend"].endswith("-cuda") for r in rows)
    payload = {"machine": describe_machine(), "runs": args.runs, "rows": rows,
               "skipped_backends": {b: unavailable(b) for b in args.backends if b not in backends}}
    print(f"\nwritten: {write_results('speed_grid' if gpu else 'speed_grid_cpu', payload, table)}")


if __name__ == "__main__":
    main()
