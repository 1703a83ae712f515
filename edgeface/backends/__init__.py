"""Backends run the network of a model file; :func:`open_backend` picks one from the file type."""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Optional

from ..errors import BackendError, ModelFileError
from .base import Backend

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MODEL_FILE_TYPES = (f"ONNX (.onnx), PyTorch checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) or TensorRT engine "
                    f"({', '.join(ENGINE_SUFFIXES)})")


def open_backend(path: str | os.PathLike, device: str = "cpu", threads: Optional[int] = None,
                 varying_sizes: bool = False) -> Backend:
    """Open `path` on the backend its type calls for: ``.onnx`` -> ONNX Runtime, checkpoints -> torch.

    `varying_sizes` says frames will come in many sizes (photos): ONNX Runtime then plans no memory pattern,
    which would keep one block per input size (a 1920x1440 photo peaked at 4.4 GB with it, 2.8 GB without).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a folder, not a model file: name the {MODEL_FILE_TYPES} file in it")
    if not os.path.isfile(path):
        from ..weights import SHIPPED, SHIPPED_QUOTED

        named = ""
        if not os.path.splitext(path)[1]:  # a short name, perhaps mistyped
            close = difflib.get_close_matches(path, SHIPPED, n=1)
            named = (f" (nor a shipped model: {SHIPPED_QUOTED}"
                     + (f"; did you mean {close[0]!r}?)" if close else ")"))
        raise ModelFileError(f"no such model file: {path}{named}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(path, device=device, threads=threads, memory_pattern=not varying_sizes)
    if suffix in CHECKPOINT_SUFFIXES:
        if importlib.util.find_spec("torch") is None:
            raise BackendError(f"{path} is a PyTorch checkpoint and torch is not installed; "
                               "`pip install edgeface[train]`, or export it to ONNX")
        from .torch_backend import TorchBackend

        return TorchBackend(path, device=device, threads=threads)
    if suffix in ENGINE_SUFFIXES:
        from .engine_file import check_engine_fits, read_engine_header

        header, _ = read_engine_header(path)  # spec and build target, readable without TensorRT
        if header.tensorrt_flavour == "tensorrt_rtx":
            raise BackendError(f"{path} was built by TensorRT-RTX {header.tensorrt_version}, edgeface's GPU-free build "
                               "check, which is not a runtime here; build engines to run with `edgeface build-engine` "
                               "(TensorRT), or run the .onnx on ONNX Runtime")
        try:
            import tensorrt
        except ImportError:
            raise BackendError(f"{path} is a TensorRT engine ({header.spec.name}, TensorRT {header.tensorrt_version}) "
                               "and TensorRT is not installed here: JetPack ships it on Jetson, NVIDIA's index on "
                               "desktops; or run the .onnx on ONNX Runtime") from None
        check_engine_fits(header, path, tensorrt.__version__, None)  # the GPU is checked once CUDA is up
        from ..options import gpu_ordinal
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, tensorrt, ordinal=gpu_ordinal(device) or 0)  # engines run on a GPU
    raise ModelFileError(f"{path}: unknown model file type {suffix!r}; edgeface runs {MODEL_FILE_TYPES} files")


__all__ = ["Backend", "open_backend"]
