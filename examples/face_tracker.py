"""A small face tracker: IoU association across frames, track ids, and smoothed boxes.

Frame-by-frame boxes flicker (a face's box jitters by a few pixels and drops out for a frame);
this keeps an id per face and an exponentially smoothed box, and holds a track through short gaps.

    python examples/face_tracker.py clip.mp4          # prints each frame's track ids and boxes

or in code (camera_app.py does this):

    tracker = IouTracker()
    for frame in video:
        for track in tracker.update(detector(frame)):
            print(track.id, track.box)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from edgeface import Detections, EdgefaceError
from edgeface.core.boxes import box_iou
from edgeface.video import open_video


@dataclass
class Track:
    id: int
    box: np.ndarray  # smoothed (x1, y1, x2, y2)
    score: float
    hits: int = 1
    missed: int = 0  # consecutive frames without a matching detection


class IouTracker:
    """Greedy IoU matching of detections to tracks, best pairs first.

    smoothing: weight of the previous box in the exponential moving average (0 = no smoothing);
    max_missed: frames a track survives without a detection; min_hits: detections before it is shown.
    """

    def __init__(self, iou_threshold: float = 0.3, smoothing: float = 0.6, max_missed: int = 5, min_hits: int = 2):
        self.iou_threshold, self.smoothing = iou_threshold, smoothing
        self.max_missed, self.min_hits = max_missed, min_hits
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Detections) -> list[Track]:
        """Advance one frame; returns the confirmed tracks seen in this frame."""
        boxes, scores = detections.boxes, detections.scores
        unmatched, matched = set(range(len(boxes))), set()
        if self.tracks and len(boxes):
            iou = box_iou(np.stack([t.box for t in self.tracks]), boxes)
            for flat in np.argsort(-iou, axis=None):
                t, d = divmod(int(flat), len(boxes))
                if iou[t, d] < self.iou_threshold:
                    break
                if d not in unmatched or t in matched:
                    continue
                track = self.tracks[t]
                track.box = self.smoothing * track.box + (1 - self.smoothing) * boxes[d]
                track.score, track.hits = float(scores[d]), track.hits + 1
                unmatched.discard(d)
                matched.add(t)
        for t, track in enumerate(self.tracks):
            track.missed = 0 if t in matched else track.missed + 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for d in sorted(unmatched):
            self.tracks.append(Track(self._next_id, boxes[d].astype(np.float64), float(scores[d])))
            self._next_id += 1
        return [t for t in self.tracks if t.missed == 0 and t.hits >= self.min_hits]


def main() -> None:
    import cv2

    import edgeface

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file (or camera index, e.g. 0)")
    parser.add_argument("-m", "--model", help="edgeface model (default: the one edgeface ships)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    args = parser.parse_args()
    if args.video.isdigit():  # a camera
        capture = cv2.VideoCapture(int(args.video))
        if not capture.isOpened():
            raise SystemExit(f"error: cannot open camera {args.video}")
    else:
        capture = open_video(args.video)  # an ImageError saying why not
    detector, tracker = edgeface.Detector(args.model), IouTracker()
    frame_index = 0
    while args.max_frames is None or frame_index < args.max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        tracks = tracker.update(detector(frame))
        print(f"frame {frame_index}: " + (", ".join(f"#{t.id} {[round(v) for v in t.box]}" for t in tracks) or "-"))
        frame_index += 1
    capture.release()


if __name__ == "__main__":
    try:
        main()
    except EdgefaceError as exc:  # a missing or corrupt model or image, an out-of-range option
        raise SystemExit(f"error: {exc}") from None
