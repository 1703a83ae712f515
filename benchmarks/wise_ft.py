"""WiSE-FT: weight-space interpolation between a released model and a fine-tune of it, scored on both kinds of
validation, to choose the mix that keeps what the release knows and adds what the fine-tune learned.

For each alpha the interpolated weights ``(1 - alpha) x START + alpha x END`` (``edgeface interpolate``) are
exported to ONNX and run through ONNX Runtime in one pass at each image's own size (or upscaled to --min-side;
score threshold 0.05):
VOC AP50 on the face dataset's val split and WIDER FACE val easy / medium / hard AP (official protocol, over the
val images ``../shared`` holds, or with --wider-holdout over a fold of the train images that the fine-tune did not
train on). With --keep, END's change of each weight tensor is trimmed to its largest entries first (TIES-merging's
trim); with --module-scale a module's weights move only a share of alpha (conf=0: START's classification
heads throughout). Alpha 0 is START itself (the baseline in the same run). Writes a table, JSON and a plot of every
metric against alpha.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from edgeface.errors import OptionError
from edgeface.options import check_keep_share, parse_module_scale

from .machine import (
    AUTHORS,
    HOLDOUT_HELP,
    RESULTS,
    SHARED,
    check_holdout_fold,
    describe_machine,
    markdown_table,
    wider_validation,
    write_results,
)


def both_validations(max_side: int | None = None, frame_side: int | None = None,
                     holdout_fold: int | None = None) -> list:
    """The face dataset's val split and the WIDER FACE val images present (or fold `holdout_fold` of the train
    images: :func:`wider_validation`), as training validates on them (WIDER bounded by the detector's `max_side`, or
    downscaled to `frame_side` frames before the detector, when given)."""
    from edgeface.eval.validation import validation_set

    bound = {key: value for key, value in (("max_side", max_side), ("frame_side", frame_side)) if value}
    sets = [validation_set({"format": "facemask", "name": "face_val", "root": str(SHARED / "data" / "facemask"),
                            "split": "val"})]
    wider = wider_validation(holdout_fold, **bound)
    return sets if wider is None else [*sets, wider]


def score_model(path: str | Path, sets: list) -> dict[str, float]:
    """Every metric of `sets` for the model file at `path` (single pass, score threshold 0.05)."""
    from edgeface.eval.validation import score

    result: dict[str, float] = {}
    for vset in sets:
        result.update(score(vset.detector(path), vset))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", default=str(AUTHORS / "EXTD_64.pth"),
                        help="the released weights (edgeface checkpoint or authors' .pth; default: %(default)s)")
    parser.add_argument("--end", required=True, help="the fine-tune of START (edgeface checkpoint, e.g. last.pt)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="weights of END to score (default: %(default)s)")
    parser.add_argument("--min-side", type=int,
                        help="the exported models upscale frames whose longest side is below this (spec min_side; "
                             "the shipped models use 640; default: none)")
    parser.add_argument("--wider-max-side", type=int,
                        help="run WIDER val images downscaled to this longest side (default: their own size)")
    parser.add_argument("--wider-frame-side", type=int,
                        help="downscale WIDER val images to fit this square before the detector, which then applies "
                             "the model's own settings (its min_side upscaling included), as frames of a camera of "
                             "that resolution (default: none)")
    parser.add_argument("--wider-holdout", type=int, metavar="FOLD", help=HOLDOUT_HELP)
    parser.add_argument("--keep", type=float, default=1.0, metavar="SHARE",
                        help="trim each weight tensor's change from START to END to this share of its largest "
                             "entries first (edgeface interpolate --keep; default: 1, plain WiSE-FT)")
    parser.add_argument("--module-scale", type=str, action="append", default=[], metavar="MODULE=FACTOR",
                        help="move this module's weights only FACTOR x alpha of the way (edgeface interpolate "
                             "--module-scale; e.g. conf=0 keeps START's classification heads; repeatable)")
    parser.add_argument("--name", default="wise_ft", help="results file stem (default: %(default)s)")
    args = parser.parse_args(argv)
    try:  # before the minutes of loading and scoring
        check_keep_share(args.keep, "--keep")
        check_holdout_fold(args.wider_holdout)
        scales = dict(parse_module_scale(text) for text in args.module_scale)
    except OptionError as exc:
        parser.error(str(exc))
    from edgeface.export.onnx_export import export_onnx
    from edgeface.models.checkpoint import interpolate_weights, load_weights_of_one_model

    if not (SHARED / "data" / "facemask").exists():
        print(f"skipped: {SHARED / 'data'} not found (the shared data folder is not beside the checkout)")
        return
    (start, spec), (end, end_spec) = load_weights_of_one_model([args.start, args.end], "wise-ft")
    sets = both_validations(args.wider_max_side, args.wider_frame_side, args.wider_holdout)
    check = str(next((SHARED / "data" / "facemask" / "images").glob("*.jpg")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for alpha in args.alphas:
            onnx_path = Path(tmp) / f"alpha{alpha:g}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mixed = interpolate_weights(start, end, alpha, args.keep, scales)
                export_onnx(mixed, end_spec.with_min_side(args.min_side), onnx_path, check_images=[check])
            begin = time.perf_counter()
            row = {"alpha": alpha, **score_model(onnx_path, sets), "seconds": time.perf_counter() - begin}
            rows.append(row)
            print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    metrics = [m for vset in sets for m in vset.metrics]
    table = markdown_table(["alpha (weight of the fine-tune)", *metrics],
                           [[f"{r['alpha']:g}", *(f"{r[m]:.3f}" for m in metrics)] for r in rows])
    print(table)
    payload = {"machine": describe_machine(), "start": args.start, "end": args.end, "keep": args.keep,
               "module_scales": scales,
               "model": spec.name,
               "min_side": args.min_side, "wider_max_side": args.wider_max_side,
               "wider_frame_side": args.wider_frame_side, "wider_holdout_fold": args.wider_holdout,
               "validation_images": {vset.name: len(vset.records or vset.wider_ground_truth) for vset in sets},
               "rows": rows}
    print(f"\nwritten: {write_results(args.name, payload, table)}")
    from edgeface.eval.plots import plot_lines

    alphas = np.array([r["alpha"] for r in rows])
    start_name, end_name = ("/".join(Path(p).parts[-2:]) for p in (args.start, args.end))
    variant = f", keep {args.keep:g}" if args.keep < 1 else ""
    variant += "".join(f", {module} x{factor:g}" for module, factor in scales.items())
    plot_lines([(m, alphas, np.array([r[m] for r in rows])) for m in metrics], RESULTS / f"{args.name}.png",
               title=f"{spec.name}: {start_name} (0) to {end_name} (1){variant}", xlabel="alpha", ylabel="AP",
               y_from_zero=False)
    print(f"plot: {RESULTS / f'{args.name}.png'}")


if __name__ == "__main__":
    main()
