"""Precision-recall and line plots drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ..core.image import write_image

COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140)]


def _axes(size: tuple[int, int], left: int, x_range: tuple[float, float], y_range: tuple[float, float],
          tick_format: str, xlabel: str, ylabel: str, title: str) -> tuple[np.ndarray, Callable, int, int, int]:
    """A white canvas with framed axes over `x_range` x `y_range` (6 ticks each, labelled with `tick_format`),
    axis labels and a title. Returns ``(canvas, to_px, top, pw, ph)``: `to_px(x, y)` maps data arrays to
    ``(N, 2)`` int32 pixel points; the plot area is `pw` x `ph` pixels from (`left`, `top`)."""
    width, height = size
    right, top, bottom = 20, 40, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    pw, ph = width - left - right, height - top - bottom
    (x0, x1), (y0, y1) = x_range, y_range

    def to_px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([left + (np.asarray(x, float) - x0) / (x1 - x0) * pw,
                         top + (1 - (np.asarray(y, float) - y0) / (y1 - y0)) * ph], axis=1).round().astype(np.int32)

    for tick in np.linspace(0, 1, 6):
        x, y = int(left + tick * pw), int(top + (1 - tick) * ph)
        cv2.line(canvas, (x, top), (x, top + ph), (230, 230, 230), 1)
        cv2.line(canvas, (left, y), (left + pw, y), (230, 230, 230), 1)
        cv2.putText(canvas, format(x0 + tick * (x1 - x0), tick_format), (x - 12, top + ph + 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(canvas, format(y0 + tick * (y1 - y0), tick_format), (left - 32, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1)
    cv2.rectangle(canvas, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(canvas, xlabel, (left + pw // 2 - 20, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(canvas, ylabel, (4, top - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    title_width = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)[0][0]
    scale = 0.6 * min(1.0, (width - left - 50 - right) / max(title_width, 1))  # long titles shrink to fit
    cv2.putText(canvas, title, (left + 50, 24), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas, to_px, top, pw, ph


def plot_pr_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike,
                   title: str = "precision-recall", size: tuple[int, int] = (640, 520)) -> None:
    """Write a PNG of ``(label, recall, precision)`` curves; labels should carry their AP."""
    left = 60
    canvas, to_px, top, pw, ph = _axes(size, left, (0.0, 1.0), (0.0, 1.0), ".1f", "recall", "precision", title)
    for k, (label, recall, precision) in enumerate(curves):
        colour = COLOURS[k % len(COLOURS)]
        if len(recall):
            cv2.polylines(canvas, [to_px(recall, precision)], False, colour, 2, cv2.LINE_AA)
        y = top + ph - 16 - 20 * (len(curves) - 1 - k)
        cv2.line(canvas, (left + 12, y - 4), (left + 36, y - 4), colour, 2)
        cv2.putText(canvas, label, (left + 42, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    write_image(path, canvas)


def plot_lines(series: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike, title: str,
               xlabel: str, ylabel: str, size: tuple[int, int] = (640, 420), y_from_zero: bool = True) -> None:
    """Write a PNG of ``(label, x, y)`` lines on axes fitted to the data (e.g. training loss against step).
    ``y_from_zero=False`` fits the y axis to the values alone (with a margin), for metrics that differ by
    little. The legend sits on a white box where it covers the least of the lines."""
    xs = np.concatenate([np.asarray(x, float) for _, x, _ in series] + [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, float) for _, _, y in series] + ([np.zeros(1)] if y_from_zero else []))
    x_range = (float(xs.min()), float(max(xs.max(), xs.min() + 1e-9)))
    y_low, y_high = float(ys.min()), float(ys.max())
    if not y_from_zero:
        margin = max(0.05 * (y_high - y_low), 1e-3)
        y_low, y_high = y_low - margin, y_high + margin
    left = 70
    canvas, to_px, top, pw, ph = _axes(size, left, x_range, (y_low, max(y_high, y_low + 1e-9)), ".3g", xlabel,
                                       ylabel, title)
    lines = [to_px(x, y) for _, x, y in series]
    for k, points in enumerate(lines):
        colour = COLOURS[k % len(COLOURS)]
        if len(points) > 1:
            cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        for px, py in points if len(points) <= 20 else ():
            cv2.circle(canvas, (int(px), int(py)), 3, colour, -1)
    # the legend goes where it covers the least of the lines: top, middle or bottom, right or left
    box_w, box_h = 206, 8 + 20 * len(series)
    places = [(x, y) for y in (top + 2, top + (ph - box_h) // 2, top + ph - box_h - 2)
              for x in (left + pw - box_w - 2, left + 2)]
    drawn = [np.linspace(a, b, 32) for points in lines for a, b in zip(points[:-1], points[1:])]
    points = np.concatenate(drawn + [p.astype(float) for p in lines]) if lines else np.zeros((0, 2))
    x0, y0 = min(places, key=lambda c: int(((points[:, 0] >= c[0]) & (points[:, 0] <= c[0] + box_w)
                                            & (points[:, 1] >= c[1]) & (points[:, 1] <= c[1] + box_h)).sum()))
    cv2.rectangle(canvas, (x0, y0), (x0 + box_w, y0 + box_h), (255, 255, 255), -1)
    for k, (label, _, _) in enumerate(series):
        yl = y0 + 14 + 20 * k
        cv2.line(canvas, (x0 + 6, yl - 4), (x0 + 30, yl - 4), COLOURS[k % len(COLOURS)], 2)
        cv2.putText(canvas, label, (x0 + 36, yl), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    write_image(path, canvas)


def plot_differences(rows: Sequence[str], series: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike,
                     title: str, xlabel: str, bar_height: int = 7, width: int = 760) -> None:
    """Write a PNG of horizontal bars, one group of bars per row (named on the left), one bar per ``(label,
    values)`` series, drawn from a zero line in the middle: e.g. each model's change from a baseline, per group of
    faces. The x axis is symmetric around zero and fitted to the largest change."""
    left, right, top, bottom = 260, 20, 60, 40
    gap = 4
    row_height = max(bar_height * len(series) + gap, 14)  # room for the row names
    height = top + row_height * len(rows) + bottom
    canvas = np.full((height, width, 3), 255, np.uint8)
    pw = width - left - right
    values = np.concatenate([np.asarray(v, float) for _, v in series] + [np.zeros(1)])
    reach = float(np.abs(values).max()) * 1.1 or 1.0
    zero = left + pw // 2

    def to_x(value: float) -> int:
        return int(round(zero + value / reach * (pw / 2)))

    for tick in np.linspace(-reach, reach, 5):
        x = to_x(tick)
        cv2.line(canvas, (x, top), (x, height - bottom), (230, 230, 230), 1)
        cv2.putText(canvas, f"{tick:+.3f}", (x - 20, height - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1)
    for r, name in enumerate(rows):
        y = top + r * row_height
        cv2.putText(canvas, name[:40], (6, y + row_height // 2 + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for k, (_, series_values) in enumerate(series):
            x = to_x(float(series_values[r]))
            y0 = y + k * bar_height
            cv2.rectangle(canvas, (min(x, zero), y0), (max(x, zero), y0 + bar_height - 2), COLOURS[k % len(COLOURS)],
                          -1)
    cv2.line(canvas, (zero, top), (zero, height - bottom), (0, 0, 0), 1)
    cv2.putText(canvas, xlabel, (left + pw // 2 - 60, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(canvas, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (label, _) in enumerate(series):  # the legend, under the title
        x = 6 + 200 * k
        cv2.rectangle(canvas, (x, 32), (x + 20, 40), COLOURS[k % len(COLOURS)], -1)
        cv2.putText(canvas, label[:26], (x + 26, 41), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    write_image(path, canvas)
