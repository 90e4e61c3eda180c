"""Recording what the simulator shows, in the project's one episode format (worldmodel.data.episode).

- `Start`: where a play begins: real context frames from a fresh seed of the real game, or from
  recorded episodes (cycled on reset). Also rebuilds the real game at the same point (side by side).
- `Recorder`: wraps `EpisodeWriter` for the window. Frames as displayed, actions as applied,
  flushed every frame and fsynced about once a second; an OSError (full disk, unwritable folder)
  stops the recording with a message and never stops the game.
- `load_actions` + `record_rollout`: the headless `run_sim.py record` path (scripted actions);
  `check_out_folder` refuses an unwritable or taken folder before any model is loaded.

No pygame here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from worldmodel.actions import ActionError, DiscreteActionSpace
from worldmodel.data.episode import (EpisodeError, EpisodeWriter, list_episodes, load_episode,
                                     stop_reason)

INDEX = re.compile(r"-?[0-9]+")  # ASCII digits only: int() also takes '٣' (Arabic-Indic 3)


class RecordingError(OSError):
    """A recording that cannot be written or stopped part-way (unwritable folder, full disk)."""


def fresh_path(base: str | Path) -> Path:
    """`base` if it is free (missing or an empty folder), else `base-2`, `base-3`, ..."""
    base = Path(base)
    path, n = base, 1
    while path.exists() and (not path.is_dir() or any(path.iterdir())):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def timestamped(root: str | Path, prefix: str = "rec") -> Path:
    return fresh_path(Path(root) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")


@dataclass
class Start:
    """Real context frames to start imagining from: the real game at `seed`, or `episodes`
    (real-game episodes or recordings), the first `context_len` frames of one of them."""

    seed: int = 0
    episodes: list[Path] = field(default_factory=list)
    index: int = 0

    @classmethod
    def from_args(cls, seed: int, start: str | Path | None) -> "Start":
        return cls(seed, list_episodes(start) if start else [])

    @property
    def episode(self) -> Path | None:
        return self.episodes[self.index] if self.episodes else None

    def describe(self) -> dict[str, Any]:
        if self.episode is None:
            return {"start": "seed", "seed": self.seed}
        meta = json.loads((self.episode / "meta.json").read_text())
        return {"start": str(self.episode), "seed": meta.get("seed")}

    def next(self) -> None:
        """Move to a new start: the next seed, or the next episode (wrapping around)."""
        if self.episodes:
            self.index = (self.index + 1) % len(self.episodes)
        else:
            self.seed += 1

    def _context(self, session) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        ep = load_episode(self.episode)
        h, w = ep.frames.shape[1:3]
        if (h, w) != (session.frame_size, session.frame_size):
            raise EpisodeError(f"{self.episode} holds {w}x{h} frames; the model takes "
                               f"{session.frame_size}x{session.frame_size}")
        n = min(session.context_len, len(ep.frames))
        acts = ep.actions[: n - 1]
        first = np.full((1, *acts.shape[1:]), -1 if acts.ndim == 1 else 0, acts.dtype)
        return ep.frames[:n], np.concatenate([first, acts]), ep.meta

    def apply(self, session) -> np.ndarray:
        """Reset `session` (a WorldSession) here; returns the frame the model continues from."""
        if self.episode is None:
            return session.reset(seed=self.seed)
        frames, acts, _ = self._context(session)
        b = session.batch  # one copy per world, writable (torch warns on read-only arrays)
        return session.reset(context=np.stack([frames] * b), actions=np.stack([acts] * b))

    def real_game(self, session):
        """The real game at this start, stepped to where the model continues: (game, frame)."""
        from simulator.games import make_game

        game = make_game(session.game, size=session.frame_size)
        if self.episode is None:
            frame = game.reset(self.seed)
            for _ in range(session.context_len - 1):  # as session.reset(seed) does
                frame = game.step(0).obs
            return game, frame
        frames, acts, meta = self._context(session)
        if meta.get("source") == "model" or meta.get("seed") is None:
            raise EpisodeError(f"{self.episode} is not a real-game episode with a seed, so the "
                               f"real game cannot be put at its start (side by side needs one)")
        frame = game.reset(int(meta["seed"]))
        for a in acts[1:]:
            frame = game.step(int(a)).obs
        if not np.array_equal(frame, frames[-1]):
            print(f"warning: the real game from seed {meta['seed']} does not reproduce "
                  f"{self.episode}; side by side starts from different frames", file=sys.stderr)
        return game, frame


class Recorder:
    """Records the window's episode; see module docstring. `error` holds the last failure."""

    def __init__(self, fps: int = 10, video: bool = True, log: Callable[[str], None] | None = None):
        self.fps = max(1, int(fps))
        self.video = video
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.writer: EpisodeWriter | None = None
        self.error: str | None = None
        self.started = 0.0

    @property
    def active(self) -> bool:
        return self.writer is not None

    @property
    def path(self) -> Path | None:
        return self.writer.path if self.writer else None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started if self.writer else 0.0

    def start(self, path: str | Path, first_frame: np.ndarray, meta: dict[str, Any]) -> bool:
        """Begin an episode at `path` with the frame on screen now. False (and `error`) on failure."""
        self.stop()
        meta = dict(meta, fps=self.fps, source="model")
        try:
            self.writer = EpisodeWriter(path, meta, video=self.video, fsync_every=self.fps)
            self.writer.add_frame(first_frame)
        except (OSError, EpisodeError) as e:
            self._fail(f"cannot record to {path}: {e}")
            return False
        self.error = None
        self.started = time.monotonic()
        self.log(f"recording to {path}")
        return True

    def add_step(self, action: int | np.ndarray, frame: np.ndarray, **extra: Any) -> bool:
        """Log the action applied to the last frame and the frame it produced."""
        if self.writer is None:
            return False
        try:
            act = int(action) if np.ndim(action) == 0 else np.asarray(action, np.float32).tolist()
            self.writer.add_step(act, frame, **extra)
        except (OSError, EpisodeError) as e:
            self._fail(f"recording to {self.writer.path} stopped: {e}")
            return False
        return True

    def stop(self, **extra_meta: Any) -> Path | None:
        """Finalize the episode (meta.json complete=True); returns its folder."""
        writer, self.writer = self.writer, None
        if writer is None:
            return None
        try:
            writer.close(**extra_meta)
        except (OSError, EpisodeError) as e:
            self._fail(f"finishing {writer.path} failed: {e}")
            return None
        self.log(f"recorded {writer.num_steps} steps to {writer.path}")
        return writer.path

    def _fail(self, msg: str) -> None:
        self.error = msg
        self.log(f"error: {msg} (still playing, not recording)")
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close(complete=False, stopped=msg)
            except (OSError, EpisodeError):  # the disk that just failed may fail again; the
                pass                         # prefix is kept


