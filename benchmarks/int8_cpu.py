"""INT8 on the CPU for a model edgeface ships (--model default or fast): ONNX Runtime static quantisation (Q/DQ,
unsigned activations, per-channel signed weights; :func:`edgeface.export.precision.quantize_int8_cpu`) calibrated on
real photos (face-dataset and WIDER FACE train images), every layer quantised with min-max and with percentile
ranges (``calibration="percentile"``), and with --keep-float's modules left in FP32 (default: those the shipped INT8
model keeps; min-max, and with --percentile-keep-float percentile ranges too: the shipped INT8 models' recipe),
against FP32 in the same run: VOC AP50 on the face dataset's val split, WIDER FACE val easy / medium / hard AP
(official protocol, over the val images ``../shared`` holds, at their own size and on --wider-frames frames: each
image first downscaled to fit that square, as a camera of that resolution delivers it) and the latency at 640x480
(median of 8 rounds after 2 warm-up rounds, the models timed in turns in each round). INT8 scores and speed depend
on the CPU's integer dot-product instructions (VNNI on x86, SDOT on ARM; without them ONNX Runtime's x86 kernels can
saturate), which the results' Machine line names.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .latency import interleaved_ms
from .machine import SHARED, WIDER, at_least, describe_machine, markdown_table, wider_validation, write_results
from .wise_ft import both_validations, score_model


def latencies_ms(models: dict[str, str], rounds: int = 8) -> dict[str, float]:
    """Median milliseconds of one 640x480 frame end to end for each model file, timed in turns
    (:func:`interleaved_ms`) so that their ratios survive a change of the machine's speed."""
    from edgeface import Detector

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    runs = {name: Detector(path, input_size=(640, 480)).detect for name, path in models.items()}
    return interleaved_ms(runs, frame, rounds)


