"""GPU benchmarks: end-to-end latency of the GPU pipeline (CUDA pre-processing + network + CUDA decode/NMS)
against the same network with the NumPy pre/post-processing, per input size, with the GPU named; and the
NMS kernels against torchvision's NMS (when installed) and the NumPy path.

``python -m benchmarks gpu`` measures; ``python -m benchmarks gpu-suite`` first runs every GPU test
(``pytest -m gpu``), then measures: the one call to make on a machine with a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .machine import describe_machine, markdown_table, write_results

SIZES = ((320, 240), (640, 480), (1280, 720))


def _median_ms(run, runs: int, sync=lambda: None) -> float:
    run()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per cell (default: %(default)s)")
    parser.add_argument("--models", nargs="*", default=["extd32", "extd64"], help="registry names (random weights)")
    args = parser.parse_args(argv)
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
    from edgeface.models.checkpoint import save_checkpoint
    from edgeface.models.registry import create_model, default_spec

    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            path = Path(tmp) / f"{model}.pt"
            save_checkpoint(create_model(model), default_spec(model), path)
            backend = TorchBackend(str(path), device="cuda")
            gpu = Detector(backend, score_threshold=0.05)
            host = Detector(backend, score_threshold=0.05)
            host.gpu_pipeline = None  # the same torch network with NumPy pre/post-processing
            for w, h in SIZES:
                frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                sync = torch.cuda.synchronize
                e2e_gpu = _median_ms(lambda d=gpu, f=frame: d(f), args.runs, sync)
                e2e_host = _median_ms(lambda d=host, f=frame: d(f), args.runs, sync)
                batch, _ = host.prepare([frame])
                network = _median_ms(lambda d=host, b=batch: d.infer(b), args.runs, sync)
                rows.append({"model": model, "size": f"{w}x{h}", "gpu_pipeline_ms": e2e_gpu,
                             "numpy_pre_post_ms": e2e_host, "network_only_ms": network})
                print(f"{model} {w}x{h}: GPU pipeline {e2e_gpu:.2f} ms, NumPy pre/post {e2e_host:.2f} ms, "
                      f"network {network:.2f} ms", flush=True)
    rows += _nms_rows(args.runs, torch)
    table = markdown_table(["model / step", "size", "GPU pipeline ms", "NumPy pre/post ms", "network ms"],
                           [[r["model"], r["size"], f"{r['gpu_pipeline_ms']:.2f}", f"{r['numpy_pre_post_ms']:.2f}",
                             f"{r.get('network_only_ms', float('nan')):.2f}"] for r in rows])
    print(table)
    payload = {"machine": {**describe_machine(), "gpu": name, "compute_capability": capability}, "rows": rows}
    print(f"written: {write_results('gpu', payload, table)}")


def _nms_rows(runs: int, torch) -> list[dict]:
    """ef_nms_mask + ef_nms_reduce against torchvision.ops.nms and the NumPy NMS, 4096 boxes."""
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
    words = (k + 63) // 64
    mask, result = DeviceBuffer(k * words * 8), DeviceBuffer(16 + 750 * 20)

    def ours():
        kernels.launch("ef_nms_mask", (words, words, 1), (64, 1, 1), stream, sorted_boxes.ptr, num.ptr, 0.3, mask.ptr)
        kernels.launch("ef_nms_reduce", (1, 1, 1), (1, 1, 1), stream, mask.ptr, sorted_boxes.ptr, sorted_scores.ptr,
                       num.ptr, 750, result.ptr, result.ptr + 16)

    row = {"model": "NMS 4096 boxes", "size": "-", "gpu_pipeline_ms": _median_ms(ours, runs, stream.synchronize),
           "numpy_pre_post_ms": _median_ms(lambda: nms(boxes, scores, 0.3, 750), runs)}
    try:
        import torchvision

        tb, ts = torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda()
        row["network_only_ms"] = _median_ms(lambda: torchvision.ops.nms(tb, ts, 0.3), runs, torch.cuda.synchronize)
        row["model"] += " (network column: torchvision.ops.nms)"
    except ImportError:
        pass
    return [row]


def suite(argv: list[str] | None = None) -> None:
    """Every GPU test, then the GPU benchmarks: one call on a machine with a GPU."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    code = subprocess.call([sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-rs", str(tests)])
    print(f"GPU tests: pytest exit code {code}")
    main(argv)
    if code not in (0, 5):
        sys.exit(code)
