"""Random training windows from episodes held in memory as uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodel.actions import ActionSpace
from worldmodel.data.episode import EpisodeError, list_episodes, load_episode
from worldmodel.training.imagined import load_imagined
from worldmodel.game import find_game
from worldmodel.recall import MIN_GAIN, select


def to_float(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (..., h, w, 3) -> float (..., 3, h, w) in [-1, 1]."""
    x = torch.as_tensor(frames)
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float (..., 3, h, w) in [-1, 1] -> uint8 (..., h, w, 3)."""
    return frames.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)


RECALL_GAP = 3  # recall candidates end this many frames before a training window
# A frame is recalled only for a target whose view it shows by MIN_GAIN more than the target's
# context does, as in play: memory where the context does not reach, the case it is for (with
# every overlapping frame recalled, the gate learned to close: measured in 50 steps)
RECALL_MIN_GAIN = MIN_GAIN


class WindowDataset:
    """Windows of `window` consecutive frames with the actions that produced them.

    Frames from every episode are concatenated in one uint8 array; windows never cross episodes.
    `sample(batch, rng)` returns frames (b, n, h, w, 3) uint8 and actions (b, n) with actions[:, i]
    the action that produced frame i (actions[:, 0] is the one before the window, or 0).
    """

    def __init__(self, root: str | Path, window: int, space: ActionSpace, prefix: str = "",
                 max_episodes: int = 0, frame_size: int | None = None,
                 extra: list[str | Path] | tuple = (), poses: bool = False,
                 imagined: bool = False, recall: int = 0):
        # With `poses`, the game named like the action space tracks each frame's pose and
        # builds the memory canvases (`Game.episode_poses`, `Game.history_canvases`).
        self.game = find_game(space.name) if poses else None
        paths = [p for p in list_episodes(root) if p.name.startswith(prefix)]
        if max_episodes:
            paths = paths[:max_episodes]
        if not paths:
            raise EpisodeError(f"no episodes named {prefix}* under {root}")
        for more in extra:  # every episode of these folders joins (e.g. revisit trips)
            found = list_episodes(more)
            if not found:
                raise EpisodeError(f"no episodes under {more} (data.extra_train)")
            paths.extend(found)
        # With `recall` (a recall model's m), each frame's pose from its episode's start and its
        # actions (the game's `PoseGeometry.track`, as in imagination) and every pair's view
        # overlap, to find the frames before a window that saw its targets' views.
        self.recall = recall
        self.geometry = find_game(space.name).pose_geometry() if recall else None
        overlaps: list[np.ndarray] = []
        rposes: list[np.ndarray] = []
        frames, acts, starts, pos, first, own = [], [], [], [], [], []
        total = 0
        for p in paths:
            ep = load_episode(p)
            if ep.meta.get("action_space") != space.name:
                raise EpisodeError(f"{p} uses action space {ep.meta.get('action_space')!r}, "
                                   f"the model expects {space.name!r}")
            if frame_size and ep.frames.shape[1:3] != (frame_size, frame_size):
                raise EpisodeError(f"{p} has frames {ep.frames.shape[1:3]}, expected {frame_size}")
            if len(ep.frames) < window:
                continue
            frames.append(ep.frames)
            # a[i] = action that produced frame i; frame 0 of an episode has none (0, dropped).
            acts.append(np.concatenate([[0], space.validate(ep.actions)]))
            starts.extend(range(total, total + len(ep.frames) - window + 1))
            first.append(np.full(len(ep.frames), total))
            if poses:
                pos.append(self.game.episode_poses(ep, acts[-1], space))
            if imagined:
                own.append(load_imagined(ep))
            if recall:
                start = np.asarray(ep.meta.get("start_pos", self.geometry.start_pose()), np.float64)
                track = self.geometry.track(start, acts[-1])
                rposes.append(track)
                overlaps.append(self.geometry.overlap_matrix(track))
            total += len(ep.frames)
        if not starts:
            raise EpisodeError(f"no episode under {root} has {window} frames")
        self.frames = np.concatenate(frames)
        self.actions = np.concatenate(acts)
        self.starts = np.asarray(starts)
        self.first = np.concatenate(first)  # each frame's episode's first frame
        self.pos = np.concatenate(pos) if poses else None  # the player's cell at each frame
        self.window = window
        self.num_episodes = len(frames)
        # The model's own rollouts of episodes that have one (memory.imagined), frame for
        # frame beside the real ones (real frames where an episode has none).
        self.imagined = self.has_imagined = None
        if imagined and any(o is not None for o in own):
            self.imagined = np.concatenate([f if o is None else o for f, o in zip(frames, own)])
            self.has_imagined = np.concatenate([np.full(len(f), o is not None)
                                                for f, o in zip(frames, own)])
        self.num_imagined = sum(o is not None for o in own)
        self.recall_poses = np.concatenate(rposes) if recall else None
        self.overlaps = overlaps  # per episode (T, T): [i, j] the share of view i view j saw
        self.episode_firsts = np.unique(self.first)  # each episode's first frame, in order

    def sample_recall(self, starts: np.ndarray, min_overlap: float = 0.25
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For windows starting at `starts`: the `recall` frames of each window's episode before
        it whose views overlap its targets' most (the best overlap with any target, at least
        `min_overlap`, among the targets it shows RECALL_MIN_GAIN more of than their context
        does; the newer first among equals), (b, m, h, w, 3) uint8; each as seen from
        each window frame (b, n, m, P) float32 (the game's `relative`: offset, turn, overlap,
        age); and which are there (b, m)."""
        m, n, g = self.recall, self.window, self.geometry
        b = len(starts)
        out = np.zeros((b, m, *self.frames.shape[1:]), np.uint8)
        pose = np.zeros((b, n, m, g.pose_dim), np.float32)
        valid = np.zeros((b, m), bool)
        ep_of = np.searchsorted(self.episode_firsts, self.first[starts])
        for i, st in enumerate(starts):
            f0 = self.first[st]
            local = st - f0
            # Frames the KV cache would still hold at inference are not recalled there: the
            # candidates end a few frames before the window (ages >= RECALL_GAP + 1).
            end = local - RECALL_GAP
            if end <= 0:
                continue
            ov = self.overlaps[ep_of[i]]
            tgt = np.arange(local, local + n)
            cand = ov[tgt[1:], :end].astype(np.float32)  # (targets, candidates)
            # what each target's context (the window frames before it) already shows
            cover = np.array([ov[t, tgt[:k + 1]].max() for k, t in enumerate(tgt[1:])], np.float32)
            helps = (cand >= min_overlap) & (cand - cover[:, None] >= RECALL_MIN_GAIN)
            score = np.where(helps, cand, 0.0).max(0)
            sel = select(score, m, min_overlap)
            if not len(sel):
                continue
            valid[i, :len(sel)] = True
            out[i, :len(sel)] = self.frames[f0 + sel]
            age = tgt[:, None] - sel[None]
            pose[i, :, :len(sel)] = g.relative(self.recall_poses[f0 + tgt],
                                               self.recall_poses[f0 + sel],
                                               ov[tgt][:, sel].astype(np.float32), age)
        return out, pose, valid

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch: int, rng: np.random.Generator, canvases: bool = False,
               imagined: float = 0.0):
        """(frames, actions) of `batch` random windows; with `canvases` (a dataset built with
        `poses`) also (b, n, 5, CH, CW) float32: the view memory's canvas each frame's target
        sees, around the frame before it, from every frame of its episode up to that one
        (`Game.history_canvases`; row 0 is zeros). With `imagined`, that share of
        the windows of episodes with an imagined copy (a dataset built with `imagined`) build
        their canvases from the copy: the model's own frames of the same places."""
        s = self.starts[rng.integers(0, len(self.starts), batch)]
        idx = s[:, None] + np.arange(self.window)[None]
        self.last_starts = s  # the windows' first frames (sample_recall takes them)
        if not canvases:
            return self.frames[idx], self.actions[idx]
        if self.pos is None:
            raise ValueError("canvases need a WindowDataset built with poses=True")
        out = np.zeros((batch, self.window, *self.game.canvas_shape()), np.float32)
        for i, st in enumerate(s):
            f0 = self.first[st]
            end = st + self.window - 1  # the last anchor is the frame before the last target
            seen = self.frames
            if (imagined > 0 and self.imagined is not None and self.has_imagined[st]
                    and rng.random() < imagined):
                seen = self.imagined
            out[i, 1:] = self.game.history_canvases(seen[f0:end], self.pos[f0:end],
                                          np.arange(st - f0, end - f0))
        return self.frames[idx], self.actions[idx], out
