"""Files: checking outputs before long work, writing them so that readers never see half of one, and handing
their names to native libraries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import OutputError


def has_utf8_name(path: str | os.PathLike) -> bool:
    """Whether `path` is valid UTF-8 text. A Linux file name in another encoding reaches Python with surrogate
    escapes, which native libraries that take UTF-8 paths cannot convert (OpenCV crashes, ONNX Runtime refuses):
    for such names callers pass the name's bytes (:func:`edgeface.core.image.opencv_path`) or the file's."""
    path = os.fspath(path)
    try:
        path.encode("utf-8") if isinstance(path, str) else path.decode("utf-8")
    except UnicodeError:
        return False
    return True


def check_output_folder(path: str | os.PathLike) -> None:
    """Raise OutputError when the file `path` cannot be written where it is: its folder does not exist, or `path`
    is a folder (checked before long work, so that its result is not lost at the end)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {os.fspath(path)}: its folder {folder} does not exist")
    if os.path.isdir(path):
        raise OutputError(f"cannot write {os.fspath(path)}: it is a folder; name a file")


def check_not_an_input(output: str | os.PathLike, inputs: list[str | os.PathLike]) -> None:
    """Raise OutputError when `output` is one of `inputs` (by any name): writing it would replace an original."""
    if os.path.exists(output) and any(os.path.exists(i) and os.path.samefile(output, i) for i in inputs):
        raise OutputError(f"the output {os.fspath(output)} is an input: writing it would replace the original; "
                          "give another output")


def check_folder_can_be_made(path: str | os.PathLike) -> None:
    """Raise OutputError, before long work and without making anything, when the folder `path` could not be made or
    written into: a file in its place or above it, or a nearest existing folder this process cannot write to."""
    wanted = os.path.abspath(os.fspath(path))
    nearest = wanted
    while not os.path.exists(nearest):
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest):
        raise OutputError(f"cannot make the folder {os.fspath(path)}: {nearest} is a file")
    if not os.access(nearest, os.W_OK):
        raise OutputError(f"cannot make the folder {os.fspath(path)}: {nearest} is not writable")


def make_output_folder(path: str | os.PathLike) -> None:
    """Make the folder `path` (and its parents) unless it exists, or raise OutputError saying why it cannot be made
    (a read-only place, a file in the way, a missing drive)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot make the output folder {os.fspath(path)}: {exc.strerror}") from exc


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path` to write the file to; when the block ends without an error the file replaces
    `path` in one step, otherwise it is removed. An interrupted or failed write leaves the previous file (or none),
    never a truncated one; writers in other processes each get their own temporary file."""
    path = os.fspath(path)
    check_output_folder(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
