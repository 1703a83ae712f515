"""Anonymise faces in a video or an image folder: blur or pixelate every detected face.

    python examples/anonymise.py clip.mp4 -o clip_anonymised.mp4 --mode pixelate
    python examples/anonymise.py photos/ -o anonymised/ --mode blur
    python examples/anonymise.py group.jpg -o group_anonymised.jpg

Output keeps the original resolution (and frame rate for video; the video has no audio track).
Faces are covered with a margin, at a lower score threshold than display uses: a missed face is
worse than an extra blurred patch. For the same reason images larger than 1920 px run in tiles at full
resolution (`Detector(tile=True)`), where scaling them down would lose the small faces of a crowd.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import edgeface
from edgeface.core.files import check_not_an_input, make_output_folder
from edgeface.core.image import IMAGE_SUFFIXES, list_inputs, write_image
from edgeface.video import VideoOutput, frame_count, frame_rate, open_video


def anonymise(frame: np.ndarray, faces: edgeface.Detections, mode: str = "blur", margin: float = 0.15) -> np.ndarray:
    """Copy of `frame` with each face box (grown by `margin` of its size) blurred or pixelated."""
    out = frame.copy()
    for a, b, c, d in faces.regions((frame.shape[1], frame.shape[0]), margin).tolist():
        if c <= a or d <= b:
            continue
        patch = out[b:d, a:c]
        if mode == "pixelate":
            small = cv2.resize(patch, (max(1, (c - a) // 12), max(1, (d - b) // 12)), interpolation=cv2.INTER_AREA)
            out[b:d, a:c] = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
        else:
            k = max(3, (max(c - a, d - b) // 3) | 1)
            out[b:d, a:c] = cv2.GaussianBlur(patch, (k, k), 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="video file, image file or image folder (searched recursively; undecodable "
                                       "files skipped)")
    parser.add_argument("-o", "--output", required=True, help="video file, image file or folder to write")
    parser.add_argument("-m", "--model", help="edgeface model (default: the one edgeface ships)")
    parser.add_argument("--mode", choices=["blur", "pixelate"], default="blur")
    parser.add_argument("--threshold", type=float, default=0.3, help="score threshold (default: %(default)s)")
    parser.add_argument("--no-tile", action="store_true",
                        help="scale images larger than 1920 px down instead of tiling them (faster; misses more "
                             "small faces; models exported for one fixed input size need it)")
    args = parser.parse_args()

    check_not_an_input(args.output, [args.source])  # anonymising in place would lose the originals
    detector = edgeface.Detector(args.model, score_threshold=args.threshold, tile=not args.no_tile)
    source = Path(args.source)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        image = edgeface.read_image(source)
        write_image(args.output, anonymise(image, detector(image), args.mode))
        print(f"anonymised into {args.output}")
        return
    if source.is_dir():
        out_dir = Path(args.output)
        make_output_folder(out_dir)
        done = 0
        for path in tqdm(list_inputs([source], IMAGE_SUFFIXES), unit="image"):  # subfolders too, layout kept
            try:
                image = edgeface.read_image(path)
            except edgeface.ImageError as exc:
                tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
                continue
            target = out_dir / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, anonymise(image, detector(image), args.mode))
            done += 1
        print(f"{done} images anonymised into {out_dir}")
        return
    capture = open_video(source)
    fps = frame_rate(capture)
    frames = 0
    try:
        with VideoOutput(args.output, fps) as output, tqdm(total=frame_count(capture), unit="frame") as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                output.write(anonymise(frame, detector(frame), args.mode))
                frames += 1
                bar.update()
    finally:
        capture.release()
    print(f"{frames} frames anonymised into {args.output}")


if __name__ == "__main__":
    try:
        main()
    except edgeface.EdgefaceError as exc:  # a missing or corrupt model or image, an out-of-range option
        raise SystemExit(f"error: {exc}") from None
