"""``edgeface train`` (from a recipe), ``edgeface fisher`` (which weights a skill rests on) and ``edgeface data
show`` (training samples as the trainer sees them)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from ..data.augment import RECIPES
from ..errors import EdgefaceError
from ..options import (
    check_background_crop_prob,
    check_blur_prob,
    check_occlude_prob,
    check_samples,
    check_seed,
    check_training_size,
)
from .arguments import add_data_source, check_outputs, checked, data_source


def _key_value(item: str) -> tuple[str, object]:
    from ..train.config import load_yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), load_yaml(value)


def leave_worker(status: int) -> NoReturn:
    """End a torchrun worker whose command is over (finished, interrupted or failed with a one-line error) without
    the interpreter's teardown. torch's communication threads outlive ``destroy_process_group``
    (DistributedDataParallel keeps the process group alive) and may still be releasing a collective's tensors, which
    takes the GIL; the teardown ends such a thread inside a destructor and the process aborts ("terminate called
    without an active exception", pytorch/pytorch#190489): 4 of 30 two-process runs with hard image mining failed so.
    What training writes is closed and on disk by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_train(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun worker: the command line leaves through it
        args.leave_process = leave_worker
    if args.keys:
        from ..train.config import describe_keys

        print(describe_keys(min(max(60, shutil.get_terminal_size().columns), 120) - 1))
        return 0
    if not args.config:
        raise EdgefaceError("--config is required: a recipe YAML (edgeface/train/recipes/; --keys lists its keys)")
    from ..train.config import TrainConfig
    from ..train.trainer import TrainingInterrupted, train

    try:
        cfg = TrainConfig.from_yaml(args.config, overrides=dict(_key_value(item) for item in args.set))
    except (ValueError, TypeError) as exc:  # unknown keys, wrong value types
        raise EdgefaceError(str(exc)) from exc
    if args.output:
        cfg.output = args.output
    if args.steps is not None:
        cfg.steps = args.steps
    if args.model:
        cfg.model = args.model
    try:
        result = train(cfg, resume=not args.no_resume, progress=not args.quiet)
    except TrainingInterrupted as exc:
        print(f"edgeface train: {exc}", file=sys.stderr)
        return 128 + exc.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    except ValueError as exc:  # a run folder of another model, a bad data source
        raise EdgefaceError(str(exc)) from exc
    best = Path(cfg.output) / "best.pt"
    print(f"done: {cfg.output}/last.pt" + (f", best validation AP50 in {best}" if best.exists() else "")
          + (f"; last losses {result}" if result else ""))
    return 0


def cmd_fisher(args: argparse.Namespace) -> int:
    from ..train.config import TrainConfig
    from ..train.fisher import fisher_information, save_fisher
    from ..train.training_data import recipe_weights, training_objective, training_set

    check_outputs(files=[args.output])
    source = data_source(args)
    try:
        cfg = TrainConfig.from_yaml(args.config, overrides={"train_data": [source], "seed": args.seed})
        model_path = args.model or cfg.init
        if not model_path:
            raise EdgefaceError(f"{args.config} has no init: give the model with --model")
        model = recipe_weights(cfg, model_path)
        objective = training_objective(cfg)
        images = training_set(cfg, objective)
        fisher = fisher_information(model, images, objective, args.samples, args.seed, progress=not args.quiet)
    except ValueError as exc:  # bad recipe keys, another model's weights, an unreadable data source or model file
        raise EdgefaceError(str(exc)) from exc
    used = min(args.samples, len(images))  # fisher_information draws at most every image once
    save_fisher(fisher, args.output, model=os.path.basename(model_path), spec=cfg.model, data=source,
                recipe=os.path.basename(args.config), samples=used)
    print(f"Fisher information of {model_path} on {used} {args.format} images written to {args.output}")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from ..core.detections import Detections
    from ..core.image import write_image
    from ..data.augment import AugmentConfig, augment_sample
    from ..data.records import read_record_image
    from ..data.sources import load_records

    check_outputs(images=[args.output])
    records = load_records(data_source(args))
    if not records:
        raise EdgefaceError("the data source has no images")
    cfg = AugmentConfig(size=args.size, recipe=args.recipe, blur_prob=args.blur, occlude_prob=args.occlude,
                        background_crop_prob=args.background)
    rng = np.random.default_rng(args.seed)
    tiles = []
    for k in range(args.count):
        record = records[int(rng.integers(len(records)))]
        image, boxes, ignored = augment_sample(read_record_image(record), record.boxes[~record.ignore], rng, cfg,
                                               ignored=record.boxes[record.ignore])
        tile = image
        for shown, colour in ((ignored, (0, 160, 255)), (boxes, (0, 255, 0))):  # ignored boxes orange, faces green
            tile = Detections(shown, np.ones(len(shown), np.float32)).draw(tile, colour, 1, show_scores=False)
        cv2.putText(tile, f"{k}: {len(boxes)} faces", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
        tiles.append(tile)
    columns = min(4, len(tiles))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    grid = np.vstack([np.hstack(tiles[r : r + columns]) for r in range(0, len(tiles), columns)])
    write_image(args.output, grid)
    print(f"{args.count} augmented samples ({args.size}x{args.size}) with their boxes: {args.output}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the parsers of ``train``, ``fisher`` and ``data show`` to the ``edgeface`` command's subparsers."""
    p = sub.add_parser("train", help="train a model from a recipe (YAML)",
                       description="Train per a recipe (see edgeface/train/recipes/). Resumes from <output>/last.pt "
                                   "when it exists. Several GPUs or machines: "
                                   "torchrun --nproc_per_node N -m edgeface train --config recipe.yaml")
    p.add_argument("--config", help="recipe YAML (required unless --keys)")
    p.add_argument("-o", "--output", help="run folder (default: the recipe's)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    p.add_argument("--model", help="registry name of the variant to train (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (YAML value), e.g. --set hard_image_mining=true --set lr=0.002")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--keys", action="store_true",
                   help="list every key a recipe and its data entries take (type, default, what it does) and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fisher", help="measure which weights a model's skill on some data rests on",
                       description="The diagonal empirical Fisher information of a model (default: the recipe's "
                                   "init) on training images of one data source, augmented and matched as the "
                                   "recipe trains: the mean squared gradient of the loss of each weight, one image "
                                   "at a time. A fine-tune that should not forget that data uses it: the recipe's "
                                   "keep_init_fisher with keep_init_weight (elastic weight consolidation), e.g. "
                                   "`edgeface fisher --config general_extd64.yaml --format wider "
                                   "root=../shared/data/widerface split=train -o wider.fisher`.")
    p.add_argument("--config", required=True, help="recipe YAML (its model, crops, augmentation and matching)")
    p.add_argument("-m", "--model", help="checkpoint, authors' .pth, ONNX export or shipped model (default: the "
                                            "recipe's init)")
    add_data_source(p)
    p.add_argument("--samples", type=checked(check_samples, int), default=400,
                   help="training images drawn, without replacement (default: %(default)s; about 0.4 s each for "
                        "EXTD-64 on a CPU)")
    p.add_argument("--seed", type=checked(check_seed, int), default=0,
                   help="which images and crops (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="the Fisher file to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fisher)

    p = sub.add_parser("data", help="inspect training data")
    data_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = data_sub.add_parser("show", help="render augmented training samples with their boxes to a PNG",
                            description="Draw a grid of samples as the trainer sees them (the EXTD augmentation), "
                                        "faces in green, ignored boxes (too small, or marked ignore: neither face "
                                        "nor background) in orange, so a person can check labels and "
                                        "augmentation.")
    add_data_source(d)
    d.add_argument("-o", "--output", default="augmented.png", help="PNG to write (default: %(default)s)")
    d.add_argument("--count", type=checked(check_samples, int), default=8, help="samples (default: %(default)s)")
    d.add_argument("--size", type=checked(check_training_size, int), default=320,
                   help="training input side, 32-8192 (default: %(default)s)")
    d.add_argument("--seed", type=checked(check_seed, int), default=0, help="which samples (default: %(default)s)")
    d.add_argument("--recipe", choices=RECIPES, default="extd",
                   help="sampling: EXTD's (data-anchor-sampling / SSD crops), HR/SHF's rescale + crop, or SRN's "
                        "expand + square crop")
    d.add_argument("--blur", type=checked(check_blur_prob), default=0.0, metavar="P",
                   help="share of samples blurred, out of focus or moving, as the recipe key blur_prob "
                        "(default: %(default)s)")
    d.add_argument("--occlude", type=checked(check_occlude_prob), default=0.0, metavar="P",
                   help="share of samples whose faces may get a band covered by a patch of the image, as the "
                        "recipe key occlude_prob (default: %(default)s)")
    d.add_argument("--background", type=checked(check_background_crop_prob), default=0.0, metavar="P",
                   help="share of samples cropped to a window that keeps clear of every face (background seen up "
                        "close, taught as background), as the recipe key background_crop_prob (default: %(default)s)")
    d.set_defaults(func=cmd_data_show)
