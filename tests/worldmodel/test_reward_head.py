"""The reward/termination head: shapes, snapping, save/load round trip, and that training on
episodes learns a reward that is visible on screen."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_episode
from worldmodel.training.reward_head import (CONFIG, WEIGHTS, RewardHead, RewardHeadConfig, RewardHeadError,
                                    Transitions, evaluate, load_reward_head, main, save_reward_head,
                                    snap_reward, train)

SIZE = 16


def small_cfg() -> RewardHeadConfig:
    return RewardHeadConfig(frame_size=SIZE, channels=[8, 16], hidden=16)


def test_forward_and_predict_shapes():
    torch.manual_seed(0)
    head = RewardHead(small_cfg()).eval()
    prev = torch.rand(5, 3, SIZE, SIZE) * 2 - 1
    rew, logit = head(prev, prev)
    assert rew.shape == logit.shape == (5,)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, SIZE, SIZE, 3), np.uint8)
    r, p = head.predict(frames, frames)
    assert r.shape == p.shape == (2, 3) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(r * 10, np.round(r * 10), atol=1e-5)  # on Crafter's 0.1 grid


def test_snap_reward():
    np.testing.assert_allclose(snap_reward([0.04, -0.06, 0.94, -0.71]), [0.0, -0.1, 0.9, -0.7], atol=1e-6)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    head = RewardHead(small_cfg()).eval()
    save_reward_head(tmp_path / "rh", head, {"note": 1})
    assert sorted(p.name for p in (tmp_path / "rh").iterdir()) == [CONFIG, "metrics.json", WEIGHTS]
    loaded = load_reward_head(tmp_path / "rh")
    x = torch.rand(2, 3, SIZE, SIZE)
    for a, b in zip(head(x, -x), loaded(x, -x)):
        torch.testing.assert_close(a, b)
    cfg = json.loads((tmp_path / "rh" / CONFIG).read_text())
    (tmp_path / "rh" / CONFIG).write_text(json.dumps({**cfg, "hidden": 7}))
    with pytest.raises(RewardHeadError, match="does not match"):
        load_reward_head(tmp_path / "rh")
    (tmp_path / "rh" / CONFIG).write_text(json.dumps({**cfg, "bogus": 1}))
    with pytest.raises(RewardHeadError, match="bogus"):
        load_reward_head(tmp_path / "rh")
    with pytest.raises(RewardHeadError):
        load_reward_head(tmp_path / "missing")


def synthetic_episodes(root, prefix: str, n: int, seed: int) -> None:
    """A lit square in the corner appears exactly on steps that pay 1.0; the last step is a
    death, drawn as a black frame."""
    rng = np.random.default_rng(seed)
    for e in range(n):
        steps = 24
        frames = np.repeat(np.repeat(rng.integers(0, 200, (steps + 1, SIZE // 4, SIZE // 4, 3),
                                                  np.uint8), 4, 1), 4, 2)
        rewards = (rng.random(steps) < 0.3).astype(float)
        frames[1:][rewards > 0, -4:, -4:] = 255
        frames[-1] = 0
        rewards[-1] = 0.0
        write_episode(root / f"{prefix}{e:07d}", frames, [0] * steps, rewards.tolist())


def test_training_learns_an_on_screen_reward(tmp_path):
    synthetic_episodes(tmp_path, "train_", 6, 0)
    synthetic_episodes(tmp_path, "heldout_", 2, 1)
    data = Transitions.load(tmp_path, "train_")
    assert len(data) == 6 * 24 and data.dones.sum() == 6 and (data.rewards > 0).sum() > 10
    heldout = Transitions.load(tmp_path, "heldout_")
    torch.manual_seed(0)
    before = evaluate(RewardHead(small_cfg()), heldout)
    head, info = train(data, steps=150, batch=32, lr=3e-3, cfg=small_cfg(), quiet=True)
    after = evaluate(head, heldout)
    assert info["train_steps"] == 150
    assert after["reward_mae"] < 0.5 * before["reward_mae"]
    assert after["achievement_recall"] > 0.8
    prev, frame, _, done = heldout.batch(np.arange(len(heldout)))
    with torch.no_grad():
        p_done = torch.sigmoid(head(prev, frame)[1])
    assert p_done[done > 0].min() > 2 * p_done[done == 0].mean()  # deaths stand out


def test_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    synthetic_episodes(tmp_path / "data", "train_", 2, 0)
    synthetic_episodes(tmp_path / "data", "heldout_", 1, 1)
    out = tmp_path / "out"
    main(["--data", str(tmp_path / "data"), "--out", str(out), "--steps", "3", "--batch", "8"])
    head = load_reward_head(out)
    assert head.cfg.frame_size == SIZE
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["heldout"]["transitions"] == 24
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert "heldout" in capsys.readouterr().out
