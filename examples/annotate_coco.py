"""Annotate an image folder with faces, as COCO-style JSON (one "face" category).

    python examples/annotate_coco.py photos/ -o faces_coco.json --threshold 0.5

Boxes are COCO ``[x, y, width, height]`` in pixels; each annotation carries its detector score, so
the file also works as a COCO *results* file and as pre-annotations for a labelling tool. Stopped with
Ctrl-C, it writes the images done so far, with ``"complete": false`` in its ``info``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from tqdm import tqdm

import edgeface
from edgeface.core.files import atomic_write, check_output_folder
from edgeface.core.image import IMAGE_SUFFIXES, list_inputs


def coco_document(folder: Path, detector: edgeface.Detector) -> dict:
    images: list[dict] = []
    annotations: list[dict] = []
    complete = True
    try:
        for image_id, path in enumerate(tqdm(list_inputs([folder], IMAGE_SUFFIXES), unit="image"), 1):
            try:
                image = edgeface.read_image(path)
            except edgeface.ImageError as exc:
                tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            faces = detector(image)
            images.append({"id": image_id, "file_name": str(path.relative_to(folder)), "width": image.shape[1],
                           "height": image.shape[0]})
            for (x, y, w, h), score in zip(faces.xywh.tolist(), faces.scores.tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                    "area": round(w * h, 2), "iscrowd": 0, "score": round(score, 5)})
    except KeyboardInterrupt:  # Ctrl-C: the images done so far are kept
        complete = False
    return {
        "info": {"description": f"faces found by edgeface ({detector.spec.name})",
                 "date_created": datetime.date.today().isoformat(), "version": edgeface.__version__,
                 "complete": complete},
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "face", "supercategory": "person"}],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="image folder (searched recursively, hidden files skipped)")
    parser.add_argument("-o", "--output", default="faces_coco.json")
    parser.add_argument("-m", "--model", help="edgeface model (default: the one edgeface ships)")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the model's)")
    args = parser.parse_args()
    check_output_folder(args.output)  # a missing folder found before the detector's pass, not after it
    document = coco_document(Path(args.folder), edgeface.Detector(args.model, score_threshold=args.threshold))
    with atomic_write(args.output) as tmp:  # never a half-written file
        Path(tmp).write_text(json.dumps(document, indent=1))
    print(f"{len(document['images'])} images, {len(document['annotations'])} faces: {args.output}")
    if not document["info"]["complete"]:
        print("interrupted: the images not done are not in the file (\"complete\": false)", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    try:
        main()
    except edgeface.EdgefaceError as exc:  # a missing or corrupt model or image, an out-of-range option
        raise SystemExit(f"error: {exc}") from None
