"""Recall (worldmodel/recall.py): frames remembered by the 3D pose they were seen from, found again
by field-of-view overlap, given to the denoiser with their relative pose; trained, rolled out,
saved and resumed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_YAML, perturb_, smooth_frames, write_episode
from games.minetest.actions import ACTION_SPACE
from games.minetest.pose_memory import PoseGeometry
from worldmodel.config import load_config
from worldmodel.data.dataset import WindowDataset
from worldmodel.dynamics import Conditioning, Denoiser
from worldmodel.game import MemoryFileError
from worldmodel.recall import Recall, RecallMemory, encode_frames, make_view_memory
from worldmodel.rollout import Rollout

A = {name: i for i, name in enumerate(ACTION_SPACE.actions)}
SIZE = 16


def recall_config(*overrides: str):
    return load_config(TINY_YAML, [f"model.frame_size={SIZE}", "model.action_space=minetest",
                                   "model.game=minetest", "model.recall=3",
                                   "data.window=4", *overrides])


def recall_model(seed: int = 0):
    cfg = recall_config()
    torch.manual_seed(seed)
    return perturb_(Denoiser(cfg.model), seed, 0.1).eval(), cfg


def test_dead_reckoned_poses_turn_tilt_and_walk_like_the_driver_mod():
    g = PoseGeometry(ACTION_SPACE.actions)
    p = g.advance(np.zeros(5), A["turn_left"])
    assert np.allclose(p, [0, 0, 0, 15, 0])
    p = g.advance(np.zeros(5), A["forward"])  # yaw 0 looks along +z
    assert np.allclose(p, [0, 0, 0.5, 0, 0])
    for _ in range(8):
        p = g.advance(p, A["look_down"])
    assert p[4] == 90  # tilt stops at straight down
    track = g.track(np.zeros(5), [-1] + [A["turn_right"]] * 24)
    assert np.allclose(track[-1], track[0])  # a full turn comes back


def test_a_pose_recalls_the_frames_whose_view_overlaps_it_and_a_turned_away_pose_none():
    """Remembered frames along a full turn: the pose facing the first one's way recalls it first;
    a pose facing the opposite way recalls none of those seen facing away from it."""
    model, cfg = recall_model()
    g = PoseGeometry(ACTION_SPACE.actions)
    mem = RecallMemory(g, 1, k=3, context=0, encoder=model, write_overlap=2.0)
    mem.set_on(True, [0])
    frames = smooth_frames((13, 3, SIZE, SIZE), seed=1).add(1).mul(127.5).round() / 127.5 - 1
    with torch.inference_mode():
        mem.write(frames[:1])
        for i in range(1, 13):  # half a turn left, one frame every 15 degrees
            mem.advance(np.array([A["turn_left"]]))
            mem.write(frames[i:i + 1])
    assert mem.remembered(0) == 13
    ov = g.overlap(np.zeros(5), np.stack(mem.poses[0]))
    assert ov[0] == 1 and ov[-1] == 0  # facing the start, the half-turned view shares nothing
    r = mem.condition(np.zeros((1, 1, 5)))
    assert r is not None and bool(r.valid.all())
    # the best is the frame seen from exactly there; its relative pose: no offset, no turn
    assert torch.allclose(r.pose[0, 0, 0, :6], torch.tensor([0, 0, 0, 0, 1, 0.0]), atol=1e-6)
    k0, _ = r.kv["mid"]
    solo = encode_frames(model, frames[None, :1], cfg.diffusion.context_noise)["mid"][0]
    assert torch.allclose(k0[:, :, 0], solo[:, :, 0], atol=1e-6)
    away = np.array([[[0, 0, 0, 180 + 15 * 6, 0.0]]])  # facing the other way round
    picked = mem.condition(away)
    seen = picked.pose[0, 0, picked.valid[0]] if picked is not None else torch.zeros(0, 10)
    assert all(float(row[7]) >= mem.min_overlap for row in seen)  # only real overlaps
    back = np.array([[[0, 0, 0, 180.0, 0.0]]])
    assert g.overlap(back[0, 0], np.stack(mem.poses[0][:3])).max() == 0


def test_recall_conditioning_depends_on_the_relative_pose_and_is_exact_without_memory():
    model, cfg = recall_model()
    b, n = 2, 2
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, 3, SIZE, SIZE, generator=gen)
    prev = torch.randn_like(x)
    t = torch.rand(b, n, generator=gen)
    act = torch.zeros(b, n, model.action_dim)
    drop = torch.zeros(b, n, dtype=torch.bool)
    hp = torch.ones(b, n, dtype=torch.bool)
    with torch.no_grad():
        base = model(x, prev, t, t, hp, act, drop)
        kv = encode_frames(model, smooth_frames((b, 3, 3, SIZE, SIZE), seed=2), 0.03)
        pose = torch.randn(b, n, 3, 10, generator=gen)
        valid = torch.tensor([[True, True, False], [False, False, False]])
        one = model(x, prev, t, t, hp, act, drop, conditioning=Conditioning(
            recall=Recall(kv, pose, valid)))
        other = model(x, prev, t, t, hp, act, drop, conditioning=Conditioning(
            recall=Recall(kv, pose + 1.0, valid)))
    assert (one[0] - base[0]).abs().max() > 1e-3  # world 0 sees its memories
    assert (one[0] - other[0]).abs().max() > 1e-4  # ... as their pose says
    assert torch.allclose(one[1], base[1], atol=1e-5)  # world 1 remembers nothing


def minetest_episodes(root, count=2, steps=40):
    """Synthetic Minetest episodes: a turn in place, so later frames revisit earlier views."""
    for e in range(count):
        acts = ([A["turn_left"]] * 24 + [A["forward"]] * 4 + [A["turn_right"]] * 12)[:steps]
        frames = (smooth_frames((steps + 1, 3, SIZE, SIZE), seed=10 + e).add(1).mul(127.5)
                  .round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        write_episode(root / f"train_{e:07d}", frames, acts,
                      meta={"action_space": "minetest", "game": "minetest",
                            "start_pos": [0, 8, 0, 0, 0]})
    return root


def test_training_windows_recall_earlier_frames_of_their_episode(tmp_path):
    """A window recalls frames of its episode from before it that show its targets' views more
    than the window's own context does; the first window has nothing to recall."""
    root = minetest_episodes(tmp_path)
    data = WindowDataset(root, 4, ACTION_SPACE, "train_", recall=3)
    frames, pose, valid = data.sample_recall(data.starts)
    assert frames.shape == (len(data.starts), 3, SIZE, SIZE, 3)
    assert pose.shape == (len(data.starts), 4, 3, 10)
    assert not valid[0].any() and valid.sum() >= 3
    from worldmodel.data.dataset import RECALL_MIN_GAIN
    for i, st in enumerate(data.starts):
        f0 = data.first[st]
        ov = data.overlaps[0 if f0 == 0 else 1]
        for j in np.flatnonzero(valid[i]):
            src = np.flatnonzero((data.frames[f0:st] == frames[i, j]).all((1, 2, 3)))
            assert len(src) and src[-1] < st - f0  # from before the window
            tg = np.arange(st - f0 + 1, st - f0 + 4)
            cover = np.array([ov[t, st - f0:t].max() for t in tg], np.float32)
            assert ((ov[tg, src[-1]] - cover) >= RECALL_MIN_GAIN - 1e-3).any()


