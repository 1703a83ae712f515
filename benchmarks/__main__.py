"""Regenerate the README's tables and plots. ``big-photos`` measures the default memory policy on 12 and 48 MP
photos; ``postprocess`` each test-time strategy with a network that fires on every anchor; ``positives`` the
training targets per face size of each model family; ``int8`` the shipped model quantised for CPUs;
``data-loading`` the training data pipeline, stage by stage and per DataLoader worker count.
``heavy-training`` trains SHF, HR and SRN on a GPU in one call (see its --help); ``wise-ft`` scores
interpolations between a release and its fine-tune on both validations (needs --end); ``wider-recall`` which
WIDER FACE val faces each model finds, by size, blur, occlusion, pose and event (needs --models);
``false-boxes`` the boxes each model draws on photos without a face. ``gpu``
measures the GPU pipeline (skipped without a CUDA GPU); ``gpu-training`` where GPU training time goes;
``gpu-suite`` runs every GPU test and then both GPU benchmarks, in one call."""

from __future__ import annotations

import sys
from collections.abc import Callable

from edgeface.errors import EdgefaceError

from . import (
    accuracy,
    big_photos,
    data_loading,
    false_boxes,
    gpu,
    gpu_training,
    heavy_training,
    int8_cpu,
    latency,
    model_size,
    positives,
    postprocess,
    speed_grid,
    wider_recall,
    wise_ft,
)

TABLES = {"size": model_size.main, "latency": latency.main, "speed": speed_grid.main, "accuracy": accuracy.main,
          "big-photos": big_photos.main, "postprocess": postprocess.main, "positives": positives.main,
          "int8": int8_cpu.main, "data-loading": data_loading.main, "gpu": gpu.main}
EXTRA = {"gpu-suite": gpu.suite, "gpu-training": gpu_training.main, "heavy-training": heavy_training.main,
         "wise-ft": wise_ft.main, "wider-recall": wider_recall.main, "false-boxes": false_boxes.main}


def main(argv: list[str]) -> None:
    if argv and argv[0] in EXTRA:
        run_reporting_errors(argv[0], EXTRA[argv[0]], argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in (*TABLES, "all"):
        print(f"usage: python -m benchmarks {{{','.join([*TABLES, *EXTRA, 'all'])}}} [options]\n\n" + __doc__.strip()
              + "\n\nEach writes JSON, a markdown table and plots to benchmarks/results/, naming the "
              "machine, package versions and date. `python -m benchmarks NAME --help` for a table's options.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"python -m benchmarks: error: no benchmark called {argv[0]!r}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    for name, run in TABLES.items():
        if argv[0] in (name, "all"):
            print(f"== {name} ==", flush=True)
            run_reporting_errors(name, run, argv[1:] if argv[0] == name else [])


def run_reporting_errors(name: str, run: Callable[[list[str]], object], argv: list[str]) -> None:
    """``run(argv)``; a mistake the user can fix (a missing model file, an out-of-range option) ends it with one
    line naming the benchmark instead of a traceback."""
    try:
        run(argv)
    except (EdgefaceError, FileNotFoundError) as exc:
        print(f"python -m benchmarks {name}: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
