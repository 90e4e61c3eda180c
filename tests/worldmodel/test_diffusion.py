"""Rectified-flow maths, the training loss and the sampler (worldmodel/diffusion.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import smooth_frames
from worldmodel.diffusion import (TrainBatch, add_noise, chunk_starts, denoise_chunk,
                                  sample_levels, sample_schedule, training_loss)
from worldmodel.dynamics import Conditioning, Denoiser, KVCache

# The three target layouts the loss trains: one frame per chunk, shared-level chunks,
# chunks with independent levels.
MODES = {"single": dict(chunk_prob=0.0, independent_prob=0.0),
         "chunked": dict(chunk_prob=1.0, independent_prob=0.0),
         "independent": dict(chunk_prob=0.0, independent_prob=1.0)}


def batch(cfg, b: int = 2, n: int = 5, seed: int = 0) -> TrainBatch:
    s = cfg.model.frame_size
    frames = smooth_frames((b, n, 3, s, s), seed)
    acts = torch.randint(0, 17, (b, n), generator=torch.Generator().manual_seed(seed))
    return TrainBatch(frames, torch.nn.functional.one_hot(acts, 17).float())


class TargetOracle(torch.nn.Module):
    """Runs the real network (so the cache is filled as usual), then replaces each prediction
    with the ground truth of the frame at that position, plus `error[p]` for position p.
    Position 0 is the window's first frame, which is context only: the oracle answers it with
    garbage, so a loss that regressed it would not be zero."""

    def __init__(self, model: Denoiser, frames: torch.Tensor, error: dict[int, float]):
        super().__init__()
        self.model = model
        self.frames = frames
        self.error = {0: 5.0, **error}
        self.move = self.memory_stem = None  # a plain network: no anchor head, no memory

    def forward(self, x, prev, t, t_prev, has_prev, act, act_drop, cache=None, chunk_start=None,
                commit=False, conditioning=None):
        out = self.model(x, prev, t, t_prev, has_prev, act, act_drop, cache=cache,
                         chunk_start=chunk_start, commit=commit, conditioning=conditioning)
        if commit:
            return out
        n_total = self.frames.shape[1]
        preds = []
        for p in range(cache.pos, cache.pos + x.shape[1]):
            truth = self.frames[:, p] if p < n_total else torch.zeros_like(self.frames[:, 0])
            preds.append(truth + self.error.get(p, 0.0) + 0 * out[:, 0])
        return torch.stack(preds, 1)


def test_add_noise_interpolates_between_data_and_noise():
    x0 = torch.ones(1, 3, 3, 2, 2)
    eps = -torch.ones_like(x0)
    xt = add_noise(x0, torch.tensor([[0.0, 0.25, 1.0]]), eps)
    assert xt[0, 0].eq(1).all() and xt[0, 1].eq(0.5).all() and xt[0, 2].eq(-1).all()


def test_sample_levels_are_in_range_and_seeded(tiny_cfg):
    gen = torch.Generator().manual_seed(0)
    t = sample_levels((1000,), tiny_cfg.diffusion, gen)
    assert t.min() >= 1e-3 and t.max() <= 1.0
    assert 0.4 < t.mean() < 0.6
    assert torch.equal(t, sample_levels((1000,), tiny_cfg.diffusion, torch.Generator().manual_seed(0)))


def test_chunk_starts_partition_the_targets():
    for seed in range(20):
        s = chunk_starts(8, np.random.default_rng(seed))
        assert s[0] == 0 and s[1] == 1
        assert (s[1:] <= np.arange(1, 8)).all() and (np.diff(s) >= 0).all()
        assert (np.arange(1, 8) - s[1:] < 4).all()  # at most 4 frames per chunk


def test_sample_schedule_starts_at_pure_noise():
    assert sample_schedule(1) == [1.0]
    assert sample_schedule(4) == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize("mode", MODES)
def test_loss_is_zero_when_every_target_is_right_whatever_the_first_frame(tiny_cfg, mode):
    """Frame 0 of the window is context only: the oracle mispredicts it and the loss is 0."""
    cfg = dataclasses.replace(tiny_cfg.diffusion, **MODES[mode])
    torch.manual_seed(0)
    data = batch(tiny_cfg)
    oracle = TargetOracle(Denoiser(tiny_cfg.model), data.frames, {})
    for seed in range(3):
        loss, _ = training_loss(oracle, data, cfg, np.random.default_rng(seed),
                                torch.Generator().manual_seed(seed))
        assert loss.item() == 0.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wrong", [1, 4])
def test_each_target_weighs_one_over_n_minus_one(tiny_cfg, mode, wrong):
    """One target off by 0.5 everywhere: the loss is 0.25 / (n - 1) for n - 1 = 4 targets."""
    cfg = dataclasses.replace(tiny_cfg.diffusion, **MODES[mode])
    torch.manual_seed(0)
    data = batch(tiny_cfg, n=5)
    oracle = TargetOracle(Denoiser(tiny_cfg.model), data.frames, {wrong: 0.5})
    loss, _ = training_loss(oracle, data, cfg, np.random.default_rng(0))
    assert loss.item() == pytest.approx(0.25 / 4, rel=1e-6)


def test_fresh_model_loss_is_the_copy_baseline(tiny_cfg):
    """An untrained model predicts its anchor, the clean frame before each target: with one frame
    per chunk its loss is exactly the copy-last-frame error over targets 1..n-1."""
    cfg = dataclasses.replace(tiny_cfg.diffusion, **MODES["single"])
    torch.manual_seed(0)
    data = batch(tiny_cfg, n=5)
    loss, info = training_loss(Denoiser(tiny_cfg.model), data, cfg, np.random.default_rng(0))
    copy = (data.frames[:, 1:] - data.frames[:, :-1]).pow(2).mean()
    torch.testing.assert_close(loss, copy)
    torch.testing.assert_close(info["copy_mse"], copy)
    # the first frame is no target: changing it alone leaves the copy error of 2..n-1 to 1..n-1
    changed = data.frames.clone()
    changed[:, 0] = -changed[:, 0]
    loss2, _ = training_loss(Denoiser(tiny_cfg.model), TrainBatch(changed, data.actions), cfg,
                             np.random.default_rng(0))
    torch.testing.assert_close(loss2, (changed[:, 1:] - changed[:, :-1]).pow(2).mean())


def test_loss_trains_every_parameter_of_the_network(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    model.train()
    loss, _ = training_loss(model, batch(tiny_cfg), tiny_cfg.diffusion, np.random.default_rng(0),
                            torch.Generator().manual_seed(0))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    assert torch.isfinite(loss)


class ContextProbe(torch.nn.Module):
    """Makes the context stream's frames a leaf tensor and keeps the targets' predictions, so a
    test can ask which context frames each target depends on."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model
        self.move, self.memory_stem = model.move, model.memory_stem

    def forward(self, x, *args, commit=False, chunk_start=None, **kwargs):
        if commit:
            self.ctx = x.detach().requires_grad_(True)
            return self.model(self.ctx, *args, commit=True, **kwargs)
        self.pred = self.model(x, *args, chunk_start=chunk_start, **kwargs)
        self.chunk_start = chunk_start
        return self.pred


