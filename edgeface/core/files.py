"""Writing files so that readers never see half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path` to write the file to; when the block ends without an error the file replaces
    `path` in one step, otherwise it is removed. An interrupted or failed write leaves the previous file (or none),
    never a truncated one; writers in other processes each get their own temporary file."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
