"""Episodic memory off the frame loop (memory/episodic.py, memory/worker.py): the worker learns
and publishes, resets are exact, it stops on close and never deadlocks, memory stays flat."""

from __future__ import annotations

import gc
import math
import threading
import time
from pathlib import Path

import pytest
import torch

from memory.config import MemoryConfig
from memory.episodic import EpisodicMemory
from memory.fast_learner import FastLearner
from memory.lora import lora_tensors
from memory.worker import FrameRing
from memory_fixtures import rollout_frames, scroll_sequence

TIMEOUT = 20.0


def wait_for(cond, timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def adapter_is_zero(memory: EpisodicMemory) -> bool:
    return all(not v.any() for k, v in lora_tensors(memory.model).items() if ".lora_B." in k)


def feed(memory: EpisodicMemory, frames: torch.Tensor, actions: torch.Tensor) -> None:
    for i in range(frames.shape[1]):
        memory.before_step()
        memory.observe(frames[:, i:i + 1], actions[:, i:i + 1])


def test_ring_keeps_the_newest_frames_in_order():
    ring = FrameRing(capacity=4, batch=1, size=2)
    out_f, out_a = torch.zeros(1, 3, 3, 2, 2), torch.zeros(1, 3, dtype=torch.long)
    for i in range(6):
        ring.push(torch.full((1, 1, 3, 2, 2), float(i)), torch.tensor([[i]]))
    assert ring.latest(out_f, out_a) == (3, 6)
    assert out_a.tolist() == [[3, 4, 5]] and out_f[0, :, 0, 0, 0].tolist() == [3.0, 4.0, 5.0]
    # `back`: the window ending that many frames before the newest, clamped to what is held
    assert ring.latest(out_f, out_a, back=1) == (3, 6) and out_a.tolist() == [[2, 3, 4]]
    assert ring.latest(out_f, out_a, back=9) == (3, 6) and out_a.tolist() == [[2, 3, 4]]
    ring.clear()
    assert ring.latest(out_f, out_a)[0] == 0


def test_replay_learns_older_windows_too(tiny_cfg, perturbed_model):
    """replay=1: each update's window is drawn from anywhere in the ring, not just the newest."""
    from memory.worker import WorldSlot

    mcfg = MemoryConfig(rank=2, window=3, buffer_frames=8, replay=1.0)
    learner = FastLearner(perturbed_model(tiny_cfg), tiny_cfg.diffusion, mcfg,
                          tiny_cfg.model.action_space)
    ring = FrameRing(8, 1, tiny_cfg.model.frame_size)
    slot = WorldSlot(0, learner, ring, {k: v.clone() for k, v in learner.params.items()})
    for i in range(8):
        ring.push(torch.full((1, 1, 3, tiny_cfg.model.frame_size, tiny_cfg.model.frame_size),
                             i / 8), torch.tensor([[i % 4]]))
    ends = set()
    for _ in range(12):
        assert slot.learn(1) is not None
        ends.add(int(slot.actions[0, -1]))
    assert len(ends) > 1, "every replayed window was the newest"


def test_worker_learns_in_the_background_and_swaps_between_frames(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, MemoryConfig(rank=4, lr=1e-2, window=4, buffer_frames=8,
                                                      update_every=1,
                                                      worker_nice=0))
    try:
        frames, actions = scroll_sequence(tiny_cfg, n=8)
        mem.reset(frames[:, :3], actions[:, :3])
        assert adapter_is_zero(mem)
        assert wait_for(lambda: mem.worker.updates >= 1)  # learns from the context alone
        feed(mem, frames[:, 3:], actions[:, 3:])
        assert wait_for(lambda: mem.worker.updates >= 2)
        mem.before_step()
        assert not adapter_is_zero(mem)
        assert mem.hook_ms_max < 100  # the frame loop only copies (generous for a busy CI box)
        mem.reset()  # new episode: exactly the base model again, whatever is in flight
        assert adapter_is_zero(mem)
        assert torch.equal(rollout_frames(mem.model, tiny_cfg), rollout_frames(base, tiny_cfg))
    finally:
        assert mem.close(timeout=TIMEOUT)
    assert not mem.worker.running


def test_memory_off_is_the_base_model_and_keeps_what_it_learned(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, MemoryConfig(rank=4, lr=1e-2, window=4, buffer_frames=8,
                                                      update_every=1),
                         threaded=False)
    frames, actions = scroll_sequence(tiny_cfg, n=6)
    mem.reset(frames[:, :3], actions[:, :3])
    feed(mem, frames[:, 3:], actions[:, 3:])
    assert mem.learner.updates == 3 and not adapter_is_zero(mem)
    learned = rollout_frames(mem.model, tiny_cfg)
    mem.set_enabled(False)
    assert torch.equal(rollout_frames(mem.model, tiny_cfg), rollout_frames(base, tiny_cfg))
    mem.set_enabled(True)
    assert torch.equal(rollout_frames(mem.model, tiny_cfg), learned)


def test_no_deadlock_under_resets_toggles_and_loads(tiny_cfg, perturbed_model, tmp_path: Path):
    mem = EpisodicMemory(perturbed_model(tiny_cfg), tiny_cfg,
                         MemoryConfig(rank=4, window=4, buffer_frames=8, worker_nice=0))
    frames, actions = scroll_sequence(tiny_cfg, n=8)
    mem.save(tmp_path / "m")
    errors: list[BaseException] = []

    def frame_loop() -> None:
        try:
            for i in range(150):
                feed(mem, frames[:, i % 6:i % 6 + 2], actions[:, i % 6:i % 6 + 2])
                if i % 7 == 0:
                    mem.reset(frames[:, :3], actions[:, :3])
                if i % 11 == 0:
                    mem.set_enabled(i % 22 != 0)
                if i % 13 == 0:
                    mem.load(tmp_path / "m")
                if i % 17 == 0:
                    mem.save(tmp_path / "s")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    loop = threading.Thread(target=frame_loop, daemon=True)
    loop.start()
    loop.join(TIMEOUT * 3)
    assert not loop.is_alive(), "the frame loop deadlocked"
    assert not errors, errors
    assert mem.close(timeout=TIMEOUT) and not mem.worker.running
    mem.before_step()  # a closed memory is inert, not an error


def rss_mb() -> float:
    from memory.fps import rss_mb as read_rss

    mb = read_rss()
    if math.isnan(mb):
        pytest.skip("no /proc/self/status to read RSS from")
    return mb


def test_rss_is_flat_across_many_updates(tiny_cfg, perturbed_model):
    mem = EpisodicMemory(perturbed_model(tiny_cfg), tiny_cfg,
                         MemoryConfig(rank=4, window=4, buffer_frames=8, worker_nice=0))
    frames, actions = scroll_sequence(tiny_cfg, n=8)
    try:
        mem.reset(frames[:, :3], actions[:, :3])

        def run_until(updates: int) -> None:
            i = 0
            while mem.worker.updates < updates:
                assert i < 20000, "the worker stopped updating"
                feed(mem, frames[:, i % 7:i % 7 + 1], actions[:, i % 7:i % 7 + 1])
                time.sleep(0.001)
                i += 1

        run_until(30)
        gc.collect()
        warm = rss_mb()
        run_until(230)
        gc.collect()
        end = rss_mb()
    finally:
        assert mem.close(timeout=TIMEOUT)
    assert end - warm < 8.0, f"RSS grew {end - warm:.1f} MB over 200 updates ({warm:.0f} MB)"


def test_merged_inference_matches_the_adapter_path(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    frames, actions = scroll_sequence(tiny_cfg, n=6)
    outs = []
    for merge in (True, False):
        mem = EpisodicMemory(base, tiny_cfg, MemoryConfig(rank=4, lr=1e-2, window=4, update_every=1,
                                                          buffer_frames=8, merge=merge), threaded=False)
        mem.reset(frames[:, :3], actions[:, :3])
        assert torch.equal(rollout_frames(mem.model, tiny_cfg), rollout_frames(base, tiny_cfg))
        feed(mem, frames[:, 3:], actions[:, 3:])
        outs.append(rollout_frames(mem.model, tiny_cfg))
        assert not torch.equal(outs[-1], rollout_frames(base, tiny_cfg))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=0)


def test_duty_cycle_rests_the_worker_and_close_still_stops_it_at_once(tiny_cfg, perturbed_model):
    # duty 0.001: after each update the worker rests ~999x the update's time (seconds here)
    mem = EpisodicMemory(perturbed_model(tiny_cfg), tiny_cfg,
                         MemoryConfig(rank=4, window=4, buffer_frames=8, update_every=1,
                                      worker_duty=0.001, worker_nice=0))
    frames, actions = scroll_sequence(tiny_cfg, n=8)
    try:
        mem.reset(frames[:, :3], actions[:, :3])
        assert wait_for(lambda: mem.worker.updates >= 1)
        feed(mem, frames[:, 3:], actions[:, 3:])  # windows ready, but the worker is resting
        time.sleep(0.3)
        assert mem.worker.updates == 1 and mem.worker.rest_s == 0.0  # (owed rest taken up)
    finally:
        t0 = time.monotonic()
        assert mem.close(timeout=TIMEOUT)
    assert time.monotonic() - t0 < 2.0, "close waited for the rest to end"


@pytest.mark.parametrize("duty", [0.0, 1.5])
def test_bad_duty_is_a_config_error(duty):
    from worldmodel.config import ConfigError

    with pytest.raises(ConfigError, match="worker_duty"):
        MemoryConfig(worker_duty=duty)
