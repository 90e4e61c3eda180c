"""The one on-disk episode format, shared by collected data, recordings, replay and evaluation.

An episode is a folder:

    meta.json       game, action space, seed, fps, frame size, free-form settings
    frames.u8       raw uint8 frames, (T, H, W, 3) row-major, appended one at a time (lossless)
    actions.jsonl   one JSON object per step: {"t", "action", "reward", "done"} and optional extras
                    (e.g. "pos", the player's position after the step); line t is the action
                    taken on frame t that produced frame t + 1
    video.mp4       optional, viewable copy (lossy; never read back for evaluation; rebuilt from
                    frames.u8 by worldmodel.data.video when a kill left it unplayable)
    labels.u8       optional, the game's own per-tile labels of every frame, (T+1, *labels_shape)
                    uint8 (Crafter: the 7x9 world-view tiles' semantic ids, names in
                    meta["label_names"]); with "pos" in actions.jsonl they are the ground truth
                    the semantic evaluation needs, so it never re-simulates. Recordings made
                    without a game have none. Minetest's are per pixel (L x L, at the
                    collection's label_size); frames it did not label hold NO_LABEL (255).

Frames and actions are appended and flushed as they come, so a process killed mid-episode leaves
a readable prefix: the loader keeps whole frames only and trims to the shorter of the two logs.
meta.json is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.data.video import VIDEO_FILE, VideoFile

FORMAT_VERSION = 1
FRAMES_FILE = "frames.u8"
ACTIONS_FILE = "actions.jsonl"
META_FILE = "meta.json"
LABELS_FILE = "labels.u8"
NO_LABEL = 255  # a label of a frame the game did not label (Minetest labels every k-th frame)


class EpisodeError(ValueError):
    """An episode folder that cannot be read as the project's episode format."""


