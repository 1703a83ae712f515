"""Accuracy of every available model on every labelled set present, and a plot of accuracy against CPU latency
(ONNX Runtime, 640x480, median of --runs rounds in which every model and mode runs in turns, twice in a row,
the second call timed).

Models: the EXTD authors' released checkpoints (converted on the fly from ../shared, never written into the
repository), the models edgeface ships (default and fast), and any --models files. Sets: the face dataset's val
split and dlib's testing.xml when ../shared is present (VOC AP at IoU 0.5, pixel-inclusive; single-scale and
the papers' test-time strategy: scales 1 and 2, flip, box voting at IoU 0.3); WIDER FACE val easy / medium /
hard AP (official protocol) over the WIDER val images in ../shared (or --wider-images), single-scale at each
image's own size, downscaled by the detector to a longest side of 416 px (--wider-sides), and on 416 px frames
(--wider-frames: each image first downscaled to fit 416 x 416, as a low-resolution camera delivers it, then
run as the model runs any frame, its own min_side upscaling included); FDDB true-positive rate at 1000
false positives when --fddb is given.

Writes ``benchmarks/results/accuracy.{md,json}``, the plots, and the README's accuracy and targets tables (between
their markers), where each shipped model's score is bold when at or above its release's (the authors' checkpoint of
its architecture).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeface import Detections, Detector, read_image
from edgeface.data.imglab import read_imglab
from edgeface.data.voc import read_facemask
from edgeface.data.wider import images_folder
from edgeface.errors import ModelFileError
from edgeface.eval.plots import plot_pr_curves
from edgeface.eval.validation import SmallFrames
from edgeface.eval.voc import voc_ap
from edgeface.spec import TestTimeSpec
from edgeface.weights import SHIPPED

from .latency import interleaved_ms, test_frame
from .machine import (
    AUTHORS,
    DLIB_PHOTOS,
    RESULTS,
    SHARED,
    WIDER,
    at_least,
    describe_machine,
    hardware_line,
    machine_line,
    markdown_table,
    write_results,
)

TTA = TestTimeSpec.from_scales((1.0, 2.0), flip=True, voting_iou=0.3)
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_markers(table: str) -> tuple[str, str]:
    """The README lines between which this benchmark writes `table` (``"accuracy"``, ``"targets"``)."""
    return (f"<!-- {table} table: python -m benchmarks accuracy rewrites what follows, up to the end marker -->",
            f"<!-- end of the {table} table -->")


def available_models(extra: list[str], workdir: Path, widths: tuple[int, ...] = (32, 48, 64)) -> dict[str, Path]:
    """The models to compare: the authors' checkpoints of `widths` (exported to ONNX in `workdir`), the shipped
    models, then the `extra` model files (checked first: a typo costs no export)."""
    for path in extra:
        if not Path(path).is_file():
            raise ModelFileError(f"no such model file: {path}")
    models: dict[str, Path] = {}
    if AUTHORS.exists():
        from edgeface.export.onnx_export import export_onnx, load_model
        from edgeface.models.checkpoint import convert_authors_checkpoint

        for width in widths:
            pt, onnx_path = workdir / f"extd{width}.pt", workdir / f"extd{width}_authors.onnx"
            convert_authors_checkpoint(AUTHORS / f"EXTD_{width}.pth", pt)
            model, spec, _ = load_model(str(pt))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model, spec, onnx_path, check_images=[test_frame()[0]])
            models[f"extd{width} (authors)"] = onnx_path
    else:
        print(f"skipped the authors' checkpoints: {AUTHORS} not found")
    for short, shipped in SHIPPED.items():
        if shipped.exists():
            models[f"edgeface {short}"] = shipped
        else:
            print(f"skipped the shipped {short} model: this install has none")
    for path in extra:
        models[Path(path).stem] = Path(path)
    return models


def labelled_sets() -> dict[str, list]:
    sets = {}
    facemask = SHARED / "data" / "facemask"
    if facemask.exists():
        sets["facemask val"] = read_facemask(facemask, "val")
    dlib = DLIB_PHOTOS / "testing.xml"
    if dlib.exists():
        sets["dlib testing"] = read_imglab(dlib)
    if not sets:
        print(f"skipped the shared labelled sets: {SHARED / 'data'} not found")
    return sets


def official_sets(args: argparse.Namespace) -> dict[str, Any]:
    """WIDER FACE val (official protocol) and FDDB (ROC) when the user points at their images."""
    sets: dict[str, Any] = {}
    if args.wider_images:
        from edgeface.eval.wider import load_ground_truth

        sets["wider"] = load_ground_truth(args.wider_ground_truth, args.wider_images)
    if args.fddb:
        from edgeface.data.fddb import read_fddb

        sets["fddb"] = read_fddb(args.fddb)
    return sets


def score_official(kind: str, data: Any, run: Callable[[Any], Detections],
                   args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """``(set, metric, value)`` rows of one model/mode on WIDER val or FDDB."""
    if kind == "wider":
        from edgeface.eval.wider import OFFICIAL_SETTINGS, SETTINGS, as_predictions, detect_wider, evaluate_wider

        result = evaluate_wider(as_predictions(detect_wider(run, data, args.wider_images, progress=False)), data)
        return [(f"{WIDER_SET}{s}", "AP (official)" if s in OFFICIAL_SETTINGS else "AP (every labelled face)",
                 result.ap[s]) for s in SETTINGS]
    from edgeface.eval.fddb import fddb_roc

    images = [read_image(r.image_path) for r in data]
    roc = fddb_roc(data, [run(im) for im in images], [im.shape[1::-1] for im in images])
    return [("FDDB (10 folds)", "TPR @ 1000 FP, discrete", roc.tpr_at(1000)),
            ("FDDB (10 folds)", "TPR @ 1000 FP, continuous", roc.tpr_at(1000, continuous=True))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[], help="more edgeface model files to include")
    parser.add_argument("--runs", type=at_least(1), default=10,
                        help="latency rounds: each model and mode runs in turns, twice in a row, the second call "
                             "timed (default: %(default)s)")
    parser.add_argument("--no-tta", action="store_true", help="single-scale only")
    parser.add_argument("--authors", type=int, nargs="*", default=[32, 48, 64], choices=[32, 48, 64],
                        help="widths of the authors' EXTD checkpoints to include (default: %(default)s)")
    wider = images_folder(WIDER, "val")
    parser.add_argument("--wider-images", default=str(wider) if wider.exists() else None,
                        help="WIDER_val/images folder: adds WIDER FACE val easy/medium/hard AP over the images "
                             "present (default: ../shared's, when there)")
    parser.add_argument("--wider-sides", type=int, nargs="+", default=[0, 416],
                        help="longest image side the detector runs WIDER images at, 0 for each image's own "
                             "(default: %(default)s)")
    parser.add_argument("--wider-frames", type=int, nargs="*", default=[416],
                        help="also run WIDER images downscaled to frames fitting this square, each model with its "
                             "own settings (default: %(default)s)")
    parser.add_argument("--wider-ground-truth", default=str(WIDER / "eval_tools" / "ground_truth"),
                        help="the official eval_tools/ground_truth folder (default: %(default)s)")
    parser.add_argument("--fddb", help="FDDB folder (FDDB-folds/ and originalPics/): adds TPR at 1000 FP")
    parser.add_argument("--only", nargs="+", metavar="MODEL",
                        help="measure only these models (as the table names them, e.g. 'edgeface default-int8') and "
                             "keep every other model's rows from the last run's accuracy.json (its PR plot is not "
                             "redrawn)")
    parser.add_argument("--tables-only", action="store_true",
                        help="measure nothing: rewrite the README's accuracy and targets tables from the last run's "
                             "accuracy.json")
    args = parser.parse_args(argv)
    if args.tables_only:
        write_readme_tables(json.loads((RESULTS / "accuracy.json").read_text()))
        return
    rows, curves = [], []
    machine = describe_machine()
    measured, hardware = machine["date"], hardware_line(machine)  # each row names them: --only keeps older rows
    with tempfile.TemporaryDirectory() as tmp:
        models = available_models(args.models, Path(tmp), tuple(args.authors))
        if args.only:
            unknown = sorted(set(args.only) - set(models))
            if unknown:
                parser.error(f"--only: no model named {', '.join(unknown)} (models: {', '.join(models)})")
            models = {name: path for name, path in models.items() if name in args.only}
        sets, official = labelled_sets(), official_sets(args)
        model_modes = {}
        for name, path in models.items():
            model_modes[name] = {"single-scale": Detector(path, score_threshold=0.05, test_time=TestTimeSpec())}
            if not args.no_tta:
                model_modes[name]["flip + scales 1,2 + voting"] = Detector(path, score_threshold=0.05, test_time=TTA)
        # every model and mode timed in turns, so that the machine's changes of speed reach all of them alike
        timed = interleaved_ms({(name, mode): run for name, modes in model_modes.items()
                                for mode, run in modes.items()}, test_frame()[0], args.runs, warmup=1)
        for name, path in models.items():
            modes = model_modes[name]
            latency = {mode: timed[name, mode] for mode in modes}
            # WIDER images are large and many: single-scale only, at each side asked for
            wider_modes: dict[str, Callable[[np.ndarray], Detections]] = {
                "single-scale" if side == 0 else f"single-scale, {side} px":
                Detector(path, score_threshold=0.05, test_time=TestTimeSpec(), max_side=side or None)
                for side in args.wider_sides}
            wider_modes.update({f"single-scale, {side} px frames": SmallFrames(modes["single-scale"], side)
                                for side in args.wider_frames})
            latency.update({mode: latency["single-scale"] for mode in wider_modes})
            scored = []
            for set_name, records in sets.items():
                images = [read_image(r.image_path) for r in records]
                for mode, run in modes.items():
                    curve = voc_ap(records, [run(im) for im in images])
                    scored.append((set_name, mode, "VOC AP50", curve.ap))
                    if set_name == "facemask val" and mode == "single-scale":
                        curves.append((f"{name} AP {curve.ap:.3f}", curve.recall, curve.precision))
            for kind, data in official.items():
                for mode, detect in (wider_modes if kind == "wider" else modes).items():
                    scored += [(s, mode, metric, value)
                               for s, metric, value in score_official(kind, data, detect, args)]
            for set_name, mode, metric, value in scored:
                rows.append({"model": name, "set": set_name, "mode": mode, "metric": metric, "score": value,
                             "latency_ms_640x480": latency[mode], "measured": measured,
                             "hardware": hardware})
                print(f"{name:22s} {set_name:16s} {mode:27s} {metric} {value:.4f}", flush=True)
    payload = {"machine": machine, "tta": asdict(TTA), "rows": rows}
    if args.only:
        previous = json.loads((RESULTS / "accuracy.json").read_text())
        for row in previous["rows"]:  # runs before rows named their hardware were whole runs on the file's machine
            row.setdefault("hardware", hardware_line(previous["machine"]))
        rows = payload["rows"] = kept_rows(previous["rows"], rows, args.only)
        payload["measured_now"] = args.only
    table = summary_table(rows) + "\n\n" + markdown_table(
        ["model", "set", "mode", "metric", "score", "CPU ms (640x480)"],
        [[r["model"], r["set"], r["mode"], r["metric"], f"{r['score']:.3f}", f"{r['latency_ms_640x480']:.1f}"]
         for r in rows])
    kept = [r for r in rows if r["model"] not in args.only] if args.only else []
    if kept:  # an earlier run's rows may predate a change of protocol or come from another machine: say when
        table += (f"\n\nMeasured in this run: {', '.join(args.only)}; the other rows come from earlier runs: "
                  f"{when_measured(kept)}.")
    print()
    print(table)
    print(f"\nwritten: {write_results('accuracy', payload, table)}")
    write_readme_tables(payload)
    if curves and not args.only:
        plot_pr_curves(curves, RESULTS / "pr_facemask_val.png", title="face dataset val, single-scale")
        print(f"plot: {RESULTS / 'pr_facemask_val.png'}")
    if any(r["set"] == "facemask val" for r in rows):
        plot_accuracy_latency([r for r in rows if r["set"] == "facemask val"], RESULTS / "accuracy_vs_latency.png")
        print(f"plot: {RESULTS / 'accuracy_vs_latency.png'}")


def releases_of(models: Collection[str]) -> dict[str, str]:
    """Each shipped model's release among the `models` named: the authors' checkpoint of the architecture its spec
    names (``edgeface default``: ``extd64 (authors)``)."""
    releases = {}
    for short, path in SHIPPED.items():
        name = f"edgeface {short}"
        if name in models and path.exists():
            release = f"{Detector(path).spec.name} (authors)"
            if release in models:
                releases[name] = release
    return releases


def write_readme_tables(payload: dict[str, Any]) -> None:
    """Rewrite the README's accuracy and targets tables from a run's results (the accuracy.json `payload`)."""
    rows = payload["rows"]
    releases = releases_of({r["model"] for r in rows})
    provenance = provenance_line(payload)
    for name, table in (("accuracy", summary_table(rows, releases)), ("targets", targets_table(rows, releases))):
        rewritten = rewrite_between(README, readme_markers(name), f"{table}\n\n{provenance}")
        print(f"README: {name} table rewritten" if rewritten else f"README: {README} has no {name} table markers")


def rewrite_between(path: Path, markers: tuple[str, str], text: str) -> bool:
    """Replace what lies between the two `markers` lines of the file at `path` by `text`; False (the file left as
    it is) when the file or either marker is missing."""
    start, end = markers
    head, found, rest = (path.read_text() if path.is_file() else "").partition(start)
    if not found or end not in rest:
        return False
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.partition(end)[2]}")
    return True


def provenance_line(payload: dict[str, Any]) -> str:
    """The line under the README's tables: the machine of the run that wrote them and, where the rows come from
    several runs (``--only``), when and on what each model was measured."""
    rows = payload["rows"]
    several = len(measured_runs(rows)) > 1
    return f"Machine: {machine_line(payload['machine'])}" + (f"; runs begun {when_measured(rows)}." if several else ".")


def measured_runs(rows: list[dict]) -> dict[str, list[str]]:
    """The models of each run among `rows`, by when and on what it was measured (a row without ``hardware`` names
    none)."""
    models: dict[str, dict] = {}
    for r in rows:
        run = r.get("measured", "at an unrecorded time") + (f" on {r['hardware']}" if "hardware" in r else "")
        models.setdefault(run, {})[r["model"]] = None
    return {run: list(names) for run, names in models.items()}


def when_measured(rows: list[dict]) -> str:
    """Which models' rows were measured when and on what, e.g. ``2026-12-01 11:37 UTC on AMD EPYC, 2 cores (...): a,
    b; 2026-12-01 20:44 UTC: c``."""
    return "; ".join(f"{run}: {', '.join(names)}" for run, names in sorted(measured_runs(rows).items()))


def kept_rows(previous: list[dict], measured: list[dict], names: list[str]) -> list[dict]:
    """`previous` rows with the models in `names` replaced by `measured`, in the previous order (new models last)."""
    order = list(dict.fromkeys([r["model"] for r in previous] + [r["model"] for r in measured]))
    source = {name: [r for r in (measured if name in names else previous) if r["model"] == name] for name in order}
    return [row for name in order for row in source[name]]


MODE_SUFFIX = {"single-scale": "", "flip + scales 1,2 + voting": ", TTA"}


WIDER_SET = "WIDER val "  # the rows' set names: "WIDER val easy", ...
TARGET_SETS = ("facemask val", WIDER_SET)


def score_text(value: float, release: float | None, digits: int) -> str:
    """`value` to `digits` decimals, bold when at or above its release's score (None: no release to compare)."""
    text = f"{value:.{digits}f}"
    return f"**{text}**" if release is not None and value >= release else text


