"""SHF, HR-ResNet50 and SRN trained from random weights on the face dataset's train split, in one call on a
GPU machine, and scored on its val split (VOC AP50, single pass and each model's own test-time strategy).

Sized for a tight GPU budget: ``--budget`` seconds of training in all (default 480: three families in under
ten minutes with their validation), shared equally; each family first times a few steps, then trains for as
many steps as fit its share, with linear warm-up and cosine decay, BatchNorm in train mode, mixed precision
and channels-last tensors. The inputs are the face dataset's JPEGs and XMLs (about 35 MB):

    python -m benchmarks heavy-training --prepare .device/facemask     # here: copy ../shared's face dataset
    python -m benchmarks heavy-training --data .device/facemask --out "$OUT"   # on the GPU machine

It writes at most 8 files to ``--out``: ``heavy_training.json`` and ``.md`` (AP table, throughput, steps,
time), and per family its ``log.csv`` and a ``curves.png`` of the training loss. The weights are not
returned: in FP16 SHF is 36 MB, HR-ResNet50 17 MB and SRN 107 MB, over the 16 MB a returned file may have.
``--tiny`` runs everything at toy sizes (CPU check: the pipeline runs end to end and its outputs parse).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .machine import SHARED, at_least, describe_machine, markdown_table

if TYPE_CHECKING:  # torch: imported when the benchmark runs
    from edgeface.train.config import TrainConfig
    from edgeface.train.trainer import Trainer

FAMILIES = ("shf", "hr-res50", "srn")
# Per family: training input side, batch, peak lr and augmentation. Larger batches than the papers' (one GPU,
# minutes not days), warm-up then cosine decay.
SETTINGS: dict[str, dict[str, Any]] = {
    "shf": dict(input_size=320, batch_size=32, lr=0.02, augment_recipe="rescale_crop", rescales=[0.6, 1.15, 1.7],
                weight_decay=2.5e-4),
    "hr-res50": dict(input_size=320, batch_size=32, lr=1e-3, augment_recipe="rescale_crop", rescales=[0.5, 1.0, 2.0]),
    "srn": dict(input_size=320, batch_size=32, lr=0.02, augment_recipe="square_crop", weight_decay=1e-4),
}
TINY: dict[str, Any] = dict(input_size=64, batch_size=2)


def prepare(destination: Path) -> None:
    """Copy the face dataset (images, annotations, split) from ../shared into `destination` (git-ignored)."""
    source = SHARED / "data" / "facemask"
    if not source.exists():
        raise SystemExit(f"{source} not found: the shared data folder is not beside the checkout")
    shutil.copytree(source, destination, dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in destination.rglob("*") if p.is_file())
    print(f"copied the face dataset to {destination} ({size / 1e6:.1f} MB)")


def config(family: str, data: Path, out: Path, steps: int, tiny: bool, workers: int) -> TrainConfig:
    from edgeface.train.config import TrainConfig

    settings = {**SETTINGS[family], **(TINY if tiny else {})}
    return TrainConfig(model=family, train_data=[{"format": "facemask", "root": str(data), "split": "train"}],
                       output=str(out), steps=steps, warmup_steps=max(1, min(100, steps // 10)), schedule="cosine",
                       clip_grad_norm=10.0, checkpoint_every=10**9, val_every=0, log_every=max(1, steps // 50),
                       workers=workers, seed=0, **settings)


def train_family(family: str, data: Path, out: Path, budget_s: float, tiny: bool, workers: int) -> dict:
    """Time a few steps, train for the steps that fit `budget_s`, return the trained model, steps and speed."""
    from edgeface.train.trainer import Trainer

    probe_steps = 2 if tiny else 6
    probe = Trainer(config(family, data, out / "probe", probe_steps, tiny, workers))
    start = time.perf_counter()
    probe.fit(progress=False)
    per_step = (time.perf_counter() - start) / probe_steps  # includes start-up: errs on the short side
    shutil.rmtree(out / "probe", ignore_errors=True)
    steps = 3 if tiny else max(20, int(budget_s / per_step))
    cfg = config(family, data, out / family, steps, tiny, workers)
    trainer = Trainer(cfg)
    start = time.perf_counter()
    trainer.fit(progress=False)
    seconds = time.perf_counter() - start
    return {"trainer": trainer, "steps": steps, "seconds": seconds,
            "images_per_s": steps * cfg.batch_size / seconds, "batch_size": cfg.batch_size,
            "input_size": cfg.input_size, "lr": cfg.lr}


def validate(trainer: Trainer, data: Path, tiny: bool) -> dict[str, float]:
    """VOC AP50 on the val split: one pass, and the model's own test-time strategy."""
    from edgeface import Detector
    from edgeface.backends.torch_backend import TorchBackend
    from edgeface.data.sources import load_records
    from edgeface.eval.voc import evaluate_detector
    from edgeface.spec import TestTimeSpec

    records = load_records({"format": "facemask", "root": str(data), "split": "val"})[: 4 if tiny else None]
    trainer.model.eval()
    backend = TorchBackend.from_model(trainer.model, trainer.spec, device=str(trainer.device))
    result = {}
    for name, test_time in (("single", TestTimeSpec()), ("own_strategy", None)):
        detector = Detector(backend, score_threshold=0.05, test_time=test_time,
                            max_side=320 if tiny else 1920)
        start = time.perf_counter()
        result[f"ap50_{name}"] = evaluate_detector(detector, records).ap
        result[f"seconds_{name}"] = time.perf_counter() - start
    result["val_images"] = len(records)
    return result


