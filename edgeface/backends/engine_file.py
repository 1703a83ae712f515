"""edgeface engine files: a serialized TensorRT engine behind a small header that carries the model
spec and what the engine was built for, so ``Detector("model.engine")`` needs no side file and can
say exactly why an engine does not fit this machine.

Layout: ``MAGIC`` (16 bytes), header length (uint32, little-endian), header (UTF-8 JSON), engine.
Reading the header needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from ..core.files import atomic_write
from ..errors import ModelFileError
from ..spec import ModelSpec

MAGIC = b"EDGEFACE-ENGINE\x00"
FORMAT_VERSION = 1


@dataclass
class EngineHeader:
    """What an edgeface engine file says about the TensorRT plan after it: the model's spec and what the plan was
    built with and for (a plan runs only on the TensorRT version and GPU it was built for)."""

    spec: ModelSpec
    tensorrt_version: str  # e.g. "10.3.0"
    tensorrt_flavour: str = "tensorrt"  # or "tensorrt_rtx"
    compute_capability: Optional[str] = None  # e.g. "8.7"; None: built ahead of time for several
    device_name: Optional[str] = None
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The header as the file stores it, with its format version."""
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        data["format_version"] = FORMAT_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> EngineHeader:
        """The header from its stored JSON object; ValueError naming the field that is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object was expected, not {type(data).__name__}")
        data = {key: value for key, value in data.items() if key != "format_version"}
        known = {f.name for f in fields(cls)}
        problems = [f"unknown field {key!r}" for key in sorted(set(data) - known)]
        problems += [f"no {key!r}" for key in ("spec", "tensorrt_version") if key not in data]
        version = data.get("tensorrt_version", "0.0")
        if not (isinstance(version, str) and re.fullmatch(r"\d+\.\d+(\.\d+)*", version)):
            problems.append(f"tensorrt_version {version!r} is not a version like '10.3.0'")
        if data.get("tensorrt_flavour", "tensorrt") not in ("tensorrt", "tensorrt_rtx"):
            problems.append(f"unknown tensorrt_flavour {data['tensorrt_flavour']!r}")
        for key, kind in (("compute_capability", (str, type(None))), ("device_name", (str, type(None))),
                          ("precision", str), ("extra", dict)):
            if key in data and not isinstance(data[key], kind):
                problems.append(f"{key} {data[key]!r} has the wrong type")
        if problems:
            raise ValueError("; ".join(problems))
        return cls(spec=ModelSpec.from_dict(data.pop("spec")), **data)


def write_engine_file(path: str | os.PathLike, header: EngineHeader, engine: bytes) -> None:
    """Write header and engine; via a temporary file, so a failed build never leaves half a file."""
    path = os.fspath(path)
    meta = header.to_json().encode()
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(meta)) + meta)
        f.write(engine)


def read_engine_header(path: str | os.PathLike) -> tuple[EngineHeader, int]:
    """The header of an edgeface engine file and the byte offset where the engine starts."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"no such model file: {path}")
    with open(path, "rb") as f:
        start = f.read(len(MAGIC) + 4)
        if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
            raise ModelFileError(f"{path} is not an edgeface engine (a bare TensorRT plan carries no spec); build "
                                 "engines with edgeface's engine builder, which writes the spec header")
        (size,) = struct.unpack("<I", start[len(MAGIC) :])
        raw = f.read(size)
        engine_bytes = os.path.getsize(path) - len(start) - size
    try:
        data = json.loads(raw)
        version = data.get("format_version", 0) if isinstance(data, dict) else 0
        newer = isinstance(version, int) and version > FORMAT_VERSION
        header = None if newer else EngineHeader.from_dict(data)
    except ValueError as exc:
        raise ModelFileError(f"{path}: the engine header is corrupt ({exc}); rebuild the engine") from exc
    if header is None:
        raise ModelFileError(f"{path} was written by a newer edgeface (engine file format {version}); upgrade edgeface")
    if engine_bytes <= 0:
        raise ModelFileError(f"{path} holds no engine after its header (truncated copy?); rebuild or copy it again")
    return header, len(start) + size


def check_engine_fits(header: EngineHeader, path: str, tensorrt_version: str,
                      compute_capability: Optional[str]) -> None:
    """Raise :class:`ModelFileError` saying what differs, and how to rebuild, when the engine was built for
    another TensorRT version or GPU than the ones here (engines are specific to both)."""
    rebuild = f"rebuild it on this machine from the ONNX that {os.path.basename(path)} came from"
    if header.tensorrt_version.split(".")[:2] != tensorrt_version.split(".")[:2]:
        raise ModelFileError(f"{path} was built with TensorRT {header.tensorrt_version}, this machine has "
                             f"{tensorrt_version}; {rebuild}")
    if header.compute_capability and compute_capability and header.compute_capability != compute_capability:
        built_for = f"{header.device_name or 'a GPU'} (sm_{header.compute_capability.replace('.', '')})"
        raise ModelFileError(f"{path} was built for {built_for}, this GPU is sm_{compute_capability.replace('.', '')}; "
                             f"{rebuild}")


def tensorrt_generation(version: str) -> str:
    """The TensorRT API generation edgeface targets for `version`: "8" (8.5/8.6), "10" or "11"."""
    major, minor = (int(v) for v in version.split(".")[:2])
    if major == 8 and minor >= 5:
        return "8"
    if major in (10, 11):
        return str(major)
    raise ModelFileError(f"TensorRT {version} is not supported: edgeface builds with 8.5/8.6 (JetPack 5.1/6.0), "
                         "10.x (JetPack 6.1+, desktops) or 11.x")
