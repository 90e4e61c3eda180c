"""Memories from the model's own rollouts (memory.imagined, data.imagined_memory): imagined
copies of real trips, drawn along the real moves, and training windows that remember them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from games.crafter.view_memory import ViewMemory
from memory import imagined
from worldmodel.actions import get_action_space
from worldmodel.checkpoint import save_checkpoint
from worldmodel.data import load_episode
from worldmodel.data.dataset import WindowDataset, to_float
from memory.imagined import imagine
from worldmodel.training.imagined import FRAMES, INFO, ImaginedError, load_imagined
from worldmodel.rollout import Rollout
from games.crafter.geometry import SCROLLS
from games.crafter.viewmap import history_canvases

SPACE = get_action_space("crafter")


def _cfg(tiny_config, *extra):
    return tiny_config("model.shift_kernel=17", "model.committed_move=7", "model.view_memory=true",
                       *extra, size=64)


@pytest.fixture
def trips(labelled_crafter, tmp_path):
    """A copy of the fixture's revisit trips (written into by memory.imagined)."""
    root = tmp_path / "trips"
    root.mkdir()
    for p in sorted(labelled_crafter.root.glob("revisit_*")):
        shutil.copytree(p, root / p.name)
    return root


def test_forced_moves_are_the_ones_drawn_and_remembered(tiny_config, perturbed_model,
                                                       labelled_crafter):
    cfg = _cfg(tiny_config)
    model = perturbed_model(cfg)
    ep = load_episode(sorted(labelled_crafter.root.glob("revisit_*"))[0])
    ctx = to_float(torch.from_numpy(ep.frames[:cfg.data.window - 1]))[None]
    ro = Rollout(model, cfg, seed=0)
    ro.view = ViewMemory(1, SPACE.actions)
    ro.view.set_on(True, [0])
    ro.reset(ctx, torch.full((1, ctx.shape[1]), -1))
    start = ro.view.pose[0].clone()
    forced = [2, 2, 4, 0, 1]  # right, right, down, stay, left: whatever the head would say
    for k in forced:
        ro.chunk(torch.tensor([[1]]), moves=torch.tensor([[k]]))  # the action says "left"
    moved = sum(np.asarray(SCROLLS[k]) for k in forced)
    assert (ro.view.pose[0] - start).tolist() == moved.tolist()
    no_head = perturbed_model(tiny_config(size=64))
    ro = Rollout(no_head, tiny_config(size=64), seed=0)
    ro.reset(ctx, torch.full((1, ctx.shape[1]), -1))
    with pytest.raises(ValueError, match="no anchor head"):
        ro.chunk(torch.tensor([[1]]), moves=torch.tensor([[2]]))


def test_imagined_copies_are_written_and_remembered_in_training(tiny_config, perturbed_model,
                                                               trips, tmp_path):
    cfg = _cfg(tiny_config)
    model = perturbed_model(cfg)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model, cfg)
    imagined.main(["--checkpoint", str(ckpt), "--data", str(trips), "--segment", "5"])
    ctx = cfg.data.window - 1
    for p in sorted(trips.iterdir()):
        ep = load_episode(p)
        own = load_imagined(ep)
        assert own.shape == ep.frames.shape and own.dtype == np.uint8
        np.testing.assert_array_equal(own[:ctx], ep.frames[:ctx])  # the real context
        assert not np.array_equal(own[ctx:], ep.frames[ctx:])  # drawn by the model
        assert (p / INFO).is_file()
    # The same trips, rolled together again with the same seed: the same copies.
    eps = [load_episode(p) for p in sorted(trips.iterdir())]
    acts = np.stack([np.concatenate([[0], ep.actions]) for ep in eps])
    again = imagine(model, cfg, np.stack([ep.frames for ep in eps]), acts, segment=5)
    for ep, copy in zip(eps, again):
        np.testing.assert_array_equal(copy, load_imagined(ep))

    data = WindowDataset(trips, cfg.data.window, SPACE, frame_size=64, poses=True, imagined=True)
    assert data.num_imagined == data.num_episodes
    real = data.sample(16, np.random.default_rng(3), canvases=True)[2]
    own = data.sample(16, np.random.default_rng(3), canvases=True, imagined=1.0)[2]
    assert own.shape == real.shape and not np.array_equal(own, real)
    np.testing.assert_array_equal(own[:, :, 3:], real[:, :, 3:])  # same places known, same ages
    # Each window's canvases are the imagined frames' history at the real poses.
    s = data.starts[np.random.default_rng(3).integers(0, len(data.starts), 16)][0]
    f0, end = data.first[s], s + cfg.data.window - 1
    want = history_canvases(data.imagined[f0:end], data.pos[f0:end], np.arange(s - f0, end - f0))
    np.testing.assert_array_equal(own[0, 1:], want)


def test_a_copy_that_does_not_fit_its_episode_is_a_clear_error(trips):
    p = sorted(trips.iterdir())[0]
    ep = load_episode(p)
    np.save(p / FRAMES, ep.frames[:-1])
    with pytest.raises(ImaginedError, match="rerun memory.imagined"):
        load_imagined(ep)
    (p / FRAMES).write_bytes(b"not numpy")
    with pytest.raises(ImaginedError, match="cannot be read"):
        load_imagined(ep)
    with pytest.raises(ImaginedError, match="cannot be read"):
        WindowDataset(trips, 8, SPACE, frame_size=64, poses=True, imagined=True)
    assert WindowDataset(trips, 8, SPACE, frame_size=64, poses=True).imagined is None
