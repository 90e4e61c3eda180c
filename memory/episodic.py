"""`EpisodicMemory`: what a session owns to remember the worlds it imagines.

    memory = EpisodicMemory(model, cfg, MemoryConfig(), batch=B)
    rollout.model = memory.model          # the denoiser with the adapters, for inference
    memory.set_enabled(True, worlds=[1])  # per world: learn from its frames, use its adapter
    memory.reset(context, actions)        # per episode (worlds=...): adapters an exact no-op
    memory.before_step()                  # each frame: swap in newer adapter weights (never waits)
    memory.observe(frames, actions)       # each frame: hand what was generated to the learners
    memory.save(dir, world=i); memory.load(dir, world=j)   # peft adapter format

Each world learns only from its own frames: it has its own `FastLearner` (a LoRA copy of the
denoiser with its Adam state) and frame ring, made the first time its memory goes on, so a batch
whose memory stays off costs nothing. `threaded=True` (play) learns in one background worker that
serves the worlds round-robin; `threaded=False` (benchmarks, tests) updates a world inline after
every `update_every` of its frames, deterministically. The base model passed in is never
modified: the inference model and the learners' models are copies with frozen base weights.

One world (B = 1): with `merge` (the default) the inference copy runs with peft's adapter path
switched off and the adapter merged into the targeted weights (W0 + scale * B @ A, from a pristine
W0) whenever new adapter weights arrive: a frame then costs what it costs without memory. B = 0
gives W0 exactly.

B > 1 worlds share one forward pass, so no adapter can be merged: `lora.BatchedLoRA` adds each
world's own LoRA term to that world's rows of every targeted layer (batched matmuls; worlds with
memory off are skipped, so their outputs are the base model's bit for bit). A world of a batch
then computes what it computes alone with B = 1, up to float rounding (unmerged vs merged).
"""

from __future__ import annotations

import copy
import logging
import numbers
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from memory.config import MemoryConfig
from memory.fast_learner import FastLearner
from memory.lora import (BatchedLoRA, add_lora, apply_lora, copy_lora, lora_tensors,
                         pristine_weights, read_lora, reset_lora_tensors, save_lora,
                         set_lora_enabled, write_merged)
from memory.worker import FrameRing, MemoryWorker, WorldSlot
from worldmodel.actions import get_action_space
from worldmodel.config import Config
from worldmodel.dynamics import Denoiser

Worlds = int | Iterable[int] | None
log = logging.getLogger(__name__)


def world_index(world: int, batch: int) -> int:
    """One world's index, checked against a batch of `batch` worlds."""
    if isinstance(world, bool) or not isinstance(world, numbers.Integral):
        raise ValueError(f"a world index must be an int, got {world!r}")
    if not 0 <= world < batch:
        raise ValueError(f"world {world} is out of range: there are {batch} world(s) "
                         f"(indices 0..{batch - 1})")
    return int(world)


def world_indices(worlds: Worlds, batch: int) -> list[int]:
    """None -> every world; an int or a sequence of ints -> those worlds (sorted, no repeats)."""
    if worlds is None:
        return list(range(batch))
    if isinstance(worlds, numbers.Integral) and not isinstance(worlds, bool):
        return [world_index(worlds, batch)]
    if isinstance(worlds, (str, bytes, dict)) or not isinstance(worlds, Iterable):
        raise ValueError(f"worlds must be None (all), a world index (int) or a list of ints, "
                         f"got {worlds!r:.200}")
    return sorted({world_index(w, batch) for w in worlds})