def test_a_tiny_recall_training_run_lowers_its_loss(tmp_path):
    from worldmodel.training.train import train

    root = minetest_episodes(tmp_path / "data", count=3)
    cfg = recall_config(f"data.train={root}", f"train.out={tmp_path / 'run'}", "train.steps=30",
                        "train.log_every=10", "train.ckpt_every=30", "train.batch_size=4",
                        "train.lr=2e-3", "train.warmup_steps=5", "diffusion.self_forcing_prob=0.0")
    stats = train(cfg, torch.device("cpu"), amp=False, quiet=True)
    import json
    curve = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert curve[-1]["loss"] < 0.7 * curve[0]["loss"], [r["loss"] for r in curve]
    assert stats["step"] == 30
    from worldmodel.checkpoint import load_checkpoint
    model, _ = load_checkpoint(tmp_path / "run")
    # the recall layers learned (they start at zero): remembered frames reached the loss
    assert model.mid.temporal.recall_key.weight.abs().sum() > 0


def test_a_rollout_recalls_the_start_after_a_full_turn_deterministically():
    """Memory on: after a full turn the first view is recalled (it left the cache long ago);
    two rollouts under one seed draw the same frames; memory off draws without recall."""
    model, cfg = recall_model()
    ctx = smooth_frames((1, 4, 3, SIZE, SIZE), seed=3)
    acts = torch.full((1, 4), A["noop"])

    def run(on: bool):
        ro = Rollout(model, cfg, context=3, seed=0)
        ro.view = make_view_memory(model, cfg, 1, ro.context, "cpu")
        ro.view.set_on(on, [0])
        ro.reset(ctx, acts)
        calls = []
        condition = ro.view.condition
        ro.view.condition = lambda targets: calls.append(condition(targets)) or calls[-1]
        out = [ro.step(torch.tensor([A["turn_left"]])) for _ in range(24)]
        return torch.stack(out, 1), ro.view, calls

    a, mem, calls = run(True)
    b, _, _ = run(True)
    assert torch.equal(a, b)
    assert mem.remembered(0) >= 6  # a new view every turn or two
    assert np.allclose(mem.pose[0], [0, 0, 0, 0, 0])  # back where it started
    last = calls[-1]  # the frame after the full turn recalled the first view, wholly
    assert last is not None and last.pose[0, 0, 0, 7] == 1.0 and last.pose[0, 0, 0, 8] > 0
    off, mem_off, _ = run(False)
    assert mem_off.remembered(0) == 0 and not torch.equal(off, a)


