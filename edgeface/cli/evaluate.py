"""``edgeface eval`` (VOC AP on a labelled set) and ``edgeface eval-wider`` (WIDER FACE's official protocol)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import EdgefaceError, UnscoredImageWarning
from ..options import check_overlap, check_scale, check_score_threshold
from .arguments import SHIPPED_NAMES, add_data_source, add_device, add_size_options, check_outputs, checked, data_source


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..data.sources import load_records
    from ..detector import Detector
    from ..eval.plots import plot_pr_curves
    from ..eval.voc import box_placement, detect_records, voc_ap
    from ..spec import TestTimeSpec

    check_outputs(files=[args.json], images=[args.plot])
    source = data_source(args)
    records = load_records(source)
    test_time = None  # the model's own strategy
    if args.scales or args.flip or args.box_voting or args.single_pass:
        test_time = TestTimeSpec.from_scales(tuple(args.scales or (1.0,)), args.flip, args.box_voting)
    detector = Detector(args.model, score_threshold=args.score_threshold, input_size=args.input_size,
                        device=args.device, test_time=test_time, max_side=args.max_side, min_side=args.min_side,
                        gpu_pipeline=False)  # a dataset's images have many sizes: as validation runs them
    detections, unreadable = _counting_unreadable(
        lambda: detect_records(detector, records, progress=not args.quiet), len(records))
    curve = voc_ap(records, detections, iou_threshold=args.iou)
    placement = box_placement(records, detections)
    name = f"{Path(args.model).stem} ({detector.spec.name})"
    print(f"{name}: VOC AP@{args.iou:g} = {curve.ap:.4f} on {len(records)} images{_unreadable_note(unreadable)}, "
          f"{curve.num_faces} faces ({args.format} {' '.join(args.data)})")
    print(f"box placement: {placement}")
    if args.plot:
        plot_pr_curves([(f"{name} AP {curve.ap:.3f}", curve.recall, curve.precision)], args.plot)
        print(f"precision-recall plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "data": source, "ap": curve.ap,
                                               "faces": curve.num_faces, "images": len(records),
                                               "unreadable_images": unreadable,
                                               "box_placement": asdict(placement)}, indent=1))
    return 0


_SHOWN_UNREADABLE = 10  # unreadable evaluation images named one by one; the rest counted


def _counting_unreadable(detect: Callable[[], Any], total: int) -> tuple[Any, int]:
    """``detect()`` (an evaluation's pass over its `total` images) and how many of the images could not be read;
    the first few warnings are printed (those images were scored as no detections, so their faces count as missed).
    An evaluation none of whose images could be read is an error, not an AP of 0."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnscoredImageWarning)
        result = detect()
    unscored = [w.message for w in caught if isinstance(w.message, UnscoredImageWarning)]
    for w in caught:
        if not issubclass(w.category, UnscoredImageWarning):  # anything else as Python would have shown it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if total and len(unscored) == total:
        raise EdgefaceError(f"none of the {total} images could be read, so there is nothing to score; the first: "
                            f"{unscored[0].reason}")
    for message in unscored[:_SHOWN_UNREADABLE]:
        print(f"warning: {message}", file=sys.stderr)
    if len(unscored) > _SHOWN_UNREADABLE:
        print(f"warning: {len(unscored) - _SHOWN_UNREADABLE} more images could not be read", file=sys.stderr)
    return result, len(unscored)


def _unreadable_note(unreadable: int) -> str:
    return f" ({unreadable} unreadable, scored as no detections)" if unreadable else ""


def cmd_eval_wider(args: argparse.Namespace) -> int:
    from ..eval.plots import plot_pr_curves
    from ..eval.wider import (
        SETTINGS,
        detect_wider,
        evaluate_wider,
        load_ground_truth,
        read_submission,
        write_submission,
    )

    check_outputs(images=[args.plot])
    # with --images, only the images present there count (a partial copy of WIDER val); else all of WIDER val
    ground_truth = load_ground_truth(args.ground_truth, args.images)
    if args.model:
        from ..detector import Detector

        if not args.images:
            raise EdgefaceError("--model needs --images (the WIDER_val/images folder)")
        detector = Detector(args.model, score_threshold=args.score_threshold, device=args.device,
                            gpu_pipeline=False)  # as validation runs WIDER's images of many sizes
        found, unreadable = _counting_unreadable(
            lambda: detect_wider(detector, ground_truth, args.images, progress=not args.quiet), len(ground_truth))
        write_submission(args.submission, found)
        print(f"detections written in the official layout to {args.submission}{_unreadable_note(unreadable)}")
    predictions = read_submission(args.submission)
    if not predictions:
        raise EdgefaceError(f"{args.submission} holds no detections in the official layout (<event>/<image>.txt)")
    unmatched = sum(f"{image.event}/{image.name}" not in predictions for image in ground_truth)
    if unmatched:
        print(f"warning: {unmatched} of the {len(ground_truth)} WIDER val images have no detections file in "
              f"{args.submission}; they count as images where no face was found", file=sys.stderr)
    print(f"scoring {len(ground_truth)} WIDER val images")
    result = evaluate_wider(predictions, ground_truth)
    print("WIDER FACE val AP: " + ", ".join(f"{s} {result.ap[s]:.4f}" for s in SETTINGS))
    if args.plot:
        plot_pr_curves([(f"{s} AP {result.ap[s]:.3f}", result.recall[s], result.precision[s]) for s in SETTINGS],
                       args.plot, title="WIDER FACE val")
        print(f"precision-recall plot: {args.plot}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the parsers of ``eval`` and ``eval-wider`` to the ``edgeface`` command's subparsers."""
    p = sub.add_parser("eval", help="VOC AP of a model on a labelled set",
                       description="Average precision (VOC devkit style: pixel-inclusive IoU, interpolated AP) "
                                   "of a model on a labelled set, e.g. `edgeface eval -m m.onnx --format facemask "
                                   "root=../shared/data/facemask split=val`.")
    p.add_argument("-m", "--model", default="default",
                   help=f"model file, or a shipped model: {SHIPPED_NAMES} (default: %(default)s)")
    add_data_source(p)
    p.add_argument("--iou", type=checked(lambda v: check_overlap(v, "iou")), default=0.5,
                   help="IoU for a match (default: %(default)s)")
    p.add_argument("--score-threshold", type=checked(check_score_threshold), default=0.05, metavar="P",
                   help="keep scores above (default: %(default)s)")
    add_size_options(p)
    add_device(p)
    p.add_argument("--scales", type=checked(check_scale), nargs="+",
                   help="test-time scales (default: the model's own strategy, e.g. one pass for EXTD)")
    p.add_argument("--single-pass", action="store_true", help="one pass at scale 1, whatever the model's strategy")
    p.add_argument("--flip", action="store_true", help="add horizontally mirrored passes")
    p.add_argument("--box-voting", type=checked(lambda v: check_overlap(v, "box voting's IoU")), metavar="IOU",
                   help="merge with box voting at this IoU (e.g. 0.3)")
    p.add_argument("--plot", help="write the precision-recall curve to this PNG")
    p.add_argument("--json", help="write the result to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-wider", help="WIDER FACE easy/medium/hard AP (official protocol), and all",
                       description="Score detections in the official WIDER submission layout (a folder per event, "
                                   "one txt per image) against the official ground truth: AP on easy, medium and "
                                   "hard (the official keep lists) and on all (every labelled face counted); with "
                                   "--model, first run the model over WIDER_val/images and write that submission.")
    p.add_argument("submission", help="submission folder (read, or written when --model is given)")
    p.add_argument("--ground-truth", required=True, help="the eval_tools/ground_truth folder (.mat files)")
    p.add_argument("-m", "--model", help="model to run first")
    p.add_argument("--images", help="WIDER_val/images folder: the model runs on it (with --model), and only the "
                                    "images present there are scored (a partial copy of WIDER val)")
    p.add_argument("--score-threshold", type=checked(check_score_threshold), default=0.05, metavar="P",
                   help="with --model (default: %(default)s)")
    add_device(p)
    p.add_argument("--plot", help="write the four precision-recall curves (easy, medium, hard, all) to this PNG")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_wider)
