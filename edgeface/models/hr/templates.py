"""Tiny Faces (HR) templates: k-medoids clustering of training box shapes with distance 1 - IoU of
shapes, and the hybrid-resolution assignment of each cluster to the resolution it is detected at.
NumPy only (the model registry reads the result without torch).

Run ``python -m edgeface.models.hr.templates ../shared/data/widerface/wider_face_split/wider_face_train_bbx_gt.txt``
to recompute the templates edgeface ships from the WIDER FACE train annotations.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

SMALL_OBJECT = 40  # px: objects shorter than this are detected at 2x resolution
LARGE_OBJECT = 140  # px: objects taller than this are detected at 0.5x resolution
MIN_CLUSTER_SIZE = 10  # px: boxes smaller than this (either side) are left out of the clustering (minClusterSize)
# The pruned model's template sets by rank of decreasing area, 1-based, as the official scripts/hr_res101.m
# gives them for 25 clusters: "A" (allscale_templateIds 5:12) runs over the whole pyramid, "B"
# (onescale_templateIds 19:25) only on the 2x image.
A_RANKS = range(5, 13)
B_RANKS = range(19, 26)


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

    def _by_rank(self, ranks: range) -> tuple[int, ...]:
        """Indices (objects are stored by increasing area) of the templates at 1-based `ranks` of decreasing area."""
        n = len(self.objects)
        return tuple(sorted(n - r for r in ranks if r <= n))

    @property
    def a_set(self) -> tuple[int, ...]:
        """Pruned model's "A" templates (ranks 5-12 by decreasing area), run over the whole pyramid."""
        return self._by_rank(A_RANKS)

    @property
    def b_set(self) -> tuple[int, ...]:
        """Pruned model's "B" templates (ranks 19-25 by decreasing area: the smallest), run only on the 2x image."""
        return self._by_rank(B_RANKS)


def cluster_shapes(wh: np.ndarray, k: int = 25, seed: int = 0, min_size: float = MIN_CLUSTER_SIZE) -> Templates:
    """Templates from the ``(n, 2)`` ``(w, h)`` shapes of training boxes; boxes under `min_size` on either side
    are left out, as the official clustering does (a template for a 3x4 px box has nothing to learn from)."""
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh >= max(min_size, 1e-9)).all(axis=1)]
    unique, counts = np.unique(wh, axis=0, return_counts=True)  # integer shapes repeat: cluster them weighted
    medoids = kmedoids(unique, k, counts, seed=seed)
    return Templates(tuple((float(w), float(h)) for w, h in medoids))


# The 25 clusters of WIDER FACE train (valid boxes of at least 10 x 10 px) from `cluster_shapes` with seed 0.
WIDER_TRAIN_TEMPLATES = Templates((
    (10.0, 11.0), (11.0, 11.0), (10.0, 14.0), (12.0, 13.0), (12.0, 15.0), (12.0, 19.0), (14.0, 17.0), (16.0, 20.0),
    (19.0, 24.0), (22.0, 24.0), (23.0, 29.0), (25.0, 36.0), (30.0, 34.0), (33.0, 42.0), (39.0, 47.0), (42.0, 55.0),
    (51.0, 55.0), (48.0, 65.0), (58.0, 74.0), (68.0, 90.0), (82.0, 108.0), (102.0, 138.0), (136.0, 180.0),
    (200.0, 268.0), (342.0, 447.0),
))


def main(argv: list[str] | None = None) -> None:
    from ...data.wider import read_wider_txt

    parser = argparse.ArgumentParser(description="Cluster Tiny Faces templates from WIDER FACE annotations.")
    parser.add_argument("annotations", help="wider_face_train_bbx_gt.txt")
    parser.add_argument("-k", type=int, default=25, help="templates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-size", type=float, default=MIN_CLUSTER_SIZE,
                        help="leave out boxes smaller than this on either side (default: %(default)s)")
    args = parser.parse_args(argv)
    records = read_wider_txt(args.annotations, "")
    boxes = np.concatenate([r.boxes[~r.ignore] for r in records])
    print(f"clustering {len(boxes)} valid boxes of {len(records)} images")
    templates = cluster_shapes(boxes[:, 2:] - boxes[:, :2], args.k, args.seed, args.min_size)
    print("  # w, h of the object; detected at; template w, h; pruned set")
    for i, ((w, h), (tw, th)) in enumerate(zip(templates.objects, templates.shapes)):
        tag = "A" if i in templates.a_set else "B" if i in templates.b_set else "-"
        print(f"{i:3d}  {w:6.0f} x {h:4.0f}   {templates.resolution(i):3g}x   {tw:6.0f} x {th:4.0f}   {tag}")
    print("objects=" + repr(templates.objects))


if __name__ == "__main__":
    main()