class EpisodicMemory:
    """Temporal LoRAs fast-learned from the frames of B worlds, one per world (see module
    docstring)."""

    def __init__(self, base: Denoiser, cfg: Config, mcfg: MemoryConfig | None = None,
                 threaded: bool = True, batch: int = 1, base_name: str | None = None,
                 enabled: bool = True):
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"episodic memory needs a batch of at least one world, got {batch!r}")
        self.cfg = cfg
        self.mcfg = mcfg or MemoryConfig()
        self.base_name = base_name
        self.batch = batch
        self._base = base  # the learners copy it when a world's memory first goes on
        self.model = add_lora(copy.deepcopy(base), self.mcfg).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pristine: dict[str, Tensor] | None = None
        self._batched: BatchedLoRA | None = None
        if batch == 1:
            self._pristine = pristine_weights(self.model) if self.mcfg.merge else None
            self._targets = [lora_tensors(self.model)]
        else:
            # The peft adapter stays off: each world's adapter lives in the batched stacks, and
            # the peft tensors only carry one world's adapter through save/load.
            set_lora_enabled(self.model, False)
            self._batched = BatchedLoRA(self.model, batch)
            self._targets = [self._batched.world_tensors(i) for i in range(batch)]
        self._slots: list[WorldSlot | None] = [None] * batch  # made when a world goes on
        self._on = [False] * batch
        self.threaded = threaded
        self.worker: MemoryWorker | None = None
        self.failure: str | None = None  # why memory switched itself off, until switched on
        if threaded:
            # torch keeps one global thread count that threads initialise from; pin the frame
            # loop's own before the worker lowers the global one for itself.
            torch.set_num_threads(torch.get_num_threads())
            self.worker = self._new_worker()
        self._last_loss = float("nan")  # of the last inline update
        self.hook_ms_max = 0.0  # the longest the frame loop spent in memory hooks
        self.set_enabled(enabled)

    # -- switches --------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True while any world has memory on."""
        return any(self._on)

    @property
    def worlds_enabled(self) -> list[bool]:
        """Memory on or off, per world."""
        return list(self._on)

    def set_enabled(self, on: bool, worlds: Worlds = None) -> None:
        """On: the worlds learn from their observed frames and generate with their adapters.
        Off: their learning pauses and they get the base model's outputs; what they learned is
        kept. `worlds`: None (all), an index or a list of indices."""
        on = bool(on)
        idx = world_indices(worlds, self.batch)
        if on and idx and self.failure is not None:
            self._replace_failed_worker()
        for i in idx:
            slot = self._slot(i) if on else self._slots[i]
            self._on[i] = on
            if slot is not None:
                slot.active = on
            self._apply(i)
        if self.worker is not None:
            if self.enabled:
                self.worker.start()
            self.worker.notify()

    def _new_worker(self) -> MemoryWorker:
        return MemoryWorker(self.mcfg.update_every, self.mcfg.worker_threads,
                            self.mcfg.worker_nice, self.mcfg.worker_duty)

    def _replace_failed_worker(self) -> None:
        """A fresh worker thread in place of the one that failed: every world's learner
        restarts from the adapter the world generates with (what the failed one had in flight,
        Adam state included, is dropped)."""
        if self.worker is not None:
            self.worker.close(timeout=0.0)
            self.worker = self._new_worker()
            for slot in self._slots:
                if slot is not None:
                    with slot.swap_lock:
                        MemoryWorker.new_epoch(slot)
                    self.worker.add(slot)
        self.failure = None

    def _slot(self, world: int) -> WorldSlot:
        """World `world`'s learner and ring, made on first use (a model copy: only for worlds
        that turn memory on). The learner starts from the world's inference adapter."""
        slot = self._slots[world]
        if slot is None:
            learner = FastLearner(self._base, self.cfg.diffusion, self.mcfg,
                                  self.cfg.model.action_space)
            space = get_action_space(self.cfg.model.action_space)
            ring = FrameRing(self.mcfg.buffer_frames, 1, self.cfg.model.frame_size,
                             None if space.kind == "discrete" else space.dim)
            slot = WorldSlot(world, learner, ring, self._targets[world])
            if self.worker is None:
                copy_lora(slot.target, learner.params)
            else:
                self.worker.add(slot)  # the worker seeds the learner from the target first
            self._slots[world] = slot
        return slot

    def _apply(self, world: int) -> None:
        """Make the inference model reflect a world's adapter tensors and its on/off switch."""
        on = self._on[world]
        if self._batched is not None:
            if self._batched.on[world] != on:
                self._batched.set_on(world, on)
        elif self._pristine is None:
            set_lora_enabled(self.model, on)
        else:
            set_lora_enabled(self.model, False)
            write_merged(self.model, self._pristine, on)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the worker thread; True if it exited in time."""
        if self.worker is None:
            return True
        for slot in self._slots:
            if slot is not None:
                slot.active = False
        return self.worker.close(timeout)

    # -- the frame loop ----------------------------------------------------------------------
    def _check_worker(self) -> None:
        """A worker that failed (its thread has ended) switches memory off for every world,
        visibly: `failure` says why and one warning is logged. Play goes on with the base model;
        `set_enabled(True)` starts a fresh worker."""
        if self.worker is None or self.worker.error is None or self.failure is not None:
            return
        err = self.worker.error
        self.failure = f"the memory worker failed: {type(err).__name__}: {err}"
        log.warning("episodic memory switched off: %s (switch it on to restart it)", self.failure)
        self.set_enabled(False)

    def before_step(self) -> None:
        """Swap in the newest adapters the worker published (each if its lock is free now)."""
        if self.worker is None or not self.enabled:
            return
        t0 = time.perf_counter()
        self._check_worker()
        for i, slot in enumerate(self._slots):
            if slot is not None and self._on[i] and self.worker.swap_into(slot):
                if self._batched is None:  # merged: rewrite the weights (stacks need nothing)
                    self._apply(i)
        self._hook_time(t0)

    def observe(self, frames: Tensor, actions: Tensor) -> None:
        """Frames just generated (B, n, 3, h, w) in [-1, 1] and the actions (B, n) behind them;
        each world with memory on keeps its own row."""
        worlds = [i for i, on in enumerate(self._on) if on]
        if not worlds:
            return
        if frames.ndim != 5 or frames.shape[0] != self.batch:
            raise ValueError(f"observe takes frames (B={self.batch}, n, 3, h, w), got "
                             f"{tuple(frames.shape)}")
        t0 = time.perf_counter()
        frames = frames.detach()
        actions = torch.as_tensor(actions)
        if len(worlds) < self.batch:  # copy only what is learned from
            frames, actions = frames[worlds], actions[worlds]
        frames, actions = frames.float().cpu(), actions.cpu()
        for j, i in enumerate(worlds):
            slot = self._slots[i]
            slot.ring.push(frames[j:j + 1], actions[j:j + 1])
            slot.frames_seen += frames.shape[1]
            if self.worker is None and slot.ring.count - slot.seen >= self.mcfg.update_every:
                self.update_now(i)
        if self.worker is not None:
            self.worker.notify()
            self._hook_time(t0)

    def update_now(self, world: int = 0) -> float:
        """One inline update of a world on its newest window, applied at once (the synchronous
        path)."""
        if self.worker is not None:
            raise RuntimeError("update_now is for a memory built with threaded=False")
        i = world_index(world, self.batch)
        slot = self._slots[i]
        if slot is None:
            raise RuntimeError(f"world {i} never had memory on: there is nothing to learn from")
        learned = slot.learn(self.mcfg.update_every)
        if learned is None:
            return float("nan")
        loss = learned[0]
        copy_lora(slot.learner.params, slot.target)
        self._apply(i)
        self._last_loss = loss
        return loss

    def _hook_time(self, t0: float) -> None:
        self.hook_ms_max = max(self.hook_ms_max, (time.perf_counter() - t0) * 1000)

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self, context: Tensor | None = None, actions: Tensor | None = None,
              worlds: Worlds = None) -> None:
        """A new episode for `worlds` (default all): their adapters back to zeros (outputs equal
        the base model's exactly). `context` frames (B, n, 3, h, w), a row per world of the batch,
        with their actions (B, n) seed what the worlds with memory on learn first."""
        idx = world_indices(worlds, self.batch)
        if context is not None:
            if context.ndim != 5 or context.shape[0] != self.batch:
                raise ValueError(f"context must be (B={self.batch}, n, 3, h, w), got "
                                 f"{tuple(context.shape)}")
            if actions is None:  # none given: -1 (discrete) or all buttons up (continuous)
                space = get_action_space(self.cfg.model.action_space)
                actions = (torch.full(context.shape[:2], -1, dtype=torch.long)
                           if space.kind == "discrete" else torch.zeros(*context.shape[:2], space.dim))
            context, actions = context.detach().float().cpu(), torch.as_tensor(actions).cpu()
        for i in idx:
            slot = self._slots[i]
            if slot is not None:
                slot.ring.clear()
                slot.frames_seen = 0
                if self.worker is None:
                    slot.seen = 0  # (the worker restarts its count itself on the new epoch)
            self._rewrite(i, lambda i=i: reset_lora_tensors(self._targets[i], self.mcfg.seed))
            if context is not None and self._on[i]:
                slot.ring.push(context[i:i + 1], actions[i:i + 1])

    def _rewrite(self, world: int, fn) -> None:
        """Change a world's inference adapter (`fn`) and restart its learner from it, with
        nothing in flight from before surviving."""
        slot = self._slots[world]
        if slot is None:
            fn()
        elif self.worker is None:
            fn()
            slot.restart()
        else:
            with slot.swap_lock:
                fn()
                self.worker.new_epoch(slot)
            self.worker.notify()
        self._apply(world)

    def save(self, path: str | Path, world: int = 0) -> Path:
        """A world's adapter, as it generates now, in peft's format (adapter_model.safetensors +
        adapter_config.json)."""
        i = world_index(world, self.batch)
        if self._batched is not None:  # the (switched-off) peft tensors carry it to the file
            copy_lora(self._targets[i], lora_tensors(self.model))
        slot = self._slots[i]
        meta = {"frames_seen": str(slot.frames_seen if slot else 0),
                "base": str(self.base_name or "")}
        return save_lora(self.model, self.mcfg, path, base=self.base_name, meta=meta)

    def load(self, path: str | Path, world: int = 0) -> dict[str, str]:
        """Resume a saved memory in world `world`: its inference adapter and learner both start
        from it (generation uses it while the world's memory is on). Returns the file's
        metadata. A missing, corrupt or foreign memory is a MemoryFileError and changes
        nothing."""
        world_index(world, self.batch)  # the index first: a bad one is told before any file
        state, meta = self.read(path)
        self.load_state(state, world)
        return meta

    def read(self, path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
        """(state, metadata) of a saved memory, checked against this adapter, not applied."""
        return read_lora(self.model, path)

    def load_state(self, state: dict[str, Tensor], world: int = 0) -> None:
        """Put a state `read` returned in world `world` (as `load`)."""
        i = world_index(world, self.batch)

        def fill() -> None:
            apply_lora(self.model, state)
            if self._batched is not None:
                copy_lora(lora_tensors(self.model), self._targets[i])

        self._rewrite(i, fill)

    # -- statistics ----------------------------------------------------------------------
    @property
    def learner(self) -> FastLearner:
        """World 0's learner (the one-world case); made on first use."""
        return self._slot(0).learner

    @property
    def frames_seen(self) -> int:
        """Frames learned from since the last reset, over all worlds."""
        return sum(s.frames_seen for s in self._slots if s is not None)

    def world_stats(self, world: int) -> dict[str, float]:
        """One world's switch, frames, updates and last loss."""
        i = world_index(world, self.batch)
        slot = self._slots[i]
        if slot is None:
            return {"enabled": 0.0, "frames_seen": 0.0, "updates": 0.0, "skipped": 0.0,
                    "loss": float("nan")}
        threaded = self.worker is not None
        return {"enabled": float(self._on[i]), "frames_seen": float(slot.frames_seen),
                "updates": float(slot.updates if threaded else slot.learner.updates),
                "skipped": float(slot.skipped),
                "loss": slot.last_loss if threaded else slot.learner.last_loss}

    @property
    def stats(self) -> dict[str, float]:
        w = self.worker
        slots = [s for s in self._slots if s is not None]
        return {"enabled": float(self.enabled), "worlds_on": float(sum(self._on)),
                "frames_seen": float(self.frames_seen),
                "updates": float(w.updates if w else sum(s.learner.updates for s in slots)),
                "skipped": float(w.skipped if w else 0),
                "loss": w.last_loss if w else self._last_loss,
                "update_ms": (w.update_s * 1000) if w else 0.0,
                "hook_ms_max": self.hook_ms_max}
