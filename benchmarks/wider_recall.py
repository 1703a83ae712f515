"""Which WIDER FACE val faces each model finds, by the faces' own labels, and where it draws false boxes.

For each model: the official easy / medium / hard AP and all's (every labelled face counted), then the share of one
setting's faces (hard by default: every face the official protocol counts) it finds, meaning some detection overlaps
the face at IoU >= 0.5 with a score of at least --min-score, split by face height, by each of WIDER FACE's per-face
labels (blur, occlusion, pose, illumination, expression) and by event; and how many boxes scoring 0.5, 0.7 or 0.9
and more overlap no labelled face (the false boxes a user sees; an upper bound, as WIDER leaves some crowd faces
unlabelled). Every model after the first is shown with its difference from the first (the baseline, run in the same
call), in the tables (the APs' with a 95% interval from a paired bootstrap over the images: how far these images
alone can move it) and, per group of faces, in a bar plot. Where two models' APs differ, this says which faces make
the difference: what a fine-tune forgot, not only how much. Models run through edgeface as ``Detector`` runs them
(score threshold 0.05), at the images' own size unless --max-side, --frame-side, --frame-size or --input-size is
given; with --wider-holdout on a held-out fold of WIDER train instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgeface.errors import OptionError
from edgeface.eval.plots import plot_differences
from edgeface.eval.wider import (
    ATTRIBUTES,
    SETTINGS,
    as_predictions,
    best_match_scores,
    detect_wider,
    evaluate_curves,
    image_curves,
    paired_bootstrap,
    stray_scores,
)

from .machine import (
    HOLDOUT_HELP,
    SHARED,
    at_least,
    check_holdout_fold,
    describe_machine,
    markdown_table,
    wider_validation,
    write_results,
)

STRAY_SCORES = (0.5, 0.7, 0.9)  # false boxes are counted at these scores and above
HEIGHTS = ((0, 16), (16, 32), (32, 64), (64, 128), (128, 100_000))
# the labels reported, most telling first (invalid faces never count)
LABELS = {name: ATTRIBUTES[name] for name in ("blur", "occlusion", "pose", "illumination", "expression")}


def face_table(ground_truth: list, setting: str) -> dict[str, np.ndarray]:
    """One entry per counted face of `setting`: its image's event, height and WIDER labels."""
    columns: dict[str, list] = {"event": [], "height": [], **{label: [] for label in LABELS}}
    for image in ground_truth:
        missing = [label for label in LABELS if label not in image.attributes]
        if missing:
            raise ValueError(f"WIDER ground truth of {image.event}/{image.name} has no {', '.join(missing)} labels "
                             "(the official wider_face_val.mat has them)")
        keep = image.counted(setting)
        columns["event"] += [image.event] * len(keep)
        columns["height"] += image.boxes[keep, 3].tolist()
        for label in LABELS:
            columns[label] += image.attributes[label][keep].tolist()
    return {name: np.asarray(values) for name, values in columns.items()}


def face_groups(faces: dict[str, np.ndarray], min_event_faces: int) -> list[tuple[str, np.ndarray]]:
    """``(name, mask)`` of every group reported that has a face: all faces, each height band, each label value,
    each event with at least `min_event_faces` faces."""
    groups = [("all faces", np.ones(len(faces["height"]), bool))]
    groups += [(f"height {low}-{high} px" if high < 100_000 else f"height >= {low} px",
                (faces["height"] >= low) & (faces["height"] < high)) for low, high in HEIGHTS]
    groups += [(f"{label} {name}", faces[label] == value)
               for label, names in LABELS.items() for value, name in enumerate(names)]
    events, counts = np.unique(faces["event"], return_counts=True)
    groups += [(f"event {event}", faces["event"] == event) for event, n in zip(events, counts) if n >= min_event_faces]
    return [(name, mask) for name, mask in groups if mask.any()]