def calibration_photos(count: int) -> list[str]:
    """About `count` training photos, evenly spread: half from the face dataset's train split, half WIDER FACE train
    images (when present)."""
    from edgeface.data.voc import read_facemask
    from edgeface.data.wider import read_wider

    train = read_facemask(SHARED / "data" / "facemask", "train")
    photos = [r.image_path for r in train[:: max(1, 2 * len(train) // count)]][: count // 2]
    if (WIDER / "WIDER_train").exists():
        wider_train = sorted(read_wider(WIDER, "train"), key=lambda r: r.name)
        photos += [r.image_path for r in wider_train[:: max(1, len(wider_train) // (count // 2))]]
    return photos


def int8_variants(stem: Path, keep_float: list[str], percentile_keep_float: bool = False,
                  save: str | None = None) -> dict[str, tuple[Path, dict]]:
    """The INT8 models to measure, label: (file, :func:`quantize_int8_cpu` options), files named after `stem`
    (a temporary path). `save` names the file of the one kept: the last (with `percentile_keep_float`, percentile
    ranges with `keep_float` in FP32: the shipped INT8 models' recipe; otherwise every layer with percentile
    ranges)."""
    kept = ", ".join(keep_float) or "nothing"
    variants: dict[str, tuple[Path, dict]] = {
        "INT8": (stem.with_name(f"{stem.name}_int8_every_layer.onnx"), {}),
        f"INT8, FP32 {kept}": (stem.with_name(f"{stem.name}_int8_partly.onnx"), {"keep_float": keep_float}),
        "INT8, percentile calibration": (stem.with_name(f"{stem.name}_int8.onnx"), {"calibration": "percentile"}),
    }
    if percentile_keep_float:
        variants[f"INT8, percentile calibration, FP32 {kept}"] = (
            stem.with_name(f"{stem.name}_int8_percentile_partly.onnx"),
            {"calibration": "percentile", "keep_float": keep_float})
    if save:
        label, (_, options) = list(variants.items())[-1]
        variants[label] = (Path(save), options)
    return variants


def main(argv: list[str] | None = None) -> None:
    from edgeface.export.precision import SHIPPED_INT8_KEEP_FLOAT, quantize_int8_cpu

    shipped_keep = "; ".join(f"with --model {model}, {' '.join(modules)}"
                             for model, modules in SHIPPED_INT8_KEEP_FLOAT.items())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=at_least(1), default=64, help="calibration photos (default: %(default)s)")
    parser.add_argument("--model", default="default", choices=["default", "fast"],
                        help="the shipped model to quantise (default: %(default)s)")
    parser.add_argument("--keep-float", nargs="*", metavar="MODULE",
                        help="modules (PyTorch names) the partly quantised model keeps in FP32 (default: those the "
                             f"shipped INT8 model keeps: {shipped_keep}. base.0 is the stem convolution, base.1 and "
                             "base.2 the rest of the backbone's first stage, upfeat the FPN's upsampling convolutions, "
                             "loc and conf the heads)")
    parser.add_argument("--percentile-keep-float", action="store_true",
                        help="also measure percentile ranges with --keep-float's modules in FP32, the model --save "
                             "keeps (the shipped INT8 models' recipe)")
    parser.add_argument("--save", help="also keep the percentile-calibrated INT8 model here: every layer INT8 "
                                       "or, with --percentile-keep-float, that one (the shipped INT8 models' recipe)")
    parser.add_argument("--wider-frames", type=int, nargs="*", default=[416], metavar="SIDE",
                        help="also score WIDER val on frames fitting this square (default: %(default)s; none: only "
                             "at the images' own size)")
    parser.add_argument("--name", help="results file stem (default: int8_cpu with --model default, int8_cpu_fast "
                                       "with --model fast)")
    args = parser.parse_args(argv)
    from edgeface.weights import SHIPPED

    if not (SHARED / "data" / "facemask").exists():
        print(f"skipped: {SHARED / 'data' / 'facemask'} not found (the shared data folder is not beside the checkout)")
        return
    calibration = calibration_photos(args.calibration)
    sets = both_validations()
    if len(sets) > 1:  # WIDER val is there
        sets += [wider_validation(name=f"wider_{side}px_frames", frame_side=side) for side in args.wider_frames]
    with tempfile.TemporaryDirectory() as tmp:
        shipped = SHIPPED[args.model]
        keep_float = SHIPPED_INT8_KEEP_FLOAT[args.model] if args.keep_float is None else args.keep_float
        variants = int8_variants(Path(tmp) / shipped.stem, keep_float, args.percentile_keep_float, args.save)
        models = {f"{args.model}: FP32 (shipped)": str(shipped)}
        for label, (file, options) in variants.items():
            models[f"{args.model}: {label}"] = path = str(file)
            start = time.perf_counter()
            quantize_int8_cpu(shipped, path, calibration, **options)
            print(f"{label}: quantised on {len(calibration)} photos in {time.perf_counter() - start:.0f} s", flush=True)
        latency = latencies_ms(models)
        rows = []
        for name, path in models.items():
            row = {"model": name, "latency_ms": latency[name], **score_model(path, sets),
                   "megabytes": Path(path).stat().st_size / 1e6}
            rows.append(row)
            print(row, flush=True)
    columns = [k for k in rows[0] if k not in ("model", "latency_ms", "megabytes")]  # each set's metrics
    table = markdown_table(["model", "MB", *columns, "ms at 640x480 (median)"],
                           [[r["model"], f"{r['megabytes']:.1f}", *(f"{r[c]:.3f}" for c in columns),
                             f"{r['latency_ms']:.1f}"] for r in rows])
    print(table)
    payload = {"machine": describe_machine(), "model": args.model, "calibration_images": len(calibration),
               "keep_float": list(keep_float),
               "wider_val_images": len(sets[-1].wider_ground_truth or []), "rows": rows}
    name = args.name or ("int8_cpu" if args.model == "default" else f"int8_cpu_{args.model}")
    print(f"\nwritten: {write_results(name, payload, table)}")


if __name__ == "__main__":
    main()
