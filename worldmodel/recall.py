"""Recall: frames seen before, found again by where they were seen from, as extra attention context.

A model with `model.recall = m` remembers what it saw beyond its KV cache of the last frames.
Every remembered frame is written as its keys and values in each temporal layer (the frame encoded
alone, at the context noise level), with the pose it was seen from. Before a frame is drawn, the
pose it will have (the game's `PoseGeometry.advance` of the committed action: the model's own
motion, never the real game's) picks the m remembered frames whose view overlaps it most
(field-of-view overlap, WorldMem's retrieval) among those that show MIN_GAIN more of it than the
cached frames do, and every spatial position of every temporal layer attends to those frames' keys
at the same position beside the cached frames', each key and value moved and each logit biased by
a learned function of the memory frame's pose relative to the target's (`Recall.pose`). Zero-
initialised offsets and a negative bias: a model gaining recall starts out computing what it did.

    recall = Recall(kv, pose, valid)        # kv: layer -> (k, v) (b*h*w, heads, m, dh)
    model(..., conditioning=Conditioning(recall=recall))

`RecallMemory` is what a rollout keeps of B worlds (poses, frames, for a recall model their keys
and values), the view-memory switch (`set_on`), save, load and minimap. Any model of a game with
a pose geometry keeps one: its frames are also the known pixels of a view seen again from the
same place (worldmodel.known). `recall_batch` builds a training window's memory from its episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from worldmodel.game import MemoryFileError
from worldmodel.known import known_share

# A remembered frame is recalled for a target only where it shows this much more of the target's
# view than the frames in the KV cache do (the training windows recall by the same rule).
MIN_GAIN = 0.05
FILE = "view_memory.safetensors"  # the session's view-memory file (memory.saved), format "recall-memory"
VERSION = "1"


@dataclass
class Recall:
    """Remembered frames for one denoiser call: per temporal layer their keys and values, the
    pose of each as seen from each target frame, and which are there at all."""

    kv: dict[str, tuple[Tensor, Tensor]]  # layer name -> (k, v), each (b*h*w, heads, m, dh)
    pose: Tensor  # (b, n, m, P) relative pose features (the game's `relative`)
    valid: Tensor  # (b, m) bool: False where a world has fewer than m memories (or none)


def encode_frames(model: Any, frames: Tensor, level: Tensor | float,
                  eps: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Each frame of (b, m, 3, h, w) written alone (no frame before it, no action) at noise
    `level` ((b, m) or a number; noise `eps`, default none): its keys and values per temporal
    layer, (b*h*w, heads, m, dh) as `Recall.kv` takes them. Runs the encoder half only."""
    from worldmodel.attention import KVCache

    b, m = frames.shape[:2]
    x = frames.reshape(b * m, 1, *frames.shape[2:])
    t = torch.as_tensor(level, dtype=x.dtype, device=x.device).expand(b, m).reshape(b * m, 1)
    tt = t[..., None, None, None]
    x = (1 - tt) * x  # without noise: the noised frame's mean at that level
    if eps is not None:
        x = x + tt * eps.reshape(x.shape).to(x.dtype)
    ones = torch.ones_like(t)
    act = torch.zeros(b * m, 1, model.action_dim, device=x.device)
    drop = torch.ones(b * m, 1, dtype=torch.bool, device=x.device)
    cache = KVCache(max_len=1)
    model(x, torch.zeros_like(x), t, ones, torch.zeros_like(drop), act, drop, cache=cache,
          commit=True)
    out = {}
    for name, lc in cache.layers.items():
        k, v = lc.k, lc.v  # (b*m*hw, heads, 1, dh)
        heads, dh = k.shape[1], k.shape[3]
        hw = k.shape[0] // (b * m)
        out[name] = tuple(z.reshape(b, m, hw, heads, dh).permute(0, 2, 3, 1, 4)
                          .reshape(b * hw, heads, m, dh) for z in (k, v))
    return out


