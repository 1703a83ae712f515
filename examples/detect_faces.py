"""The smallest useful edgeface program: find faces in a photo and save a copy with boxes drawn.

    python examples/detect_faces.py extd64.onnx photo.jpg -o faces.jpg

Needs only the runtime install (numpy, OpenCV, ONNX Runtime) for an .onnx model.
"""

from __future__ import annotations

import argparse

import edgeface
from edgeface.core.files import check_not_an_input
from edgeface.core.image import write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an edgeface .onnx or .pt model")
    parser.add_argument("image", help="a photo")
    parser.add_argument("-o", "--output", default="faces.jpg", help="annotated copy (default: %(default)s)")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the model's)")
    args = parser.parse_args()

    check_not_an_input(args.output, [args.image])  # the annotated copy must not replace the photo
    detector = edgeface.Detector(args.model, score_threshold=args.threshold)
    image = edgeface.read_image(args.image)
    faces = detector(image)
    for (x1, y1, x2, y2), score in faces:
        print(f"face {x1:.0f},{y1:.0f} -> {x2:.0f},{y2:.0f}  score {score:.3f}")
    write_image(args.output, faces.draw(image))  # an OutputError when it cannot
    print(f"{len(faces)} faces; wrote {args.output}")


if __name__ == "__main__":
    try:
        main()
    except edgeface.EdgefaceError as exc:  # a missing or corrupt model or image, an out-of-range option
        raise SystemExit(f"error: {exc}") from None
