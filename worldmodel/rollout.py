"""Autoregressive generation over a sliding context window with a KV cache.

A `Rollout` holds the inference state of B worlds: the KV cache of the last `context` frames and
the last frame as it was written (lightly noised, at `DiffusionConfig.context_noise`). Each new
frame costs `sample_steps` denoising passes over its own pixels, plus one half-network pass that
writes the finished frame into the cache (Self-Forcing's "re-run at the context level").

Schedules: `step(actions)` generates one frame per call (interactive); `chunk(actions)` generates
f_g frames jointly after the f_p context frames in the cache (masked-conditional chunks).

`reset_worlds` restarts some worlds of the batch and leaves the others exactly as they were
(cache rows, last frames, noise streams), so a world's trajectory never depends on whether its
neighbours restarted.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor

from worldmodel.actions import ActionSpace, get_action_space
from worldmodel.config import Config
from worldmodel.data.dataset import to_uint8
from worldmodel.diffusion import add_noise, denoise_chunk
from worldmodel.dynamics import Conditioning, Denoiser, KVCache
from worldmodel.known import known_pixels
from worldmodel.pipeline import Frame, Stage


def autocast_for(device: torch.device, bf16: bool | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (None = on CUDA only: CPU defaults to fp32 for fidelity)."""
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def take_rows(old: Tensor, new: Tensor, idx: Tensor, batch: int) -> Tensor:
    """World-major rows (batch * m, ...): worlds `idx` from `new`, the others from `old`."""
    out = old.reshape(batch, -1, *old.shape[1:]).clone()
    out[idx] = new.reshape(batch, -1, *new.shape[1:])[idx].to(out.dtype)
    return out.reshape(old.shape)


