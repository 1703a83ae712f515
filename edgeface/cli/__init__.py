"""The ``edgeface`` command line. Each module holds a group of commands and adds their parsers: ``detect``;
``models`` (info, convert, average, interpolate, move-boxes); ``train`` (train, fisher, data show); ``evaluate``
(eval, eval-wider); ``export`` (export onnx, export int8, build-engine); ``arguments``, what they share."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Optional

from ..errors import EdgefaceError
from . import detect, evaluate, export, models, train

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

    from .. import __version__

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
    for commands in (detect, models, train, evaluate, export):
        commands.add_parsers(sub)
    return parser


# the optional packages a command may import, and the extras that install each (pyproject.toml)
EXTRAS = {"torch": ("train", "export"), "yaml": ("train",), "scipy": ("eval",), "onnx": ("export",),
          "onnxslim": ("export",), "onnxconverter_common": ("export",)}


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """Warnings as the commands' own one-line ``warning: ...`` (not Python's file name, line and source)."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)  # above a progress bar, if one is showing


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = _run(args)
    except Exception:
        if not hasattr(args, "leave_process"):
            raise
        traceback.print_exc()  # a bug in a command with its own way out: the traceback, then status 1
        status = 1
    if hasattr(args, "leave_process"):  # a command's own way out (edgeface train's torchrun workers)
        args.leave_process(status)
    return status


def _run(args: argparse.Namespace) -> int:
    """The command's exit status; the errors a user can act on as one line on stderr."""
    import warnings

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
