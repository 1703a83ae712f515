"""NumPy references of the CUDA kernels, one each: the contract the kernels are tested against."""

from __future__ import annotations

import numpy as np

from ...core.boxes import decode_boxes
from ...core.letterbox import fit
from ...core.nms import nms_reference
from ...core.postprocess import face_scores
from ...core.preprocess import network_size
from ...spec import InputSpec


def bilinear_resize(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Float bilinear resize with half-pixel centres and edge clamping (OpenCV's INTER_LINEAR geometry,
    without its 11-bit fixed-point rounding of uint8 images)."""
    height, width = image.shape[:2]
    sx = np.clip((np.arange(new_w) + 0.5) * (width / new_w) - 0.5, 0, width - 1)
    sy = np.clip((np.arange(new_h) + 0.5) * (height / new_h) - 0.5, 0, height - 1)
    x0, y0 = sx.astype(int), sy.astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (sx - x0)[None, :, None], (sy - y0)[:, None, None]
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def preprocess_reference(image: np.ndarray, spec: InputSpec, size: tuple[int, int] | None = None,
                         src_is_rgb: bool = False) -> np.ndarray:
    """ef_preprocess: ``H x W x C`` uint8 (BGR, BGRx or RGB) -> letterboxed into `size` (default: its own),
    normalised ``3 x h x w`` float32 network input (:func:`~edgeface.core.preprocess.network_size`)."""
    height, width = image.shape[:2]
    size = size or (width, height)
    out_w, out_h = network_size(spec, size)
    new_w, new_h, pad_x, pad_y = fit(width, height, size)
    rgb = bilinear_resize(image[:, :, :3], new_w, new_h)
    if not src_is_rgb:
        rgb = rgb[:, :, ::-1]
    net = rgb if spec.channel_order == "RGB" else rgb[:, :, ::-1]
    out = np.zeros((3, out_h, out_w), np.float64)
    out[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = (
        (net - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)
    return out.astype(np.float32)


def decode_reference(loc: np.ndarray, conf: np.ndarray, anchors: np.ndarray, threshold: float,
                     variances: tuple[float, float], down: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ef_decode (in anchor order): boxes, scores and anchor indices of the anchors scoring above `threshold`."""
    scores = face_scores(conf)
    keep = np.flatnonzero(scores > threshold)
    return decode_boxes(loc[keep], anchors[keep], variances, down), scores[keep].astype(np.float32), keep


def rank_reference(scores: np.ndarray, anchor: np.ndarray, k: int) -> np.ndarray:
    """ef_rank: positions of the top-`k` candidates by score, ties to the lower anchor index."""
    return np.lexsort((anchor, -scores))[:k]


def nms_bitmask_reference(sorted_boxes: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """ef_nms_mask + ef_nms_reduce: greedy NMS of boxes already in score order."""
    return nms_reference(sorted_boxes, -np.arange(len(sorted_boxes), dtype=np.float64), iou_threshold, max_keep)