@pytest.mark.parametrize("mode", MODES)
def test_targets_see_exactly_the_context_before_their_chunk(tiny_cfg, perturbed_model, mode):
    """A target must not see its own (or a later) frame's context version through the cache,
    which would leak the answer; it must see every earlier one."""
    cfg = dataclasses.replace(tiny_cfg.diffusion, **MODES[mode])
    probe = ContextProbe(perturbed_model(tiny_cfg))
    n = 6
    training_loss(probe, batch(tiny_cfg, b=1, n=n), cfg, np.random.default_rng(1),
                  torch.Generator().manual_seed(0))
    assert len(probe.chunk_start) == n - 1
    for pos in range(1, n):
        (grad,) = torch.autograd.grad(probe.pred[:, pos - 1].sum(), probe.ctx, retain_graph=True)
        seen = [j for j in range(n) if grad[:, j].abs().sum() > 0]
        start = len(seen)  # the target's chunk opens where its view of the context ends
        assert seen == list(range(start)), f"target {pos} sees context frames {seen}"
        assert 1 <= start <= pos, f"target {pos} sees context frames {seen}"
        assert pos - start < 4  # chunks hold at most 4 frames
        if mode == "single":
            assert start == pos, f"target {pos} sees context frames {seen}"


def test_context_reaches_targets_through_the_cache(tiny_cfg, perturbed_model):
    """Targets are conditioned on earlier context: the gradient reaches frame 0."""
    model = perturbed_model(tiny_cfg)
    data = batch(tiny_cfg)
    frames = data.frames.clone().requires_grad_(True)
    loss, _ = training_loss(model, TrainBatch(frames, data.actions), tiny_cfg.diffusion,
                            np.random.default_rng(0), torch.Generator().manual_seed(0))
    loss.backward()
    assert frames.grad[:, 0].abs().sum() > 0


