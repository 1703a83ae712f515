"""Box conventions, SSD box coding and IoU (NumPy).

``xyxy``: (x1, y1, x2, y2) pixels, x2/y2 exclusive edges (areas are ``(x2 - x1) * (y2 - y1)``).
``cxcywh``: centre and size in pixels (the anchor format).
"""

from __future__ import annotations

import numpy as np

# Decoded sizes grow at most e^10 (22,026x) the anchor (kernels.cu's EF_MAX_LOG_SIZE): far past any real face
# (SRN's two-step boxes compose log-scales above 4), only there so that the log-size of an untrained or
# corrupted output cannot overflow exp to inf, and inf boxes to NaN IoUs.
MAX_LOG_SIZE = 10.0


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` centre-size boxes to corner boxes."""
    half = boxes[..., 2:] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` corner boxes to centre-size boxes."""
    return np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray, variances: tuple[float, float]) -> np.ndarray:
    """SSD coding of ``(N, 4)`` xyxy boxes against ``(N, 4)`` cxcywh anchors -> ``(N, 4)`` offsets."""
    b = xyxy_to_cxcywh(boxes.astype(np.float64))
    a = anchors.astype(np.float64)
    centre = (b[:, :2] - a[:, :2]) / (variances[0] * a[:, 2:])
    size = np.log(b[:, 2:] / a[:, 2:]) / variances[1]
    return np.concatenate([centre, size], axis=1).astype(np.float32)


def decode_boxes(offsets: np.ndarray, anchors: np.ndarray, variances: tuple[float, float],
                 down: float = 0.0) -> np.ndarray:
    """Inverse of :func:`encode_boxes`: ``(N, 4)`` offsets and cxcywh anchors -> ``(N, 4)`` xyxy float32, each box
    then moved `down` x its own height (a spec's ``box_down``)."""
    centre = anchors[:, :2] + offsets[:, :2] * variances[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(np.fmin(offsets[:, 2:] * variances[1], np.float32(MAX_LOG_SIZE)))
    if down:
        centre[:, 1] += np.float32(down) * size[:, 1]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(..., 4)`` xyxy boxes (0 for inverted boxes)."""
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` (float64, or `dtype`: float32 halves
    the memory and time of large matrices such as box voting's)."""
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).astype(dtype, copy=False)
