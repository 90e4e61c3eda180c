"""The revisit benchmark's trips (`memory.revisit`): which frames revisit a position whose first
stay left the context, how many frames of a trip are given real, and the rollout of an episode
with memory off or on (the temporal LoRA, the game's view memory)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from memory.episodic import EpisodicMemory
from worldmodel.config import Config
from worldmodel.data import Episode, list_episodes, load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.prediction import frame_actions, player_positions
from worldmodel.rollout import Rollout

WARMUPS = ("context", "trip")


@dataclass
class Revisits:
    """Frames j that revisit an earlier position whose first stay ended at e (out of context)."""

    frames: np.ndarray  # (k,) indices j
    first: np.ndarray  # (k,) the last frame e of the first stay at pos[j]
    at_start: np.ndarray  # (k,) bool: pos[j] is the start position


def find_revisits(pos: np.ndarray, context: int) -> Revisits:
    """pos (T+1, d) per frame -> the revisit frames (see module docstring)."""
    first_end: dict[tuple, int] = {}  # last frame of each position's first stay
    for i, p in enumerate(map(tuple, pos)):
        if p not in first_end or first_end[p] == i - 1:
            first_end[p] = i
    js, es, start = [], [], []
    for j in range(context, len(pos)):
        e = first_end[tuple(pos[j])]
        if j - e > context:
            js.append(j)
            es.append(e)
            start.append(bool((pos[j] == pos[0]).all()))
    return Revisits(np.asarray(js, np.int64), np.asarray(es, np.int64), np.asarray(start, bool))


def generated_revisits(pos: np.ndarray, context: int, prefix: int) -> Revisits:
    """`find_revisits`, kept to the frames the model generated (j >= prefix): those scored."""
    rv = find_revisits(pos, context)
    keep = rv.frames >= prefix
    return Revisits(rv.frames[keep], rv.first[keep], rv.at_start[keep])


def move_runs(ep: Episode, moves: Sequence[int]) -> list[np.ndarray]:
    """The frames `moves` (the game's: `Game.navigation().moves`) made, split where the player
    paused: [trip out, way back, ...]."""
    moving = np.flatnonzero(np.isin(ep.actions, moves)) + 1
    return np.split(moving, np.flatnonzero(np.diff(moving) > 1) + 1) if len(moving) else []


def real_prefix(ep: Episode, context: int, warmup: str, moves: Sequence[int]) -> int:
    """Frames given real: `context` -> the model's context alone; `trip` -> every frame up to
    the first move back (the trip out and the pause are real, the way back is generated)."""
    if warmup == "context":
        return context
    if warmup != "trip":
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    runs = move_runs(ep, moves)
    return max(context, int(runs[1][0]) if len(runs) > 1 else context)


def excursion(ep: Episode, moves: Sequence[int]) -> tuple[int, int, int]:
    """Frame indices: first move out, last move out (turnaround), last move back."""
    runs = move_runs(ep, moves)
    if not runs:
        return 0, 0, 0
    moving = np.concatenate(runs)
    turn = int(runs[0][-1]) if len(runs) > 1 else int(moving[len(moving) // 2])
    return int(moving[0]), turn, int(moving[-1])


def load_revisit_episodes(root: str | Path, samples: int, context: int) -> list[Episode]:
    """The first `samples` episodes (sorted) that have revisit frames and positions."""
    out = []
    for p in list_episodes(root):
        ep = load_episode(p)
        pos = player_positions(ep)
        if pos is None or len(ep.frames) <= context + 1:
            continue
        if len(find_revisits(pos, context).frames):
            out.append(ep)
        if len(out) == samples:
            break
    if not out:
        raise ValueError(f"no episode under {root} revisits a position after leaving the context")
    return out


def roll(model: Denoiser, cfg: Config, ep: Episode, context: int, seed: int,
         memory: EpisodicMemory | None = None, prefix: int | None = None,
         view: Any = None, poses: list | None = None
         ) -> tuple[np.ndarray, float]:
    """All T+1 frames of an episode: the real context, then one frame per real action, real
    (teacher-forced, and observed by the memory as if generated) up to frame `prefix` (default:
    the context alone) and generated after. `view`: a view memory the rollout records into and
    is conditioned on (its pose at every frame appended to `poses`). Returns (frames uint8,
    seconds in memory updates)."""
    prefix = max(context, prefix or context)
    ctx = to_float(torch.from_numpy(ep.frames[:context]))[None]
    ctx_act = torch.from_numpy(frame_actions(ep, 0, context))[None]
    ro = Rollout(memory.model if memory is not None else model, cfg, context=context, seed=seed)
    if view is not None:
        ro.view = view
        view.set_on(True, [0])
    ro.reset(ctx, ctx_act)
    if memory is not None:
        memory.reset(ctx, ctx_act)
    out = [ep.frames[i] for i in range(context)]
    if poses is not None and view is not None:
        poses.extend([None] * (context - 1) + [(view.pose[0] - view.grid // 2).tolist()])
    upd = 0.0
    for j in range(context, len(ep.frames)):
        act = torch.tensor([[int(ep.actions[j - 1])]])
        if j < prefix:
            frame = to_float(torch.from_numpy(ep.frames[j]))[None]
            ro.append(frame[:, None], act)
        else:
            frame = ro.step(act[:, 0])
        if memory is not None:
            t0 = time.perf_counter()
            memory.observe(frame[:, None], act)
            upd += time.perf_counter() - t0
        out.append(to_uint8(frame[0]).cpu().numpy())
        if poses is not None and view is not None:
            poses.append((view.pose[0] - view.grid // 2).tolist())
    return np.stack(out), upd
