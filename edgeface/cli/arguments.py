"""What several commands share: argparse types that check with the API's own rules, the size, device and
data-source options, and output checks made before a long pass."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Callable, Optional

from ..errors import EdgefaceError, OptionError
from ..options import DEFAULT_MAX_SIDE, check_device, check_input_size, check_max_side, check_min_side
from ..weights import SHIPPED

SHIPPED_NAMES = ", ".join(SHIPPED)  # the short names of the models edgeface ships, for --help


def checked(check: Callable[[Any], Any], parse: Callable[[str], Any] = float) -> Callable[[str], Any]:
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


size_type = checked(check_input_size, _parse_size)


def check_outputs(files: Sequence[Optional[str]] = (), images: Sequence[Optional[str]] = ()) -> None:
    """Fail before a long pass, not after it, when an output file or image given cannot be written there."""
    from ..core.files import check_output_folder
    from ..core.image import check_image_output

    for path in files:
        if path:
            check_output_folder(path)
    for path in images:
        if path:
            check_image_output(path)


def add_data_source(parser: argparse.ArgumentParser) -> None:
    from ..data.sources import READERS, reader_keys

    parser.add_argument("--format", required=True, choices=list(READERS), help="annotation format")
    keys = "; ".join(f"{name}: {', '.join(reader_keys(reader))}" for name, reader in READERS.items())
    parser.add_argument("data", nargs="+", metavar="KEY=VALUE",
                        help=f"the format's keys ({keys}; lists as comma-separated text, e.g. stems=a,b), and for "
                             "any format folds=K with fold=I or skip_fold=I")


def data_source(args: argparse.Namespace) -> dict[str, str]:
    """``{"format": ..., key: value, ...}`` from ``--format`` and the KEY=VALUE arguments."""
    source = {"format": args.format}
    for item in args.data:
        if "=" not in item:
            raise EdgefaceError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        source[key] = value
    return source


def add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=size_type, metavar="WxH",
                   help="letterbox every frame to this size (default: each frame at its own size, see --max-side)")
    p.add_argument("--max-side", type=checked(check_max_side, int), default=DEFAULT_MAX_SIDE, metavar="PIXELS",
                   help="scale frames whose longest side is above this down to it first, to bound memory (about "
                        "0.9 GB per megapixel on the CPU); boxes stay in the frame's pixels; 0: run full size "
                        "(default: %(default)s)")
    p.add_argument("--min-side", type=checked(check_min_side, int), metavar="PIXELS",
                   help="upscale frames whose longest side is below this to it first (one pass), so small faces "
                        "reach the smallest anchors; 0: never (default: the model's, 640 for the shipped models)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=checked(check_device, str), default="cpu",
                   help="cpu (default), cuda, cuda:N, or tensorrt (ONNX Runtime's GPU providers; engines and "
                        "checkpoints on CUDA take cuda)")