def targets_table(rows: list[dict], releases: dict[str, str]) -> str:
    """Each release, then the models measured against it (`releases`: model: its release), to four digits on the
    sets the targets name (the face dataset; WIDER's settings, e.g. easy / medium / hard / all, in one column per
    size), single pass; a score at or above the release's is bold."""
    scores: dict[str, dict[tuple[str, str], float]] = {}
    # (the set, or None for WIDER's settings together; the mode's suffix) -> the column's (set, mode) keys
    columns: dict[tuple[str | None, str], list[tuple[str, str]]] = {}
    for r in rows:
        key = (r["set"], r["mode"])
        scores.setdefault(r["model"], {})[key] = r["score"]
        if not (r["mode"].startswith("single-scale") and r["set"].startswith(TARGET_SETS)):
            continue
        column = (None if r["set"].startswith(WIDER_SET) else r["set"], r["mode"][len("single-scale"):])
        if key not in columns.setdefault(column, []):
            columns[column].append(key)

    def title(column: tuple[str | None, str], keys: list[tuple[str, str]]) -> str:
        name, suffix = column
        return (name or "WIDER " + " / ".join(s[len(WIDER_SET):] for s, _ in keys)) + suffix

    def number(model: str, key: tuple[str, str]) -> str:
        value, release = scores[model].get(key), scores.get(releases.get(model, ""), {}).get(key)
        return "" if value is None else score_text(value, release, 4)

    def cell(model: str, keys: list[tuple[str, str]]) -> str:
        return " / ".join(number(model, k) for k in keys)

    order = [m for release in dict.fromkeys(releases.values())
             for m in (release, *(m for m, r in releases.items() if r == release))]
    return markdown_table(["model", *(title(column, keys) for column, keys in columns.items())],
                          [[m, *(cell(m, keys) for keys in columns.values())] for m in order])


