"""Positive anchors per face, by face size, as each model family's objective assigns them on real WIDER FACE
train images: what a training run would learn from, checked before any GPU time is spent.

Each image is letterboxed to the family's training size (no random augmentation, so two versions of the code
see identical inputs) and its valid faces get the objective's targets. A positive counts for the face it
overlaps most. Per face-size bucket (the face's shorter side in input pixels): faces, mean positives per
face and the share of faces with at least one positive; for SRN both steps (the second step on the
original anchors, i.e. a first step that has not moved them yet).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.data.records import FaceRecord

from .machine import WIDER, at_least, describe_machine, markdown_table, write_results

BUCKETS = (0, 8, 16, 32, 64, 128, 100_000)
FAMILIES = {"extd64": 640, "shf": 800, "hr-res50": 500, "srn": 1024}


def positives_per_face(labels: np.ndarray, faces: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``(G,)`` count of positive anchors whose best-overlapping face is each face."""
    from edgeface.core.boxes import box_iou, cxcywh_to_xyxy

    counts = np.zeros(len(faces), np.int64)
    positive = np.flatnonzero(labels == 1)
    if len(faces) and len(positive):
        owner = box_iou(faces, cxcywh_to_xyxy(anchors[positive])).argmax(axis=0)
        np.add.at(counts, owner, 1)
    return counts


def second_step_labels(objective: Any, faces: np.ndarray, targets: dict) -> np.ndarray:
    """SRN's second-step labels with unmoved anchors (whatever the objective's version provides)."""
    from edgeface.train.objectives import match_iou

    if "labels2" in targets:
        labels2 = targets["labels2"].copy()
        high = ~objective.low
        labels2[high] = objective.match_step(faces, objective.anchors[high], objective.refined_step)[0]
        return labels2
    labels2 = targets["labels"].copy()  # the version before the per-step matching
    labels2[~objective.low] = match_iou(faces, objective.anchors[~objective.low], *objective.refined_step)[0]
    return labels2


def measure(family: str, size: int, records: list[FaceRecord]) -> dict[str, list]:
    from edgeface.core.image import read_image
    from edgeface.core.letterbox import letterbox
    from edgeface.models.registry import default_spec
    from edgeface.train.objectives import objective_for

    objective = objective_for(default_spec(family), size)
    steps = ("first", "second") if family == "srn" else ("all",)
    sizes: list[np.ndarray] = []
    counts: dict[str, list[np.ndarray]] = {step: [] for step in steps}
    for record in records:
        _, transform = letterbox(read_image(record.image_path), (size, size))
        faces = transform.to_input(record.boxes[~record.ignore])
        faces = faces[(faces[:, 2:] - faces[:, :2]).min(axis=1) >= 1]
        targets = objective.targets(faces)
        sizes.append((faces[:, 2:] - faces[:, :2]).min(axis=1))
        counts[steps[0]].append(positives_per_face(targets["labels"], faces, objective.anchors))
        if family == "srn":
            counts["second"].append(positives_per_face(second_step_labels(objective, faces, targets), faces,
                                                       objective.anchors))
    side = np.concatenate(sizes)
    rows: dict[str, list] = {}
    for step, per_image in counts.items():
        n = np.concatenate(per_image)
        rows[step] = []
        for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
            in_bucket = n[(side >= lo) & (side < hi)]
            rows[step].append({"bucket": f"{lo}-{hi}" if hi < BUCKETS[-1] else f"{lo}+", "faces": len(in_bucket),
                               "mean_positives": float(in_bucket.mean()) if len(in_bucket) else 0.0,
                               "with_positive": float((in_bucket > 0).mean()) if len(in_bucket) else 0.0})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=at_least(1), default=60,
                        help="WIDER train images, evenly spaced over the sorted names (default: %(default)s)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--json", help="also write the rows here (e.g. to compare two versions of the code)")
    args = parser.parse_args(argv)
    from edgeface.data.wider import read_wider

    root = WIDER
    if not (root / "WIDER_train").exists():
        print(f"skipped: {root} not found (the shared data folder is not beside the checkout)")
        return
    records = read_wider(root, "train")
    records = sorted(records, key=lambda r: r.name)
    records = [records[i] for i in np.linspace(0, len(records) - 1, min(args.images, len(records))).astype(int)]
    results = {family: measure(family, FAMILIES[family], records) for family in args.families}
    table_rows = [[family, step, row["bucket"], row["faces"], f"{row['mean_positives']:.2f}",
                   f"{100 * row['with_positive']:.0f} %"]
                  for family, steps in results.items() for step, rows in steps.items() for row in rows]
    table = markdown_table(["family", "step", "face side px", "faces", "positives per face", "faces with one"],
                           table_rows)
    print(table)
    payload = {"machine": describe_machine(), "images": len(records), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    print(f"\nwritten: {write_results('positives', payload, table)}")


if __name__ == "__main__":
    main()