def stop_reason(exc: BaseException) -> str:
    """Why a recording stopped, for meta.json's "stopped": "disk full: ..." on ENOSPC, else the
    exception's type and message."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk full: {text}"
    return text


META_SPARE = 1024  # bytes meta.json keeps free for a last rewrite in place (EpisodeWriter)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`data` at `path` through a fsynced temporary file and a rename (none left on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk: no stray half-written tmp file beside the old one
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@dataclass
class Episode:
    """A loaded episode: `frames` (T+1, H, W, 3) uint8 and `actions` (T,) int64 (or (T, D) float)."""

    frames: np.ndarray
    actions: np.ndarray
    meta: dict[str, Any]
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    dones: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    path: Path | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # the raw actions.jsonl records
    labels: np.ndarray | None = None  # (T+1, *meta["labels_shape"]) uint8 per-tile ground truth

    def __len__(self) -> int:
        return len(self.actions)


class EpisodeWriter:
    """Appends frames and actions to an episode folder as they are produced, crash-safe.

    Usage: `w = EpisodeWriter(dir, meta); w.add_frame(obs0); w.add_step(act, obs1, rew, done); ...;
    w.close()`. Every call flushes to the OS, and `fsync_every` frames are forced to disk, so a
    `kill -9` loses at most that many frames. `video=True` also writes a viewable `video.mp4`.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], video: bool = False,
                 fsync_every: int = 15, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise EpisodeError(f"episode folder {self.path} exists and is not empty")
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta, format_version=FORMAT_VERSION)
        self.meta.setdefault("complete", False)
        self._write_meta()
        self._frames = open(self.path / FRAMES_FILE, "wb")
        self._actions = open(self.path / ACTIONS_FILE, "w")
        self._labels = None  # opened by the first frame that comes with labels
        self._video_wanted = video
        self._video = None
        self._fsync_every = max(1, fsync_every)
        self.num_frames = 0
        self.num_steps = 0
        self._shape: tuple[int, ...] | None = None

    def add_frame(self, frame: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Append a frame (and, for episodes from a game, its per-tile labels: every frame of an
        episode has them or none does)."""
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise EpisodeError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
            if "frame_size" not in self.meta:
                self.meta["frame_size"] = [frame.shape[0], frame.shape[1]]
                self._write_meta()
        elif frame.shape != self._shape:
            raise EpisodeError(f"frame shape changed from {self._shape} to {frame.shape}")
        self._add_labels(labels)
        self._frames.write(frame.tobytes())
        self._frames.flush()
        if self._video_wanted:
            self._write_video(frame)
        self.num_frames += 1
        if self.num_frames % self._fsync_every == 0:
            self.sync()

    def _add_labels(self, labels: np.ndarray | None) -> None:
        has = self._labels is not None
        if labels is None:
            if has:
                raise EpisodeError("this episode has labels: every frame needs them")
            return
        labels = np.ascontiguousarray(labels, np.uint8)
        if not has:
            if self.num_frames:
                raise EpisodeError("labels must start with the first frame")
            self._labels = open(self.path / LABELS_FILE, "wb")
            self.meta["labels_shape"] = list(labels.shape)
            self._write_meta()
        elif list(labels.shape) != self.meta["labels_shape"]:
            raise EpisodeError(f"labels shape changed from {self.meta['labels_shape']} to "
                               f"{list(labels.shape)}")
        self._labels.write(labels.tobytes())
        self._labels.flush()

    def add_step(self, action: int | list[float], frame: np.ndarray, reward: float = 0.0,
                 done: bool = False, labels: np.ndarray | None = None, **extra: Any) -> None:
        """Log the action taken on the last frame, then the frame it produced."""
        if self.num_frames == 0:
            raise EpisodeError("add_frame(first_frame) must come before add_step")
        act = action if isinstance(action, (int, list)) else np.asarray(action).tolist()
        line = {"t": self.num_steps, "action": act, "reward": float(reward), "done": bool(done),
                **extra}
        self._actions.write(json.dumps(line) + "\n")
        self._actions.flush()
        self.num_steps += 1
        self.add_frame(frame, labels)

    def _write_video(self, frame: np.ndarray) -> None:
        if self._video is None:
            self._video = VideoFile(self.path / VIDEO_FILE, float(self.meta.get("fps", 15)),
                                    frame.shape[:2])
        self._video.write(frame)

    def _write_meta(self) -> None:
        """meta.json, atomically, with room to spare (trailing spaces, which JSON ignores): on a
        disk too full for the temporary file, the last meta.json is rewritten in place within
        the bytes it already holds, so a recording cut short by a full disk still says why
        (`"stopped"`)."""
        path = self.path / META_FILE
        text = json.dumps(self.meta, indent=2, sort_keys=True) + "\n"
        size = -(-(len(text.encode()) + META_SPARE) // 4096) * 4096
        data = text.encode().ljust(size)
        try:
            write_bytes_atomic(path, data)
        except OSError:
            old = path.stat().st_size if path.is_file() else 0
            if len(text.encode()) > old:
                raise
            with open(path, "r+b") as f:  # overwrites bytes already on disk: no new blocks
                f.write(text.encode().ljust(old))
                f.flush()
                os.fsync(f.fileno())

    def sync(self) -> None:
        os.fsync(self._frames.fileno())
        os.fsync(self._actions.fileno())
        if self._labels is not None:
            os.fsync(self._labels.fileno())

    def close(self, **extra_meta: Any) -> None:
        """Sync and close the logs, finish the video, and mark meta.json complete (`extra_meta`
        may say otherwise: complete=False, stopped=why). On a failing disk every file is still
        closed and meta.json still tried, so what was written stays readable; the first OSError
        is raised after."""
        if self._frames.closed:
            return
        error: OSError | None = None
        video = self._video.release if self._video is not None else None
        labels = self._labels.close if self._labels is not None else None
        for step in (self.sync, self._frames.close, self._actions.close, labels, video):
            try:
                if step is not None:
                    step()
            except OSError as e:
                error = error or e
        self.meta.update({"complete": error is None, **extra_meta}, num_steps=self.num_steps)
        if error is not None and "stopped" not in self.meta:  # the disk failed while closing
            self.meta["stopped"] = stop_reason(error)
        try:
            self._write_meta()
        except OSError as e:
            error = error or e
        if error is not None:
            raise error

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        """A block that raised leaves the episode incomplete, saying why it stopped; a disk that
        fails again while closing does not bury the block's own error under a second one."""
        if exc is None:
            self.close()
            return
        with contextlib.suppress(OSError):
            self.close(complete=False, stopped=stop_reason(exc))


def load_episode(path: str | Path, mmap: bool = False) -> Episode:
    """Read an episode folder; a truncated (killed) episode loads as its longest whole prefix."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise EpisodeError(f"{path} is not an episode: no {META_FILE}")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a 5,000-digit int, deep nesting
        raise EpisodeError(f"{meta_path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise EpisodeError(f"{meta_path} is not a JSON object")
    if "frame_size" not in meta:
        raise EpisodeError(f"{meta_path} has no frame_size (no frame was ever written)")
    h, w = check_frame_size(meta["frame_size"], meta_path)
    frame_bytes = h * w * 3
    frames_path = path / FRAMES_FILE
    n_frames = frames_path.stat().st_size // frame_bytes if frames_path.exists() else 0
    steps = []
    if (path / ACTIONS_FILE).exists():
        with open(path / ACTIONS_FILE) as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a line cut short by a crash
                try:
                    steps.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    n_steps = min(len(steps), max(n_frames - 1, 0))
    labels_shape, label_bytes, n_labels = _labels_layout(path, meta, meta_path)
    if n_labels:  # labels, frames and actions trim to the shortest of the three after a crash
        n_steps = min(n_steps, n_labels - 1)
    n_frames = n_steps + 1 if n_frames > 0 else 0
    if n_frames == 0:
        raise EpisodeError(f"{path} holds no complete frame")
    labels = None
    if n_labels:
        labels = np.fromfile(path / LABELS_FILE, np.uint8, count=n_frames * label_bytes)
        labels = labels.reshape(n_frames, *labels_shape)
    if mmap:
        frames = np.memmap(frames_path, np.uint8, "r", shape=(n_frames, h, w, 3))
    else:
        frames = np.fromfile(frames_path, np.uint8, count=n_frames * frame_bytes)
        frames = frames.reshape(n_frames, h, w, 3)
    steps = steps[:n_steps]
    acts = [s["action"] for s in steps]
    actions = np.asarray(acts, dtype=np.float32 if acts and isinstance(acts[0], list) else np.int64)
    if not acts:
        actions = np.zeros(0, np.int64)
    rewards = np.asarray([s.get("reward", 0.0) for s in steps], np.float32)
    dones = np.asarray([s.get("done", False) for s in steps], bool)
    return Episode(frames, actions, meta, rewards, dones, path, steps, labels)


def _labels_layout(path: Path, meta: dict[str, Any], meta_path: Path
                   ) -> tuple[tuple[int, ...], int, int]:
    """(labels_shape, bytes per frame, whole frames of labels on disk); 0 frames without them."""
    shape = meta.get("labels_shape")
    if shape is None or not (path / LABELS_FILE).is_file():
        return (), 0, 0
    if not _positive_ints(shape) or not shape:
        raise EpisodeError(f"{meta_path}: labels_shape must be a list of positive ints, got "
                           f"{shape!r:.100}")
    size = int(np.prod(shape))
    return tuple(shape), size, (path / LABELS_FILE).stat().st_size // size


def _positive_ints(value: Any) -> bool:
    """A JSON list of positive ints (bools, which JSON and Python let pass as ints, are not)."""
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def check_frame_size(value: Any, meta_path: Path) -> tuple[int, int]:
    """meta.json's frame_size, checked: a hand-edited or foreign one would otherwise fail deep in
    the loader (an unpacking error, a division by zero)."""
    if not _positive_ints(value) or len(value) != 2:
        raise EpisodeError(f"{meta_path}: frame_size must be [height, width] in pixels (two "
                           f"positive ints), got {value!r:.100}")
    return value[0], value[1]


def list_episodes(root: str | Path) -> list[Path]:
    """Episode folders under `root` (itself, or any depth below), sorted."""
    root = Path(root)
    if (root / META_FILE).is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob(META_FILE))
    if not found:
        raise EpisodeError(f"no episodes (folders with {META_FILE}) under {root}")
    return found
