"""CUDA kernels for pre-processing, anchor decoding and NMS (``kernels.cu``), compiled at run time by
NVRTC into cubins cached per GPU architecture."""

from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "kernels.cu"
KERNEL_NAMES = ("ef_preprocess", "ef_decode", "ef_rank", "ef_nms_mask", "ef_nms_reduce")