def test_denoise_chunk_with_a_fresh_model_returns_the_anchor(tiny_cfg):
    torch.manual_seed(0)
    model = Denoiser(tiny_cfg.model)
    s = tiny_cfg.model.frame_size
    ctx = smooth_frames((1, 2, 3, s, s))
    cache = KVCache(max_len=4)
    hp = torch.tensor([[False, True]])
    act = torch.zeros(1, 2, 17)
    model(ctx, torch.cat([torch.zeros_like(ctx[:, :1]), ctx[:, :1]], 1), torch.zeros(1, 2),
          torch.zeros(1, 2), hp, act, torch.ones(1, 2, dtype=torch.bool), cache=cache, commit=True)
    out = denoise_chunk(model, cache, ctx[:, -1:], torch.zeros(1, 1),
                        torch.ones(1, 1, dtype=torch.bool), act[:, :1].repeat(1, 3, 1),
                        torch.zeros(1, 3, dtype=torch.bool), tiny_cfg.diffusion,
                        torch.randn(1, 3, 3, s, s), Conditioning(anchor=ctx[:, -1:]))
    assert torch.equal(out, ctx[:, -1:].expand(1, 3, 3, s, s))


def test_guidance_changes_the_sample_only_when_on(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    s = tiny_cfg.model.frame_size
    ctx = smooth_frames((1, 1, 3, s, s))
    noise = torch.randn(1, 1, 3, s, s, generator=torch.Generator().manual_seed(0))
    act = torch.nn.functional.one_hot(torch.tensor([[3]]), 17).float()

    def sample(guidance: float) -> torch.Tensor:
        cache = KVCache(max_len=4)
        model(ctx, torch.zeros_like(ctx), torch.zeros(1, 1), torch.ones(1, 1),
              torch.zeros(1, 1, dtype=torch.bool), act, torch.ones(1, 1, dtype=torch.bool),
              cache=cache, commit=True)
        dcfg = dataclasses.replace(tiny_cfg.diffusion, guidance=guidance)
        return denoise_chunk(model, cache, ctx, torch.zeros(1, 1),
                             torch.ones(1, 1, dtype=torch.bool), act,
                             torch.zeros(1, 1, dtype=torch.bool), dcfg, noise,
                             Conditioning(anchor=ctx))

    with torch.no_grad():
        assert torch.equal(sample(1.0), sample(1.0))
        assert not torch.allclose(sample(1.0), sample(3.0))


def test_own_predictions_of_a_fresh_model_are_its_anchors(tiny_cfg):
    """A fresh network's residual is zero, so its one-step prediction of frame i is frame i-1:
    self-forcing hands the loss that shifted context (frame 0 stays real)."""
    from worldmodel.diffusion import own_predictions

    cfg = tiny_cfg.diffusion
    x0 = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    act = torch.zeros(2, 4, 17)
    drop = torch.zeros(2, 4, dtype=torch.bool)
    out = own_predictions(Denoiser(tiny_cfg.model), x0, act, drop, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], x0[:, 0])
    assert torch.allclose(out[:, 1:], x0[:, :-1])


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_self_forcing_depth_compounds_the_models_own_steps(tiny_cfg, depth):
    """With a copying (fresh) model, `depth` rounds turn context frame i into frame i - depth:
    the lag a rollout of that model would have after `depth` of its own steps."""
    from worldmodel.diffusion import self_forced_context

    cfg = dataclasses.replace(tiny_cfg.diffusion, self_forcing_depth=depth)
    x0 = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    out = self_forced_context(Denoiser(tiny_cfg.model), x0, torch.zeros(2, 5, 17),
                              torch.zeros(2, 5, dtype=torch.bool), cfg,
                              torch.Generator().manual_seed(0))
    for i in range(5):
        torch.testing.assert_close(out[:, i], x0[:, max(i - depth, 0)])


def test_corrupt_context_perturbs_about_half_the_frames_within_range():
    from worldmodel.config import DiffusionConfig
    from worldmodel.diffusion import corrupt_context

    x0 = torch.zeros(8, 16, 3, 8, 8)
    cfg = DiffusionConfig()
    assert corrupt_context(x0, cfg, None) is x0  # off by default
    cfg = dataclasses.replace(cfg, anchor_noise_max=0.1, anchor_color_shift=0.04)
    out = corrupt_context(x0, cfg, torch.Generator().manual_seed(0))
    changed = (out != 0).flatten(2).any(-1).float().mean().item()
    assert 0.3 < changed < 0.7 and out.abs().max() <= 1
