"""``edgeface detect``: faces in images, folders and videos, written as annotated copies, crops and one
detections.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from ..core.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_inputs
from ..errors import EdgefaceError, ImageWarning
from ..options import check_margin, check_max_detections, check_nms_iou, check_score_threshold
from .arguments import SHIPPED_NAMES, add_device, add_size_options, checked

DETECTIONS_SCHEMA = 3  # 3: images' "crops"
DETECT_EPILOG = """\
outputs (under --output):
  annotated copies   each input's path below the inputs' deepest common folder, in the input's own
                     format (x/p.jpg, x/p.png and y/p.jpg stay apart); videos as MP4 (clip.avi -> clip.avi.mp4)
  face crops         with --crops, an image's faces best first, beside its annotated copy in a folder
                     named after it: x/p.jpg.faces/0.jpg, 1.jpg, ... (video frames are not cut)
  detections.json    {"schema": 3, "model", "backend", "score_threshold", "max_side", "min_side", "tile",
                      "complete", "results": {INPUT_PATH: ENTRY}}, every ENTRY with the keys
                       "type": "image" | "video", "annotated": path or null, "error": message or null,
                       "warnings": [messages] (e.g. a truncated file), and
                       "faces": [{"box": [x1, y1, x2, y2], "score": s}] and "crops": [paths, one
                       per face] (null without --crops) for an image, or
                       "frames": [{"frame": i, "time": seconds, "faces": [...]}] for a video
                     (empty lists and null crops when the input could not be read; when an output could not
                     be written, the faces found stay beside the "error"); written on Ctrl-C or SIGTERM too,
                     with the inputs done and "complete": false; INPUT_PATH is the path as given (a name that is
                     not UTF-8 keeps its bytes as Python's surrogate escapes, "\\udcXX": os.fsencode(key))
exit status: 0 all inputs done, 2 some skipped (see their "error"), 1 an error stopped the run,
             130 interrupted
"""


def _inputs_outside(files: list[Path], out_dir: Path) -> list[Path]:
    """`files` but those below `out_dir` (what an earlier run wrote there, whose annotated copies would overwrite
    themselves), saying how many were left out; an error when none is left."""
    inside = [f for f in files if out_dir.resolve() in f.resolve().parents]
    if len(inside) == len(files):
        raise EdgefaceError(f"every input is inside the output folder {out_dir}, where annotated copies would "
                            "overwrite them: give -o another folder")
    if inside:
        print(f"note: {len(inside)} inputs inside the output folder {out_dir} left out (earlier output)",
              file=sys.stderr)
    return [f for f in files if f not in inside]


def annotated_paths(files: Sequence[Path], out_dir: Path) -> dict[Path, Path]:
    """Where `detect` writes each input's annotated copy: its path below the inputs' deepest common folder, under
    `out_dir`, keeping an image's own format (``x/p.jpg`` and ``x/p.png`` stay apart); a video becomes an MP4 named
    after the whole file name unless it is one already (``clip.avi`` -> ``clip.avi.mp4``)."""
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    out: dict[Path, Path] = {}
    for file, path in zip(files, resolved):
        relative = path.relative_to(common)
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            relative = relative if suffix == ".mp4" else relative.with_name(relative.name + ".mp4")
        elif suffix not in IMAGE_SUFFIXES:
            relative = relative.with_name(relative.name + ".jpg")
        out[file] = out_dir / relative
    return out


def _output_folder(path: str) -> Path:
    out_dir = Path(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgefaceError(f"-o {out_dir}: a file of that name exists; the output is a folder, give another name")
    return out_dir


def cmd_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.files import atomic_write, check_output_folder, make_output_folder
    from ..detector import Detector

    out_dir = _output_folder(args.output)
    detector = Detector(args.model, score_threshold=args.score_threshold, nms_iou=args.nms_iou,
                        max_detections=args.max_detections, input_size=args.input_size, device=args.device,
                        max_side=args.max_side, min_side=args.min_side, tile=args.tile)
    files = _inputs_outside(list_inputs(args.inputs), out_dir)
    make_output_folder(out_dir)
    json_path = out_dir / "detections.json"
    check_output_folder(json_path)  # before the run, whose results it holds
    targets = annotated_paths(files, out_dir)
    results: dict[str, dict[str, Any]] = {}
    interrupted = False
    with tqdm(total=len(files), desc="inputs", unit="file", disable=args.quiet) as bar, _sigterm_interrupts():
        try:
            for path in files:
                results[str(path)] = _detect_input(detector, path, targets[path], not args.no_draw,
                                                   args.crop_margin if args.crops else None, args.quiet)
                bar.update()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what is done is kept
            interrupted = True
    report = {"schema": DETECTIONS_SCHEMA, "model": detector.spec.name, "backend": detector.backend.name,
              "score_threshold": detector.score_threshold, "max_side": detector.max_side,
              "min_side": detector.min_side, "tile": detector.tile, "complete": not interrupted, "results": results}
    with atomic_write(json_path) as tmp:  # a second interrupt while writing leaves the previous file, not half
        Path(tmp).write_text(json.dumps(report, indent=1))
    entries = results.values()
    failures = sum(entry["error"] is not None for entry in entries)
    faces = sum(len(entry.get("faces", [])) for entry in entries)
    frames = sum(len(entry.get("frames", [])) for entry in entries)
    video_faces = sum(len(frame["faces"]) for entry in entries for frame in entry.get("frames", []))
    flagged = sum(len(entry["warnings"]) for entry in entries)
    print(f"{len(results) - failures}/{len(files)} inputs done, {faces} faces in images"
          + (f", {video_faces} in {frames} video frames" if frames else "")
          + (f", {flagged} flagged (see warnings)" if flagged else "") + f"; results in {json_path}")
    if interrupted:
        print(f"interrupted: the {len(files) - len(results)} inputs not done are not in {json_path.name} "
              "(\"complete\": false)", file=sys.stderr)
        return 130
    return 2 if failures else 0


def _write_crops(crops: list, target: Path) -> list[Optional[str]]:
    """Write an image's face `crops` (best first) into a folder beside its annotated copy `target`, named after
    it (x/p.jpg -> x/p.jpg.faces/0.jpg, 1.jpg, ...), replacing a previous run's; their paths (None for a face
    with no pixel in the image, which has nothing to write)."""
    from ..core.image import write_image

    folder = target.with_name(target.name + ".faces")
    if folder.is_dir():  # a previous run's crops, which may be more
        for old in folder.glob(f"*{target.suffix}"):
            if old.stem.isdigit():
                old.unlink()
    if crops:
        folder.mkdir(parents=True, exist_ok=True)
    written: list[Optional[str]] = []
    for index, crop in enumerate(crops):
        path = folder / f"{index}{target.suffix}"
        if crop.size:
            write_image(path, crop)
        written.append(str(path) if crop.size else None)
    return written


def _detect_input(detector: Any, path: Path, target: Path, draw: bool, crop_margin: Optional[float],
                  quiet: bool) -> dict[str, Any]:
    """`edgeface detect`'s entry for one image or video (see DETECT_EPILOG): its annotated copy written to `target`
    when `draw`, and an image's faces (boxes grown by `crop_margin`) beside it unless `crop_margin` is None; an
    input that cannot be read or written is an entry with its error, not a stopped run."""
    import warnings

    from tqdm import tqdm

    from ..core.image import read_image, write_image
    from ..video import annotate_video

    video = path.suffix.lower() in VIDEO_SUFFIXES
    entry: dict[str, Any] = {"type": "video" if video else "image", "annotated": None, "error": None,
                             "warnings": [], **({"frames": []} if video else {"faces": [], "crops": None})}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImageWarning)
            if draw:
                target.parent.mkdir(parents=True, exist_ok=True)
            if video:
                entry["frames"] = annotate_video(detector, path, target if draw else None, progress=not quiet)
            else:
                image = read_image(path)
                dets = detector.detect(image)
                entry["faces"] = dets.to_list()
                if draw:
                    write_image(target, dets.draw(image))
                if crop_margin is not None:
                    entry["crops"] = _write_crops(dets.crops(image, crop_margin), target)
            entry["annotated"] = str(target) if draw else None
        entry["warnings"] = [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
        for message in entry["warnings"]:
            tqdm.write(f"warning: {message}", file=sys.stderr)
    except EdgefaceError as exc:
        entry["error"] = str(exc)
        tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
    return entry


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a job scheduler's or a container's stop) raises KeyboardInterrupt as Ctrl-C does, inside."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the parsers of ``detect`` to the ``edgeface`` command's subparsers."""
    p = sub.add_parser("detect", help="detect faces in images, folders and videos",
                       description="Detect faces; writes annotated copies and detections.json to --output. "
                                   "Boxes are x1, y1, x2, y2 in the input image's pixels.",
                       epilog=DETECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, video files, or folders of them (searched recursively, "
                                             "hidden files and the output folder skipped)")
    p.add_argument("-m", "--model", help="model file: .onnx (no torch needed), .pt checkpoint or TensorRT "
                                         f".engine, or a shipped model: {SHIPPED_NAMES} (default: %(default)s)",
                   default="default")
    p.add_argument("-o", "--output", default="edgeface_out", help="output folder (default: %(default)s)")
    p.add_argument("--score-threshold", type=checked(check_score_threshold), metavar="P",
                   help="keep faces scoring above this probability, 0-1 (default: the model's)")
    p.add_argument("--nms-iou", type=checked(check_nms_iou), metavar="IOU",
                   help="suppress boxes overlapping a better one by more than this IoU, 0-1 (default: the model's)")
    p.add_argument("--max-detections", type=checked(check_max_detections, int), metavar="N",
                   help="at most this many faces per image, >= 1 (default: the model's)")
    add_size_options(p)
    p.add_argument("--tile", action="store_true",
                   help="run images larger than --max-side at full resolution in overlapping tiles of at most "
                        "--max-side (plus the whole scaled down, for large faces): the small faces of big photos "
                        "at the memory of --max-side, several times the time")
    add_device(p)
    p.add_argument("--no-draw", action="store_true", help="write no annotated copies")
    p.add_argument("--crops", action="store_true",
                   help="also write each face of an image as an image of its own (see outputs below)")
    p.add_argument("--crop-margin", type=checked(check_margin), default=0.2, metavar="SHARE",
                   help="with --crops, grow each box by this share of its width and height on every side, cut at "
                        "the image's edges (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_detect)
