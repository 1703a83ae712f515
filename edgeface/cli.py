"""The ``edgeface`` command line: detect, info, convert, export."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from .core.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_inputs
from .data.augment import RECIPES
from .errors import EdgefaceError, ImageWarning, OptionError, UnscoredImageWarning
from .options import (
    DEFAULT_MAX_SIDE,
    check_background_crop_prob,
    check_blur_prob,
    check_box_scale,
    check_box_shift,
    check_device,
    check_input_size,
    check_keep_share,
    check_margin,
    check_max_detections,
    check_max_side,
    check_min_side,
    check_nms_iou,
    check_occlude_prob,
    check_overlap,
    check_samples,
    check_scale,
    check_score_threshold,
    check_seed,
    check_training_size,
    parse_module_scale,
)
from .weights import SHIPPED


def _checked(check: Callable[[Any], Any], parse: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type: parse the text, then check it with the API's own check (one rule for both)."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except ValueError as exc:  # OptionError is a ValueError; so is float("abc")
            raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, OptionError) else
                                             f"expected a number, got {text!r}") from None

    convert.__name__ = check.__name__.replace("check_", "")  # argparse names the option's type in its error
    return convert


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise OptionError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return w, h


_size = _checked(check_input_size, _parse_size)


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

    from .core.files import atomic_write, check_output_folder, make_output_folder
    from .detector import Detector

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
    from .core.image import write_image

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

    from .core.image import read_image, write_image
    from .video import annotate_video

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


def cmd_info(args: argparse.Namespace) -> int:
    from .backends import ENGINE_SUFFIXES
    from .models.registry import get_entry
    from .weights import shipped_model

    target = str(shipped_model(args.model) or args.model)
    engine = None
    if os.path.isfile(target) and Path(target).suffix.lower() in ENGINE_SUFFIXES:
        from .backends.engine_file import read_engine_header

        header, _ = read_engine_header(target)  # what it was built for, readable without TensorRT or a GPU
        spec, source = header.spec, target
        engine = {key: getattr(header, key) for key in ("tensorrt_flavour", "tensorrt_version", "compute_capability",
                                                         "device_name", "precision")}
    elif os.path.isfile(target):
        from .backends import open_backend

        spec, source = open_backend(target).spec, target
    else:
        try:
            entry = get_entry(target)
        except KeyError as exc:
            raise EdgefaceError(f"{target!r} is neither a model file nor a registered model: {exc.args[0]}") from None
        spec, source = entry.spec, f"registry: {entry.description}"
    info: dict[str, object] = {"source": source, "spec": spec.to_dict(), **({"engine": engine} if engine else {})}
    try:
        from .models.complexity import count_macs, count_parameters
        from .models.registry import create_model

        model = create_model(spec.name)
        info["parameters"] = count_parameters(model)
        info["gmacs_640x480"] = round(count_macs(model, 640, 480) / 1e9, 3)
    except ImportError:
        info["parameters"] = "unknown (install torch to count)"
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{spec.name}  ({source})")
    print(f"  parameters:  {info['parameters']:,}" if isinstance(info["parameters"], int)
          else f"  parameters:  {info['parameters']}")
    if "gmacs_640x480" in info:
        print(f"  conv MAdds:  {info['gmacs_640x480']} G at 640x480")
    size = spec.input.size
    print(f"  input:       {spec.input.channel_order}, mean {spec.input.mean}, std {spec.input.std}, "
          f"{'any size' if size is None else f'{size[0]}x{size[1]}'}, "
          f"{'any batch' if spec.input.batch is None else f'batch {spec.input.batch}'}")
    if size is None:  # how the runtime sizes a frame for the network (Detector's min_side and the padding)
        scale = (f"longest side under {spec.input.min_side} px upscaled to it" if spec.input.min_side
                 else "run at their own size")
        print(f"  frames:      {scale}, padded at the right and bottom to multiples of {spec.input.size_multiple} px")
    print(f"  anchors:     strides {spec.anchors.strides}, sizes {[list(s) for s in spec.anchors.sizes]}, "
          f"ratios {spec.anchors.ratios}")
    print(f"  boxes:       {spec.box_coding} coding, variances {spec.variances}; scores {spec.score}, "
          f"max-out background {spec.max_out_background}")
    print(f"  defaults:    score > {spec.score_threshold}, NMS IoU {spec.nms_iou}, "
          f"at most {spec.max_detections} faces")
    print(f"  versions:    model {spec.model_version}, spec {spec.spec_version}")
    if engine:
        gpu = engine["device_name"] or "any GPU"
        built_for = f"{gpu} (sm_{engine['compute_capability'].replace('.', '')})" if engine["compute_capability"] \
            else f"{gpu} (built ahead of time)"
        flavour = "TensorRT-RTX" if engine["tensorrt_flavour"] == "tensorrt_rtx" else "TensorRT"
        print(f"  engine:      {flavour} {engine['tensorrt_version']}, {engine['precision']}, for {built_for}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .core.files import check_not_an_input
    from .models.checkpoint import convert_authors_checkpoint

    check_not_an_input(args.output, [args.source])
    spec = convert_authors_checkpoint(args.source, args.output)
    print(f"{args.source} -> {args.output}: {spec.name} (recognised from the weights)")
    return 0


def load_weights_of_one_model(paths: list[str], purpose: str) -> list[tuple[Any, Any]]:
    """``(model, spec)`` of each checkpoint at `paths`; an error naming each file's model when they differ."""
    from .models.checkpoint import load_any_checkpoint

    loaded = [load_any_checkpoint(path) for path in paths]
    if len({spec.name for _, spec in loaded}) > 1:
        held = ", ".join(f"{path} holds {spec.name}" for path, (_, spec) in zip(paths, loaded))
        raise EdgefaceError(f"{held}: {purpose} needs weights of one model")
    return loaded