class Rollout:
    """Inference state for B worlds; see module docstring. Frames are float (b, n, 3, h, w)."""

    def __init__(self, model: Denoiser, cfg: Config, context: int | None = None,
                 seed: int = 0, bf16: bool | None = None):
        self.model = model
        self.cfg = cfg
        self.dcfg = cfg.diffusion
        self.space: ActionSpace = get_action_space(cfg.model.action_space)
        self.context = context or cfg.data.window - 1
        self.device = next(model.parameters()).device
        self.bf16 = bf16
        self.seed = seed
        self.gens: list[torch.Generator] = []  # one noise stream per world: a batched world
        # draws exactly what the same world would draw alone
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormals slow x86 fp32 math several-fold
            # channels-last convolutions: ~10% faster a step on x86 CPUs (measured with
            # worldmodel.evaluation.bench); the weights are the same numbers
            model.to(memory_format=torch.channels_last)
        self.cache = KVCache(max_len=self.context)
        self.last: Tensor | None = None  # last frame as written to the cache (noised)
        self.last_clean: Tensor | None = None  # the same frame, clean (the residual's anchor)
        self.batch = 0
        # A view memory (the game's, `Game.view_memory`, set by its owner) for a model.view_memory
        # model: every frame is recorded at its pose, and the worlds it has switched on are
        # conditioned on what it knows around them. None: the model draws with an empty memory.
        self.view = None
        # The game's stages of the frame pipeline (worldmodel.pipeline), as the checkpoint loaded
        # them, and what they keep from one chunk for the next (cleared when real frames arrive).
        self.stages: list[Stage] = list(model.stages)
        self.stage_state: dict = {}
        # What a stage keeps per world for as long as the world goes on (its `key`: Crafter's
        # player state behind the status rows), saved with the world as stage.<key> tensors;
        # empty for a world just started from real frames (the stage reads it from them).
        self.world_stage: list[dict[str, Tensor]] = []
        # Each world's step in its episode of its last frame (the real context's last frame
        # at reset, then one more per frame drawn): a game's stage may follow the game's clock.
        self.clock: list[int] = []

    def reseed(self, seeds: list[int]) -> None:
        """Restart the noise stream of each world (world i from seeds[i])."""
        self.gens = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    def _noise(self, shape: tuple[int, ...]) -> Tensor:
        assert shape[0] == len(self.gens), (shape, len(self.gens))
        return torch.stack([torch.randn(shape[1:], generator=g, device=self.device)
                            for g in self.gens])

    def encode_actions(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """(b, n) ints (or (b, n, A) vectors); negative ints mean "no action" (null)."""
        actions = torch.as_tensor(actions, device=self.device)
        if self.space.kind == "discrete":
            drop = actions < 0
            return self.space.encode(actions.clamp(min=0)), drop
        return self.space.encode(actions), torch.zeros(actions.shape[:2], dtype=torch.bool,
                                                      device=self.device)

    def no_actions(self, b: int, n: int) -> Tensor:
        """(b, n) "no action" for a discrete space (-1: the null action), (b, n, dim) zeros (no
        button, no camera move) for a continuous one."""
        if self.space.kind == "discrete":
            return torch.full((b, n), -1, dtype=torch.long)
        return torch.zeros(b, n, self.space.dim)

    @property
    def uses_view(self) -> bool:
        """A canvas view memory (the game's, for a memory-stem model)."""
        return self.view is not None and self.model.memory_stem is not None

    @property
    def uses_poses(self) -> bool:
        """A view memory of frames kept by pose (worldmodel.recall.RecallMemory): known pixels
        (worldmodel.known) for any model, recalled frames for a recall model."""
        return self.view is not None and self.model.memory_stem is None

    @property
    def uses_recall(self) -> bool:
        """A view memory recalled by a recall model (worldmodel.recall)."""
        return self.uses_poses and getattr(self.model, "recall_pose", None) is not None

    @torch.inference_mode()
    def reset(self, frames: Tensor, actions: Tensor | None = None,
              seeds: list[int] | None = None, clock: list[int] | None = None) -> None:
        """Start B worlds from real context frames (b, n, 3, h, w) and the actions that produced
        them (b, n; actions[:, 0] is ignored). The KV cache keeps the last `context` frames; a
        view memory records all of them. `seeds` restarts each world's noise stream; otherwise
        the streams go on (the first reset seeds world i with `seed + i`). `clock`: each world's
        episode step of its last context frame (default n - 1: the context starts an episode)."""
        frames = frames.to(self.device)
        b, n_all = frames.shape[:2]
        self.clock = [n_all - 1] * b if clock is None else [int(c) for c in clock]
        if actions is None:
            actions = self.no_actions(b, n_all)
        actions = torch.as_tensor(actions)
        given = actions.clone()
        if given.dtype == torch.long:
            given[:, 0] = -1
        if self.uses_view:
            self.view.reset()
            self.view.track(frames, given)
        if self.uses_poses:  # every context frame at its pose (the first at the start pose)
            self.view.reset()
            if self.uses_recall:
                self.view.encoder = self.model
            self.view.track(frames, given)
        frames = frames[:, -self.context:]
        n = frames.shape[1]
        if seeds is not None:
            self.reseed(seeds)
        elif len(self.gens) != b:
            self.reseed([self.seed + i for i in range(b)])
        actions = actions[:, -n:].clone()
        if actions.dtype == torch.long:
            actions[:, 0] = -1
        self.batch = b
        self.world_stage = [{} for _ in range(b)]
        self.cache.reset()
        self._commit(frames, actions, first=True)

    def _commit(self, frames: Tensor, actions: Tensor, first: bool = False) -> None:
        ctx = self._write(frames, actions, self._noise(frames.shape), self.cache, first)
        self.last = ctx[:, -1:]
        self.last_clean = frames[:, -1:]
        self.stage_state = {}

    def _write(self, frames: Tensor, actions: Tensor, noise: Tensor, cache: KVCache,
               first: bool) -> Tensor:
        """Write frames (b, n, ...), noised to the context level with `noise`, into `cache`;
        returns them as written."""
        b, n = frames.shape[:2]
        sigma = self.dcfg.context_noise
        t = torch.full((b, n), sigma, device=self.device)
        ctx = add_noise(frames, t, noise)
        t_prev = t.clone()
        if first:
            prev = torch.cat([torch.zeros_like(ctx[:, :1]), ctx[:, :-1]], 1)
            has_prev = torch.ones(b, n, dtype=torch.bool, device=self.device)
            has_prev[:, 0] = False
            t_prev[:, 0] = 1.0  # no frame before: pure noise, as training_loss conditions it
        else:
            prev = torch.cat([self.last, ctx[:, :-1]], 1)
            has_prev = torch.ones(b, n, dtype=torch.bool, device=self.device)
        act, drop = self.encode_actions(actions)
        with autocast_for(self.device, self.bf16):
            self.model(ctx, prev, t, t_prev, has_prev, act, drop, cache=cache, commit=True)
        return ctx

    @torch.inference_mode()
    def reset_worlds(self, worlds: list[int], frames: Tensor, actions: Tensor | None = None,
                     seeds: list[int] | None = None, clock: list[int] | None = None) -> None:
        """Restart worlds `worlds` (sorted indices) from real context frames (k, n, 3, h, w),
        n the frames the cache holds now, and their actions (k, n); the other worlds go on
        untouched. `seeds` restarts the restarted worlds' noise streams (else they go on).

        The new context is written through one batched pass into a scratch cache (the other
        rows get no noise drawn and are thrown away), and the restarted rows replace theirs in
        the live cache. Attention sees only frame distances, so rows written at positions
        0..n-1 serve beside rows at the live cache's positions."""
        if self.last is None:
            raise RuntimeError("reset(context) before restarting worlds")
        k, n = frames.shape[:2]
        held = self.cache.positions.numel()
        if k != len(worlds) or n != held:
            raise ValueError(f"restarting {len(worlds)} world(s) takes ({len(worlds)}, {held}, "
                             f"3, h, w) frames (what the cache holds), got {tuple(frames.shape)}")
        if seeds is not None:
            for i, s in zip(worlds, seeds):
                self.gens[i] = torch.Generator(self.device).manual_seed(int(s))
        for j, w in enumerate(worlds):  # as reset: the context's last frame's step
            self.clock[w] = n - 1 if clock is None else int(clock[j])
            self.world_stage[w] = {}
        idx = torch.as_tensor(worlds, device=self.device)
        full = torch.zeros((self.batch, *frames.shape[1:]), device=self.device)
        full[idx] = frames.to(self.device, full.dtype)
        noise = torch.zeros_like(full)
        noise[idx] = torch.stack([torch.randn(full.shape[1:], generator=self.gens[i],
                                              device=self.device) for i in worlds])
        given = self.no_actions(k, n) if actions is None else torch.as_tensor(actions).clone()
        if given.dtype == torch.long:  # as in reset: frame 0's action is not given
            given[:, 0] = -1
        acts = self.no_actions(self.batch, n).to(given.dtype)
        acts[torch.as_tensor(worlds)] = given
        if self.view is not None:
            self.view.reset(worlds)
            self.view.track(frames.to(self.device), given, worlds)
        scratch = KVCache(max_len=self.context)
        ctx = self._write(full, acts, noise, scratch, first=True)
        for name, lc in self.cache.layers.items():
            new = scratch.layers[name]
            lc.k, lc.v = (take_rows(old, fresh, idx, self.batch)
                          for old, fresh in ((lc.k, new.k), (lc.v, new.v)))
        self.last = take_rows(self.last, ctx[:, -1:], idx, self.batch)
        self.last_clean = take_rows(self.last_clean, full[:, -1:], idx, self.batch)
        self.stage_state = {}

    def world_state(self, world: int) -> dict[str, Tensor]:
        """Everything world `world` generates from next, as CPU tensors: its rows of the KV
        cache, its last frame (as written and clean) and its noise stream's state. With
        `load_world_state` a world resumes exactly (the same next frames)."""
        if self.last is None:
            raise RuntimeError("reset(context) before saving a world")
        out = {"last": self.last[world].cpu(), "last_clean": self.last_clean[world].cpu(),
               "noise_state": self.gens[world].get_state(),
               "clock": torch.tensor([self.clock[world]], dtype=torch.int64)}
        for key, t in self.world_stage[world].items():
            out[f"stage.{key}"] = t.cpu()
        for name, lc in self.cache.layers.items():
            for kv, t in (("k", lc.k), ("v", lc.v)):
                out[f"cache.{name}.{kv}"] = t.reshape(self.batch, -1, *t.shape[1:])[world].cpu()
        return out

    def check_world_state(self, state: dict[str, Tensor]) -> None:
        """ValueError unless `state` is a `world_state` this rollout can resume: every cache
        layer of this model with its k and v of this rollout's shape (the frames it holds), the
        last frames of this frame size, a noise state this device's generator takes. Changes
        nothing (a load checks it all before it applies any of it)."""
        if self.last is None:
            raise RuntimeError("reset(context) before resuming a world")
        held = self.cache.positions.numel()
        keys = {k for k in state if k.startswith("cache.")}
        names = sorted({k[len("cache."):].rsplit(".", 1)[0] for k in keys})
        if names != sorted(self.cache.layers):
            raise ValueError(f"the saved world's cache has layers {names[:8]}, this model's "
                             f"{sorted(self.cache.layers)[:8]}")
        for name in names:
            for kv in ("k", "v"):
                saved = state.get(f"cache.{name}.{kv}")
                if saved is None:
                    raise ValueError(f"the saved world's cache lacks {name}.{kv}")
                live = getattr(self.cache.layers[name], kv)
                want = live.reshape(self.batch, -1, *live.shape[1:]).shape[1:]
                if saved.shape != want:
                    raise ValueError(f"the saved world's cache layer {name}.{kv} is "
                                     f"{tuple(saved.shape)}, this rollout's {tuple(want)} "
                                     f"({held} frames)")
        if len(keys) != 2 * len(names):
            raise ValueError("the saved world's cache holds tensors other than k and v")
        keyed = {st.key: st for st in self.stages if st.key}
        for key in (k for k in state if k.startswith("stage.")):
            stage = keyed.get(key[len("stage."):])
            if stage is None:
                raise ValueError(f"the saved world holds {key[:60]!r}, a state no stage of this "
                                 f"model keeps ({sorted(keyed) or 'none'})")
            stage.check_saved(state[key])  # ValueError naming what is wrong
        clock = state.get("clock")  # absent in saves from before the clock
        if clock is not None and (clock.shape != (1,) or int(clock[0]) < 0):
            raise ValueError("the saved world's clock must be one step >= 0")
        for key, live in (("last", self.last), ("last_clean", self.last_clean)):
            saved = state.get(key)
            if saved is None or saved.shape != live.shape[1:]:
                raise ValueError(f"the saved world's {key} is "
                                 f"{None if saved is None else tuple(saved.shape)}, this "
                                 f"rollout's {tuple(live.shape[1:])}")
        noise = state.get("noise_state")
        try:
            torch.Generator(self.device).set_state(noise)  # a scratch generator
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"the saved world's noise_state does not fit this device's "
                             f"generator: {str(e)[:120]}") from None

    def load_world_state(self, world: int, state: dict[str, Tensor]) -> None:
        """Resume world `world` from `world_state` (of this model, at this context length): the
        other worlds go on untouched. The rollout must have been reset; a state whose cache holds
        a different number of frames than the live one is a ValueError."""
        if self.last is None:
            raise RuntimeError("reset(context) before resuming a world")
        self.check_world_state(state)  # everything, before anything changes
        for name in sorted(self.cache.layers):
            lc = self.cache.layers[name]
            for kv in ("k", "v"):
                saved = state[f"cache.{name}.{kv}"].to(self.device)
                live = getattr(lc, kv)
                rows = live.reshape(self.batch, -1, *live.shape[1:])
                rows = rows.clone()
                rows[world] = saved.to(rows.dtype)
                setattr(lc, kv, rows.reshape(live.shape))
        self.last = self.last.clone()
        self.last[world] = state["last"].to(self.device, self.last.dtype)
        self.last_clean = self.last_clean.clone()
        self.last_clean[world] = state["last_clean"].to(self.device, self.last_clean.dtype)
        if state.get("clock") is not None:
            self.clock[world] = int(state["clock"][0])
        self.gens[world].set_state(state["noise_state"])
        self.world_stage[world] = {k[len("stage."):]: t.clone() for k, t in state.items()
                                   if k.startswith("stage.")}
        self.stage_state = {}

    @torch.inference_mode()
    def chunk(self, actions: Tensor, moves: Tensor | None = None) -> Tensor:
        """Generate len(actions[0]) frames jointly; actions (b, n). Returns (b, n, 3, h, w).
        The frame pipeline (worldmodel.pipeline), stage by stage. With an anchor head, `moves`
        (b, n) are the decisions to draw instead of the head's (Crafter: the camera moves; a
        caller that knows them, as `memory.imagined` rolls the model along a real trip's)."""
        if self.last is None:
            raise RuntimeError("reset(context) before generating")
        actions = torch.as_tensor(actions)
        b, n = actions.shape[:2]
        if b != self.batch:
            raise ValueError(f"got actions for {b} worlds, the rollout holds {self.batch}")
        act, drop = self.encode_actions(actions)
        frame = Frame(actions, act, drop)
        if moves is not None:
            if self.model.move is None:
                raise ValueError("moves are given, but this model has no anchor head")
            frame.choice = torch.as_tensor(moves, device=self.device).reshape(b, n)
        canvas = self.uses_view or any(st.needs_canvas for st in self.stages)
        if canvas:
            self._choose(frame)  # once per frame, from the anchor and the action
            self._read_memory(frame)  # the canvas around the anchor's pose
        for stage in self.stages:
            stage.before(self, frame)  # Crafter: the land prior
        if self.uses_poses:  # the poses the frames will have, and what was seen from there
            acts = actions.cpu().numpy()
            targets = np.stack([self.view.advance(acts[:, i]) for i in range(n)], 1)
            if self.uses_recall:
                frame.recall = self.view.condition(targets)
            frame.known = known_pixels(self.view, targets, self.last.shape[-1])
        self._denoise(frame, canvas)
        return self._finish(frame, actions)

    def _finish(self, frame: Frame, actions: Tensor) -> Tensor:
        """A chunk's frames drawn: the stages after the sampler, the view memory, the cache
        write, the shown frames."""
        n = frame.act.shape[1]
        for stage in self.stages:
            stage.after(self, frame)  # Crafter: the codebook snap
        if self.uses_view:
            for i in range(n):  # each frame at the pose its choice gives
                self.view.advance(frame.choice[:, i])
                self.view.write(frame.frames[:, i])
        if self.uses_poses:  # the last frame at the pose reached
            if self.uses_recall:
                self.view.encoder = self.model
            self.view.write(frame.frames[:, -1])
        self._commit(frame.frames, actions)
        self.stage_state = frame.state
        for stage in self.stages:
            stage.show(self, frame)  # Crafter: the daylight (what is shown, not remembered)
        self.clock = [c + n for c in self.clock]
        return frame.frames if frame.shown is None else frame.shown

    @torch.inference_mode()
    def stream(self, actions: Tensor) -> Tensor:
        """Generate len(actions[0]) frames with the progressive sampler (PA-VDM): K =
        `diffusion.progressive_window` frames are in flight at once, the oldest least noisy;
        each network call lowers every one of them by 1/K and emits the oldest, now clean
        (after K - 1 calls that fill the window: n + K - 1 calls for n frames). A frame ahead is
        conditioned on its action from the start, so the whole action sequence is given up
        front: headless rollouts (planners, evaluation), not the live window, whose next action
        is not known yet. Each emitted frame goes through the stages after the sampler and is
        written to the cache as `chunk` writes it. actions (b, n); returns (b, n, 3, h, w)."""
        if self.last is None:
            raise RuntimeError("reset(context) before generating")
        if self.model.move is not None:
            raise ValueError("the progressive sampler needs a model without an anchor head: "
                             "an anchor head composes each frame from the clean frame before "
                             "it, which a frame ahead in the window does not have yet")
        if self.view is not None or any(st.needs_canvas for st in self.stages):
            raise ValueError("the progressive sampler does not draw with a view memory")
        actions = torch.as_tensor(actions)
        b, n = actions.shape[:2]
        if b != self.batch:
            raise ValueError(f"got actions for {b} worlds, the rollout holds {self.batch}")
        k_win = self.dcfg.progressive_window
        act, drop = self.encode_actions(actions)
        h = self.last.shape[-1]
        frames: list[Tensor] = []
        flight: list[Tensor] = []  # in-flight frames, oldest first, at levels left[i] / K
        left: list[int] = []
        entered = 0
        while len(frames) < n:
            if entered < n and len(flight) < k_win:
                flight.append(self._noise((b, 1, 3, h, h)))
                left.append(k_win)
                entered += 1
            first = len(frames)  # the frame index of the oldest in flight
            x = torch.cat(flight, 1)
            m = x.shape[1]
            lv = torch.tensor(left, dtype=torch.float32, device=self.device) / k_win
            t = lv[None].expand(b, m)
            prev = torch.cat([self.last, x[:, :-1]], 1)
            t_prev = torch.cat([torch.full((b, 1), self.dcfg.context_noise, device=self.device),
                                t[:, :-1]], 1)
            has_prev = torch.ones(b, m, dtype=torch.bool, device=self.device)
            cond = Conditioning(anchor=self.last_clean)
            with autocast_for(self.device, self.bf16):
                x0 = self.model(x, prev, t, t_prev, has_prev, act[:, first:first + m],
                                drop[:, first:first + m], cache=self.cache,
                                conditioning=cond).float().clamp(-1, 1)
            nxt = (lv - 1 / k_win).clamp(min=0)[None, :, None, None, None]
            eps = (x - (1 - lv[None, :, None, None, None]) * x0) / lv[None, :, None, None, None]
            x = (1 - nxt) * x0 + nxt * eps
            flight = list(x.split(1, 1))
            left = [r - 1 for r in left]
            if left[0] == 0:  # the oldest is clean: emitted and written as context
                frame = Frame(actions[:, first:first + 1], act[:, first:first + 1],
                              drop[:, first:first + 1])
                frame.frames = x0[:, :1]
                frames.append(self._finish(frame, actions[:, first:first + 1]))
                flight, left = flight[1:], left[1:]
        return torch.cat(frames, 1)

    def _choose(self, frame: Frame) -> None:
        """The anchor head's decision for every frame of the chunk, from the clean anchor."""
        if frame.choice is None:
            b, n = frame.act.shape[:2]
            anchor = self.last_clean[:, 0].repeat_interleave(n, 0)  # world-major
            logits = self.model.move(anchor, frame.act.flatten(0, 1), frame.drop.flatten(0, 1))
            frame.choice = logits.argmax(-1).view(b, n)

    def _read_memory(self, frame: Frame) -> None:
        """The view memory's canvas around the anchor's pose, or an empty one."""
        if self.uses_view:
            frame.memory = self.view.read()
        else:
            frame.memory = torch.zeros(self.batch, *self.model.canvas_shape(), device=self.device)

    def _denoise(self, frame: Frame, canvas: bool) -> None:
        b, n = frame.act.shape[:2]
        h = self.last.shape[-1]
        t_last = torch.full((b, 1), self.dcfg.context_noise, device=self.device)
        has_prev = torch.ones(b, 1, dtype=torch.bool, device=self.device)
        cond = Conditioning(anchor=self.last_clean, choice=frame.choice,
                            memory=frame.memory[:, None] if canvas else None,
                            recall=frame.recall, known=frame.known)
        with autocast_for(self.device, self.bf16):
            frame.frames = denoise_chunk(self.model, self.cache, self.last, t_last, has_prev,
                                         frame.act, frame.drop, self.dcfg,
                                         self._noise((b, n, 3, h, h)), cond).float()

    @torch.inference_mode()
    def append(self, frames: Tensor, actions: Tensor) -> None:
        """Teacher forcing: write real frames (b, n, 3, h, w) and the actions that made them
        (b, n) into the context, as if they had been generated (the oldest drop out)."""
        if self.last is None:
            raise RuntimeError("reset(context) before appending")
        frames = frames.to(self.device)
        if frames.ndim != 5 or frames.shape[0] != self.batch:
            raise ValueError(f"append takes frames (b={self.batch}, n, 3, h, w), got "
                             f"{tuple(frames.shape)}")
        if self.uses_view:  # each appended frame's pose read against the frame before it
            self.view.set_previous(to_uint8(self.last_clean[:, 0]).cpu().numpy())
            self.view.track(frames, actions)
        if self.uses_poses:
            if self.uses_recall:
                self.view.encoder = self.model
            self.view.track(frames, torch.as_tensor(actions))
        self._commit(frames, torch.as_tensor(actions))
        self.clock = [c + frames.shape[1] for c in self.clock]
        self.world_stage = [{} for _ in range(self.batch)]  # read again from the real frames

    def step(self, actions: Tensor) -> Tensor:
        """One frame per world: actions (b,) (or (b, dim) vectors) -> frames (b, 3, h, w)."""
        actions = torch.as_tensor(actions)
        return self.chunk(actions[:, None] if actions.ndim > 0 else actions.reshape(1, 1))[:, 0]
