"""Box -> ellipse regression for FDDB (the post-hoc step of "Finding Tiny Faces"): FDDB annotates faces as
ellipses and scores the overlap of detection regions with them, so a rectangle loses overlap at its
corners. A linear regressor, fit on matched (box, annotated ellipse) pairs, maps each box to an ellipse.

Targets, relative to a box (cx, cy, w, h): ``(ex - cx) / w``, ``(ey - cy) / h``, ``log(major / h)``,
``log(minor / w)`` and the major axis's angle from vertical; features: 1, ``log w``, ``log h``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _features(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack([np.ones(len(boxes)), np.log(np.maximum(w, 1e-3)), np.log(np.maximum(h, 1e-3))], axis=1)


def ellipse_targets(boxes: np.ndarray, ellipses: np.ndarray) -> np.ndarray:
    """``(N, 5)`` regression targets of (major, minor, angle, cx, cy) `ellipses` relative to xyxy `boxes`."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    a, b, angle, ex, ey = (ellipses[:, k] for k in range(5))
    from_vertical = np.mod(angle, np.pi) - np.pi / 2  # the major axis against vertical, in [-pi/2, pi/2)
    return np.stack([(ex - cx) / w, (ey - cy) / h, np.log(a / h), np.log(b / w), from_vertical], axis=1)


@dataclass
class EllipseRegressor:
    weights: np.ndarray  # (3, 5): features -> targets

    @classmethod
    def fit(cls, boxes: np.ndarray, ellipses: np.ndarray, ridge: float = 1e-6) -> EllipseRegressor:
        """Least squares (lightly ridge-regularised) on matched ``(N, 4)`` xyxy boxes and ``(N, 5)`` ellipses."""
        x, y = _features(boxes), ellipse_targets(boxes, ellipses)
        weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        return cls(weights)

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 5)`` (major, minor, angle, cx, cy) ellipses for xyxy `boxes`."""
        t = _features(boxes) @ self.weights
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        return np.stack([h * np.exp(t[:, 2]), w * np.exp(t[:, 3]), t[:, 4] + np.pi / 2, cx + t[:, 0] * w,
                         cy + t[:, 1] * h], axis=1)
