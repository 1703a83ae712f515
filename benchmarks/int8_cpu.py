"""INT8 on the CPU for a model edgeface ships (--model default or fast): ONNX Runtime static quantisation (Q/DQ,
unsigned activations, per-channel signed weights; :func:`edgeface.export.precision.quantize_int8_cpu`) calibrated on
real photos (face-dataset and WIDER FACE train images), every layer quantised with min-max and with percentile
ranges (``calibration="percentile"``), and with --keep-float's modules left in FP32 (default: the shipped
default-int8's choice, the backbone's first stage and the heads; min-max), against FP32 in the same run: VOC
AP50 on the face dataset's val split, WIDER FACE val easy / medium / hard AP (official protocol, over the val
images ``../shared`` holds) and the latency at 640x480 (median of 8, after 2 warm-up runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from .latency import time_stages
from .machine import SHARED, describe_machine, markdown_table, write_results
from .wise_ft import both_validations, score_model


def latency_ms(path: str, runs: int = 8) -> float:
    from edgeface import Detector

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return time_stages(Detector(path, input_size=(640, 480)), [frame], runs, warmup=2)["total"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=int, default=64, help="calibration photos (default: %(default)s)")
    parser.add_argument("--model", default="default", choices=["default", "fast"],
                        help="the shipped model to quantise (default: %(default)s)")
    parser.add_argument("--keep-float", nargs="*", metavar="MODULE",
                        help="modules (PyTorch names) the partly quantised model keeps in FP32 (default: "
                             "default-int8's base.0 base.1 base.2 loc conf)")
    parser.add_argument("--save", help="also keep the partly quantised INT8 model here")
    args = parser.parse_args(argv)
    from edgeface.data.voc import read_facemask
    from edgeface.data.wider import read_wider
    from edgeface.export.precision import SHIPPED_INT8_FLOAT, quantize_int8_cpu
    from edgeface.weights import SHIPPED

    facemask, widerface = SHARED / "data" / "facemask", SHARED / "data" / "widerface"
    if not facemask.exists():
        print(f"skipped: {facemask} not found (the shared data folder is not beside the checkout)")
        return
    train = read_facemask(facemask, "train")
    calibration = [r.image_path for r in train[:: max(1, 2 * len(train) // args.calibration)]][: args.calibration // 2]
    if (widerface / "WIDER_train").exists():
        wider_train = sorted(read_wider(widerface, "train"), key=lambda r: r.name)
        calibration += [r.image_path for r in wider_train[:: max(1, len(wider_train) // (args.calibration // 2))]]
    sets = both_validations()
    with tempfile.TemporaryDirectory() as tmp:
        shipped = SHIPPED[args.model]
        keep_float = SHIPPED_INT8_FLOAT if args.keep_float is None else args.keep_float
        kept = ", ".join(keep_float) or "nothing"
        variants = {  # label: (file, quantize_int8_cpu options)
            "INT8": (f"{shipped.stem}_int8_every_layer.onnx", {}),
            f"INT8, FP32 {kept}": (args.save or f"{shipped.stem}_int8.onnx", {"keep_float": keep_float}),
            "INT8, percentile calibration": (f"{shipped.stem}_int8_percentile.onnx", {"calibration": "percentile"}),
        }
        models = {f"{args.model}: FP32 (shipped)": str(shipped)}
        for label, (file, options) in variants.items():
            models[f"{args.model}: {label}"] = path = str(Path(tmp) / file)
            start = time.perf_counter()
            quantize_int8_cpu(shipped, path, calibration, **options)
            print(f"{label}: quantised on {len(calibration)} photos in {time.perf_counter() - start:.0f} s", flush=True)
        rows = []
        for name, path in models.items():
            row = {"model": name, "latency_ms": latency_ms(path), **score_model(path, sets),
                   "megabytes": Path(path).stat().st_size / 1e6}
            rows.append(row)
            print(row, flush=True)
    columns = [k for k in ("face_val_ap50", "wider_easy", "wider_medium", "wider_hard") if k in rows[0]]
    table = markdown_table(["model", "MB", *columns, "ms at 640x480 (median)"],
                           [[r["model"], f"{r['megabytes']:.1f}", *(f"{r[c]:.3f}" for c in columns),
                             f"{r['latency_ms']:.1f}"] for r in rows])
    print(table)
    payload = {"machine": describe_machine(), "model": args.model, "calibration_images": len(calibration),
               "keep_float": list(keep_float),
               "wider_val_images": len(sets[-1].wider_ground_truth or []), "rows": rows}
    name = "int8_cpu" if args.model == "default" else f"int8_cpu_{args.model}"
    print(f"\nwritten: {write_results(name, payload, table)}")


if __name__ == "__main__":
    main()