def has_view_memory(model: Any, cfg: Any) -> bool:
    """Whether a model draws with a view memory: a game's canvas (`memory_stem`), or frames
    remembered by pose (a game with a pose geometry: recalled by a recall model, and giving
    known pixels to any model, worldmodel.known)."""
    from worldmodel.game import find_game

    if model.memory_stem is not None or getattr(model, "recall_pose", None) is not None:
        return True
    game = find_game(cfg.model.game_name)
    return game is not None and game.pose_geometry() is not None


def make_view_memory(model: Any, cfg: Any, batch: int, context: int,
                     device: torch.device | str) -> Any:
    """The view memory of B worlds a model draws with: the game's own view memory for a
    memory-stem model; a `RecallMemory` where the game has a pose geometry (a recall model's
    recalled frames, written with its encoder; any model's known pixels); or None."""
    from worldmodel.game import get_game

    game = get_game(cfg.model.game_name)
    recall = getattr(model, "recall_pose", None) is not None
    if model.memory_stem is not None:
        return game.view_memory(batch, device)
    geometry = game.pose_geometry()
    if geometry is None and recall:
        raise ValueError(f"model.recall needs a game with a pose geometry; {game.name} has none")
    if geometry is None:
        return None
    return RecallMemory(geometry, batch, cfg.model.recall if recall else 0, context, device,
                        encoder=model if recall else None, level=cfg.diffusion.context_noise)


def select(scores: np.ndarray, k: int, min_overlap: float) -> np.ndarray:
    """The indices of the k best `scores` at least `min_overlap`, best first, the later (newer)
    first among equals."""
    order = np.lexsort((-np.arange(len(scores)), -scores))[:k]
    return order[scores[order] >= min_overlap]


