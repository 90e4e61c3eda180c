"""`WorldSession`: the headless heart. Owns the model, the rollout state of B worlds, and timing.

    sess = WorldSession.load()                    # the shipped default model
    frame = sess.reset(seed=3)                    # real context frames from the real game
    frame = sess.step("move_left")               # (64, 64, 3) uint8, imagined
    frames = sess.rollout(context, actions)       # batched: (B, T, 64, 64, 3)
    sess.reset_worlds([1], context)               # a new episode for world 1; the others go on
    sess.set_memory(True)                         # episodic memory: a view memory of what was
                                                  # seen where, and a LoRA fast-learned as you play
    sess.set_memory(False, worlds=[0, 2])         # ... switched per world (each learns its own)
    sess.memory_worlds                            # [False, True, False, ...]: on/off per world
    sess.minimap(world=0)                         # the remembered map around the player (image)
    sess.save_memory("mem/", world=1); sess.load_memory("mem/", world=3)  # a whole world
    sess.close()                                  # stops the memory's worker thread

The episodic memory has two stores (`MemoryConfig.view`, `MemoryConfig.lora`): the view memory
(the game's: `Game.view_memory`, Crafter's in games/crafter/view_memory.py; models trained with
`model.view_memory`) records every frame shown at its pose,
read from the pixels, and conditions the worlds switched on with what it saw around them; the
temporal LoRA (memory/episodic.py) fast-learns from the frames. `set_memory` switches both.

Frames at this boundary are uint8 (h, w, 3), as games and recordings hold them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from memory.config import MemoryConfig
from memory.episodic import EpisodicMemory, world_index, world_indices
from worldmodel.actions import ActionError, get_action_space
from worldmodel.checkpoint import load_checkpoint
from worldmodel.config import Config
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.dynamics import Denoiser
from simulator.session_saves import SavedWorlds
from worldmodel.recall import has_view_memory, make_view_memory
from worldmodel.rollout import Rollout
from worldmodel.device import pick_device
from worldmodel.game import get_game

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "assets" / "crafter_memory"


def real_context(game_name: str, seed: int, frames: int, actions: Sequence[int] | None = None,
                 size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Play the real game from `seed` for `frames - 1` steps (default: noops): (frames, h, w, 3)
    uint8 and the actions that produced them: (frames,) ints with actions[0] = -1 (none) for a
    discrete space, (frames, dim) floats with actions[0] all zero for a continuous one."""
    from simulator.games import make_game

    game = make_game(game_name, size=size)
    continuous = game.action_space.kind != "discrete"
    noop = np.zeros(game.action_space.dim, np.float32) if continuous else 0
    try:
        obs = [game.reset(seed)]
        acts = [noop if continuous else -1]
        todo = list(actions) if actions is not None else [noop] * (frames - 1)
        for a in todo[: frames - 1]:
            obs.append(game.step(a).obs)
            acts.append(np.asarray(a, np.float32) if continuous else int(a))
    finally:
        game.close()  # a game with processes (Minetest) ends them here
    return np.stack(obs), np.asarray(acts)


