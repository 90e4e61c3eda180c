"""Memory in the headless session (simulator/session.py): the switch (per world in a batch),
per-episode reset, save/load, and a clean close."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import DEVICES
from memory.config import MemoryConfig
from memory.lora import lora_tensors
from simulator.session import WorldSession
from test_episodic import TIMEOUT, adapter_is_zero, wait_for
from worldmodel.checkpoint import save_checkpoint

ACTIONS = [1, 1, 2, 3, 4, 0, 2, 2]


def context(cfg, n: int = 3, seed: int = 0) -> np.ndarray:
    s = cfg.model.frame_size
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, s // 4, s // 4, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)


def session(cfg, model, batch: int = 1, **mem) -> WorldSession:
    mcfg = MemoryConfig(**{"rank": 4, "lr": 1e-2, "window": 4, "buffer_frames": 8, "update_every": 1,
                           "worker_nice": 0, **mem})
    return WorldSession(model, cfg, batch=batch, seed=0, memory=mcfg)


def test_switch_and_state(tiny_cfg, perturbed_model):
    sess = WorldSession(perturbed_model(tiny_cfg), tiny_cfg, batch=1)
    assert not sess.memory_enabled and sess._memory is None  # nothing built until asked
    sess.set_memory(False)
    assert sess._memory is None
    sess.reset(context=context(tiny_cfg))
    sess.set_memory(True)
    assert sess.memory_enabled and sess.memory.enabled
    assert sess.rollout_state.model is sess.memory.model
    sess.set_memory(False)
    assert not sess.memory_enabled and sess.rollout_state.model is sess.model
    sess.close()
    with pytest.raises(ValueError, match="out of range"):
        sess.set_memory(True, worlds=1)


def test_memory_on_without_updates_is_the_base_model(tiny_cfg, perturbed_model):
    """The wiring (swap, observe, model switch) changes nothing until the learner publishes."""
    model = perturbed_model(tiny_cfg)
    plain = WorldSession(model, tiny_cfg, batch=1, seed=0)
    mem = session(tiny_cfg, model, enabled=True, update_every=10**6)
    try:
        for s in (plain, mem):
            s.reset(context=context(tiny_cfg), actions=np.array([-1, 1, 1]))
        a = np.stack([plain.step(x) for x in ACTIONS])
        b = np.stack([mem.step(x) for x in ACTIONS])
        np.testing.assert_array_equal(a, b)
    finally:
        mem.close()


def test_play_learns_resets_per_episode_and_saves(tiny_cfg, perturbed_model, tmp_path):
    model = perturbed_model(tiny_cfg)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    sess = session(tiny_cfg, model, enabled=True)
    try:
        sess.reset(context=context(tiny_cfg), actions=np.array([-1, 1, 1]))
        for x in ACTIONS:
            sess.step(x)
        sess.rollout(np.array([ACTIONS]), chunk=2)
        assert wait_for(lambda: sess.memory.worker.updates >= 2)
        sess.step(0)  # swaps the newest adapter in
        assert not adapter_is_zero(sess.memory)
        saved = {k: v.clone() for k, v in lora_tensors(sess.memory.model).items()}
        sess.save_memory(tmp_path / "world")
        sess.set_memory(False)
        sess.reset(context=context(tiny_cfg, seed=1))  # a new episode forgets
        assert adapter_is_zero(sess.memory)
        sess.load_memory(tmp_path / "world")  # ... unless a saved world is resumed
        for k, v in lora_tensors(sess.memory.model).items():
            assert torch.equal(v, saved[k]), k
    finally:
        sess.close()
    assert not sess.memory.worker.running and not sess.memory_enabled
    sess.step(1)  # a closed session still plays, without memory
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), f"base weight {k} changed"


def test_close_stops_the_worker_promptly(tiny_cfg, perturbed_model):
    sess = session(tiny_cfg, perturbed_model(tiny_cfg), enabled=True)
    sess.reset(context=context(tiny_cfg))
    for x in ACTIONS:
        sess.step(x)
    assert wait_for(lambda: sess.memory.worker.updates >= 1)
    with sess:
        pass  # __exit__ closes
    assert wait_for(lambda: not sess.memory.worker.running, TIMEOUT)


def test_batched_session_switches_memory_per_world(tiny_cfg, perturbed_model, tmp_path):
    """B = 3, memory on for world 1 only: worlds 0 and 2 are exactly the memory-less session's,
    world 1 learns from its own frames and generates with what it learned."""
    model = perturbed_model(tiny_cfg)
    plain = WorldSession(model, tiny_cfg, batch=3, seed=0)
    sess = session(tiny_cfg, model, batch=3)
    try:
        assert sess.memory_worlds == [False] * 3 and sess._memory is None
        sess.set_memory(True, worlds=[1])
        assert sess.memory_worlds == [False, True, False] and sess.memory_enabled
        assert sess.rollout_state.model is sess.memory.model
        ctx = np.stack([context(tiny_cfg, seed=i) for i in range(3)])
        acts = np.array([[-1, 1, 1]] * 3)
        for s in (plain, sess):
            s.reset(context=ctx, actions=acts, noise_seed=5)
        a, b = [], []
        for i, x in enumerate(ACTIONS * 3):
            if i == len(ACTIONS):  # let the worker publish before the rest of the episode
                assert wait_for(lambda: sess.memory.world_stats(1)["updates"] >= 2)
            a.append(plain.step([x] * 3))
            b.append(sess.step([x] * 3))
        a, b = np.stack(a, 1), np.stack(b, 1)
        np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])
        assert not np.array_equal(a[1], b[1])
        assert sess.memory._slots[0] is None and sess.memory._slots[2] is None
        sess.save_memory(tmp_path / "w1", world=1)
        sess.load_memory(tmp_path / "w1", world=2)
        for k, v in sess.memory._targets[2].items():
            assert torch.equal(v, sess.memory._targets[1][k]), k
        with pytest.raises(ValueError, match="out of range"):
            sess.set_memory(True, worlds=[0, 3])
        with pytest.raises(ValueError, match="out of range"):
            sess.save_memory(tmp_path / "bad", world=3)
        assert sess.memory_worlds == [False, True, False]  # a refused call changes nothing
        def is_zero(world: int) -> bool:
            return all(not v.any() for k, v in sess.memory._targets[world].items()
                       if ".lora_B." in k)

        sess.reset(context=ctx, actions=acts, memory_worlds=[0, 2])  # world 1 keeps its memory
        assert is_zero(2) and not is_zero(1)
        sess.reset(context=ctx, actions=acts)  # every world's memory starts afresh
        assert is_zero(1) and is_zero(2)
        sess.set_memory(False, worlds=1)
        assert not sess.memory_enabled and sess.rollout_state.model is sess.model
    finally:
        sess.close()
    assert not sess.memory.worker.running


@pytest.mark.parametrize("device", DEVICES)
def test_a_loaded_session_plays_and_learns_on_the_device(tiny_cfg, perturbed_model, tmp_path,
                                                         device):
    """WorldSession.load on a device: frames come back as host uint8, and the memory's batched
    adapters learn there (one world on, one off) and swap in."""
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(tiny_cfg), tiny_cfg)
    mcfg = MemoryConfig(rank=4, window=4, buffer_frames=8, update_every=1, worker_nice=0)
    sess = WorldSession.load(ckpt, device=device, batch=2, seed=0, memory=mcfg)
    try:
        assert sess.device.type == device
        sess.set_memory(True, worlds=[1])
        sess.reset(context=context(tiny_cfg), actions=np.array([-1, 1, 1]))
        frames = [sess.step([x, x]) for x in ACTIONS]
        assert wait_for(lambda: sess.memory.world_stats(1)["updates"] >= 1)
        frames.append(sess.rollout(np.array([ACTIONS[:2]] * 2), chunk=2)[:, -1])
        assert all(f.dtype == np.uint8 and f.shape == (2, 16, 16, 3) for f in frames)
    finally:
        sess.close()


def test_a_failed_worker_switches_memory_off_visibly_and_on_again_learns(tiny_cfg,
                                                                         perturbed_model, caplog):
    sess = session(tiny_cfg, perturbed_model(tiny_cfg), enabled=True)
    try:
        sess.reset(context=context(tiny_cfg), actions=np.array([-1, 1, 1]))
        learner = sess.memory._slots[0].learner

        def broken(frames, actions):
            raise RuntimeError("injected failure")

        learner.update = broken  # the worker's next update fails
        for x in ACTIONS:
            sess.step(x)
        assert wait_for(lambda: sess.memory.worker.error is not None)
        with caplog.at_level(logging.WARNING, logger="memory.episodic"):
            assert sess.step(0).shape == (16, 16, 3)  # the frame loop notices; play goes on
            sess.step(1)
        assert not sess.memory_enabled and sess.memory_worlds == [False]
        assert "RuntimeError: injected failure" in sess.memory_error
        assert sess.rollout_state.model is sess.model  # the base model alone
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "injected failure" in warned[0] and "\n" not in warned[0]
        del learner.update
        sess.set_memory(True)  # a fresh worker
        assert sess.memory_enabled and sess.memory_error is None and sess.memory.worker.running
        for x in ACTIONS:
            sess.step(x)
        assert wait_for(lambda: sess.memory.worker.updates >= 1)
        sess.step(0)  # swaps in what it learned
        assert not adapter_is_zero(sess.memory)
    finally:
        sess.close()
