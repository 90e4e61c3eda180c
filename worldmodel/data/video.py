"""An episode's viewable copy, video.mp4: lossy, for people, never read back for evaluation.

`EpisodeWriter(video=True)` writes it frame by frame beside frames.u8 (`VideoFile`). An mp4 is
playable only once it is finished (its index, the moov atom, is written last), so a recorder
killed with `kill -9` leaves a video nothing plays. `ensure_video` notices (the video does not
open, or holds fewer frames than frames.u8) and rebuilds it from the lossless frames;
`export_video` rebuilds it unconditionally (`run_sim.py export DIR`).

Codec: H.264 ('avc1', what browsers play) where this OpenCV build can encode it, else MPEG-4
part 2 ('mp4v': every OpenCV build writes it and desktop players play it; OpenCV's pip wheels
often ship without an H.264 encoder).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_FILE = "video.mp4"  # an episode's viewable copy, beside frames.u8

CODECS = ("avc1", "mp4v")  # in order of preference; the last one is the fallback
VIDEO_PX = 256  # small frames are upscaled by an integer factor to about this size


def video_scale(h: int, w: int) -> int:
    return max(1, VIDEO_PX // max(h, w))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for a moment: FFmpeg prints straight to it when a codec has no
    encoder here or a file has no index, which would bury the command line's one-line messages."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@functools.lru_cache(maxsize=None)
def codec() -> str:
    """The first of CODECS this OpenCV build can write (probed once per process)."""
    import cv2

    with tempfile.TemporaryDirectory() as tmp, quiet_stderr():
        for fourcc in CODECS[:-1]:
            writer = cv2.VideoWriter(str(Path(tmp) / "probe.mp4"), cv2.VideoWriter_fourcc(*fourcc),
                                     10.0, (16, 16))
            ok = writer.isOpened()
            writer.release()
            if ok:
                return fourcc
    return CODECS[-1]


class VideoFile:
    """A video being written: RGB uint8 (h, w, 3) frames in, upscaled by `video_scale`."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        import cv2

        h, w = size
        self.path = Path(path)
        self.scale = video_scale(h, w)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec()), fps,
                                       (w * self.scale, h * self.scale))
        if not self._writer.isOpened():
            raise OSError(f"cannot write a video to {self.path}")

    def write(self, frame: np.ndarray) -> None:
        big = np.repeat(np.repeat(frame, self.scale, 0), self.scale, 1)
        self._writer.write(np.ascontiguousarray(big[:, :, ::-1]))

    def release(self) -> None:
        self._writer.release()


def video_frames(path: str | Path) -> int:
    """How many frames a player finds in the video at `path`: 0 when there is none, it does not
    open (a killed writer's mp4 has no index) or its first frame does not decode."""
    import cv2

    if not Path(path).is_file():
        return 0
    with quiet_stderr():
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened() or not cap.read()[0]:
                return 0
            return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        finally:
            cap.release()


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write frames (T, h, w, 3) as a finished video at `path`, through a temporary file that is
    checked before it replaces `path`: a failure (a full disk) leaves any old video as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")  # cv2 goes by the suffix
    try:
        video = VideoFile(tmp, fps, frames.shape[1:3])
        for frame in frames:
            video.write(frame)
        video.release()
        if video_frames(tmp) != len(frames):
            raise OSError(f"writing {path} failed (is the disk full?)")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def export_video(episode) -> Path:
    """(Re)write the episode's video.mp4 from its lossless frames."""
    return write_video(Path(episode.path) / VIDEO_FILE, episode.frames,
                       float(episode.meta.get("fps", 15)))


def ensure_video(episode) -> Path | None:
    """Rebuild the episode's video.mp4 if it has one that is unplayable or shorter than its frames
    (a recorder killed mid-way). Returns the path when it rebuilt it; None when the video was fine
    or the episode has none (collected data is written without)."""
    path = Path(episode.path) / VIDEO_FILE
    if not path.exists() or video_frames(path) >= len(episode.frames):
        return None
    return export_video(episode)
