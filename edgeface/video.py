"""Running a detector over a video file."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from .core.image import check_input_file, opencv_path
from .errors import ImageError, ImageWarning, OutputError, user_stacklevel

# the codec written into each container (OpenCV's FFmpeg backend): VP8 for WebM, MPEG-4 Part 2 for the others
FOURCC_BY_SUFFIX = {".webm": "VP80"}


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV writer of `size` (width, height) frames into `path`, in a codec its container takes, or an
    OutputError saying why none could be opened (OpenCV's own writer stays silent and writes nothing)."""
    fourcc = FOURCC_BY_SUFFIX.get(Path(path).suffix.lower(), "mp4v")
    writer = cv2.VideoWriter(opencv_path(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise OutputError(f"cannot write video {path} (does its folder exist? can this OpenCV encode {fourcc} into "
                          f"{Path(path).suffix or 'a file without a suffix'}?)")
    return writer


class VideoOutput:
    """A video file written frame by frame, opened at the first frame's size (:func:`open_video_writer`). A later
    frame of another size (a stream that changed resolution) is scaled to the first size, with one
    :class:`ImageWarning`: OpenCV's writer drops such frames without a word. Closed by :meth:`close` or ``with``."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path, self.fps = path, fps
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: tuple[int, int] = (0, 0)
        self._warned = False

    def write(self, frame: np.ndarray) -> None:
        """Append one BGR frame (the first one opens the file, or raises OutputError saying why it cannot)."""
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            self._writer, self._size = open_video_writer(self.path, self.fps, size), size
        elif size != self._size:
            if not self._warned:
                warnings.warn(ImageWarning(f"{self.path}: the frames changed size from {self._size[0]}x{self._size[1]}"
                                           f" to {size[0]}x{size[1]}; they are written scaled to the first size"),
                              stacklevel=user_stacklevel())
                self._warned = True
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)

    def close(self) -> None:
        """Finish the file (nothing was written if no frame came)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def frame_rate(capture: cv2.VideoCapture, default: float = 25.0) -> float:
    """The frames per second `capture` reports, or `default` when that is no rate a writer takes: 0 (unknown),
    NaN or negative (a damaged header), or 1000 and above (some containers' stand-in for a variable rate). OpenCV's
    writers refuse such rates, which would lose a whole run's output at its first frame."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and 0 < fps < 1000 else default


def frame_count(capture: cv2.VideoCapture) -> Optional[int]:
    """The number of frames `capture` reports, or None when it reports none usable (streams report 0, -1 or NaN)."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count >= 1 else None


def open_video(source: str | os.PathLike) -> cv2.VideoCapture:
    """An OpenCV capture of the video file `source`, or an ImageError saying why it could not be opened (no such
    file, a folder, an empty file, or one OpenCV cannot read)."""
    check_input_file(source, "video")
    if os.path.isfile(source) and os.path.getsize(source) == 0:  # (a device such as /dev/video0 has size 0)
        raise ImageError(f"cannot open video {source}: the file is empty")
    capture = cv2.VideoCapture(opencv_path(source))
    if not capture.isOpened():
        raise ImageError(f"cannot open video {source}: not a video OpenCV can read (a corrupt or truncated file, "
                         "or a codec this OpenCV build lacks)")
    return capture


def annotate_video(detector: Any, source: str | os.PathLike, output: Optional[str | os.PathLike] = None,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Detect faces in every frame of `source`; optionally write an annotated video (`output`, its container named
    by the suffix) at the source's size and frame rate. Returns ``[{"frame": i, "time": seconds, "faces": [...]},
    ...]``; warns (:class:`ImageWarning`) when the frames end well before the container's frame count (a truncated
    file)."""
    from tqdm import tqdm

    capture = open_video(source)
    fps = frame_rate(capture)
    total = frame_count(capture)
    annotated = VideoOutput(output, fps) if output is not None else None
    frames: list[dict[str, Any]] = []
    try:
        with tqdm(total=total, desc=Path(source).name, unit="frame", disable=not progress) as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                dets = detector.detect(frame)
                frames.append({"frame": len(frames), "time": round(len(frames) / fps, 4), "faces": dets.to_list()})
                if annotated is not None:
                    annotated.write(dets.draw(frame, copy=False))
                bar.update()
    finally:
        capture.release()
        if annotated is not None:
            annotated.close()
    if not frames:
        raise ImageError(f"{source} has no readable frames")
    if total and len(frames) < 0.99 * total:  # containers may estimate their count, but not 1% too high
        warnings.warn(ImageWarning(f"{source}: decoding stopped after {len(frames)} of its {total} frames; the file "
                                   "may be truncated or damaged"), stacklevel=2)
    return frames
