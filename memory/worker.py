"""Off the frame loop: fixed rings of recent frames and the thread that fast-learns from them.

Each world with memory has a `WorldSlot`: its own learner, frame ring, inference adapter (the
tensors generation reads) and a preallocated buffer the worker publishes into. The frame loop only
ever does O(1) work per world: `FrameRing.push` copies the new frame into a preallocated slot
(dropping the oldest), and `MemoryWorker.swap_into` copies the newest published adapter into the
inference one if the world's lock is free at that instant (else it keeps the old one for a frame).

One worker thread serves every world: round-robin over the worlds with `update_every` new frames,
it copies a world's last `window` frames out of its ring, runs one update of that world's learner,
and publishes the adapter. When it falls behind it skips to each world's newest window: nothing
queues up, nothing grows. With `duty` < 1 it rests after each update so that training takes at
most that share of wall time (a bound on what it costs the frame loop on a small CPU).

Resets and loads bump a world's epoch; an update that started in an older epoch is thrown away,
and the worker re-seeds that world's learner from its inference adapter before training it again.
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
    them: (b,) ints for a discrete space (negative: none), (b, action_dim) floats for a
    continuous one (buttons and camera deltas). Preallocated; `count` is frames pushed since
    `clear`."""

    def __init__(self, capacity: int, batch: int, size: int, action_dim: int | None = None):
        self.capacity = capacity
        self.frames = torch.zeros(capacity, batch, 3, size, size)
        self.actions = (torch.full((capacity, batch), -1, dtype=torch.long) if action_dim is None
                        else torch.zeros(capacity, batch, action_dim))
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

    def latest(self, frames_out: Tensor, actions_out: Tensor,
               back: int = 0) -> tuple[int, int]:
        """Copy the newest frames (ending `back` frames before the newest, clamped to what the
        ring holds) into the tails of frames_out (b, n, ...) / actions_out (b, n).
        Returns (frames copied, count at the time)."""
        n = frames_out.shape[1]
        with self.lock:
            held = min(self.count, self.capacity)
            back = max(0, min(back, held - n))
            k = min(n, held)
            for j in range(k):
                slot = (self.count - back - k + j) % self.capacity
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


class WorldSlot:
    """One world's share of the memory (see module docstring). `target` is the inference adapter
    the world generates with (live tensors by peft name); the worker reads it only under
    `swap_lock`, on an epoch change, and the frame loop writes it."""

    def __init__(self, world: int, learner: FastLearner, ring: FrameRing,
                 target: dict[str, Tensor]):
        self.world = world
        self.learner = learner
        self.ring = ring
        self.target = target
        window = learner.mcfg.window
        self.frames = torch.zeros(1, window, *ring.frames.shape[2:])  # the window trained on
        self.actions = torch.zeros(1, window, *ring.actions.shape[2:], dtype=ring.actions.dtype)
        self.actions.fill_(-1 if ring.actions.dtype == torch.long else 0)
        self.published = {k: v.detach().clone() for k, v in learner.params.items()}
        self.gen = torch.Generator().manual_seed(learner.mcfg.seed + 2)  # replay draws
        self.swap_lock = threading.Lock()
        self.version = 0  # bumped on each publish (under swap_lock)
        self.epoch = 0  # bumped by reset/load (under swap_lock)
        self.active = False  # memory on for this world: its frames are learned from
        self.updates = 0
        self.skipped = 0  # windows never trained on because the worker was behind
        self.last_loss = float("nan")
        # the trainer's side (the worker thread, or the frame loop when inline)
        self.seen = 0  # ring count at the last update
        self.seen_epoch = -1  # epoch the learner was last seeded in
        # the frame loop's side
        self.applied = 0  # version in the inference adapter
        self.frames_seen = 0

    def restart(self) -> None:
        """The trainer's side, after a reset/load: a fresh learner seeded from the target."""
        self.learner.reset()
        self.gen.manual_seed(self.learner.mcfg.seed + 2)
        copy_lora(self.target, self.learner.params)

    def learn(self, update_every: int) -> tuple[float, int] | None:
        """The trainer's side: one learner update on the ring's newest window (or, with
        probability `replay`, a window drawn from anywhere in the ring). Returns the loss and how
        many windows went untrained since the last update, or None (fewer than 2 frames)."""
        back = 0
        mcfg = self.learner.mcfg
        if mcfg.replay > 0 and torch.rand((), generator=self.gen) < mcfg.replay:
            held = min(self.ring.count, self.ring.capacity)  # any window end, uniformly
            back = int(torch.randint(0, max(1, held - mcfg.window + 1), (), generator=self.gen))
        k, count = self.ring.latest(self.frames, self.actions, back)
        if k < 2:
            return None
        skipped = max(0, count - self.seen - update_every)
        self.seen = count
        return self.learner.update(self.frames[:, -k:], self.actions[:, -k:]), skipped


