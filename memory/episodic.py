"""`EpisodicMemory`: what a session owns to remember the world it imagines.

    memory = EpisodicMemory(model, cfg, MemoryConfig())
    rollout.model = memory.model          # the denoiser with the adapter, for inference
    memory.reset(context, actions)        # per episode: the adapter back to an exact no-op
    memory.before_step()                  # each frame: swap in newer adapter weights (never waits)
    memory.observe(frames, actions)       # each frame: hand what was generated to the learner
    memory.save(dir); memory.load(dir)    # peft adapter format

`threaded=True` (play) learns in a background worker; `threaded=False` (benchmarks, tests)
updates inline after every `update_every` frames, deterministically. The base model passed in is
never modified: the inference model and the learner's model are copies with frozen base weights.

With `merge` (the default) the inference copy runs with peft's adapter path switched off and the
adapter merged into the targeted weights (W0 + scale * B @ A, from a pristine W0) whenever new
adapter weights arrive: a frame then costs what it costs without memory. B = 0 gives W0 exactly.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import Tensor

from memory.config import MemoryConfig
from memory.fast_learner import FastLearner
from memory.lora import (add_lora, copy_lora, load_lora, lora_tensors, pristine_weights,
                         reset_lora, save_lora, set_lora_enabled, write_merged)
from memory.worker import FrameRing, MemoryWorker
from worldmodel.config import Config
from worldmodel.dynamics import Denoiser


class EpisodicMemory:
    """A temporal LoRA fast-learned from the frames of one world (see module docstring)."""

    def __init__(self, base: Denoiser, cfg: Config, mcfg: MemoryConfig | None = None,
                 threaded: bool = True, batch: int = 1, base_name: str | None = None,
                 enabled: bool = True):
        if batch != 1:
            raise ValueError(f"episodic memory holds one world; the session has {batch}")
        self.cfg = cfg
        self.mcfg = mcfg or MemoryConfig()
        self.base_name = base_name
        self.model = add_lora(copy.deepcopy(base), self.mcfg).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.lora = lora_tensors(self.model)
        self._pristine = pristine_weights(self.model) if self.mcfg.merge else None
        self.learner = FastLearner(base, cfg.diffusion, self.mcfg, cfg.model.action_space)
        self.ring = FrameRing(self.mcfg.buffer_frames, batch, cfg.model.frame_size)
        self.threaded = threaded
        self.worker: MemoryWorker | None = None
        if threaded:
            # torch keeps one global thread count that threads initialise from; pin the frame
            # loop's own before the worker lowers the global one for itself.
            torch.set_num_threads(torch.get_num_threads())
            self.worker = MemoryWorker(self.learner, self.ring, self.lora, self.mcfg.update_every,
                                       self.mcfg.worker_threads, self.mcfg.worker_nice)
        self._applied = 0  # worker version in the inference adapter
        self._trained_at = 0  # ring count at the last inline update
        self._window_f = torch.zeros(batch, self.mcfg.window, *self.ring.frames.shape[2:])
        self._window_a = torch.full((batch, self.mcfg.window), -1, dtype=torch.long)
        self.enabled = False
        self.frames_seen = 0
        self.hook_ms_max = 0.0  # the longest the frame loop spent in memory hooks
        self.set_enabled(enabled)

    # -- switches --------------------------------------------------------------------------
    def set_enabled(self, on: bool) -> None:
        """On: learn from observed frames and apply the adapter. Off: learning pauses and the
        adapter is bypassed (the model computes the base outputs); what it learned is kept."""
        self.enabled = bool(on)
        self._apply()
        if self.worker is not None:
            if self.enabled:
                self.worker.start()
            self.worker.set_active(self.enabled)

    def _apply(self) -> None:
        """Make the inference model reflect its adapter tensors and the on/off switch."""
        if self._pristine is None:
            set_lora_enabled(self.model, self.enabled)
        else:
            set_lora_enabled(self.model, False)
            write_merged(self.model, self._pristine, self.enabled)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the worker thread; True if it exited in time."""
        if self.worker is None:
            return True
        self.worker.set_active(False)
        return self.worker.close(timeout)

    # -- the frame loop ----------------------------------------------------------------------
    def _check_worker(self) -> None:
        if self.worker is not None and self.worker.error is not None:
            err, self.worker.error = self.worker.error, None
            raise RuntimeError(f"memory worker failed: {err!r}") from err

    def before_step(self) -> None:
        """Swap in the newest adapter the worker published (if the lock is free right now)."""
        if self.worker is None or not self.enabled:
            return
        t0 = time.perf_counter()
        self._check_worker()
        version = self.worker.swap_into(self._applied)
        if version != self._applied:
            self._applied = version
            self._apply()
        self._hook_time(t0)

    def observe(self, frames: Tensor, actions: Tensor) -> None:
        """Frames just generated (b, n, 3, h, w) in [-1, 1] and the actions (b, n) behind them."""
        if not self.enabled:
            return
        t0 = time.perf_counter()
        self.ring.push(frames.detach().float().cpu(), torch.as_tensor(actions).cpu())
        self.frames_seen += frames.shape[1]
        if self.worker is not None:
            self.worker.notify()
            self._hook_time(t0)
        elif self.ring.count - self._trained_at >= self.mcfg.update_every:
            self.update_now()

    def update_now(self) -> float:
        """One inline update on the newest window, applied at once (the synchronous path)."""
        if self.worker is not None:
            raise RuntimeError("update_now is for a memory built with threaded=False")
        k, self._trained_at = self.ring.latest(self._window_f, self._window_a)
        if k < 2:
            return float("nan")
        loss = self.learner.update(self._window_f[:, -k:], self._window_a[:, -k:])
        copy_lora(self.learner.params, self.lora)
        self._apply()
        return loss

    def _hook_time(self, t0: float) -> None:
        self.hook_ms_max = max(self.hook_ms_max, (time.perf_counter() - t0) * 1000)

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self, context: Tensor | None = None, actions: Tensor | None = None) -> None:
        """A new episode: the adapter back to zeros (outputs equal the base model's exactly);
        `context` frames (b, n, 3, h, w) with their actions (b, n) seed what it learns first."""
        self.ring.clear()
        self._trained_at = 0
        self._rewrite(lambda: reset_lora(self.model, self.mcfg.seed))
        if context is not None:
            if actions is None:
                actions = torch.full(context.shape[:2], -1, dtype=torch.long)
            if self.enabled:
                self.ring.push(context.detach().float().cpu(), torch.as_tensor(actions).cpu())
        self.frames_seen = 0

    def _rewrite(self, fn) -> None:
        """Change the inference adapter and restart the learner from it, with nothing in flight
        from before surviving."""
        if self.worker is None:
            fn()
            self.learner.reset()
            copy_lora(self.lora, self.learner.params)
        else:
            with self.worker.swap_lock:
                fn()
                self._applied = self.worker.new_epoch()
            self.worker.notify()
        self._apply()

    def save(self, path: str | Path) -> Path:
        """The adapter in peft's format (adapter_model.safetensors + adapter_config.json)."""
        meta = {"frames_seen": str(self.frames_seen), "base": str(self.base_name or "")}
        return save_lora(self.model, self.mcfg, path, base=self.base_name, meta=meta)

    def load(self, path: str | Path) -> dict[str, str]:
        """Resume a saved memory: inference adapter and learner both start from it."""
        meta: dict[str, str] = {}

        def fill() -> None:
            meta.update(load_lora(self.model, path))

        self._rewrite(fill)
        return meta

    @property
    def stats(self) -> dict[str, float]:
        w = self.worker
        learner = self.learner
        return {"enabled": float(self.enabled), "frames_seen": float(self.frames_seen),
                "updates": float(w.updates if w else learner.updates),
                "skipped": float(w.skipped if w else 0),
                "loss": w.last_loss if w else learner.last_loss,
                "update_ms": (w.update_s * 1000) if w else 0.0,
                "hook_ms_max": self.hook_ms_max}
