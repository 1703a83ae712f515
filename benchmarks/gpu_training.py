"""Where the time of training on a CUDA GPU goes: EXTD-64 fine-tuned from the authors' weights (320 px crops,
mixed precision, channels-last, BatchNorm frozen) in three short runs: batch 16 with --workers loader processes,
ending in a validation at each photo's own size; batch 64 with the same workers; batch 16 with no workers. Per
run: images/s after the first logged interval (median), the first interval's seconds (cuDNN's tuning and the
loader's start), the median share of time spent waiting for data, and the validation's seconds per photo.

The WIDER val photos in ../shared (or EDGEFACE_SHARED; see ``python -m benchmarks gpu --prepare``) stand in as
training data: this measures throughput, it trains no model worth keeping. ``gpu-suite`` runs it after the GPU
benchmark. ``--tiny`` runs the same code at toy sizes on any machine (a CPU check that it runs end to end).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .machine import AUTHORS, SHARED, WIDER, at_least, describe_machine, markdown_table, write_results

if TYPE_CHECKING:  # torch: imported when the benchmark runs
    from edgeface.train.config import TrainConfig

INIT = AUTHORS / "EXTD_64.pth"


def wider_photos(tiny: bool, validation: bool = False) -> dict:
    """The data entry of the WIDER val photos present (for --tiny one twentieth of them, validated at 160 px)."""
    wider = {"format": "wider", "root": str(WIDER), "split": "val"}
    return {**wider, "folds": 20, "fold": 0, **({"max_side": 160} if validation else {})} if tiny else wider


def run_config(out: Path, batch: int, workers: int, steps: int, validate: bool, tiny: bool) -> TrainConfig:
    from edgeface.train.config import TrainConfig

    log_every = 1 if tiny else 5
    return TrainConfig(model="extd64", init=str(INIT), freeze_bn=True, train_data=[wider_photos(tiny)],
                       val_data=[wider_photos(tiny, validation=True)] if validate else [],
                       output=str(out), input_size=128 if tiny else 320, batch_size=batch, steps=steps, lr=0.001,
                       warmup_steps=min(5, steps), schedule="cosine", checkpoint_every=10**9,
                       val_every=steps if validate else 0, log_every=log_every, workers=workers, amp=True, seed=0)


def summarise(log: Path, batch: int, val_photos: int) -> dict:
    """One run's row from its log.csv (the first logged interval holds as many steps as its row's step number)."""
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    intervals = [r for r in rows if r["images_per_s"]]
    later = intervals[1:] or intervals
    validation = [float(r["val_seconds"]) for r in rows if r.get("val_seconds")]
    return {"batch": batch, "images_per_s": statistics.median(float(r["images_per_s"]) for r in later),
            "first_interval_s": int(intervals[0]["step"]) * batch / float(intervals[0]["images_per_s"]),
            "data_wait_share": statistics.median(float(r["data_wait_share"]) for r in later),
            "validation_s_per_photo": validation[-1] / val_photos if validation else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=at_least(2), default=60, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--workers", type=at_least(1), default=8, help="loader processes (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on any device: a check that it all runs")
    args = parser.parse_args(argv)
    import torch

    from edgeface.eval.validation import validation_set
    from edgeface.train.trainer import train

    if not torch.cuda.is_available() and not args.tiny:
        print("skipped: no CUDA GPU here (--tiny runs the same code at toy sizes on the CPU)")
        return
    if not INIT.exists() or not (WIDER / "WIDER_val").exists():
        print(f"skipped: {SHARED} lacks the authors' EXTD-64 weights or WIDER val")
        return
    warnings.filterwarnings("ignore", message="WIDER val: ")  # ../shared holds a few of the listed images
    val_photos = len(validation_set(wider_photos(args.tiny, validation=True)).wider_ground_truth or [])
    batch, steps, workers = (2, 3, 1) if args.tiny else (16, args.steps, args.workers)
    runs = [(batch, workers, True), (4 * batch, workers, False), (batch, 0, False)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (size, loaders, validate) in enumerate(runs):
            cfg = run_config(Path(tmp) / str(i), size, loaders, steps, validate, args.tiny)
            train(cfg, resume=False, progress=False)
            row = {"workers": loaders, **summarise(Path(cfg.output) / "log.csv", size, val_photos)}
            rows.append(row)
            print(f"batch {size}, {loaders} workers: {row}", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    table = markdown_table(
        [f"EXTD-64, {'128' if args.tiny else '320'} px crops, {device}", "images/s", "first interval s",
         "waiting for data", f"validation s per photo ({val_photos} photos)"],
        [[f"batch {r['batch']}, {r['workers']} workers", f"{r['images_per_s']:.1f}", f"{r['first_interval_s']:.1f}",
          f"{100 * r['data_wait_share']:.1f}%",
          "-" if r["validation_s_per_photo"] is None else f"{r['validation_s_per_photo']:.3f}"] for r in rows])
    print(table)
    if args.tiny:
        return  # toy sizes: nothing to keep
    payload = {"machine": {**describe_machine(), "gpu": device,
                           "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability())},
               "steps": steps, "val_photos": val_photos, "rows": rows}
    print(f"written: {write_results('gpu_training', payload, table)}")