class RecallMemory:
    """The remembered frames of B worlds, by pose (see module docstring; `encoder` None: no keys
    and values, known pixels only). Every world's pose is tracked from its actions from the
    first reset; worlds switched on (`set_on`) also write what they draw where no remembered
    view covers it by `write_overlap`, and draw with what they remember. Frames still in the KV
    cache (the last `context`) are not recalled (attention already sees them); known pixels
    come from any remembered frame."""

    def __init__(self, geometry: Any, batch: int, k: int, context: int,
                 device: torch.device | str = "cpu", capacity: int = 384,
                 min_overlap: float = 0.25, write_overlap: float = 0.85,
                 encoder: Any = None, level: float = 0.03):
        self.geometry = geometry
        self.encoder = encoder  # the model remembered frames are written with (the rollout's)
        self.level = level  # the context noise level they are written at
        self.batch = batch
        self.k = k
        self.context = context
        self.device = torch.device(device)
        self.capacity = capacity
        self.min_overlap = min_overlap
        self.write_overlap = write_overlap
        self.worlds_on = [False] * batch
        self.reset()

    # -- switches and lifecycle ----------------------------------------------------------------
    def set_on(self, on: bool, worlds: Sequence[int]) -> None:
        for w in worlds:
            self.worlds_on[w] = bool(on)

    def reset(self, worlds: Sequence[int] | None = None) -> None:
        """Forget what these worlds (default all) saw; their poses go back to the start."""
        idx = range(self.batch) if worlds is None else worlds
        if worlds is None:
            self.pose = np.tile(self.geometry.start_pose(), (self.batch, 1))
            self.clock = [0] * self.batch
            self.poses: list[list[np.ndarray]] = [[] for _ in range(self.batch)]
            self.steps: list[list[int]] = [[] for _ in range(self.batch)]
            self.frames: list[list[np.ndarray]] = [[] for _ in range(self.batch)]
            self.kv: list[list[dict[str, tuple[Tensor, Tensor]]]] = [[] for _ in range(self.batch)]
            self.trail: list[list[np.ndarray]] = [[] for _ in range(self.batch)]
            self.recent: list[list[np.ndarray]] = [[] for _ in range(self.batch)]  # cached frames'
            self.unsure = [0] * self.batch  # frames to come whose dead-reckoned pose may be off
            return
        for w in idx:
            self.pose[w] = self.geometry.start_pose()
            self.clock[w] = 0
            self.poses[w], self.steps[w], self.frames[w], self.kv[w] = [], [], [], []
            self.trail[w], self.recent[w], self.unsure[w] = [], [], 0

    def __len__(self) -> int:
        return sum(len(p) for p in self.poses)

    def remembered(self, world: int) -> int:
        return len(self.poses[world])

    # -- poses ---------------------------------------------------------------------------------
    def advance(self, actions: np.ndarray, worlds: Sequence[int] | None = None) -> np.ndarray:
        """Move these worlds' poses by one action each ((k,) ints; negative: none); returns the
        new poses (k, 5)."""
        idx = list(range(self.batch)) if worlds is None else list(worlds)
        g = self.geometry
        for w, a in zip(idx, np.asarray(actions).reshape(-1)):
            self.pose[w] = g.advance(self.pose[w], int(a))
            self.clock[w] += 1
            self.trail[w].append(self.pose[w].copy())
            self.unsure[w] = max(self.unsure[w] - 1, getattr(g, "unsure_steps", lambda _: 0)(int(a)))
            if getattr(g, "changes_world", lambda _: False)(int(a)) and self.poses[w]:
                self._forget_here(w)  # a dug or placed node: what was seen from here is stale
        return self.pose[idx].copy()

    def _forget_here(self, w: int) -> None:
        keep = ~self.geometry.same_eye(self.pose[w], np.stack(self.poses[w]))
        for name in ("poses", "steps", "frames", "kv"):
            lst = getattr(self, name)[w]
            lst[:] = [e for e, k in zip(lst, keep) if k]

    def paintable(self, w: int, n: int) -> list[int]:
        """The remembered frames of world w (oldest first) a chunk of n frames may take known
        pixels from (worldmodel.known): none while the world is off or its pose unsure, else
        every one drawn before the chunk."""
        if not self.worlds_on[w] or self.unsure[w] > 0:
            return []
        return [j for j, s in enumerate(self.steps[w]) if s <= self.clock[w] - n]

    # -- reading -------------------------------------------------------------------------------
    def condition(self, targets: np.ndarray) -> Recall | None:
        """The recall for a call drawing n frames per world at poses `targets` (b, n, 5), the
        clock already advanced to the last of them; None when no world that is on remembers
        anything it may recall (the call is then the model without recall, exactly)."""
        b, n = targets.shape[:2]
        if self.encoder is None:  # a memory for known pixels only (a model without recall)
            return None
        picks: list[np.ndarray] = []
        overlaps: list[np.ndarray] = []  # per world (n, remembered): each target's overlaps
        for w in range(b):
            if not self.worlds_on[w] or not self.poses[w]:
                picks.append(np.zeros(0, np.int64))
                overlaps.append(np.zeros((n, 0)))
                continue
            steps = np.asarray(self.steps[w])
            old = steps <= self.clock[w] - n - self.context  # left the cache before the chunk
            poses = np.stack(self.poses[w])
            recent = np.stack(self.recent[w]) if self.recent[w] else np.zeros((0, 5))
            ov = np.stack([self.geometry.overlap(targets[w, i], poses) for i in range(n)])
            cover = np.stack([self.geometry.overlap(targets[w, i], recent).max(initial=0.0)
                              for i in range(n)])
            helps = (ov >= self.min_overlap) & (ov - cover[:, None] >= MIN_GAIN)
            score = np.where(helps, ov, 0.0).max(0)
            overlaps.append(ov)
            score[~old] = -1.0
            picks.append(select(score, self.k, self.min_overlap))
        if not any(len(p) for p in picks):
            return None
        m = self.k
        pose = np.zeros((b, n, m, self.geometry.pose_dim), np.float32)
        valid = np.zeros((b, m), bool)
        first = next(w for w in range(b) if len(picks[w]))
        ref = self.kv[first][int(picks[first][0])]  # the shapes of one remembered frame
        names = list(ref)
        kv: dict[str, list[list[Tensor]]] = {name: [[], []] for name in names}
        for w in range(b):
            sel = picks[w]
            valid[w, :len(sel)] = True
            if len(sel):
                keys = np.stack([self.poses[w][j] for j in sel])
                ov = overlaps[w][:, sel]
                age = (self.clock[w] - n + 1 + np.arange(n)[:, None]
                       - np.asarray([self.steps[w][j] for j in sel])[None])
                pose[w, :, :len(sel)] = self.geometry.relative(targets[w], keys, ov, age)
            for name in names:
                for z in (0, 1):
                    got = [self.kv[w][j][name][z] for j in sel]
                    got += [torch.zeros_like(ref[name][z])] * (m - len(sel))
                    kv[name][z].append(torch.stack(got, 2))  # (hw, heads, m, dh)
        stacked = {name: (torch.cat(k), torch.cat(v)) for name, (k, v) in kv.items()}
        return Recall(stacked, torch.as_tensor(pose, device=self.device),
                      torch.as_tensor(valid, device=self.device))

    # -- writing -------------------------------------------------------------------------------
    def write(self, frames: Tensor, worlds: Sequence[int] | None = None) -> int:
        """Remember the frames just drawn (k, 3, h, w) at the worlds' current poses, for the
        worlds that are on and whose view is not covered yet; returns how many were written."""
        idx = list(range(self.batch)) if worlds is None else list(worlds)
        new = []
        for row, w in enumerate(idx):
            keep = self.context  # the poses of the frames the KV cache holds
            self.recent[w] = (self.recent[w] + [self.pose[w].copy()])[-keep:] if keep else []
            if not self.worlds_on[w]:
                continue
            if self.poses[w]:  # covered for recall (field of view) and for known pixels (here)
                poses = np.stack(self.poses[w])
                if (self.geometry.overlap(self.pose[w], poses).max() >= self.write_overlap
                        and known_share(self.geometry, self.pose[w], poses) >= self.write_overlap):
                    continue
            new.append((row, w))
        if not new:
            return 0
        rows = torch.as_tensor([r for r, _ in new], device=frames.device)
        # Written as shown (uint8), so a saved memory's recomputed keys are the same.
        u8 = frames[rows].float().add(1).mul(127.5).round().clamp(0, 255)
        kv = {} if self.encoder is None else encode_frames(
            self.encoder, (u8 / 127.5 - 1)[:, None], self.level)
        hw = next(iter(kv.values()))[0].shape[0] // len(new) if kv else 0
        frames_u8 = u8.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for i, (_, w) in enumerate(new):
            entry = {name: (k[i * hw:(i + 1) * hw, :, 0].clone(), v[i * hw:(i + 1) * hw, :, 0].clone())
                     for name, (k, v) in kv.items()}
            self._append(w, self.pose[w].copy(), self.clock[w], frames_u8[i], entry)
        return len(new)

    def track(self, frames: Tensor, actions: Tensor, worlds: Sequence[int] | None = None) -> None:
        """Frames given, not drawn (b or k, n, 3, h, w) with the actions that made them: each
        world's pose advanced by each action (actions[:, 0] too, unless it is none) and each
        frame written as `write` would."""
        acts = np.asarray(torch.as_tensor(actions).cpu())
        idx = list(range(self.batch)) if worlds is None else list(worlds)
        for i in range(frames.shape[1]):
            if i > 0 or (acts[:, 0] >= 0).any():
                self.advance(acts[:, i], idx)
            self.write(frames[:, i], idx)

    def _append(self, w: int, pose: np.ndarray, step: int, frame: np.ndarray, kv: dict) -> None:
        self.poses[w].append(pose)
        self.steps[w].append(int(step))
        self.frames[w].append(frame)
        self.kv[w].append(kv)
        if len(self.poses[w]) > self.capacity:  # the oldest is forgotten
            for lst in (self.poses[w], self.steps[w], self.frames[w], self.kv[w]):
                del lst[0]

    # -- the map -------------------------------------------------------------------------------
    def minimap(self, world: int = 0, radius: int = 12, scale: int = 1) -> np.ndarray:
        """Top down, north up: what world `world` saw where, its trail and heading
        (worldmodel.view_map)."""
        from worldmodel.view_map import minimap

        return minimap(self, world, radius, scale)

    # -- save and load -------------------------------------------------------------------------
    def state(self, world: int) -> dict[str, Tensor]:
        """One world's memory as CPU tensors: poses, steps and frames of what it remembers, its
        pose, clock and trail (the keys and values are recomputed from the frames on load)."""
        n = len(self.poses[world])
        frames = (np.stack(self.frames[world]) if n else np.zeros((0, 1, 1, 3), np.uint8))
        trail = np.stack(self.trail[world]) if self.trail[world] else np.zeros((0, 5))
        recent = np.stack(self.recent[world]) if self.recent[world] else np.zeros((0, 5))
        return {"poses": torch.as_tensor(np.stack(self.poses[world]) if n else np.zeros((0, 5))),
                "steps": torch.as_tensor(np.asarray(self.steps[world], np.int64)),
                "frames": torch.as_tensor(frames), "pose": torch.as_tensor(self.pose[world]),
                "clock": torch.as_tensor([self.clock[world]], dtype=torch.int64),
                "trail": torch.as_tensor(trail), "recent": torch.as_tensor(recent)}

    def check_state(self, state: dict[str, Tensor], where: str = "the saved recall memory") -> None:
        """MemoryFileError unless `state` is a `state()` of this memory. Changes nothing."""
        def bad(what: str) -> MemoryFileError:
            return MemoryFileError(f"{where}: {what}")

        want = {"poses", "steps", "frames", "pose", "clock", "trail", "recent"}
        if set(state) != want:
            raise bad(f"holds {sorted(state)[:8]}, expected {sorted(want)}")
        n = state["poses"].shape[0]
        if state["poses"].shape != (n, 5) or not torch.isfinite(state["poses"]).all():
            raise bad(f"poses must be (n, 5) finite, got {tuple(state['poses'].shape)}")
        if state["steps"].shape != (n,) or state["steps"].dtype != torch.int64:
            raise bad("steps must be one int64 per remembered frame")
        fr = state["frames"]
        if fr.dtype != torch.uint8 or fr.ndim != 4 or fr.shape[0] != n or fr.shape[-1] != 3:
            raise bad(f"frames must be (n, h, w, 3) uint8, got {fr.dtype} {tuple(fr.shape)}")
        if state["pose"].shape != (5,) or state["clock"].shape != (1,) or state["clock"][0] < 0:
            raise bad("pose must be 5 numbers and clock one number >= 0")
        if n and (state["steps"].min() < 0 or state["steps"].max() > state["clock"][0]):
            raise bad("a remembered frame's step is outside 0..clock")
        for key in ("trail", "recent"):
            if state[key].ndim != 2 or state[key].shape[1] != 5:
                raise bad(f"{key} must be (t, 5)")

    def load_state(self, world: int, state: dict[str, Tensor]) -> None:
        """Put `state` in world `world` (checked whole first); the keys and values of its frames
        are recomputed with the encoder."""
        self.check_state(state)
        self.reset([world])
        self.pose[world] = state["pose"].double().cpu().numpy()
        self.clock[world] = int(state["clock"][0])
        self.trail[world] = list(state["trail"].double().cpu().numpy())
        self.recent[world] = list(state["recent"].double().cpu().numpy())
        frames = state["frames"].cpu().numpy()
        kv: dict[str, tuple[Tensor, Tensor]] = {}  # none for a memory of known pixels only
        if len(frames) and self.encoder is not None:
            x = torch.as_tensor(frames, device=self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.inference_mode():
                kv = encode_frames(self.encoder, x[None], self.level)
        for j, (pose, step) in enumerate(zip(state["poses"].double().cpu().numpy(),
                                             state["steps"].tolist())):
            entry = {name: (k[:, :, j].clone(), v[:, :, j].clone()) for name, (k, v) in kv.items()}
            self._append(world, pose, step, frames[j], entry)

    def save(self, folder: str | Path, world: int = 0) -> Path:
        from worldmodel import tensorfile

        return tensorfile.write(Path(folder) / FILE, self.state(world),
                                {"format": "recall-memory", "version": VERSION})

    def read_saved(self, folder: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
        from worldmodel import tensorfile

        path = Path(folder) / FILE
        state, meta = tensorfile.read(path, MemoryFileError, "recall memory")
        if meta.get("format") != "recall-memory" or meta.get("version") != VERSION:
            raise MemoryFileError(f"{path} is not a recall memory of version {VERSION} "
                                  f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
        self.check_state(state, str(path))
        return state, meta