def test_recall_memory_save_and_resume_round_trip(tmp_path):
    model, cfg = recall_model()
    mem = make_view_memory(model, cfg, 2, 3, "cpu")
    mem.set_on(True, [0, 1])
    with torch.inference_mode():
        for i in range(6):
            mem.advance(np.array([A["turn_left"], A["forward"]]))
            mem.write(smooth_frames((2, 3, SIZE, SIZE), seed=20 + i))
    mem.save(tmp_path / "w", world=0)
    other = make_view_memory(model, cfg, 2, 3, "cpu")
    state, meta = other.read_saved(tmp_path / "w")
    other.load_state(1, state)
    assert other.remembered(1) == mem.remembered(0)
    assert np.allclose(other.pose[1], mem.pose[0]) and other.clock[1] == mem.clock[0]
    q = np.stack([mem.poses[0][0]] * 2)[:, None]  # facing the first remembered view again
    mem.clock[0] += 10
    other.clock[1] += 10
    other.set_on(True, [1])
    ra, rb = mem.condition(q[:1]), other.condition(q)  # world 0 there, world 1 here
    assert torch.equal(ra.valid[0], rb.valid[1]) and torch.allclose(ra.pose[0], rb.pose[1])
    for name in ra.kv:
        hw = ra.kv[name][0].shape[0]
        assert torch.allclose(ra.kv[name][0], rb.kv[name][0][hw:], atol=1e-5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "view_memory.safetensors").write_bytes(b"not a file")
    with pytest.raises(MemoryFileError, match="view_memory.safetensors"):
        other.read_saved(tmp_path / "bad")
    with pytest.raises(MemoryFileError, match="steps"):
        bad = dict(state, steps=state["steps"].float())
        other.check_state(bad)


