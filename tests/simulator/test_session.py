"""WorldSession: B imagined worlds behind reset/step/rollout (simulator/session.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CRAFTER_SIZE
from simulator.session import WorldSession, real_context
from worldmodel.actions import ActionError
from worldmodel.dynamics import Denoiser

B = 2


def contexts(cfg, seed: int = 0, batch: int = B, n: int = 3) -> np.ndarray:
    """(batch, n, h, w, 3) uint8 frames, distinct per world."""
    s = cfg.model.frame_size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (batch, n, s // 4, s // 4, 3), dtype=np.uint8)
    return coarse.repeat(4, axis=2).repeat(4, axis=3)


def fresh_session(cfg, batch: int = B, **kw) -> WorldSession:
    torch.manual_seed(0)
    return WorldSession(Denoiser(cfg.model), cfg, batch=batch, **kw)


def test_reset_from_the_real_game_gives_one_world_per_seed(tiny_config):
    cfg = tiny_config(size=CRAFTER_SIZE)
    sess = fresh_session(cfg)
    frames = sess.reset(seed=10)
    assert frames.shape == (B, CRAFTER_SIZE, CRAFTER_SIZE, 3) and frames.dtype == np.uint8
    for i in range(B):
        real, acts = real_context("crafter", 10 + i, sess.context_len, size=CRAFTER_SIZE)
        assert real.shape == (sess.context_len, CRAFTER_SIZE, CRAFTER_SIZE, 3)
        assert acts[0] == -1
        np.testing.assert_array_equal(frames[i], real[-1])
    assert not np.array_equal(frames[0], frames[1])


def test_untrained_model_is_a_static_world_per_world(tiny_cfg):
    """Zero-init residual: every world keeps showing its own last context frame, exactly."""
    sess = fresh_session(tiny_cfg)
    ctx = contexts(tiny_cfg)
    last = sess.reset(context=ctx)
    np.testing.assert_array_equal(last, ctx[:, -1])
    out = sess.step([1, 4])
    assert out.shape == (B, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ctx[:, -1])
    frames = sess.rollout(np.array([[1, 2, 3], [4, 5, 6]]))
    assert frames.shape == (B, 3, 16, 16, 3)
    np.testing.assert_array_equal(frames, np.repeat(ctx[:, -1:], 3, axis=1))
    assert sess.steps == 4


def test_single_world_returns_unbatched_frames(tiny_cfg, perturbed_model):
    sess = WorldSession(perturbed_model(tiny_cfg), tiny_cfg, batch=1)
    assert sess.reset(context=contexts(tiny_cfg, batch=1)[0]).shape == (16, 16, 3)
    assert sess.step("move_left").shape == (16, 16, 3)
    assert sess.step(3).shape == (16, 16, 3)
    assert sess.rollout(np.array([1, 2])).shape == (1, 2, 16, 16, 3)
    assert sess.last_step_ms > 0


def test_same_seed_same_worlds(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    acts = np.array([[1, 1, 3, 5], [2, 0, 4, 4]])
    runs = []
    for seed in (3, 3, 4):
        sess = WorldSession(model, tiny_cfg, batch=B, seed=seed)
        runs.append(sess.rollout(acts, context=contexts(tiny_cfg)))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_worlds_in_a_batch_do_not_leak_into_each_other(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    ctx_a, ctx_b = contexts(tiny_cfg, seed=0), contexts(tiny_cfg, seed=1)
    mixed = ctx_a.copy()
    mixed[1] = ctx_b[1]  # world 1 differs, world 0 is the same
    acts = np.array([[1, 2, 3], [4, 4, 4]])
    out_a = WorldSession(model, tiny_cfg, batch=B, seed=0).rollout(acts, context=ctx_a)
    out_m = WorldSession(model, tiny_cfg, batch=B, seed=0).rollout(acts, context=mixed)
    np.testing.assert_array_equal(out_a[0], out_m[0])
    assert not np.array_equal(out_a[1], out_m[1])


def test_chunked_rollout_has_the_same_shape(tiny_cfg, perturbed_model):
    sess = WorldSession(perturbed_model(tiny_cfg), tiny_cfg, batch=B)
    frames = sess.rollout(np.zeros((B, 5), np.int64), context=contexts(tiny_cfg), chunk=2)
    assert frames.shape == (B, 5, 16, 16, 3)
    np.testing.assert_array_equal(sess.frame, frames[:, -1])
    assert sess.steps == 5


def test_rollout_continues_the_current_worlds(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    acts = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])
    whole = WorldSession(model, tiny_cfg, batch=B).rollout(acts, context=contexts(tiny_cfg))
    split = WorldSession(model, tiny_cfg, batch=B)
    first = split.rollout(acts[:, :2], context=contexts(tiny_cfg))
    second = split.rollout(acts[:, 2:])
    np.testing.assert_array_equal(np.concatenate([first, second], 1), whole)


@pytest.mark.parametrize("bad, message", [
    (17, "out of range"),
    ("fly", "unknown action 'fly'"),
    ([0, 17], "out of range"),
    ([1, 2, 3], "need 2 actions"),
    ([0], "need 2 actions"),
])
def test_bad_step_actions_are_clear_errors(tiny_cfg, bad, message):
    sess = fresh_session(tiny_cfg)
    sess.reset(context=contexts(tiny_cfg))
    with pytest.raises(ActionError, match=message):
        sess.step(bad)
    assert sess.steps == 0


def test_bad_rollout_and_reset_input_are_clear_errors(tiny_cfg):
    sess = fresh_session(tiny_cfg)
    with pytest.raises(RuntimeError, match="never reset"):
        sess.rollout(np.zeros((B, 2), np.int64))
    with pytest.raises(ValueError, match="the model takes 16x16"):
        sess.reset(context=np.zeros((B, 3, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(2, n, h, w, 3\)"):
        sess.reset(context=np.zeros((3, 3, 16, 16, 3), np.uint8))
    with pytest.raises(ActionError, match="out of range"):
        sess.reset(context=contexts(tiny_cfg), actions=np.array([[-1, 0, 20], [-1, 0, 0]]))
    sess.reset(context=contexts(tiny_cfg), actions=np.array([[-1, 0, 5], [-1, 2, 16]]))
    with pytest.raises(ActionError, match="actions are for 1 worlds"):
        sess.rollout(np.zeros((1, 2), np.int64))
    with pytest.raises(ActionError, match="out of range"):
        sess.rollout(np.full((B, 2), 17))


def test_shared_context_is_broadcast_to_every_world(tiny_cfg):
    sess = fresh_session(tiny_cfg)
    ctx = contexts(tiny_cfg, batch=1)[0]
    last = sess.reset(context=ctx, actions=np.array([-1, 1, 2]))
    assert last.shape == (B, 16, 16, 3)
    np.testing.assert_array_equal(sess.step([0, 0]), np.stack([ctx[-1]] * B))