class WorldSession(SavedWorlds):
    """B independent imagined worlds driven by actions; see module docstring."""

    def __init__(self, model: Denoiser, cfg: Config, batch: int = 1, seed: int = 0,
                 sample_steps: int | None = None, context: int | None = None,
                 game: str | None = None, checkpoint: str | Path | None = None,
                 memory: MemoryConfig | bool | None = None, bf16: bool | None = None):
        self.model = model.eval()
        self.cfg = cfg
        if sample_steps is not None:
            cfg.diffusion.sample_steps = sample_steps
        self.space = get_action_space(cfg.model.action_space)
        self.game = game or cfg.model.game_name  # the real game's name
        self.batch = batch
        self.seed = seed
        self.checkpoint = str(checkpoint) if checkpoint else None
        # bf16: None = on CUDA only; True also on CPU (faster in batches, ~1-4 levels off fp32)
        self.rollout_state = Rollout(model, cfg, context=context, seed=seed, bf16=bf16)
        self.device = self.rollout_state.device
        self.frame_size = cfg.model.frame_size
        self.steps = 0  # frames since the last reset
        self.world_steps = [0] * batch  # per world: frames since its episode began
        self._fingerprint: str | None = None
        self.last_step_ms = 0.0
        self.frame: np.ndarray | None = None
        # Episodic memory: built on first use (an inference copy of the model and a thread, then
        # a learner copy for each world whose memory goes on), then switched per world.
        if isinstance(memory, MemoryConfig):
            self.memory_config = memory
        else:
            self.memory_config = MemoryConfig(enabled=bool(memory))
        self._memory: EpisodicMemory | None = None
        # The view memory records every world's frames from the first reset (a few MB a world);
        # only worlds with memory on are conditioned on it.
        self.view = None  # the game's view memory (Game.view_memory), for a memory-stem model
        use_view, self._use_lora = self.memory_config.uses(has_view_memory(model, cfg))
        if use_view:  # the game's canvas memory, or remembered frames for a recall model
            self.view = make_view_memory(model, cfg, batch, self.rollout_state.context,
                                         self.device)
        self.rollout_state.view = self.view
        if self.memory_config.enabled:
            self.set_memory(True)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | None = None,
             **kwargs) -> "WorldSession":
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        model, cfg = load_checkpoint(path, pick_device(device))
        return cls(model, cfg, checkpoint=path, **kwargs)

    # -- episodic memory ---------------------------------------------------------------------
    @property
    def memory(self) -> EpisodicMemory:
        """The session's memory (one adapter per world); created on first access, every world
        off until enabled."""
        if self._memory is None:
            self._memory = self._new_memory()
        return self._memory

    @property
    def memory_enabled(self) -> bool:
        """True while any world has memory on."""
        return any(self.memory_worlds)

    @property
    def memory_error(self) -> str | None:
        """Why memory switched itself off (its background worker failed), until it is switched
        on again (which starts a fresh worker); None otherwise."""
        return self._memory.failure if self._memory is not None else None

    @property
    def memory_worlds(self) -> list[bool]:
        """Memory on or off, per world."""
        lora = self._memory.worlds_enabled if self._memory is not None else [False] * self.batch
        view = list(self.view.worlds_on) if self.view is not None else [False] * self.batch
        return [a or b for a, b in zip(lora, view)]

    @property
    def memory_stores(self) -> list[str]:
        """The stores `set_memory` switches (`memory.stores`): "view" (a model trained with a
        view memory) and "lora"."""
        return ((["view"] if self.view is not None else [])
                + (["lora"] if self._use_lora else []))

    def set_memory(self, on: bool, worlds: int | Sequence[int] | None = None) -> None:
        """Memory on for `worlds` (None: all; else an index or a list of indices): each is
        conditioned on what its view memory saw around it, and learns its own temporal adapter
        from its frames in the background. Off: those worlds get the base model alone (what
        was recorded and learned is kept for when it comes back on)."""
        idx = world_indices(worlds, self.batch)  # checked before anything is built
        if not idx:
            return
        if on and not self.memory_stores:
            raise ValueError(f"no episodic memory store: memory.stores is "
                             f"{self.memory_config.stores!r} and this model has no view memory "
                             f"(model.view_memory)")
        if self.view is not None:
            self.view.set_on(on, idx)
        if self._use_lora and (on or self._memory is not None):
            self.memory.set_enabled(on, idx)
            self.rollout_state.model = self.memory.model if self.memory.enabled else self.model

    def _memory_before_step(self) -> EpisodicMemory | None:
        """The LoRA memory to hand this frame to (None: off), after it swapped in its newest
        adapters. One that switched itself off (`memory_error`) gives the base model back."""
        mem = self._memory
        if mem is None or not mem.enabled:
            return None
        mem.before_step()
        if not mem.enabled:
            self.rollout_state.model = self.model
            return None
        return mem

    def minimap(self, world: int = 0, radius: int = 12, scale: int = 1) -> np.ndarray:
        """The view memory's map around world `world`'s player, uint8 (H, W, 3): what it
        knows (as last seen, dimmed with age) and what it does not (dark); see the game's view memory."""
        if self.view is None:
            raise ValueError("this model has no view memory (model.view_memory), so no minimap")
        return self.view.minimap(world_index(world, self.batch), radius, scale)

    def _new_memory(self) -> EpisodicMemory:
        return EpisodicMemory(self.model, self.cfg, self.memory_config, threaded=True,
                              batch=self.batch, base_name=self.checkpoint, enabled=False)

    def close(self) -> None:
        """Stop background work (the memory's worker thread). The session can still step."""
        if self._memory is not None:
            self.set_memory(False)
            self._memory.close()

    def __enter__(self) -> "WorldSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def context_len(self) -> int:
        return self.rollout_state.context

    def action_index(self, action: int | str | Sequence[float]) -> int | np.ndarray:
        """One world's action as the session takes it: an index for a discrete space, the
        validated vector for a continuous one."""
        if self.space.kind != "discrete":
            return self.space.validate(np.asarray(action, np.float32))
        return self.space.index(action)

    def reset(self, seed: int | None = None, context: np.ndarray | None = None,
              actions: np.ndarray | None = None, noise_seed: int | None = None,
              memory_worlds: int | Sequence[int] | None = None) -> np.ndarray:
        """Start from real frames: `context` (n, h, w, 3) or (B, n, h, w, 3) uint8 with the
        actions that produced them, or else `context_len` frames of the real game from `seed`
        (world i from seed + i). World i's sampling noise restarts from `noise_seed + i`
        (default: `seed + i` when a seed is given; otherwise the noise streams go on), so world i
        of a batch is exactly the single world with those seeds. The memory of `memory_worlds`
        (None: every world) starts a new episode: empty, learning first from this context; the
        other worlds keep theirs (`reset_worlds` restarts some worlds and leaves the others
        untouched). Returns the last context frame(s)."""
        mem_worlds = world_indices(memory_worlds, self.batch)
        if noise_seed is None and seed is not None:
            noise_seed = seed
        if context is None:
            seed = self.seed if seed is None else seed
            pairs = [real_context(self.game, seed + i, self.context_len, size=self.frame_size)
                     for i in range(self.batch)]
            context = np.stack([p[0] for p in pairs])
            actions = np.stack([p[1] for p in pairs])
        context, ctx, acts = self._context_tensors(context, actions, self.batch)
        self.rollout_state.reset(ctx, acts, None if noise_seed is None else
                                 [noise_seed + i for i in range(self.batch)])
        if self._memory is not None:  # a new episode: the memory starts empty, from this context
            self._memory.reset(ctx, acts, mem_worlds)
        self.steps = 0
        self.world_steps = [0] * self.batch
        self.frame = context[:, -1].copy()
        return self.frame[0] if self.batch == 1 else self.frame

    def reset_worlds(self, worlds: int | Sequence[int], context: np.ndarray,
                     actions: np.ndarray | None = None,
                     noise_seeds: Sequence[int] | None = None) -> np.ndarray:
        """Start only `worlds` (an index or a list) on new episodes, from real frames `context`
        (k, n, h, w, 3) uint8 (n = `context_len`), one row per world in sorted order, with the
        actions that produced them (k, n): their memories start empty, their noise streams
        restart from `noise_seeds` (else go on). Every other world is left exactly as it was, so
        its trajectory does not depend on whether its neighbours restarted (a vector env's
        autoreset). Returns the last context frame(s) of all worlds."""
        idx = world_indices(worlds, self.batch)
        if self.frame is None:
            raise RuntimeError("reset() the session before restarting some of its worlds")
        if noise_seeds is not None and len(noise_seeds) != len(idx):
            raise ValueError(f"need {len(idx)} noise seeds (one per restarted world), "
                             f"got {len(noise_seeds)}")
        context, ctx, acts = self._context_tensors(context, actions, len(idx))
        n = self.context_len
        if self._memory is not None:
            # First: the restarted worlds' adapters go back to zero before their new context is
            # written. The memory takes a row per world of the batch; only those of idx are read.
            full = torch.zeros(self.batch, *ctx.shape[1:])
            full[idx] = ctx
            full_acts = (torch.full(full.shape[:2], -1, dtype=torch.long)
                         if self.space.kind == "discrete" else
                         torch.zeros(*full.shape[:2], self.space.dim))
            if acts is not None:
                full_acts[idx] = acts
            self._memory.reset(full[:, -n:], full_acts[:, -n:], idx)
        self.rollout_state.reset_worlds(idx, ctx[:, -n:], None if acts is None else acts[:, -n:],
                                        None if noise_seeds is None else list(noise_seeds))
        self.frame = self.frame.copy()
        self.frame[idx] = context[:, -1]
        for i in idx:
            self.world_steps[i] = 0
        return self.frame[0] if self.batch == 1 else self.frame

    def _context_tensors(self, context: np.ndarray, actions: np.ndarray | None,
                         worlds: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
        """Context for `worlds` worlds, (n, h, w, 3) (shared) or (worlds, n, h, w, 3) uint8, and
        its actions, checked -> (the uint8 frames per world, floats (worlds, n, 3, h, w), the
        actions as a tensor or None)."""
        context = np.asarray(context)
        if context.ndim == 4:
            context = np.broadcast_to(context[None], (worlds, *context.shape))
            if actions is not None:
                actions = np.asarray(actions)
                actions = np.broadcast_to(actions[None], (worlds, *actions.shape))
        if context.ndim != 5 or context.shape[0] != worlds or context.shape[-1] != 3:
            raise ValueError(f"context must be (n, h, w, 3) or ({worlds}, n, h, w, 3) uint8, "
                             f"got {context.shape}")
        if context.shape[2:4] != (self.frame_size, self.frame_size):
            raise ValueError(f"context frames are {context.shape[2:4]}, the model takes "
                             f"{self.frame_size}x{self.frame_size}")
        acts = None
        if actions is not None and self.space.kind != "discrete":
            acts = torch.from_numpy(self.space.validate(np.asarray(actions, np.float32)).copy())
        elif actions is not None:
            acts = np.asarray(actions, np.int64).copy()
            valid = acts >= 0
            self.space.validate(acts[valid])
            acts = torch.from_numpy(acts)
        return context, to_float(torch.from_numpy(np.array(context))), acts  # a writable copy

    def _actions_tensor(self, actions) -> torch.Tensor:
        """One action per world: (B,) ints for a discrete space (names or indices), (B, dim)
        floats for a continuous one (a single world may pass its (dim,) vector)."""
        if self.space.kind != "discrete":
            try:
                arr = np.asarray(actions, np.float32)
            except (TypeError, ValueError):
                raise ActionError(f"{self.space.name} actions are vectors of {self.space.dim} "
                                  f"numbers, got {str(actions)[:200]}") from None
            arr = self.space.validate(arr.reshape(-1, self.space.dim) if arr.ndim == 1 else arr)
            if arr.shape[0] != self.batch:
                raise ActionError(f"need {self.batch} actions (one per world), got {arr.shape[0]}")
            return torch.from_numpy(arr)
        if isinstance(actions, (int, str, np.integer)):
            actions = [actions]
        idx = [self.space.index(a) if isinstance(a, str) else a for a in np.asarray(actions, object).ravel()]
        arr = self.space.validate(np.asarray(idx))
        if arr.shape[0] != self.batch:
            raise ActionError(f"need {self.batch} actions (one per world), got {arr.shape[0]}")
        return torch.from_numpy(arr)

    def step(self, actions: int | str | Sequence[int]) -> np.ndarray:
        """Advance every world one frame; returns (h, w, 3) uint8 for one world, else (B, h, w, 3)."""
        act = self._actions_tensor(actions)
        t0 = time.perf_counter()
        mem = self._memory_before_step()
        frames = self.rollout_state.step(act)
        if mem is not None:
            mem.observe(frames[:, None], act[:, None])
        out = to_uint8(frames).cpu().numpy()
        self.last_step_ms = (time.perf_counter() - t0) * 1000
        self.steps += 1
        self.world_steps = [n + 1 for n in self.world_steps]
        self.frame = out
        return out[0] if self.batch == 1 else out

    def rollout(self, actions: np.ndarray, context: np.ndarray | None = None,
                context_actions: np.ndarray | None = None, seed: int | None = None,
                chunk: int = 1) -> np.ndarray:
        """Imagine B trajectories: actions (B, T) -> frames (B, T, h, w, 3) uint8. Starts from
        `context` (or the real game at `seed`) when given, else continues the current worlds.
        `chunk` > 1 generates that many frames jointly per model call."""
        actions = np.asarray(actions)
        if actions.ndim == 1 + (self.space.kind != "discrete"):
            actions = actions[None]
        if context is not None or seed is not None:
            self.reset(seed=seed, context=context, actions=context_actions)
        elif self.frame is None:
            raise RuntimeError("rollout needs context or seed on a session that was never reset")
        if actions.shape[0] != self.batch:
            raise ActionError(f"actions are for {actions.shape[0]} worlds, the session has {self.batch}")
        acts = torch.from_numpy(self.space.validate(actions))
        out = []
        for s in range(0, acts.shape[1], chunk):
            mem = self._memory_before_step()
            frames = self.rollout_state.chunk(acts[:, s:s + chunk])
            if mem is not None:
                mem.observe(frames, acts[:, s:s + chunk])
            out.append(to_uint8(frames).cpu().numpy())
        result = np.concatenate(out, 1)
        self.steps += result.shape[1]
        self.world_steps = [n + result.shape[1] for n in self.world_steps]
        self.frame = result[:, -1]
        return result
