"""What a benchmark ran on, the WIDER set it validates on, and how results are written."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from edgeface.eval.validation import ValidationSet

# where tables go; EDGEFACE_RESULTS_DIR redirects them (tests, or runs on another machine)
RESULTS = Path(os.environ.get("EDGEFACE_RESULTS_DIR", Path(__file__).resolve().parent / "results"))
# ../shared beside the checkout; EDGEFACE_SHARED points elsewhere
SHARED = Path(os.environ.get("EDGEFACE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WIDER = SHARED / "data" / "widerface"  # WIDER FACE in its official layout
AUTHORS = SHARED / "weights" / "extd_official"  # the EXTD authors' checkpoints, EXTD_{32,48,64}.pth
DLIB_PHOTOS = SHARED / "data" / "photos" / "dlib_examples_faces"  # dlib's example photos, imglab labels
PACKAGES = ("edgeface", "numpy", "opencv-python-headless", "onnxruntime", "torch", "onnx", "onnxslim")


def read_cpuinfo() -> str | None:
    """/proc/cpuinfo's text; None where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_name() -> str:
    for line in (read_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# CPU flags of the integer dot-product instructions ONNX Runtime's INT8 kernels use where present (x86: VNNI and
# AMX; ARM: SDOT and I8MM). Without them x86 falls back to AVX2's VPMADDUBSW, whose 16-bit sums can saturate, so
# one INT8 model can score differently on two CPUs: INT8 results name what the CPU had.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_dot_product(cpuinfo: str | None = None) -> list[str] | None:
    """The :data:`INT8_DOT_FLAGS` this CPU (or the given /proc/cpuinfo text) lists; None where there is no
    /proc/cpuinfo to read."""
    if cpuinfo is None and (cpuinfo := read_cpuinfo()) is None:
        return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [flag for flag in INT8_DOT_FLAGS if flag in flags]


def describe_machine() -> dict[str, Any]:
    versions: dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "int8_dot_product": int8_dot_product(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def hardware_line(machine: dict[str, Any]) -> str:
    """The processors of a :func:`describe_machine` record, e.g. ``AMD EPYC, 2 cores (INT8 dot-product instructions:
    avx512_vnni)``: what a speed or INT8 score depends on."""
    flags = machine.get("int8_dot_product")
    dot = "unknown" if flags is None else ", ".join(flags) or "none"
    gpu = f"GPU {machine['gpu']} (compute capability {machine['compute_capability']}), " if "gpu" in machine else ""
    return f"{gpu}{machine['cpu']}, {machine['cores']} cores (INT8 dot-product instructions: {dot})"


def machine_line(machine: dict[str, Any]) -> str:
    return f"{hardware_line(machine)}, Python {machine['python']}, {machine['date']}"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], table: str, out_dir: Path = RESULTS) -> Path:
    """Write ``name.json`` and ``name.md`` (the printed table with its machine line)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(f"{table}\n\nMachine: {machine_line(payload['machine'])}\n")
    return out_dir / f"{name}.json"


HOLDOUT_FOLDS = 5
HOLDOUT_HELP = (f"score WIDER on fold FOLD of {HOLDOUT_FOLDS} of the WIDER train images instead of val (easy / "
                f"medium / hard by face height, fitted to val's lists), for fine-tunes trained without it (a "
                f"train_data entry's folds: {HOLDOUT_FOLDS}, skip_fold: FOLD): Parade, Handshaking and Demonstration, "
                f"events the val images here lack")


def wider_validation(holdout_fold: int | None = None, **keys: Any) -> ValidationSet | None:
    """The benchmarks' WIDER validation set (an :class:`edgeface.eval.validation.ValidationSet`, with `keys` such
    as ``max_side``): the val images in ../shared, or with `holdout_fold` that fold of the train images (metrics
    ``wider_holdout_*``); None when ../shared lacks those images."""
    from edgeface.data.wider import images_folder
    from edgeface.eval.validation import validation_set

    root = WIDER
    source: dict[str, Any] = ({"format": "wider", "root": str(root), "split": "val"} if holdout_fold is None else
              {"format": "wider", "name": "wider_holdout", "root": str(root), "split": "train",
               "folds": HOLDOUT_FOLDS, "fold": holdout_fold})
    if not images_folder(root, source["split"]).exists():
        return None
    with warnings.catch_warnings():  # ../shared holds part of WIDER train: the results give the image count
        warnings.simplefilter("ignore", UserWarning)
        return validation_set({**source, **keys})


def check_holdout_fold(fold: int | None) -> None:
    """Raise OptionError unless `fold` is None or a fold of :func:`wider_source`'s split."""
    from edgeface.errors import OptionError

    if fold is not None and not 0 <= fold < HOLDOUT_FOLDS:
        raise OptionError(f"--wider-holdout must be a fold in 0 .. {HOLDOUT_FOLDS - 1}, got {fold}")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `low` (a count of runs, images, batches), so that a typo is a
    usage error before the benchmark runs, not an empty median after it (or results written from no runs)."""

    def count(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    count.__name__ = f"count of at least {low}"
    return count