def summary_table(rows: list[dict], releases: dict[str, str] | None = None) -> str:
    """One line per model, one column per set and mode (``, TTA``: flip + scales 1, 2 + voting; ``, 416 px``:
    downscaled to that longest side; ``, 416 px frames``: run on frames of that size), and its single-scale CPU
    latency; with `releases` (model: the model it is measured against), a score at or above that model's is bold."""
    columns: dict[tuple[str, str], str] = {}
    cells: dict[str, dict] = {}
    for r in rows:
        suffix = MODE_SUFFIX.get(r["mode"], r["mode"][len("single-scale"):])  # "single-scale, 416 px" -> ", 416 px"
        columns.setdefault((r["set"], r["mode"]), r["set"] + suffix)
        cells.setdefault(r["model"], {})[(r["set"], r["mode"])] = r["score"]
        if r["mode"] == "single-scale":
            cells[r["model"]]["ms"] = r["latency_ms_640x480"]

    def cell(model: str, key: tuple[str, str]) -> str:
        release = cells.get((releases or {}).get(model, ""), {}).get(key)
        return score_text(cells[model][key], release, 3) if key in cells[model] else ""

    return markdown_table(["model", *columns.values(), "CPU ms, 640x480"],
                          [[model, *(cell(model, k) for k in columns), f"{c.get('ms', 0):.0f}"]
                           for model, c in cells.items()])