def curves(log: Path, family: str, path: Path) -> None:
    from edgeface.eval.plots import plot_lines

    rows = [line.split(",") for line in log.read_text().splitlines()[1:]]
    rows = [r for r in rows if r[2]]  # training rows (validation rows leave the loss empty)
    steps = np.array([float(r[0]) for r in rows])
    plot_lines([("loss", steps, np.array([float(r[2]) for r in rows]))], path, f"{family}: training loss",
               "step", "loss")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="FOLDER", help="copy the face dataset here and stop")
    parser.add_argument("--data", default=".device/facemask", help="the face dataset (default: %(default)s)")
    parser.add_argument("--out", default="heavy_training_out", help="results folder (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds for all families together")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--workers", type=at_least(0), default=8, help="data-loading processes per family")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a CPU check that everything runs)")
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return
    data, out = Path(args.data), Path(args.out)
    if not (data / "split.json").exists():
        raise SystemExit(f"{data} holds no face dataset: run with --prepare {data} where ../shared exists")
    out.mkdir(parents=True, exist_ok=True)
    work = out / "runs"
    rows = []
    for family in args.families:
        print(f"== {family} ==", flush=True)
        trained = train_family(family, data, work, args.budget / len(args.families), args.tiny, args.workers)
        row = {"model": family, **{k: v for k, v in trained.items() if k != "trainer"},
               **validate(trained["trainer"], data, args.tiny)}
        rows.append(row)
        shutil.copy(work / family / "log.csv", out / f"{family}_log.csv")
        curves(work / family / "log.csv", family, out / f"{family}_curves.png")
        print(json.dumps(row), flush=True)
    shutil.rmtree(work, ignore_errors=True)  # checkpoints stay behind: only the results come back
    table = markdown_table(
        ["model", "steps", "batch x input", "train s", "images/s", "val AP50 single", "val AP50 own strategy"],
        [[r["model"], r["steps"], f"{r['batch_size']} x {r['input_size']}", f"{r['seconds']:.0f}",
          f"{r['images_per_s']:.1f}", f"{r['ap50_single']:.3f}", f"{r['ap50_own_strategy']:.3f}"] for r in rows])
    machine = describe_machine()
    try:
        import torch

        machine["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        machine["gpu"] = None
    payload = {"machine": machine, "budget_s": args.budget, "tiny": args.tiny, "rows": rows}
    (out / "heavy_training.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "heavy_training.md").write_text(f"{table}\n\nMachine: {machine.get('gpu') or machine['cpu']}, "
                                           f"{machine['date']}\n")
    print(table)


if __name__ == "__main__":
    main()
