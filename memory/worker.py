"""Off the frame loop: a fixed ring of recent frames and the thread that fast-learns from it.

The frame loop only ever does O(1) work for memory: `FrameRing.push` copies the new frame into a
preallocated slot (dropping the oldest), and `MemoryWorker.swap_into` copies the newest published
adapter into the inference model if the lock is free at that instant (else it keeps the old one
for a frame). The worker thread waits for `update_every` new frames, copies the last `window`
frames out of the ring, runs one update, and publishes the adapter into a preallocated buffer.
When it falls behind it skips to the newest window: nothing queues up, nothing grows.

Resets and loads bump an epoch; an update that started in an older epoch is thrown away, and the
worker re-seeds its learner from the inference adapter before it trains again.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import torch
from torch import Tensor

from memory.fast_learner import FastLearner
from memory.lora import copy_lora

log = logging.getLogger(__name__)


class FrameRing:
    """The last `capacity` frames of B worlds, (b, 3, h, w) floats, with the actions that made
    them (b,) ints (negative: none). Preallocated; `count` is frames pushed since `clear`."""

    def __init__(self, capacity: int, batch: int, size: int):
        self.capacity = capacity
        self.frames = torch.zeros(capacity, batch, 3, size, size)
        self.actions = torch.full((capacity, batch), -1, dtype=torch.long)
        self.count = 0
        self.lock = threading.Lock()

    def push(self, frames: Tensor, actions: Tensor) -> None:
        """frames (b, n, 3, h, w), actions (b, n)."""
        assert frames.ndim == 5 and frames.shape[0] == self.frames.shape[1], frames.shape
        with self.lock:
            for i in range(frames.shape[1]):
                slot = self.count % self.capacity
                self.frames[slot].copy_(frames[:, i])
                self.actions[slot].copy_(torch.as_tensor(actions)[:, i])
                self.count += 1

    def clear(self) -> None:
        with self.lock:
            self.count = 0

    def latest(self, frames_out: Tensor, actions_out: Tensor) -> tuple[int, int]:
        """Copy the newest frames into the tails of frames_out (b, n, ...) / actions_out (b, n).
        Returns (frames copied, count at the time)."""
        n = frames_out.shape[1]
        with self.lock:
            k = min(n, self.count, self.capacity)
            for j in range(k):
                slot = (self.count - k + j) % self.capacity
                frames_out[:, n - k + j].copy_(self.frames[slot])
                actions_out[:, n - k + j].copy_(self.actions[slot])
            return k, self.count


def configure_worker_thread(threads: int, nice: int) -> None:
    """Give the calling (worker) thread fewer torch threads and a lower priority, so it takes
    what the frame loop leaves. Linux applies `setpriority` to one thread (its tid)."""
    if threads > 0:
        torch.set_num_threads(threads)
    if nice > 0 and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as e:  # not permitted here: run at normal priority
            log.warning("memory worker: cannot renice (%s)", e)


class MemoryWorker:
    """Runs `learner.update` on the newest window of `ring` in a daemon thread."""

    def __init__(self, learner: FastLearner, ring: FrameRing, target: dict[str, Tensor],
                 update_every: int = 1, threads: int = 1, nice: int = 0):
        self.learner = learner
        self.ring = ring
        self.target = target  # the inference model's adapter tensors (read on epoch change)
        self.update_every = update_every
        self.threads = threads
        self.nice = nice
        window = learner.mcfg.window
        b = ring.frames.shape[1]
        self._frames = torch.zeros(b, window, *ring.frames.shape[2:])
        self._actions = torch.full((b, window), -1, dtype=torch.long)
        self.published = {k: v.detach().clone() for k, v in learner.params.items()}
        self.swap_lock = threading.Lock()
        self.wake = threading.Condition()
        self.version = 0  # bumped on each publish (under swap_lock)
        self.epoch = 0  # bumped by reset/load (under swap_lock)
        self.active = False
        self.updates = 0
        self.skipped = 0  # windows the worker never trained on because it was behind
        self.last_loss = float("nan")
        self.update_s = 0.0  # duration of the last update
        self.error: BaseException | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- frame-loop side -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="memory-worker", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        with self.wake:
            self.wake.notify()

    def set_active(self, active: bool) -> None:
        self.active = active
        self.notify()

    def swap_into(self, applied_version: int) -> int:
        """Copy the newest published adapter into the inference one, if there is a newer one and
        the lock is free right now. Returns the version now applied. Never waits."""
        if self.version == applied_version or not self.swap_lock.acquire(blocking=False):
            return applied_version
        try:
            copy_lora(self.published, self.target)
            return self.version
        finally:
            self.swap_lock.release()

    def new_epoch(self) -> int:
        """After the caller rewrote the inference adapter (reset/load): drop what is in flight,
        restart the learner from the inference adapter. Call with swap_lock held."""
        self.epoch += 1
        return self.version

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it has exited within `timeout` seconds."""
        self._stop = True
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            alive = self._thread.is_alive()
            if not alive:
                self._thread = None
            return not alive
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- worker side -----------------------------------------------------------------------
    def _ready(self, seen: int) -> bool:
        return self.active and self.ring.count >= 2 and self.ring.count - seen >= self.update_every

    def _run(self) -> None:
        configure_worker_thread(self.threads, self.nice)
        seen, epoch = 0, -1
        try:
            while True:
                with self.wake:
                    while not self._stop and not (self._ready(seen) or epoch != self.epoch):
                        self.wake.wait(timeout=0.25)
                if self._stop:
                    return
                with self.swap_lock:
                    if epoch != self.epoch:
                        epoch = self.epoch
                        seen = 0
                        self.learner.reset()
                        copy_lora(self.target, self.learner.params)
                if not self._ready(seen):
                    continue
                k, count = self.ring.latest(self._frames, self._actions)
                if k < 2:
                    continue
                self.skipped += max(0, count - seen - self.update_every)
                seen = count
                t0 = time.perf_counter()
                loss = self.learner.update(self._frames[:, -k:], self._actions[:, -k:])
                self.update_s = time.perf_counter() - t0
                with self.swap_lock:
                    if epoch == self.epoch:
                        copy_lora(self.learner.params, self.published)
                        self.version += 1
                        self.updates += 1
                        self.last_loss = loss
        except BaseException as e:  # surfaced to the frame loop by EpisodicMemory
            self.error = e
            log.exception("memory worker failed")