def cmd_average(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .core.files import check_not_an_input
    from .models.checkpoint import average_weights, save_checkpoint

    if len(args.models) < 2:
        raise EdgefaceError("give at least two models to average")
    check_not_an_input(args.output, args.models)
    loaded = load_weights_of_one_model(args.models, "a soup")
    soup = average_weights([model for model, _ in loaded], args.weights)
    last_spec = loaded[-1][1]
    spec = replace(last_spec, model_version=args.model_version or f"{last_spec.model_version}-soup{len(loaded)}")
    weights = args.weights or [1.0] * len(loaded)
    save_checkpoint(soup, spec, args.output,
                    averaged={"models": [os.path.basename(p) for p in args.models], "weights": weights})
    print(f"{args.output}: {spec.name}, the weighted mean of {len(loaded)} models "
          f"({', '.join(f'{w:g} x {p}' for w, p in zip(weights, args.models))})")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .core.files import check_not_an_input
    from .models.checkpoint import interpolate_weights, save_checkpoint

    check_not_an_input(args.output, [args.start, args.end])
    (start, _), (end, end_spec) = load_weights_of_one_model([args.start, args.end], "interpolation")
    scales = dict(args.module_scale)
    mixed = interpolate_weights(start, end, args.alpha, args.keep, scales)  # checks the module names first
    trimmed = f"-keep{args.keep:g}" if args.keep < 1 else ""
    scaled = "".join(f"-{module}x{factor:g}" for module, factor in scales.items())
    version = args.model_version or f"{end_spec.model_version}-wise{args.alpha:g}{trimmed}{scaled}"
    spec = replace(end_spec, model_version=version)
    save_checkpoint(mixed, spec, args.output,
                    interpolated={"start": os.path.basename(args.start), "end": os.path.basename(args.end),
                                  "alpha": args.alpha, "keep": args.keep, "module_scales": scales})
    change = f"the largest {args.keep:g} of the changes to " if args.keep < 1 else ""
    except_for = "".join(f", {module} at {factor:g} x alpha" for module, factor in scales.items())
    print(f"{args.output}: {spec.name}, {1 - args.alpha:g} x {args.start} + {args.alpha:g} x {change}{args.end}"
          f"{except_for}")
    return 0


def cmd_move_boxes(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .core.files import check_not_an_input
    from .models.checkpoint import load_any_checkpoint, move_boxes, save_checkpoint

    check_not_an_input(args.output, [args.model])
    model, spec = load_any_checkpoint(args.model)
    moved = move_boxes(model, spec, args.down, args.width, args.height)
    version = args.model_version or f"{spec.model_version}-boxes{args.down:+g}x{args.width:g}x{args.height:g}"
    save_checkpoint(moved, replace(spec, model_version=version), args.output,
                    moved_boxes={"model": os.path.basename(args.model), "down": args.down, "width": args.width,
                                 "height": args.height})
    print(f"{args.output}: {spec.name}, the boxes of {args.model} {args.down:g} anchor heights lower, "
          f"x{args.width:g} as wide and x{args.height:g} as tall")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from .export.onnx_export import check_export_options, export_onnx, load_model

    check_export_options(args.output, args.opset, args.batch)  # before the model loads
    if args.rtx_check:
        from .export.tensorrt_rtx import rtx_bindings

        rtx_bindings()  # installed, before the export
    model, spec, trained = load_model(args.model)
    if args.min_side is not None:
        spec = spec.with_min_side(args.min_side or None)
    if not trained:
        print(f"note: {args.model} is a registry name: exporting untrained weights", file=sys.stderr)
    check = [str(p) for p in list_inputs(args.check_images, IMAGE_SUFFIXES)] if args.check_images else []
    report = export_onnx(model, spec, args.output, opset=args.opset, input_size=args.input_size,
                         batch=args.batch, check_images=check, slim=not args.no_slim, compare_detections=trained)
    print(report.summary())
    if args.rtx_check:
        from .export.tensorrt_rtx import build_engine_rtx

        rtx = build_engine_rtx(args.output)
        print(f"TensorRT-RTX: parsed and built ({rtx.engine_bytes / 1e6:.1f} MB engine, profile {rtx.profile}) "
              f"in {rtx.seconds:.1f} s")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from .export.onnx_spec import DEFAULT_PROFILE
    from .export.tensorrt_build import BuildOptions, build_engine

    options = BuildOptions(
        precision=args.precision, max_batch=args.max_batch, workspace_mb=args.workspace,
        optimization_level=args.opt_level, timing_cache=args.timing_cache, dla_core=args.dla_core,
        calibration_images=([str(p) for p in list_inputs(args.calibration_images, IMAGE_SUFFIXES)]
                            if args.calibration_images else []),
        check_images=[str(p) for p in list_inputs(args.check_images, IMAGE_SUFFIXES)] if args.check_images else [],
        calibration_cache=args.calibration_cache, int8_mode=args.int8_mode,
        profile_sizes=(DEFAULT_PROFILE[0], args.opt_size, args.max_size or DEFAULT_PROFILE[2]))
    output = args.output or str(Path(args.onnx).with_suffix(".engine"))
    try:
        report = build_engine(args.onnx, output, options)
    except (RuntimeError, ValueError) as exc:
        raise EdgefaceError(str(exc)) from exc
    print(f"{output}: TensorRT {report.tensorrt_version} ({report.generation}.x API), {report.precision}, "
          f"{report.engine_bytes / 1e6:.1f} MB, profile {report.profile}, {report.seconds:.1f} s")
    for note in report.notes:
        print(f"  {note}")
    if report.dla_fallback_layers:
        print(f"  {len(report.dla_fallback_layers)} layers fall back from DLA to the GPU: "
              + ", ".join(report.dla_fallback_layers[:12]) + (" ..." if len(report.dla_fallback_layers) > 12 else ""))
    if report.accuracy:
        print(f"  {report.accuracy}")
    return 0


def _key_value(item: str) -> tuple[str, object]:
    from .train.config import load_yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), load_yaml(value)


def cmd_train(args: argparse.Namespace) -> int:
    if args.keys:
        from .train.config import describe_keys

        print(describe_keys(min(max(60, shutil.get_terminal_size().columns), 120) - 1))
        return 0
    if not args.config:
        raise EdgefaceError("--config is required: a recipe YAML (edgeface/train/recipes/; --keys lists its keys)")
    from .train.config import TrainConfig
    from .train.trainer import TrainingInterrupted, train

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
    from .train.config import TrainConfig
    from .train.fisher import fisher_information, save_fisher
    from .train.training_data import recipe_weights, training_objective, training_set

    _check_outputs(files=[args.output])
    source = _data_source(args)
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


def _check_outputs(files: Sequence[Optional[str]] = (), images: Sequence[Optional[str]] = ()) -> None:
    """Fail before a long pass, not after it, when an output file or image given cannot be written there."""
    from .core.files import check_output_folder
    from .core.image import check_image_output

    for path in files:
        if path:
            check_output_folder(path)
    for path in images:
        if path:
            check_image_output(path)


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .data.sources import load_records
    from .detector import Detector
    from .eval.plots import plot_pr_curves
    from .eval.voc import box_placement, detect_records, voc_ap
    from .spec import TestTimeSpec

    _check_outputs(files=[args.json], images=[args.plot])
    source = _data_source(args)
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
    from .eval.plots import plot_pr_curves
    from .eval.wider import (
        SETTINGS,
        detect_wider,
        evaluate_wider,
        load_ground_truth,
        read_submission,
        write_submission,
    )

    _check_outputs(images=[args.plot])
    # with --images, only the images present there count (a partial copy of WIDER val); else all of WIDER val
    ground_truth = load_ground_truth(args.ground_truth, args.images)
    if args.model:
        from .detector import Detector

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


def cmd_data_show(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from .core.detections import Detections
    from .core.image import write_image
    from .data.augment import AugmentConfig, augment_sample
    from .data.records import read_record_image
    from .data.sources import load_records

    _check_outputs(images=[args.output])
    records = load_records(_data_source(args))
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


def _add_data_source(parser: argparse.ArgumentParser) -> None:
    from .data.sources import READERS, reader_keys

    parser.add_argument("--format", required=True, choices=list(READERS), help="annotation format")
    keys = "; ".join(f"{name}: {', '.join(reader_keys(reader))}" for name, reader in READERS.items())
    parser.add_argument("data", nargs="+", metavar="KEY=VALUE",
                        help=f"the format's keys ({keys}; lists as comma-separated text, e.g. stems=a,b), and for "
                             "any format folds=K with fold=I or skip_fold=I")


def _data_source(args: argparse.Namespace) -> dict[str, str]:
    """``{"format": ..., key: value, ...}`` from ``--format`` and the KEY=VALUE arguments."""
    source = {"format": args.format}
    for item in args.data:
        if "=" not in item:
            raise EdgefaceError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        source[key] = value
    return source


DETECTIONS_SCHEMA = 3  # 3: images' "crops"
SHIPPED_NAMES = ", ".join(SHIPPED)  # the short names of the models edgeface ships, for --help
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


def _add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=_size, metavar="WxH",
                   help="letterbox every frame to this size (default: each frame at its own size, see --max-side)")
    p.add_argument("--max-side", type=_checked(check_max_side, int), default=DEFAULT_MAX_SIDE, metavar="PIXELS",
                   help="scale frames whose longest side is above this down to it first, to bound memory (about "
                        "0.9 GB per megapixel on the CPU); boxes stay in the frame's pixels; 0: run full size "
                        "(default: %(default)s)")
    p.add_argument("--min-side", type=_checked(check_min_side, int), metavar="PIXELS",
                   help="upscale frames whose longest side is below this to it first (one pass), so small faces "
                        "reach the smallest anchors; 0: never (default: the model's, 640 for the shipped models)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_checked(check_device, str), default="cpu",
                   help="cpu (default), cuda, cuda:N, or tensorrt (ONNX Runtime's GPU providers; engines and "
                        "checkpoints on CUDA take cuda)")


# what --version reports: the name shown, the distributions that provide it (the first installed counts) and the
# module to look for when none has package metadata (JetPack installs TensorRT's Python module with apt)
RUNTIME_PACKAGES = (
    ("numpy", ("numpy",), "numpy"),
    ("OpenCV", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
     "cv2"),
    ("ONNX Runtime", ("onnxruntime", "onnxruntime-gpu"), "onnxruntime"),
    ("torch", ("torch",), "torch"),
    ("TensorRT", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"), "tensorrt"),
    ("TensorRT-RTX (engine build check)", ("tensorrt-rtx-cu13-bindings",), "tensorrt_rtx_bindings"),
    ("cuda-bindings", ("cuda-bindings",), "cuda.bindings"),
)


def version_text() -> str:
    """edgeface's version and those of what it runs on, for bug reports, from the installed packages' metadata
    (a package without any is looked for, not imported)."""
    import importlib.util
    import platform
    from importlib import metadata

    from . import __version__

    def version(distributions: tuple[str, ...], module: str) -> str:
        for name in distributions:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        return "installed (version not recorded)" if found else "not installed"

    return (f"edgeface {__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})\n"
            + "\n".join(f"  {shown}: {version(names, module)}" for shown, names, module in RUNTIME_PACKAGES))


class _ShowVersion(argparse.Action):
    """``--version``: :func:`version_text`, made only when asked for (it reads every package's metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeface", description="Face detection for edge devices and CPUs.",
        epilog="Run `edgeface COMMAND --help` for a command's options.")
    parser.add_argument("--version", action=_ShowVersion,
                        help="show edgeface's version and those of numpy, OpenCV, ONNX Runtime, torch, TensorRT "
                             "(and TensorRT-RTX) and cuda-bindings, then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.add_argument("--score-threshold", type=_checked(check_score_threshold), metavar="P",
                   help="keep faces scoring above this probability, 0-1 (default: the model's)")
    p.add_argument("--nms-iou", type=_checked(check_nms_iou), metavar="IOU",
                   help="suppress boxes overlapping a better one by more than this IoU, 0-1 (default: the model's)")
    p.add_argument("--max-detections", type=_checked(check_max_detections, int), metavar="N",
                   help="at most this many faces per image, >= 1 (default: the model's)")
    _add_size_options(p)
    p.add_argument("--tile", action="store_true",
                   help="run images larger than --max-side at full resolution in overlapping tiles of at most "
                        "--max-side (plus the whole scaled down, for large faces): the small faces of big photos "
                        "at the memory of --max-side, several times the time")
    _add_device(p)
    p.add_argument("--no-draw", action="store_true", help="write no annotated copies")
    p.add_argument("--crops", action="store_true",
                   help="also write each face of an image as an image of its own (see outputs below)")
    p.add_argument("--crop-margin", type=_checked(check_margin), default=0.2, metavar="SHARE",
                   help="with --crops, grow each box by this share of its width and height on every side, cut at "
                        "the image's edges (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("info", help="show a model's spec, parameters and MAdds",
                       description="Show the spec of a registry model or model file, its parameter count "
                                   "and conv multiply-adds at 640x480.")
    p.add_argument("model", nargs="?",
                   help="registry name (e.g. extd64, extd32-ssd-leaky), model file, or a shipped model: "
                        f"{SHIPPED_NAMES} (default: default)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert an EXTD authors' checkpoint to an edgeface checkpoint",
                       description="Convert EXTD_{32,48,64}.pth from the authors' release into an edgeface "
                                   "checkpoint that carries its spec; the variant is recognised from the weights.")
    p.add_argument("source", help="the authors' .pth file")
    p.add_argument("-o", "--output", required=True, help="edgeface checkpoint to write (.pt)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("average", help="average the weights of several fine-tunes of one model (a model soup)",
                       description="Write the checkpoint whose weights are the weighted mean of MODELS (weights "
                                   "normalised to sum 1): a model soup (Wortsman et al. 2022). It works for "
                                   "fine-tunes that start from the same weights (e.g. several runs from one "
                                   "release), whose weights stay close enough to average; score the soup on "
                                   "validation sets of every kind you care about (edgeface eval) before using it.")
    p.add_argument("models", nargs="+", help="weights of one model: edgeface checkpoints, EXTD authors' .pth, "
                   "edgeface ONNX exports or shipped models (default, fast; BatchNorm folded, the others then "
                   "too)")
    p.add_argument("--weights", type=float, nargs="+", help="one non-negative weight per model (default: equal)")
    p.add_argument("-o", "--output", required=True, help="edgeface checkpoint to write (.pt)")
    p.add_argument("--model-version", help="spec model_version of the result (default: the last model's + "
                                           "'-soup<N>')")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("interpolate", help="mix two sets of weights of one model (WiSE-FT)",
                       description="Write the checkpoint whose weights are (1 - alpha) x START + alpha x END: "
                                   "weight-space ensembling of a model and a fine-tune of it (WiSE-FT, Wortsman et "
                                   "al. 2022), which keeps much of what START knew while adding most of what the "
                                   "fine-tune learned. Choose alpha on validation sets of both kinds: "
                                   "python -m benchmarks wise-ft.")
    p.add_argument("start", help="the first weights: an edgeface checkpoint, an EXTD authors' .pth, or an "
                                  "edgeface ONNX export or shipped model (default, fast)")
    p.add_argument("end", help="the second weights (the fine-tune), same model")
    p.add_argument("--alpha", type=float, required=True, help="weight of END, in [0, 1]")
    p.add_argument("--keep", type=_checked(check_keep_share), default=1.0, metavar="SHARE",
                   help="keep only this share of each weight tensor's largest changes from START to END, the rest "
                        "as START has them (TIES-merging's trim; (0, 1], default 1: plain WiSE-FT)")
    p.add_argument("--module-scale", type=_checked(parse_module_scale, str), action="append", default=[],
                   metavar="MODULE=FACTOR",
                   help="move this module's weights only FACTOR x alpha of the way (0: START's as they are), e.g. "
                        "conf=0 keeps START's classification heads; repeat for more modules (names as in the "
                        "state dict; EXTD's: base, upfeat, loc, conf, and parts such as base.0)")
    p.add_argument("-o", "--output", required=True, help="edgeface checkpoint to write (.pt)")
    p.add_argument("--model-version", help="spec model_version of the result (default: END's + '-wise<alpha>', "
                                           "'-keep<share>' when trimmed, '-<module>x<factor>' per module scale)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("move-boxes", help="move and resize every box a model draws (another dataset's convention)",
                       description="Write the checkpoint of MODEL whose boxes sit DOWN x their anchor's height "
                                   "lower (an anchor is about the size of the faces it finds) and are WIDTH and "
                                   "HEIGHT times as wide and tall. Datasets draw faces differently (hairline or "
                                   "brow to chin, a mask or not), and at IoU 0.5 a model drawn to one convention "
                                   "misses faces labelled to another: `edgeface eval` prints where a model's boxes "
                                   "sit against a dataset's labels (box placement). Only the box heads' biases "
                                   "change, so the move costs no time and every export keeps it. Choose the move "
                                   "on training splits, and score it on validation sets of every kind you care "
                                   "about.")
    p.add_argument("model", help="an edgeface checkpoint, an EXTD authors' .pth, or an edgeface ONNX export or "
                                  "shipped model (default, fast)")
    p.add_argument("--down", type=_checked(check_box_shift), default=0.0,
                   help="centre shift in anchor heights, in [-0.5, 0.5]; negative: up (default: 0)")
    p.add_argument("--width", type=_checked(check_box_scale), default=1.0,
                   help="width factor, in [0.5, 2] (default: 1)")
    p.add_argument("--height", type=_checked(check_box_scale), default=1.0,
                   help="height factor, in [0.5, 2] (default: 1)")
    p.add_argument("-o", "--output", required=True, help="edgeface checkpoint to write (.pt)")
    p.add_argument("--model-version", help="spec model_version of the result (default: MODEL's + "
                                           "'-boxes<down>x<width>x<height>')")
    p.set_defaults(func=cmd_move_boxes)

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
    _add_data_source(p)
    p.add_argument("--samples", type=_checked(check_samples, int), default=400,
                   help="training images drawn, without replacement (default: %(default)s; about 0.4 s each for "
                        "EXTD-64 on a CPU)")
    p.add_argument("--seed", type=_checked(check_seed, int), default=0,
                   help="which images and crops (default: %(default)s)")
    p.add_argument("-o", "--output", required=True, help="the Fisher file to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fisher)

    p = sub.add_parser("eval", help="VOC AP of a model on a labelled set",
                       description="Average precision (VOC devkit style: pixel-inclusive IoU, interpolated AP) "
                                   "of a model on a labelled set, e.g. `edgeface eval -m m.onnx --format facemask "
                                   "root=../shared/data/facemask split=val`.")
    p.add_argument("-m", "--model", default="default",
                   help=f"model file, or a shipped model: {SHIPPED_NAMES} (default: %(default)s)")
    _add_data_source(p)
    p.add_argument("--iou", type=_checked(lambda v: check_overlap(v, "iou")), default=0.5,
                   help="IoU for a match (default: %(default)s)")
    p.add_argument("--score-threshold", type=_checked(check_score_threshold), default=0.05, metavar="P",
                   help="keep scores above (default: %(default)s)")
    _add_size_options(p)
    _add_device(p)
    p.add_argument("--scales", type=_checked(check_scale), nargs="+",
                   help="test-time scales (default: the model's own strategy, e.g. one pass for EXTD)")
    p.add_argument("--single-pass", action="store_true", help="one pass at scale 1, whatever the model's strategy")
    p.add_argument("--flip", action="store_true", help="add horizontally mirrored passes")
    p.add_argument("--box-voting", type=_checked(lambda v: check_overlap(v, "box voting's IoU")), metavar="IOU",
                   help="merge with box voting at this IoU (e.g. 0.3)")
    p.add_argument("--plot", help="write the precision-recall curve to this PNG")
    p.add_argument("--json", help="write the result to this JSON file")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="inspect training data")
    data_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = data_sub.add_parser("show", help="render augmented training samples with their boxes to a PNG",
                            description="Draw a grid of samples as the trainer sees them (the EXTD augmentation), "
                                        "faces in green, ignored boxes (too small, or marked ignore: neither face "
                                        "nor background) in orange, so a person can check labels and "
                                        "augmentation.")
    _add_data_source(d)
    d.add_argument("-o", "--output", default="augmented.png", help="PNG to write (default: %(default)s)")
    d.add_argument("--count", type=_checked(check_samples, int), default=8, help="samples (default: %(default)s)")
    d.add_argument("--size", type=_checked(check_training_size, int), default=320,
                   help="training input side, 32-8192 (default: %(default)s)")
    d.add_argument("--seed", type=_checked(check_seed, int), default=0, help="which samples (default: %(default)s)")
    d.add_argument("--recipe", choices=RECIPES, default="extd",
                   help="sampling: EXTD's (data-anchor-sampling / SSD crops), HR/SHF's rescale + crop, or SRN's "
                        "expand + square crop")
    d.add_argument("--blur", type=_checked(check_blur_prob), default=0.0, metavar="P",
                   help="share of samples blurred, out of focus or moving, as the recipe key blur_prob "
                        "(default: %(default)s)")
    d.add_argument("--occlude", type=_checked(check_occlude_prob), default=0.0, metavar="P",
                   help="share of samples whose faces may get a band covered by a patch of the image, as the "
                        "recipe key occlude_prob (default: %(default)s)")
    d.add_argument("--background", type=_checked(check_background_crop_prob), default=0.0, metavar="P",
                   help="share of samples cropped to a window that keeps clear of every face (background seen up "
                        "close, taught as background), as the recipe key background_crop_prob (default: %(default)s)")
    d.set_defaults(func=cmd_data_show)

    p = sub.add_parser("eval-wider", help="WIDER FACE easy/medium/hard AP (official protocol)",
                       description="Score detections in the official WIDER submission layout (a folder per event, "
                                   "one txt per image) against the official ground truth; with --model, first run "
                                   "the model over WIDER_val/images and write that submission.")
    p.add_argument("submission", help="submission folder (read, or written when --model is given)")
    p.add_argument("--ground-truth", required=True, help="the eval_tools/ground_truth folder (.mat files)")
    p.add_argument("-m", "--model", help="model to run first")
    p.add_argument("--images", help="WIDER_val/images folder: the model runs on it (with --model), and only the "
                                    "images present there are scored (a partial copy of WIDER val)")
    p.add_argument("--score-threshold", type=_checked(check_score_threshold), default=0.05, metavar="P",
                   help="with --model (default: %(default)s)")
    _add_device(p)
    p.add_argument("--plot", help="write the three precision-recall curves to this PNG")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval_wider)

    p = sub.add_parser("export", help="export a model (onnx)")
    export_sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = export_sub.add_parser("onnx", help="export to ONNX with the spec embedded",
                              description="Export to ONNX (spec in metadata_props), simplify with onnxslim, "
                                          "check with onnx.checker and against torch on ONNX Runtime.")
    e.add_argument("model", help="edgeface checkpoint (.pt) or registry name (untrained weights)")
    e.add_argument("-o", "--output", required=True, help="ONNX file to write")
    e.add_argument("--opset", type=int, default=17,
                   help="ONNX opset (default 17, IR 8: TensorRT 8.5+ / JetPack 5+; 13 for JetPack 4.6)")
    e.add_argument("--input-size", type=_size, metavar="WxH", help="fixed input size (default: dynamic H and W)")
    e.add_argument("--batch", type=int, help="fixed batch size (default: dynamic)")
    e.add_argument("--min-side", type=_checked(check_min_side, int), metavar="PIXELS",
                   help="record in the spec that frames whose longest side is below this run upscaled to it "
                        "(Detector's default min_side; default: the checkpoint's, none for trained ones)")
    e.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="real photos or folders (searched recursively) for the torch/ONNX parity check "
                        "(default: synthetic frames)")
    e.add_argument("--no-slim", action="store_true", help="skip onnxslim graph simplification")
    e.add_argument("--rtx-check", action="store_true",
                   help="also parse and build the ONNX with TensorRT-RTX (pip install edgeface[tensorrt-rtx])")
    e.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("build-engine", help="build a TensorRT engine (Jetson or desktop GPU with TensorRT)",
                       description="Build an edgeface engine file from an exported ONNX with the TensorRT installed "
                                   "here (8.5/8.6, 10.x or 11.x, detected). The engine carries the spec; build it on "
                                   "the device that runs it (engines are specific to GPU and TensorRT version).")
    p.add_argument("onnx", help="ONNX exported by `edgeface export onnx`")
    p.add_argument("-o", "--output", help="engine file (default: the ONNX name with .engine)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp32", dest="precision", action="store_const", const="fp32")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="(default)")
    precision.add_argument("--int8", dest="precision", action="store_const", const="int8",
                           help="INT8 (needs --calibration-images; Nano has no INT8)")
    p.set_defaults(precision="fp16")
    p.add_argument("--calibration-images", nargs="+", metavar="PATH",
                   help="INT8 calibration photos or folders (searched recursively)")
    p.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="photos held out from calibration: accuracy of FP16/INT8 against FP32, reported")
    p.add_argument("--int8-mode", choices=("auto", "qdq", "calibrator"), default="auto",
                   help="qdq: explicit Q/DQ ONNX (TensorRT 10/11); calibrator: entropy calibrator (TensorRT 8/10, "
                        "DLA); auto: calibrator on DLA, else qdq")
    p.add_argument("--calibration-cache", help="entropy calibrator cache file (read if present, written after)")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch of the profile (default: %(default)s)")
    p.add_argument("--opt-size", type=_size, default=(640, 480), metavar="WxH",
                   help="frame size TensorRT tunes for (default 640x480: network input 640x512, padded to a "
                        "multiple of the model's size_multiple)")
    p.add_argument("--max-size", type=_size, metavar="WxH",
                   help="largest frame size (default 1920x1080: network input 1920x1152)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="workspace limit (default: %(default)s)")
    p.add_argument("--opt-level", type=int, choices=range(6), help="builder optimisation level (TensorRT 8.6+)")
    p.add_argument("--timing-cache", help="timing cache file: read if present, written after (fast rebuilds)")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (Xavier/Orin) with GPU fallback")
    p.set_defaults(func=cmd_build_engine)
    return parser


# the optional packages a command may import, and the extras that install each (pyproject.toml)
EXTRAS = {"torch": ("train", "export"), "yaml": ("train",), "scipy": ("eval",), "onnx": ("export",),
          "onnxslim": ("export",), "onnxconverter_common": ("export",)}


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """Warnings as the commands' own one-line ``warning: ...`` (not Python's file name, line and source)."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)  # above a progress bar, if one is showing


def main(argv: Optional[Sequence[str]] = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except (EdgefaceError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"edgeface {args.command}: error: {message}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a runtime-only install running a training, export or evaluation command
        package = (exc.name or "").partition(".")[0]
        if package not in EXTRAS:
            raise
        extra = args.command if args.command in EXTRAS[package] else EXTRAS[package][0]
        print(f"edgeface {args.command}: error: this command needs {package}, which is not installed: "
              f"pip install 'edgeface[{extra}]'", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
