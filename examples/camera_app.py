"""A camera app: faces from a USB webcam, an RTSP stream, a video file or a Jetson CSI camera.

    python examples/camera_app.py --source 0                       # first USB webcam, window
    python examples/camera_app.py --source rtsp://host/stream       # network camera
    python examples/camera_app.py --source clip.mp4 --headless --output out.mp4 --log faces.json
    python examples/camera_app.py --csi --width 1280 --height 720   # Jetson CSI camera (JetPack's OpenCV)

Capture runs on its own thread and always hands over the newest frame, so a slow detector drops
frames instead of falling behind. Boxes (with track ids) and FPS are drawn; --headless writes an
annotated video and a JSON log instead of opening a window. Ctrl-C and the end of a stream shut
down cleanly (files closed, camera released).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from face_tracker import IouTracker

import edgeface
from edgeface.core.image import opencv_path
from edgeface.video import VideoOutput, frame_rate, open_video


def gstreamer_csi(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), ending in BGR frames for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width={width},height={height},"
            f"framerate={fps}/1,format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


def gstreamer_usb(device: str = "/dev/video0", width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """GStreamer pipeline for a USB (V4L2) camera delivering MJPEG, decoded by the Jetson's hardware."""
    return (f"v4l2src device={device} ! image/jpeg,width={width},height={height},framerate={fps}/1 ! "
            "nvv4l2decoder mjpeg=1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


class LatestFrameReader:
    """Reads frames on a thread and keeps only the newest; `read()` waits for one it has not returned."""

    def __init__(self, capture: cv2.VideoCapture, realtime: bool):
        self.capture, self.realtime = capture, realtime
        self.frame: Optional[np.ndarray] = None  # the newest frame read
        self.index, self.ended = -1, False
        self._returned = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self.capture.read()
            with self._cond:
                if not ok:
                    self.ended = True
                    self._cond.notify_all()
                    return
                if not self.realtime:  # a file: hand over every frame (wait until the last one was taken)
                    self._cond.wait_for(lambda: self._returned == self.index or self._stop.is_set())
                self.frame, self.index = frame, self.index + 1
                self._cond.notify_all()

    def read(self, timeout: float = 5.0) -> Optional[tuple[int, np.ndarray]]:
        """(index, frame) of the newest frame not yet returned, or None at the end of the stream."""
        with self._cond:
            self._cond.wait_for(lambda: self.index > self._returned or self.ended, timeout)
            if self.index <= self._returned or self.frame is None:  # the frame is set with the index
                return None
            self._returned = self.index
            self._cond.notify_all()
            return self.index, self.frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2)
        self.capture.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="0", help="webcam index, RTSP/HTTP URL or video file (default: 0)")
    parser.add_argument("--csi", action="store_true", help="Jetson CSI camera through GStreamer")
    parser.add_argument("--usb-gstreamer", metavar="DEVICE", help="Jetson USB camera through GStreamer")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("-m", "--model", help="edgeface model (default: the one edgeface ships)")
    parser.add_argument("--threshold", type=float, help="score threshold (default: the model's)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), help="letterbox frames to W H")
    parser.add_argument("--headless", action="store_true", help="no window: write --output and --log")
    parser.add_argument("--output", help="annotated video to write (headless)")
    parser.add_argument("--log", help="JSON log of every processed frame's faces")
    parser.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    args = parser.parse_args()

    if args.csi:
        capture = cv2.VideoCapture(gstreamer_csi(width=args.width, height=args.height), cv2.CAP_GSTREAMER)
    elif args.usb_gstreamer:
        capture = cv2.VideoCapture(gstreamer_usb(args.usb_gstreamer, args.width, args.height), cv2.CAP_GSTREAMER)
    elif args.source.isdigit():
        capture = cv2.VideoCapture(int(args.source))
    elif "://" in args.source or "!" in args.source:  # a stream URL, or a GStreamer pipeline of one's own
        capture = cv2.VideoCapture(opencv_path(args.source))
    else:  # a video file: say why it cannot be opened (missing, a folder, empty, not a video)
        try:
            capture = open_video(args.source)
        except edgeface.ImageError as exc:
            raise SystemExit(f"error: {exc}") from None
    if not capture.isOpened():
        if args.csi or args.usb_gstreamer:
            why = "cannot open the GStreamer pipeline (OpenCV must be built with GStreamer, as JetPack's is)"
        elif args.source.isdigit():
            why = f"no camera at index {args.source} (is it connected? ls /dev/video*)"
        else:
            why = (f"cannot open the stream {args.source} (is it reachable, and the URL right? a GStreamer pipeline "
                   "needs an OpenCV built with GStreamer)")
        raise SystemExit(f"error: {why}")
    is_file = Path(args.source).is_file()
    fps_in = frame_rate(capture, default=30.0)
    detector = edgeface.Detector(args.model, score_threshold=args.threshold,
                                 input_size=tuple(args.input_size) if args.input_size else None)
    reader = LatestFrameReader(capture, realtime=not is_file)
    tracker = IouTracker()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    output = VideoOutput(args.output, fps_in) if args.headless and args.output else None  # opened at frame 1
    log, processed, fps = [], 0, 0.0
    try:
        while not stop.is_set():
            item = reader.read()
            if item is None:
                break
            index, frame = item
            start = time.perf_counter()
            tracks = tracker.update(detector(frame))
            fps = 0.9 * fps + 0.1 / max(time.perf_counter() - start, 1e-6) if processed else 1 / max(
                time.perf_counter() - start, 1e-6)
            for track in tracks:
                x1, y1, x2, y2 = (round(v) for v in track.box)
                cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), 2)
                cv2.putText(frame, f"#{track.id} {track.score:.2f}", (x1, max(y1 - 4, 12)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
            cv2.putText(frame, f"{fps:.1f} FPS", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
            log.append({"frame": index, "faces": [{"id": t.id, "box": [round(float(v), 1) for v in t.box],
                                                   "score": round(t.score, 4)} for t in tracks]})
            if output is not None:
                output.write(frame)
            if not args.headless:
                cv2.imshow("edgeface", frame)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
            processed += 1
            if args.max_frames and processed >= args.max_frames:
                break
    finally:
        reader.close()
        if output is not None:
            output.close()
        if not args.headless:
            cv2.destroyAllWindows()
        if args.log:
            Path(args.log).write_text(json.dumps({"source": args.source, "model": detector.spec.name,
                                                  "frames": log}, indent=1))
    print(f"{processed} frames processed, last {fps:.1f} FPS")


if __name__ == "__main__":
    try:
        main()
    except edgeface.EdgefaceError as exc:  # a missing or corrupt model or image, an out-of-range option
        raise SystemExit(f"error: {exc}") from None
