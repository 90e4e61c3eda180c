"""The committed move head (model.committed_move): one decided, exact one-tile move per frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.actions import get_action_space
from worldmodel.config import ConfigError
from worldmodel.data import load_episode
from worldmodel.data.dataset import to_float
from worldmodel.diffusion import TrainBatch, training_loss
from worldmodel.dynamics import Conditioning, Denoiser
from worldmodel.evaluation.evaluate import player_positions
from games.crafter.geometry import SCROLLS
from games.crafter.geometry import window_moves


def _cfg(tiny_config, *extra):
    return tiny_config("model.shift_kernel=17", "model.committed_move=7", *extra, size=64)


def test_a_committed_move_shifts_the_world_view_by_exactly_one_tile(tiny_config):
    model = Denoiser(_cfg(tiny_config).model)
    x = torch.rand(5, 3, 64, 64)
    out = model.move.apply(x, model.move.kernels(torch.arange(5)))
    assert torch.equal(out[0], x[0])  # no move (a blocked one): the anchor stays in place
    for k, (dx, dy) in enumerate(SCROLLS[1:], 1):
        # The player moves (dx, dy) tiles: the view shows the anchor moved the other way.
        want = torch.roll(x[k], shifts=(-7 * dy, -7 * dx), dims=(1, 2))
        inner = (slice(None), slice(7, 42), slice(7, 56))
        assert torch.equal(out[k][inner], want[inner]), (dx, dy)
        assert torch.equal(out[k][:, 49:], x[k][:, 49:])  # the inventory stays
        assert torch.equal(out[k][:, :, 63:], x[k][:, :, 63:])


def test_forward_applies_the_given_moves_else_its_own_decision(tiny_config):
    torch.manual_seed(0)
    model = Denoiser(_cfg(tiny_config).model).eval()
    b, n = 2, 1
    anchor = torch.rand(b, n, 3, 64, 64) * 2 - 1
    x = torch.randn(b, n, 3, 64, 64)
    t = torch.ones(b, n)
    act = get_action_space("crafter").encode(torch.tensor([[2], [0]]))
    drop = torch.zeros(b, n, dtype=torch.bool)
    hp = torch.ones(b, n, dtype=torch.bool)
    with torch.no_grad():
        given = Conditioning(anchor=anchor, choice=torch.tensor([[2], [0]]), want_logits=True)
        moved, logits = model(x, anchor, t, t * 0, hp, act, drop, conditioning=given)
        own = model(x, anchor, t, t * 0, hp, act, drop, conditioning=Conditioning(anchor=anchor))
        again = model(x, anchor, t, t * 0, hp, act, drop, conditioning=Conditioning(anchor=anchor))
    assert logits.shape == (2, 5)
    # A fresh network's residual is zero: the output is the anchor, moved one tile right or kept.
    inner = (slice(None), slice(0, 49), slice(0, 56))
    assert torch.allclose(moved[0, 0][inner], torch.roll(anchor[0, 0], -7, 2)[inner], atol=1e-4)
    assert torch.allclose(moved[1, 0], anchor[1, 0], atol=1e-4)
    assert torch.equal(own, again)  # the decision is deterministic


def test_window_moves_read_the_real_moves_from_the_frames(labelled_crafter):
    space = get_action_space("crafter")
    for p in sorted(labelled_crafter.root.glob("heldout_*")):
        ep = load_episode(p)
        acts = np.concatenate([[0], ep.actions])
        cls = window_moves(ep.frames[None], acts[None], space)[0]
        real = np.diff(player_positions(ep), axis=0)
        assert (np.asarray(SCROLLS)[cls[1:]] == real).all()


def test_training_with_committed_moves_lowers_both_losses(tiny_config, labelled_crafter):
    cfg = _cfg(tiny_config, "diffusion.self_forcing_prob=0")
    torch.manual_seed(0)
    model = Denoiser(cfg.model)
    space = get_action_space("crafter")
    ep = load_episode(sorted(labelled_crafter.root.glob("heldout_*"))[0])
    acts = np.concatenate([[0], ep.actions])
    starts = np.arange(0, 48, 6)
    frames = np.stack([ep.frames[s:s + 4] for s in starts])
    a = np.stack([acts[s:s + 4] for s in starts])
    batch = TrainBatch(to_float(torch.from_numpy(frames)), space.encode(torch.from_numpy(a)),
                       torch.from_numpy(window_moves(frames, a, space)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for i in range(30):
        loss, info = training_loss(model, batch, cfg.diffusion, np.random.default_rng(i),
                                   torch.Generator().manual_seed(i))
        first = first or {k: float(v) for k, v in info.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(info["move_loss"]) < 0.5 * first["move_loss"]
    assert float(info["loss"]) < first["loss"]


def test_a_move_that_does_not_fit_the_kernel_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="committed_move"):
        tiny_config("model.shift_kernel=9", "model.committed_move=7", size=64)
