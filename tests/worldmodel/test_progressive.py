"""The progressive sampler (PA-VDM, `Rollout.stream`) and its training mode
(`diffusion.progressive_prob`): one frame per call at the right levels, deterministic under a
seed, refused where it cannot work, and a tiny training run of it lowers the loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import CRAFTER_SIZE, perturb_, smooth_frames
from worldmodel.checkpoint import save_checkpoint
from worldmodel.config import ConfigError
from worldmodel.diffusion import fixed_chunk_starts, progressive_levels
from worldmodel.dynamics import Denoiser
from worldmodel.rollout import Rollout
from worldmodel.training.train import train


def started(model, cfg, seed: int = 0) -> Rollout:
    ro = Rollout(model, cfg, seed=seed)
    ro.reset(smooth_frames((2, 3, 3, cfg.model.frame_size, cfg.model.frame_size)))
    return ro


def test_the_window_emits_one_frame_per_call_at_the_staircase_levels(tiny_config, perturbed_model):
    cfg = tiny_config("diffusion.sampler=progressive", "diffusion.progressive_window=3")
    model = perturbed_model(cfg)
    ro = started(model, cfg)
    calls = []  # (levels of a sampler call) or "commit" for a frame written to the cache
    forward = model.forward

    def spy(x, prev, t, *args, commit=False, **kwargs):
        calls.append("commit" if commit else [round(float(v), 4) for v in t[0]])
        return forward(x, prev, t, *args, commit=commit, **kwargs)

    model.forward = spy
    out = ro.stream(torch.randint(0, 17, (2, 6)))
    assert out.shape == (2, 6, 3, 16, 16) and torch.isfinite(out).all()
    third = round(1 / 3, 4)
    two = round(2 / 3, 4)
    assert calls == [[1.0], [two, 1.0],  # the window fills (nothing emitted yet)
                     [third, two, 1.0], "commit", [third, two, 1.0], "commit",
                     [third, two, 1.0], "commit", [third, two, 1.0], "commit",
                     [third, two], "commit", [third], "commit"]  # and drains at the end


def test_the_stream_is_deterministic_under_a_seed(tiny_config, perturbed_model):
    cfg = tiny_config("diffusion.sampler=progressive")
    model = perturbed_model(cfg)
    acts = torch.randint(0, 17, (2, 5), generator=torch.Generator().manual_seed(3))
    a = started(model, cfg, seed=4).stream(acts)
    b = started(model, cfg, seed=4).stream(acts)
    c = started(model, cfg, seed=5).stream(acts)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_model_with_an_anchor_head_is_refused_with_a_reason(tiny_config, perturbed_model):
    cfg = tiny_config("model.shift_kernel=17", "model.committed_move=7", size=64)
    ro = started(perturbed_model(cfg), cfg)
    with pytest.raises(ValueError, match="anchor head"):
        ro.stream(torch.zeros(2, 3, dtype=torch.long))


def test_an_unknown_sampler_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="diffusion.sampler"):
        tiny_config("diffusion.sampler=ddim")


def test_training_levels_rise_along_each_chunk():
    starts = fixed_chunk_starts(9, 4)
    assert starts.tolist() == [0, 1, 1, 1, 1, 5, 5, 5, 5]
    t = progressive_levels(starts, 4, 3, torch.Generator().manual_seed(0), "cpu")
    for s in (1, 5):
        chunk = t[:, s:s + 4]
        assert (chunk.diff(dim=1) > 0).all()  # noise rising from the chunk's oldest frame
        j = torch.arange(4)
        assert ((chunk * 4 - j) > 0).all() and ((chunk * 4 - j) <= 1 + 1e-6).all()


def test_a_tiny_progressive_training_run_lowers_the_loss(tiny_config, crafter_episodes, tmp_path):
    cfg = tiny_config(f"data.train={crafter_episodes}", f"train.out={tmp_path / 'run'}",
                      "train.steps=40", "train.log_every=10", "train.ckpt_every=40",
                      "diffusion.chunk_prob=0", "diffusion.independent_prob=0",
                      "diffusion.progressive_prob=1", "diffusion.progressive_window=3",
                      size=CRAFTER_SIZE)
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init", perturb_(Denoiser(cfg.model), 0, 0.1), cfg)
    train(cfg, torch.device("cpu"), init=str(init), amp=False, quiet=True)
    curve = [json.loads(line)["loss"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(curve) == 4 and np.isfinite(curve).all()
    assert curve[-1] < 0.5 * curve[0], curve