def check_out_folder(path: str | Path) -> None:
    """Refuse an episode folder that cannot be recorded into before anything slow (a model) loads:
    one that is taken, lies under a file, or is on a read-only or unwritable filesystem. Creates
    nothing: it probes the nearest folder that exists with a file it removes at once."""
    path = Path(path)
    try:
        if path.is_dir() and any(path.iterdir()):
            raise EpisodeError(f"episode folder {path} exists and is not empty")
        existing = path
        while not existing.is_dir():
            if existing.exists():
                raise RecordingError(f"cannot record to {path}: {existing} is a file, not a folder")
            existing = existing.parent
        probe = existing / f".write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except RecordingError:
        raise
    except OSError as e:  # PermissionError, EROFS, ENOSPC, ...
        raise RecordingError(f"cannot record to {path}: {e.strerror or e}") from e


def load_actions(path: str | Path, space: DiscreteActionSpace) -> list[int]:
    """Actions from a file: a JSON list of ints or names, or one action (name or int) per line;
    blank lines and `#` comments are skipped. Indices are ASCII digits; every error names the
    file and the line (or item), and unknown names list the valid ones."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ActionError(f"{path} is not a text file of actions (byte {e.start} is not "
                          f"UTF-8)") from e
    except OSError as e:
        raise ActionError(f"cannot read actions file {path}: {e}") from e
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except (ValueError, RecursionError) as e:  # bad JSON, a 5,000-digit int, deep nesting
            raise ActionError(f"{path} is not a valid JSON list: {e}") from e
        where = [f"item {i}" for i in range(len(items))]
    else:
        items, where = [], []
        for n, line in enumerate(text.split("\n"), 1):  # as editors count lines
            line = line.split("#", 1)[0].strip()
            if line:
                items.append(int(line) if INDEX.fullmatch(line) and len(line) < 20 else line)
                where.append(f"line {n}")
    out = []
    for item, w in zip(items, where):
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ActionError(f"{path} {w}: {item!r:.60} is not an action name or index")
        if isinstance(item, str) and item not in space.actions:
            raise ActionError(f"{path} {w}: unknown action {item!r:.60}; valid names: "
                              f"{', '.join(space.actions)} (or 0..{space.n - 1})")
        try:
            out.append(space.index(item))
        except ActionError as e:
            raise ActionError(f"{path} {w}: {e}") from e
    if not out:
        raise ActionError(f"{path} holds no actions")
    return out

def record_rollout(session, start: Start, actions: list[int], out: str | Path, frames: int,
                   chunk: int = 1, fps: int = 10, meta: dict[str, Any] | None = None,
                   progress: bool = True) -> Path:
    """Imagine `frames` frames from `start` under `actions` (cycled) into an episode at `out`."""
    from tqdm import tqdm

    acts = np.asarray(actions, np.int64 if session.space.kind == "discrete" else np.float32)
    acts = acts[np.arange(frames) % len(acts)]  # cycles when frames > len
    frame = start.apply(session)
    meta = dict(meta or {}, **start.describe(), game=session.game, fps=fps, source="model",
                action_space=session.space.name, context_frames=session.context_len)
    bar = tqdm(total=frames, desc="record", unit="frame", disable=not progress)
    t0 = time.perf_counter()
    writer = None
    try:
        with EpisodeWriter(out, meta, video=True, fsync_every=fps) as writer:
            writer.add_frame(frame)
            for s in range(0, frames, chunk):
                block = acts[s:s + chunk]
                imagined = session.rollout(block[None], chunk=len(block))[0]
                for a, f in zip(block, imagined):
                    writer.add_step(int(a) if np.ndim(a) == 0 else a.tolist(), f)
                bar.update(len(block))
                bar.set_postfix(ms_per_frame=f"{(time.perf_counter() - t0) * 1000 / (s + len(block)):.1f}")
    except OSError as e:  # a full disk: meta.json says why (when it still can) and the frames stay
        kept = f"after {writer.num_frames} frames (kept)" if writer is not None else "at the start"
        raise RecordingError(f"recording to {out} stopped {kept}: {stop_reason(e)}") from e
    finally:
        bar.close()
    return Path(out)
