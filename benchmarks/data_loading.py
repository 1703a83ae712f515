"""Where training time goes before the network: the training data pipeline of a recipe on this machine's CPUs.

Times each stage of one training sample in this process (JPEG decode, augmentation, the model family's
targets, normalisation; median per image), then the trainer's own DataLoader at each --workers count
(images/s over --batches batches after one warm-up batch). A GPU trains no faster than its loader delivers:
compare the loader's images/s with the images/s the trainer logs, and its `data_wait_share` column (the
share of wall time spent waiting for batches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch: imported when the benchmark runs
    from edgeface.train.dataset import FaceTrainingSet

from .machine import at_least, describe_machine, markdown_table, write_results

RECIPE = Path(__file__).resolve().parents[1] / "edgeface" / "train" / "recipes" / "general_extd64.yaml"


def _stage_times(dataset: FaceTrainingSet, samples: int) -> dict[str, float]:
    """Median ms per image of each stage of ``FaceTrainingSet.sample``, over `samples` images of epoch 0."""
    times: dict[str, list[float]] = {}
    last = 0.0

    def stage_done(stage: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times.setdefault(stage, []).append((now - last) * 1e3)
        last = now

    for index in np.random.default_rng(0).permutation(len(dataset.records))[:samples]:
        last = time.perf_counter()
        dataset.sample(int(index), stage_done)
    return {stage: statistics.median(values) for stage, values in times.items()}


def _loader_rate(dataset: FaceTrainingSet, batch_size: int, workers: int, batches: int) -> float:
    """Images/s of the trainer's DataLoader with `workers` processes, after one warm-up batch."""
    from torch.utils.data import DataLoader

    from edgeface.train.dataset import ResumableSampler, collate

    sampler = ResumableSampler(len(dataset), batch_size, seed=0)
    loader = iter(DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                             collate_fn=collate))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(RECIPE), help="training recipe (default: the shipped default's)")
    parser.add_argument("--workers", type=at_least(0), nargs="+", default=sorted({0, 1, 2, os.cpu_count() or 1}),
                        help="DataLoader worker counts to time (default: %(default)s)")
    parser.add_argument("--batches", type=at_least(1), default=8, help="timed batches per worker count (default: 8)")
    parser.add_argument("--samples", type=at_least(1), default=48, help="images timed stage by stage (default: 48)")
    args = parser.parse_args(argv)
    from edgeface.train.config import TrainConfig
    from edgeface.train.training_data import training_objective, training_set

    cfg = TrainConfig.from_yaml(args.config)
    try:
        with warnings.catch_warnings():  # a partial WIDER copy is expected
            warnings.simplefilter("ignore")
            dataset = training_set(cfg, training_objective(cfg))
    except (OSError, ValueError) as exc:
        print(f"skipped: the recipe's training data is not here ({exc})")
        return
    stages = _stage_times(dataset, args.samples)
    per_image = sum(stages.values())
    print(", ".join(f"{k} {v:.1f} ms" for k, v in stages.items()) + f": {1e3 / per_image:.0f} images/s per core",
          flush=True)
    rates = {}
    for workers in args.workers:
        rates[workers] = _loader_rate(dataset, cfg.batch_size, workers, args.batches)
        print(f"{workers} workers: {rates[workers]:.0f} images/s", flush=True)
    table = markdown_table(["stage (one image, one core)", "median ms"],
                           [[k, f"{v:.2f}"] for k, v in stages.items()] + [["all", f"{per_image:.2f}"]])
    table += "\n\n" + markdown_table(
        ["DataLoader workers", f"images/s (batch {cfg.batch_size}, {cfg.input_size} px crops)"],
        [[w, f"{r:.0f}"] for w, r in rates.items()])
    print(table)
    payload = {"machine": describe_machine(), "recipe": args.config, "images": len(dataset),
               "stage_ms": stages, "loader_images_per_s": rates}
    print(f"\nwritten: {write_results('data_loading', payload, table)}")


if __name__ == "__main__":
    main()