def _nice_step(extent: float, ticks: int = 5) -> float:
    """A 1 / 2 / 5 x 10^n tick step giving about `ticks` ticks over `extent`."""
    raw = extent / ticks
    power = 10 ** np.floor(np.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def place_labels(points: list[tuple[int, int]], sizes: Sequence[Sequence[int]], bounds: tuple[int, int, int, int],
                 gap: int = 8) -> list[tuple[int, int]]:
    """Bottom-left corners for text boxes of `sizes` beside `points`, each clear of the others, of every point
    and inside `bounds` (x0, y0, x1, y1): right of its point if it fits, else left, moved down or up until free."""
    dot = gap - 2  # a point's half-width: its own label starts `gap` away, clear of it
    placed: list[tuple[int, int, int, int]] = [(x - dot, y - dot, x + dot, y + dot) for x, y in points]
    corners = []
    for (x, y), (w, h) in zip(points, sizes):
        left_x = x + gap if x + gap + w <= bounds[2] else x - gap - w
        for shift in sorted(range(-60, 61, 2), key=abs):
            box = (left_x, y + 4 + shift - h, left_x + w, y + 4 + shift)
            inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
            if inside and all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in placed):
                break
        placed.append(box)
        corners.append((box[0], box[3]))
    return corners


def plot_accuracy_latency(rows: list[dict], path: Path) -> None:
    """Scatter of AP50 against CPU latency, one labelled point per model and test-time mode."""
    import cv2

    width, height, left, bottom, top, right = 720, 480, 70, 50, 40, 20
    canvas = np.full((height, width, 3), 255, np.uint8)
    step = _nice_step(max(r["latency_ms_640x480"] for r in rows) * 1.1)
    max_ms = step * np.ceil(max(r["latency_ms_640x480"] for r in rows) * 1.1 / step)
    pw, ph = width - left - right, height - top - bottom
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    for tick in np.linspace(0, 1, 6):
        y = int(top + (1 - tick) * ph)
        cv2.line(canvas, (left, y), (left + pw, y), (230, 230, 230), 1)
        cv2.putText(canvas, f"{tick:.1f}", (left - 35, y + 4), font, 0.4, black, 1)
    for ms in np.arange(0, max_ms + step / 2, step):
        x = int(left + ms / max_ms * pw)
        cv2.line(canvas, (x, top), (x, top + ph), (230, 230, 230), 1)
        cv2.putText(canvas, f"{ms:.0f}", (x - 10, top + ph + 18), font, 0.4, black, 1)
    cv2.rectangle(canvas, (left, top), (left + pw, top + ph), black, 1)
    cv2.putText(canvas, "CPU ms per 640x480 frame (ONNX Runtime, median)", (left, height - 10), font, 0.45, black, 1)
    cv2.putText(canvas, "AP50, face dataset val", (8, 24), font, 0.5, black, 1)
    rows = sorted(rows, key=lambda r: -r["score"])
    points = [(int(left + r["latency_ms_640x480"] / max_ms * pw), int(top + (1 - r["score"]) * ph)) for r in rows]
    labels = [f"{r['model']} ({'1x' if r['mode'] == 'single-scale' else 'TTA'})" for r in rows]
    sizes = [cv2.getTextSize(text, font, 0.4, 1)[0] for text in labels]
    corners = place_labels(points, sizes, (left + 2, top + 2, left + pw - 2, top + ph - 2))
    for r, (x, y), text, (w, h), corner in zip(rows, points, labels, sizes, corners):
        colour = (180, 119, 31) if r["mode"] == "single-scale" else (14, 127, 255)
        cv2.circle(canvas, (x, y), 5, colour, -1, cv2.LINE_AA)
        anchor = (corner[0] if corner[0] > x else corner[0] + w, corner[1] - h // 2)
        if abs(anchor[1] - y) > 6:  # a moved label: a leader line back to its point
            cv2.line(canvas, (x, y), anchor, colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, text, corner, font, 0.4, colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)


if __name__ == "__main__":
    main()