def plot_found(payload: dict, path: Path) -> None:
    """Bars of each model's change from the first in the share of faces found, per group of faces, from this
    benchmark's JSON payload (so a saved result can be drawn again)."""
    names = [Path(m).stem for m in payload["models"]]
    found = payload["found"]
    plot_differences([f"{group} ({row['faces']})" for group, row in found.items()],
                     [(n, np.array([row[n] - row[names[0]] for row in found.values()])) for n in names[1:]],
                     path, f"WIDER {payload['setting']} faces found, against {names[0]}", "change in share found")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True,
                        help="model files (.onnx, checkpoints, short names like 'default'); the first is the baseline")
    parser.add_argument("--setting", choices=SETTINGS, default="hard",
                        help="whose faces are counted (default: %(default)s, every face the official protocol "
                             "counts; all: every labelled face)")
    parser.add_argument("--min-score", type=float, default=0.5,
                        help="a face is found by a detection scoring at least this (default: %(default)s)")
    parser.add_argument("--max-side", type=int, help="downscale the images to this longest side (default: own size)")
    parser.add_argument("--frame-side", type=int,
                        help="downscale each image to fit FRAME_SIDE x FRAME_SIDE before the detector, as a "
                             "low-resolution camera's frames (the detector may then upscale it: its min_side)")
    parser.add_argument("--frame-size", type=int, nargs=2, metavar=("W", "H"),
                        help="resize each image to exactly W x H before the detector, its aspect ratio not kept, as "
                             "apps that squash every frame to a square do (boxes are scored on the image)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"),
                        help="letterbox every image to this fixed network input, as an app running the model at one "
                             "size does (Detector(input_size=(W, H)); no upscaling or --max-side then)")
    parser.add_argument("--min-event-faces", type=at_least(1), default=20,
                        help="list the events with at least this many counted faces (default: %(default)s)")
    parser.add_argument("--resamples", type=at_least(0), default=2000,
                        help="image resamples of the paired bootstrap giving each AP difference from the first "
                             "model its 95%% interval (default: %(default)s; 0: none)")
    parser.add_argument("--name", default="wider_recall", help="results file stem (default: %(default)s)")
    parser.add_argument("--wider-holdout", type=int, metavar="FOLD", help=HOLDOUT_HELP)
    args = parser.parse_args(argv)
    bound = {key: value for key, value in (("max_side", args.max_side), ("frame_side", args.frame_side),
                                           ("frame_size", args.frame_size), ("input_size", args.input_size)) if value}
    try:
        check_holdout_fold(args.wider_holdout)
        vset = wider_validation(args.wider_holdout, **bound)
    except OptionError as exc:
        parser.error(str(exc))
    if vset is None:
        print(f"skipped: the WIDER images are not under {SHARED / 'data' / 'widerface'} (the shared data folder is "
              f"not beside the checkout)")
        return
    ground_truth, images = vset.wider_ground_truth, vset.wider_images
    assert ground_truth is not None and images is not None  # a WIDER set
    faces = face_table(ground_truth, args.setting)
    groups = face_groups(faces, args.min_event_faces)
    names = [Path(m).stem for m in args.models]
    aps, curves, found, strays = {}, {}, {}, {}
    for name, model in zip(names, args.models):
        predictions = as_predictions(detect_wider(vset.detector(model), ground_truth, images))
        curves[name] = image_curves(predictions, ground_truth)
        aps[name] = evaluate_curves(curves[name]).ap
        scores = np.concatenate([best_match_scores(predictions, image)[image.counted(args.setting)]
                                 for image in ground_truth] + [np.zeros(0)])
        found[name] = scores >= args.min_score
        strays[name] = np.concatenate([stray_scores(predictions, image) for image in ground_truth] + [np.zeros(0)])
        print(f"{name}: AP " + " / ".join(f"{aps[name][s]:.4f}" for s in SETTINGS)
              + f", finds {found[name].mean():.4f} of the {args.setting} faces", flush=True)

    def against_first(name: str, values: dict[str, float], spec: str) -> str:
        """`name`'s value, and after the first model its difference from the first's in brackets."""
        value = values[name]
        return f"{value:{spec}}" if name == names[0] else f"{value:{spec}} ({value - values[names[0]]:+{spec}})"

    def cell(name: str, mask: np.ndarray) -> str:
        return against_first(name, {n: float(found[n][mask].mean()) for n in names}, ".3f")

    # each AP difference from the first model, with its interval over resamples of the images (paired bootstrap)
    differences = {n: paired_bootstrap(curves[names[0]], curves[n], args.resamples) for n in names[1:]}

    def ap_cell(name: str, setting: str) -> str:
        if name == names[0]:
            return f"{aps[name][setting]:.4f}"
        d = differences[name][setting]
        interval = f"; 95%: {d.low:+.4f} to {d.high:+.4f}" if args.resamples else ""
        return f"{aps[name][setting]:.4f} ({d.difference:+.4f}{interval})"

    ap_table = markdown_table(["model", *(f"{s} AP" for s in SETTINGS)],
                              [[n, *(ap_cell(n, s) for s in SETTINGS)] for n in names])
    if args.resamples and len(names) > 1:
        ap_table += (f"\n\nIn brackets: the difference from {names[0]} and its 95% interval over {args.resamples} "
                     f"resamples of the {len(ground_truth)} images (paired bootstrap: an interval spanning 0 is a "
                     "difference these images cannot tell from chance).")
    recall_table = markdown_table(["faces", "count", *names],
                                  [[group, int(mask.sum()), *(cell(n, mask) for n in names)]
                                   for group, mask in groups])
    table = (f"{ap_table}\n\nShare of the {args.setting} setting's faces found (IoU >= 0.5, score >= "
             f"{args.min_score:g}; in brackets: the difference from {names[0]}):\n\n{recall_table}")
    stray_counts = {n: {t: int((strays[n] >= t).sum()) for t in STRAY_SCORES} for n in names}

    stray_table = markdown_table(["model", *(f"score >= {t:g}" for t in STRAY_SCORES)],
                                 [[n, *(against_first(n, {m: stray_counts[m][t] for m in names}, "d")
                                        for t in STRAY_SCORES)] for n in names])
    table += (f"\n\nBoxes on no labelled face (IoU < 0.5 with every labelled face) over the {len(ground_truth)} "
              f"images, by score (in brackets: the difference from {names[0]}):\n\n{stray_table}")
    print(table)
    payload = {"machine": describe_machine(), "models": args.models, "setting": args.setting,
               "min_score": args.min_score, "max_side": args.max_side, "frame_side": args.frame_side,
               "frame_size": args.frame_size, "input_size": args.input_size,
               "wider_holdout_fold": args.wider_holdout,
               "images": len(ground_truth), "ap": aps, "resamples": args.resamples,
               "ap_difference": {n: {s: vars(d) for s, d in differences[n].items()} for n in names[1:]},
               "stray_boxes": stray_counts,
               "found": {group: {"faces": int(mask.sum()), **{n: float(found[n][mask].mean()) for n in names}}
                         for group, mask in groups}}
    written = write_results(args.name, payload, table)
    print(f"\nwritten: {written}")
    if len(names) > 1:
        plot_found(payload, written.with_suffix(".png"))
        print(f"plot: {written.with_suffix('.png')}")


if __name__ == "__main__":
    main()