class MemoryWorker:
    """Runs `learner.update` on the newest window of each world's ring, in one daemon thread."""

    def __init__(self, update_every: int = 1, threads: int = 1, nice: int = 0,
                 duty: float = 1.0):
        if not 0 < duty <= 1:
            raise ValueError(f"the worker's duty must be in (0, 1], got {duty}")
        self.update_every = update_every
        self.threads = threads
        self.nice = nice
        self.duty = duty
        self.rest_s = 0.0  # rest time owed after the last update (duty < 1)
        self.slots: dict[int, WorldSlot] = {}  # world -> slot (changed under `wake`)
        self.wake = threading.Condition()
        self.updates = 0  # over all worlds
        self.skipped = 0
        self.last_loss = float("nan")  # of the last update, whichever world
        self.update_s = 0.0  # duration of the last update
        self.update_s_total = 0.0  # over all updates
        self.error: BaseException | None = None
        self._stop = False
        self._next = 0  # the world to look at first (round-robin)
        self._thread: threading.Thread | None = None

    # -- frame-loop side -------------------------------------------------------------------
    def add(self, slot: WorldSlot) -> None:
        """Serve one more world; its learner is seeded from its inference adapter first."""
        with self.wake:
            self.slots[slot.world] = slot
            self.wake.notify()

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="memory-worker", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        with self.wake:
            self.wake.notify()

    @staticmethod
    def swap_into(slot: WorldSlot) -> bool:
        """Copy the world's newest published adapter into its inference one, if there is a newer
        one and the lock is free right now. True when it copied. Never waits."""
        if slot.version == slot.applied or not slot.swap_lock.acquire(blocking=False):
            return False
        try:
            copy_lora(slot.published, slot.target)
            slot.applied = slot.version
            return True
        finally:
            slot.swap_lock.release()

    @staticmethod
    def new_epoch(slot: WorldSlot) -> None:
        """After the caller rewrote the world's inference adapter (reset/load): drop what is in
        flight, restart its learner from the inference adapter. Call with swap_lock held."""
        slot.epoch += 1
        slot.applied = slot.version

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
    def _ready(self, slot: WorldSlot) -> bool:
        return (slot.active and slot.ring.count >= 2
                and slot.ring.count - slot.seen >= self.update_every)

    def _pending(self) -> WorldSlot | None:
        """The next world, round-robin from `_next`, with an epoch change or a window to learn.
        Call under `wake`."""
        worlds = sorted(self.slots)
        for w in [w for w in worlds if w >= self._next] + [w for w in worlds if w < self._next]:
            slot = self.slots[w]
            if slot.seen_epoch != slot.epoch or self._ready(slot):
                self._next = w + 1
                return slot
        return None

    def _run(self) -> None:
        configure_worker_thread(self.threads, self.nice)
        try:
            while True:
                with self.wake:
                    if self.rest_s > 0:  # the duty cycle: rest, but wake at once on close
                        deadline = time.perf_counter() + self.rest_s
                        self.rest_s = 0.0
                        while not self._stop and (left := deadline - time.perf_counter()) > 0:
                            self.wake.wait(timeout=left)
                    while not self._stop and (slot := self._pending()) is None:
                        self.wake.wait(timeout=0.25)
                if self._stop:
                    return
                self._serve(slot)
        except BaseException as e:  # EpisodicMemory switches memory off and says why
            self.error = e
            log.debug("memory worker failed", exc_info=True)

    def _serve(self, slot: WorldSlot) -> None:
        """Re-seed the world's learner after a reset/load, then train on its newest window."""
        with slot.swap_lock:
            if slot.seen_epoch != slot.epoch:
                slot.seen_epoch = slot.epoch
                slot.seen = 0
                slot.restart()
            epoch = slot.epoch
        if not self._ready(slot):
            return
        t0 = time.perf_counter()
        learned = slot.learn(self.update_every)
        if learned is None:
            return
        self.update_s = time.perf_counter() - t0
        self.rest_s = self.update_s * (1 / self.duty - 1)
        loss, skipped = learned
        with slot.swap_lock:
            if epoch == slot.epoch:
                copy_lora(slot.learner.params, slot.published)
                slot.version += 1
                slot.updates += 1
                slot.skipped += skipped
                slot.last_loss = loss
                self.updates += 1
                self.update_s_total += self.update_s
                self.skipped += skipped
                self.last_loss = loss
