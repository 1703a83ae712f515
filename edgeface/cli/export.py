"""``edgeface export onnx``, ``edgeface export int8`` (ONNX Runtime on CPUs) and ``edgeface build-engine`` (TensorRT, on
the device that runs the engine)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.image import IMAGE_SUFFIXES, list_inputs
from ..errors import EdgefaceError
from ..options import INT8_CALIBRATIONS, check_int8_calibration, check_min_side
from .arguments import checked, size_type


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from ..export.onnx_export import check_export_options, export_onnx, load_model

    check_export_options(args.output, args.opset, args.batch)  # before the model loads
    if args.rtx_check:
        from ..export.tensorrt_rtx import rtx_bindings

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
        from ..export.tensorrt_rtx import build_engine_rtx

        rtx = build_engine_rtx(args.output)
        print(f"TensorRT-RTX: parsed and built ({rtx.engine_bytes / 1e6:.1f} MB engine, profile {rtx.profile}) "
              f"in {rtx.seconds:.1f} s")
    return 0


def cmd_export_int8(args: argparse.Namespace) -> int:
    import time

    import onnx

    from ..export.precision import compare_precisions, heads_of, quantize_int8_cpu

    if not Path(args.onnx).is_file():
        raise EdgefaceError(f"{args.onnx}: no such ONNX file")
    calibration = [str(p) for p in list_inputs(args.calibration_images, IMAGE_SUFFIXES)]
    check = [str(p) for p in list_inputs(args.check_images, IMAGE_SUFFIXES)] if args.check_images else []
    keep = heads_of(onnx.load(args.onnx)) if args.keep_float is None else args.keep_float
    print(f"calibrating on {len(calibration)} photos ({args.calibration} ranges; FP32: {', '.join(keep) or 'nothing'})",
          file=sys.stderr)
    start = time.perf_counter()
    try:
        quantize_int8_cpu(args.onnx, args.output, calibration, size=args.size, keep_float=keep,
                          calibration=args.calibration)
    except ValueError as exc:
        raise EdgefaceError(str(exc)) from exc
    mb = Path(args.output).stat().st_size / 1e6, Path(args.onnx).stat().st_size / 1e6
    print(f"{args.output}: INT8 for ONNX Runtime on CPUs, {mb[0]:.1f} MB (FP32 {mb[1]:.1f} MB), "
          f"{time.perf_counter() - start:.0f} s")
    if check:
        print(compare_precisions(args.onnx, args.output, "int8", check).summary())
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from ..export.onnx_spec import DEFAULT_PROFILE
    from ..export.tensorrt_build import BuildOptions, build_engine

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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the parsers of ``export onnx``, ``export int8`` and ``build-engine`` to the ``edgeface`` subparsers."""
    p = sub.add_parser("export", help="export a model (onnx; int8 for CPUs)")
    export_sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    e = export_sub.add_parser("onnx", help="export to ONNX with the spec embedded",
                              description="Export to ONNX (spec in metadata_props), simplify with onnxslim, "
                                          "check with onnx.checker and against torch on ONNX Runtime.")
    e.add_argument("model", help="edgeface checkpoint (.pt) or registry name (untrained weights)")
    e.add_argument("-o", "--output", required=True, help="ONNX file to write")
    e.add_argument("--opset", type=int, default=17,
                   help="ONNX opset (default 17, IR 8: TensorRT 8.5+ / JetPack 5+; 13 for JetPack 4.6)")
    e.add_argument("--input-size", type=size_type, metavar="WxH", help="fixed input size (default: dynamic H and W)")
    e.add_argument("--batch", type=int, help="fixed batch size (default: dynamic)")
    e.add_argument("--min-side", type=checked(check_min_side, int), metavar="PIXELS",
                   help="record in the spec that frames whose longest side is below this run upscaled to it "
                        "(Detector's default min_side; default: the checkpoint's, none for trained ones)")
    e.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="real photos or folders (searched recursively) for the torch/ONNX parity check "
                        "(default: synthetic frames)")
    e.add_argument("--no-slim", action="store_true", help="skip onnxslim graph simplification")
    e.add_argument("--rtx-check", action="store_true",
                   help="also parse and build the ONNX with TensorRT-RTX (pip install edgeface[tensorrt-rtx])")
    e.set_defaults(func=cmd_export_onnx)

    q = export_sub.add_parser(
        "int8", help="quantise an exported ONNX to INT8 for ONNX Runtime on CPUs",
        description="Quantise an ONNX from `edgeface export onnx` to INT8 for ONNX Runtime on CPUs (static Q/DQ: "
                    "unsigned 8-bit activations, signed per-channel 8-bit weights), calibrated on real photos like "
                    "the ones it will see, the spec kept. The shipped default-int8 and fast-int8 are made this way "
                    "(percentile ranges; their --keep-float: `python -m benchmarks int8`). INT8 speed and accuracy "
                    "depend on the CPU (VNNI on x86, dot-product instructions on ARM): compare it with the FP32 model "
                    "on yours (--check-images, `edgeface eval`). For TensorRT use `edgeface build-engine --int8`.")
    q.add_argument("onnx", help="FP32 ONNX exported by `edgeface export onnx`")
    q.add_argument("-o", "--output", required=True, help="INT8 ONNX file to write (only once it is complete)")
    q.add_argument("--calibration-images", nargs="+", required=True, metavar="PATH",
                   help="calibration photos or folders (searched recursively); some 50-100 varied ones")
    q.add_argument("--check-images", nargs="+", metavar="PATH",
                   help="photos held out from calibration: INT8's faces and scores against FP32's, reported")
    q.add_argument("--calibration", type=checked(check_int8_calibration, str), default="percentile",
                   metavar="|".join(INT8_CALIBRATIONS),
                   help="activation ranges: each one's 0.001st-99.999th percentile on the photos, or their "
                        "extremes (default: %(default)s)")
    q.add_argument("--keep-float", nargs="*", metavar="MODULE",
                   help="modules (PyTorch names: base.0, upfeat, loc, ...) left in FP32 with what carries their "
                        "outputs on (default: the heads, loc and conf, where the model has them; the option alone: "
                        "every layer INT8)")
    q.add_argument("--size", type=size_type, default=(640, 480), metavar="WxH",
                   help="calibration photos are letterboxed to this size (default 640x480; a fixed-size export's "
                        "own size wins)")
    q.set_defaults(func=cmd_export_int8)

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
    p.add_argument("--opt-size", type=size_type, default=(640, 480), metavar="WxH",
                   help="frame size TensorRT tunes for (default 640x480: network input 640x512, padded to a "
                        "multiple of the model's size_multiple)")
    p.add_argument("--max-size", type=size_type, metavar="WxH",
                   help="largest frame size (default 1920x1080: network input 1920x1152)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="workspace limit (default: %(default)s)")
    p.add_argument("--opt-level", type=int, choices=range(6), help="builder optimisation level (TensorRT 8.6+)")
    p.add_argument("--timing-cache", help="timing cache file: read if present, written after (fast rebuilds)")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (Xavier/Orin) with GPU fallback")
    p.set_defaults(func=cmd_build_engine)
