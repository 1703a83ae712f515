"""Commands on models and their weights: ``info``, ``convert`` (the EXTD authors' checkpoints), ``average``
(model soups), ``interpolate`` (WiSE-FT) and ``move-boxes`` (another dataset's box convention)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import EdgefaceError
from ..options import check_box_scale, check_box_shift, check_keep_share, parse_module_scale
from .arguments import SHIPPED_NAMES, checked


def cmd_info(args: argparse.Namespace) -> int:
    from ..backends import ENGINE_SUFFIXES
    from ..models.registry import get_entry
    from ..weights import shipped_model

    target = str(shipped_model(args.model) or args.model)
    engine = None
    if os.path.isfile(target) and Path(target).suffix.lower() in ENGINE_SUFFIXES:
        from ..backends.engine_file import read_engine_header

        header, _ = read_engine_header(target)  # what it was built for, readable without TensorRT or a GPU
        spec, source = header.spec, target
        engine = {key: getattr(header, key) for key in ("tensorrt_flavour", "tensorrt_version", "compute_capability",
                                                         "device_name", "precision")}
    elif os.path.isfile(target):
        from ..backends import open_backend

        spec, source = open_backend(target).spec, target
    else:
        try:
            entry = get_entry(target)
        except KeyError as exc:
            raise EdgefaceError(f"{target!r} is neither a model file nor a registered model: {exc.args[0]}") from None
        spec, source = entry.spec, f"registry: {entry.description}"
    info: dict[str, object] = {"source": source, "spec": spec.to_dict(), **({"engine": engine} if engine else {})}
    try:
        from ..models.complexity import count_macs, count_parameters
        from ..models.registry import create_model

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
    moved = f", moved {spec.box_down:g} of their height down" if spec.box_down else ""
    print(f"  boxes:       {spec.box_coding} coding, variances {spec.variances}{moved}; scores {spec.score}, "
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
    from ..core.files import check_not_an_input
    from ..models.checkpoint import convert_authors_checkpoint

    check_not_an_input(args.output, [args.source])
    spec = convert_authors_checkpoint(args.source, args.output)
    print(f"{args.source} -> {args.output}: {spec.name} (recognised from the weights)")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..core.files import check_not_an_input
    from ..models.checkpoint import average_weights, load_weights_of_one_model, save_checkpoint

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

    from ..core.files import check_not_an_input
    from ..models.checkpoint import interpolate_weights, load_weights_of_one_model, save_checkpoint

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

    from ..core.files import check_not_an_input
    from ..models.checkpoint import load_any_checkpoint, move_boxes, save_checkpoint

    check_not_an_input(args.output, [args.model])
    model, spec = load_any_checkpoint(args.model)
    moved, moved_spec = move_boxes(model, spec, args.down, args.width, args.height)
    version = args.model_version or f"{spec.model_version}-boxes{args.down:+g}x{args.width:g}x{args.height:g}"
    save_checkpoint(moved, replace(moved_spec, model_version=version), args.output,
                    moved_boxes={"model": os.path.basename(args.model), "down": args.down, "width": args.width,
                                 "height": args.height})
    print(f"{args.output}: {spec.name}, the boxes of {args.model} x{args.width:g} as wide, x{args.height:g} as "
          f"tall and {args.down:g} of their height lower")
    return 0


def _add_checkpoint_output(p: argparse.ArgumentParser, version: str) -> None:
    """The options of a command that writes new weights: the checkpoint and its spec's model_version (`version`
    describes the default)."""
    p.add_argument("-o", "--output", required=True, help="edgeface checkpoint to write (.pt)")
    p.add_argument("--model-version", help=f"spec model_version of the result (default: {version})")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the parsers of ``info``, ``convert``, ``average``, ``interpolate`` and ``move-boxes`` to the ``edgeface``
    command's subparsers."""
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
    _add_checkpoint_output(p, "the last model's + '-soup<N>'")
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
    p.add_argument("--keep", type=checked(check_keep_share), default=1.0, metavar="SHARE",
                   help="keep only this share of each weight tensor's largest changes from START to END, the rest "
                        "as START has them (TIES-merging's trim; (0, 1], default 1: plain WiSE-FT)")
    p.add_argument("--module-scale", type=checked(parse_module_scale, str), action="append", default=[],
                   metavar="MODULE=FACTOR",
                   help="move this module's weights only FACTOR x alpha of the way (0: START's as they are), e.g. "
                        "conf=0 keeps START's classification heads; repeat for more modules (names as in the "
                        "state dict; EXTD's: base, upfeat, loc, conf, and parts such as base.0)")
    _add_checkpoint_output(p, "END's + '-wise<alpha>', '-keep<share>' when trimmed, '-<module>x<factor>' per module "
                              "scale")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("move-boxes", help="move and resize every box a model draws (another dataset's convention)",
                       description="Write the checkpoint of MODEL whose boxes are WIDTH and HEIGHT times as "
                                   "wide and tall and sit DOWN x their height lower. Datasets draw faces "
                                   "differently (hairline or brow to chin, a mask or not), and at IoU 0.5 a model "
                                   "drawn to one convention misses faces labelled to another: `edgeface eval` "
                                   "prints where a model's boxes sit against a dataset's labels (box placement). "
                                   "The box heads' biases resize the boxes and the model spec's box_down moves "
                                   "them, so the move costs no time and every export keeps it. Choose the move on "
                                   "training splits, and score it on validation sets of every kind you care "
                                   "about.")
    p.add_argument("model", help="an edgeface checkpoint, an EXTD authors' .pth, or an edgeface ONNX export or "
                                  "shipped model (default, fast)")
    p.add_argument("--down", type=checked(check_box_shift), default=0.0,
                   help="centre shift in box heights, in [-0.5, 0.5]; negative: up (default: 0)")
    p.add_argument("--width", type=checked(check_box_scale), default=1.0,
                   help="width factor, in [0.5, 2] (default: 1)")
    p.add_argument("--height", type=checked(check_box_scale), default=1.0,
                   help="height factor, in [0.5, 2] (default: 1)")
    _add_checkpoint_output(p, "MODEL's + '-boxes<down>x<width>x<height>'")
    p.set_defaults(func=cmd_move_boxes)
