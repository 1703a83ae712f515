"""The boxes each model draws on photos that hold no human face: the false alarms a camera app shows on a street
lamp, a sign or a dog, which no face benchmark counts (WIDER FACE and the face dataset have faces in every image).

Models: the EXTD authors' releases (converted on the fly from ../shared), the shipped models and any --models
files; the first is the baseline every other is compared with, in the same run. Each runs as ``Detector`` runs it
by default (its own min_side upscaling included), one pass per image. Images (--images, files or folders): by
default ../shared's photo of dogs and the face-free photos scikit-image ships (a cat, coffee, coins, a rocket, a
motorcycle, microscopy, textures, graphics) from an installed scikit-image or its unpacked wheel's
``skimage/data/`` folder (--skimage-data; ``pip download --no-deps scikit-image`` fetches the wheel); with some of
them missing it measures the photos found only under another --name, never replacing the whole set's results. Prints,
per model, the boxes scoring 0.5 / 0.7 / 0.9 and more and the photos with a box at 0.5, then each photo's highest
score per model; writes the JSON and markdown and a contact sheet (JPEG) of every photo some model draws a box on,
one column per model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edgeface import Detector, read_image
from edgeface.spec import TestTimeSpec

from .accuracy import available_models
from .machine import DLIB_PHOTOS, RESULTS, SHARED, describe_machine, markdown_table, write_results

SCORES = (0.5, 0.7, 0.9)  # boxes are counted at these scores and above
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
# scikit-image's bundled photos without a human face (astronaut.png and camera.png show people; the 2-D
# chessboards, phantom and microaneurysms are tiny test patterns)
SKIMAGE_FACE_FREE = ("brick.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png", "color.png",
                     "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
                     "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")
TILE = 220  # contact sheet cell, px


def default_images(skimage_data: str | None = None) -> list[Path]:
    """../shared's dog photo and scikit-image's face-free photos (from `skimage_data`, else the installed
    package's data folder), those present."""
    images = [DLIB_PHOTOS / "dogs.jpg"]
    if skimage_data is None:
        try:
            import skimage

            skimage_data = str(Path(skimage.__file__).parent / "data")
        except ImportError:
            print("scikit-image is not installed and no --skimage-data given: only ../shared's dog photo is used")
    if skimage_data is not None:
        images += [Path(skimage_data) / name for name in SKIMAGE_FACE_FREE]
    return [path for path in images if path.exists()]


def image_files(paths: list[str]) -> list[Path]:
    """Every image file named in `paths` or inside a folder of it (sorted), face-free by the caller's word."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--images: no such file or folder: {path}")
    return files


def count_boxes(scores: list[np.ndarray]) -> dict[str, int]:
    """Boxes at each of :data:`SCORES` and above, and photos with a box at the lowest, over one model's photos."""
    counts = {f"boxes >= {s}": int(sum((image >= s).sum() for image in scores)) for s in SCORES}
    counts[f"photos with a box >= {SCORES[0]}"] = int(sum(bool((image >= SCORES[0]).any()) for image in scores))
    return counts


def contact_sheet(images: list[np.ndarray], names: list[str], boxes: dict[str, list], path: Path) -> None:
    """A JPEG grid: one row per photo, one column per model, each model's boxes scoring 0.5+ drawn with scores."""
    rows = []
    for index, image in enumerate(images):
        scale = TILE / max(image.shape[:2])
        cells = []
        for model in boxes:
            cell = np.full((TILE, TILE, 3), 255, np.uint8)
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cell[: small.shape[0], : small.shape[1]] = small
            for box, score in boxes[model][index]:
                x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
                cv2.rectangle(cell, (x0, y0), (x1, y1), (0, 0, 255), 2)
                cv2.putText(cell, f"{score:.2f}", (x0 + 2, max(y0 - 3, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (0, 0, 255), 1, cv2.LINE_AA)
            cv2.putText(cell, names[index][:28], (3, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
            cells.append(cv2.copyMakeBorder(cell, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=(160, 160, 160)))
        rows.append(np.hstack(cells))
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for column, model in enumerate(boxes):
        cv2.putText(header, model[:30], (column * (TILE + 2) + 4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.imwrite(str(path), np.vstack([header, *rows]), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", help="face-free photos: files or folders (default: see above)")
    parser.add_argument("--skimage-data", metavar="FOLDER",
                        help="scikit-image's skimage/data folder, when the package is not installed (default photos)")
    parser.add_argument("--models", nargs="*", default=[], help="more edgeface model files to include")
    parser.add_argument("--authors", type=int, nargs="*", default=[64, 32], choices=[32, 48, 64],
                        help="widths of the authors' EXTD checkpoints to include, the first being the baseline "
                             "(default: %(default)s)")
    parser.add_argument("--name", default="false_boxes", help="results file stem (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        files = image_files(args.images) if args.images else default_images(args.skimage_data)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if not files:
        print(f"skipped: no face-free photo found (../shared is not at {SHARED} and no --images given)")
        return
    images = [read_image(path) for path in files]
    names = [path.name for path in files]
    with tempfile.TemporaryDirectory() as tmp:
        models = available_models(args.models, Path(tmp), tuple(args.authors))
        missing = 1 + len(SKIMAGE_FACE_FREE) - len(files)  # checked after the models, whose errors come first
        if not args.images and missing and args.name == parser.get_default("name"):
            parser.error(f"{missing} of the default photos not found (scikit-image's: `pip install scikit-image` or "
                         "--skimage-data FOLDER): refusing to replace the results of the whole set with a partial "
                         "one; give --name to measure the photos found")
        top: dict[str, list[float]] = {}
        shown: dict[str, list] = {}
        counts: dict[str, dict[str, int]] = {}
        for model, path in models.items():
            detector = Detector(path, score_threshold=0.05, test_time=TestTimeSpec())
            found = [detector(image) for image in images]
            scores = [d.scores for d in found]
            counts[model] = count_boxes(scores)
            top[model] = [float(s.max(initial=0.0)) for s in scores]
            shown[model] = [[(d.boxes[i].tolist(), float(d.scores[i])) for i in np.flatnonzero(d.scores >= SCORES[0])]
                            for d in found]
            print(f"{model:24s} " + ", ".join(f"{k} {v}" for k, v in counts[model].items()), flush=True)
    baseline = next(iter(models))
    headers = ["model", *counts[baseline]]
    summary = markdown_table(headers, [[m, *(f"{v}" if m == baseline else f"{v} ({v - counts[baseline][k]:+d})"
                                             for k, v in c.items())] for m, c in counts.items()])
    per_image = markdown_table(["photo", *models], [[n, *(f"{top[m][i]:.2f}" for m in models)]
                                                    for i, n in enumerate(names)])
    table = (f"Boxes on {len(files)} photos without a human face, each model as it runs by default (in brackets: the "
             f"difference from {baseline}, measured in the same run):\n\n{summary}\n\nEach photo's highest "
             f"score:\n\n{per_image}")
    payload = {"machine": describe_machine(), "images": names, "models": list(models),
               "counts": counts, "highest_score": top}
    print()
    print(table)
    print(f"\nwritten: {write_results(args.name, payload, table)}")
    flagged = [i for i in range(len(files)) if any(shown[m][i] for m in models)]
    if flagged:
        sheet = RESULTS / f"{args.name}.jpg"
        contact_sheet([images[i] for i in flagged], [names[i] for i in flagged],
                      {m: [shown[m][i] for i in flagged] for m in models}, sheet)
        print(f"plot: {sheet}")
