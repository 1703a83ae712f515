"""Tiny Faces (HR) templates: k-medoids clustering of training box shapes with distance 1 - IoU of
shapes, and the hybrid-resolution assignment of each cluster to the resolution it is detected at.
NumPy only (the model registry reads the result without torch).

Run ``python -m edgeface.models.templates ../shared/data/widerface/wider_face_split/wider_face_train_bbx_gt.txt``
to recompute the templates edgeface ships from the WIDER FACE train annotations.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

SMALL_OBJECT = 40  # px: objects shorter than this are detected at 2x resolution
LARGE_OBJECT = 140  # px: objects taller than this are detected at 0.5x resolution
TINY_OBJECT = 20  # px: "B" templates of the pruned model (run only on the 2x image)


def shape_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - IoU`` of ``(n, 2)`` and ``(m, 2)`` ``(w, h)`` shapes sharing one centre: ``(n, m)``."""
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    union = (a[:, 0] * a[:, 1])[:, None] + (b[:, 0] * b[:, 1])[None, :] - inter
    return 1.0 - inter / union


def kmedoids(shapes: np.ndarray, k: int, weights: np.ndarray | None = None, iterations: int = 100,
             seed: int = 0) -> np.ndarray:
    """Weighted k-medoids (alternating assignment / medoid update, k-means++ seeding) of ``(n, 2)`` shapes
    under :func:`shape_distance`. Returns the ``(k, 2)`` medoids (rows of `shapes`), sorted by area."""
    shapes = np.asarray(shapes, np.float64)
    weights = np.ones(len(shapes)) if weights is None else np.asarray(weights, np.float64)
    if len(shapes) < k:
        raise ValueError(f"{len(shapes)} distinct shapes cannot make {k} clusters")
    rng = np.random.default_rng(seed)
    chosen = [int(rng.choice(len(shapes), p=weights / weights.sum()))]
    nearest = shape_distance(shapes, shapes[chosen])[:, 0]
    for _ in range(k - 1):
        p = weights * nearest**2
        chosen.append(int(rng.choice(len(shapes), p=p / p.sum())))
        nearest = np.minimum(nearest, shape_distance(shapes, shapes[chosen[-1:]])[:, 0])
    medoids = np.array(chosen)
    for _ in range(iterations):
        assignment = shape_distance(shapes, shapes[medoids]).argmin(axis=1)
        updated = medoids.copy()
        for c in range(k):
            members = np.flatnonzero(assignment == c)
            if len(members):
                cost = np.concatenate([shape_distance(shapes[chunk], shapes[members]) @ weights[members]
                                       for chunk in np.array_split(members, max(1, len(members) // 2048))])
                updated[c] = members[cost.argmin()]
        if np.array_equal(updated, medoids):
            break
        medoids = updated
    result = shapes[medoids]
    return result[np.argsort(result[:, 0] * result[:, 1], kind="stable")]


@dataclass(frozen=True)
class Templates:
    """Clustered object shapes and the resolution each is detected at (hybrid resolution)."""

    objects: tuple[tuple[float, float], ...]  # (w, h) of the clustered objects, source pixels

    def resolution(self, index: int) -> float:
        h = self.objects[index][1]
        return 2.0 if h < SMALL_OBJECT else 0.5 if h > LARGE_OBJECT else 1.0

    @property
    def shapes(self) -> tuple[tuple[float, float], ...]:
        """Template ``(w, h)`` in network-input pixels: the object shape at its detection resolution."""
        return tuple((w * self.resolution(i), h * self.resolution(i)) for i, (w, h) in enumerate(self.objects))

    @property
    def a_set(self) -> tuple[int, ...]:
        """Pruned model's "A" templates: objects of 40-140 px, run over the whole pyramid."""
        return tuple(i for i, (_, h) in enumerate(self.objects) if SMALL_OBJECT <= h <= LARGE_OBJECT)

    @property
    def b_set(self) -> tuple[int, ...]:
        """Pruned model's "B" templates: objects under 20 px, run only on the 2x image."""
        return tuple(i for i, (_, h) in enumerate(self.objects) if h < TINY_OBJECT)


def cluster_shapes(wh: np.ndarray, k: int = 25, seed: int = 0) -> Templates:
    """Templates from the ``(n, 2)`` ``(w, h)`` shapes of training boxes (non-positive ones are dropped)."""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh > 0).all(axis=1)]
    unique, counts = np.unique(wh, axis=0, return_counts=True)  # integer shapes repeat: cluster them weighted
    medoids = kmedoids(unique, k, counts, seed=seed)
    return Templates(tuple((float(w), float(h)) for w, h in medoids))


# The 25 clusters of WIDER FACE train (valid boxes) from `cluster_shapes` with seed 0.
WIDER_TRAIN_TEMPLATES = Templates((
    (3.0, 4.0), (4.0, 4.0), (4.0, 6.0), (5.0, 6.0), (6.0, 8.0), (7.0, 8.0), (6.0, 10.0), (8.0, 11.0), (10.0, 13.0),
    (12.0, 16.0), (14.0, 18.0), (17.0, 21.0), (16.0, 25.0), (21.0, 26.0), (26.0, 32.0), (27.0, 39.0), (32.0, 37.0),
    (35.0, 45.0), (41.0, 50.0), (46.0, 59.0), (57.0, 72.0), (72.0, 96.0), (99.0, 132.0), (144.0, 192.0),
    (264.0, 356.0),
))


def main(argv: list[str] | None = None) -> None:
    from ..data.wider import read_wider_txt

    parser = argparse.ArgumentParser(description="Cluster Tiny Faces templates from WIDER FACE annotations.")
    parser.add_argument("annotations", help="wider_face_train_bbx_gt.txt")
    parser.add_argument("-k", type=int, default=25, help="templates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = read_wider_txt(args.annotations, "")
    boxes = np.concatenate([r.boxes[~r.ignore] for r in records])
    print(f"clustering {len(boxes)} valid boxes of {len(records)} images")
    templates = cluster_shapes(boxes[:, 2:] - boxes[:, :2], args.k, args.seed)
    print("  # w, h of the object; detected at; template w, h; pruned set")
    for i, ((w, h), (tw, th)) in enumerate(zip(templates.objects, templates.shapes)):
        tag = "A" if i in templates.a_set else "B" if i in templates.b_set else "-"
        print(f"{i:3d}  {w:6.0f} x {h:4.0f}   {templates.resolution(i):3g}x   {tw:6.0f} x {th:4.0f}   {tag}")
    print("objects=" + repr(templates.objects))


if __name__ == "__main__":
    main()
