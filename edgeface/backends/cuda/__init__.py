"""CUDA kernels for pre-processing, anchor decoding and NMS (``kernels.cu``), compiled at run time by
NVRTC into cubins cached per GPU architecture."""

from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "kernels.cu"
KERNEL_NAMES = ("ef_preprocess", "ef_decode", "ef_select_histogram", "ef_select_pick", "ef_select_compact", "ef_rank",
                "ef_nms_mask", "ef_nms_reduce")
SELECT_STATE_INTS = 264  # EF_SEL_INTS in kernels.cu: the top-K selection's histogram and state
SELECT_COUNT = 260  # EF_SEL_COUNT: the selected candidates' count, an int inside that state