def test_a_session_on_a_recall_model_switches_maps_saves_and_resumes_its_memory(tmp_path):
    """The session's view memory is the recall memory: `set_memory` switches it, the minimap
    draws what was seen, and a saved world resumes to draw the same next frames."""
    from simulator.session import WorldSession

    model, cfg = recall_model()
    ctx = (smooth_frames((3, 3, SIZE, SIZE), seed=5).add(1).mul(127.5).round().clamp(0, 255)
           .to(torch.uint8).permute(0, 2, 3, 1).numpy())
    sess = WorldSession(model, cfg, game="minetest", context=3, memory=False)
    assert sess.memory_stores == ["view"] and not sess.memory_enabled
    sess.set_memory(True)
    sess.reset(context=ctx, noise_seed=0)
    for _ in range(12):
        sess.step("turn_left")
    assert sess.view.remembered(0) >= 3
    img = sess.minimap(0, radius=6, scale=2)
    assert img.shape == (2 * 13 * 4, 2 * 13 * 4, 3) and img.dtype == np.uint8
    sess.save_memory(tmp_path / "world")
    saved = sess.view.remembered(0)
    ahead = [sess.step("turn_left") for _ in range(14)]
    other = WorldSession(model, cfg, game="minetest", context=3, memory=False)
    other.reset(context=ctx, noise_seed=9)
    other.set_memory(True)
    other.load_memory(tmp_path / "world")
    assert other.memory_enabled and other.view.remembered(0) == saved
    again = [other.step("turn_left") for _ in range(14)]
    assert all(np.array_equal(a, b) for a, b in zip(ahead, again))
    sess.close()
    other.close()


def test_the_temporal_lora_fast_learns_on_a_recall_model_beside_its_recall():
    """The mission's fast learner on the first-person model: inline updates from drawn frames
    make the adapter non-zero, the rollout (recall on) then draws differently, and memory off
    gives the base model back exactly."""
    from memory.config import MemoryConfig
    from memory.episodic import EpisodicMemory

    model, cfg = recall_model()
    mem = EpisodicMemory(model, cfg, MemoryConfig(rank=4, lr=1e-2, window=4, buffer_frames=8,
                                                  update_every=1), threaded=False)
    ctx = smooth_frames((1, 4, 3, SIZE, SIZE), seed=7)
    acts = torch.full((1, 4), A["noop"])
    mem.reset(ctx, acts)

    def run(m):
        ro = Rollout(m, cfg, context=3, seed=0)
        ro.view = make_view_memory(m, cfg, 1, ro.context, "cpu")
        ro.view.set_on(True, [0])
        ro.reset(ctx, acts)
        return torch.stack([ro.step(torch.tensor([A["turn_left"]])) for _ in range(6)], 1)

    base = run(model)
    frames = run(mem.model)
    assert torch.equal(frames, base)  # a fresh adapter is an exact no-op
    for i in range(3):
        mem.observe(frames[:, i:i + 1], torch.tensor([[A["turn_left"]]]))
    assert mem.learner.updates == 3
    assert not torch.equal(run(mem.model), base)
    mem.set_enabled(False)
    assert torch.equal(run(mem.model), base)


def test_every_revisit_protocol_ends_facing_the_view_it_revisits():
    from games.minetest.policies import CONTEXT_STEPS, PROTOCOLS
    from memory.revisit_3d import revisit_index

    g = PoseGeometry(ACTION_SPACE.actions)
    for name, (trip, _) in PROTOCOLS.items():
        poses = g.track(np.zeros(5), [-1] + [A["noop"]] * CONTEXT_STEPS + trip)
        ref, last = revisit_index(name)
        assert np.allclose(poses[last], poses[ref]), name
        # ... and the view left the model's context (7 frames) on the way
        assert min(g.overlap(poses[ref], poses[ref + 1:last - 6])) < 0.5, name
