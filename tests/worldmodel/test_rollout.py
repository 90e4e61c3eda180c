"""Autoregressive generation: seeded determinism and the sliding KV cache (worldmodel/rollout.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import smooth_frames
from worldmodel.actions import get_action_space
from worldmodel.diffusion import add_noise, denoise_chunk
from worldmodel.dynamics import Conditioning, Denoiser, KVCache
from worldmodel.rollout import Rollout

B = 2


def context_and_actions(cfg, n: int = 3, seed: int = 0):
    s = cfg.model.frame_size
    frames = smooth_frames((B, n, 3, s, s), seed)
    actions = torch.randint(0, 17, (B, n), generator=torch.Generator().manual_seed(seed))
    return frames, actions


def step_actions(steps: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 17, (steps, B), generator=torch.Generator().manual_seed(seed))


def run(model, cfg, seed: int, steps: int = 4) -> torch.Tensor:
    ro = Rollout(model, cfg, seed=seed)
    ro.reset(*context_and_actions(cfg))
    return torch.stack([ro.step(a) for a in step_actions(steps)], 1)


def test_step_and_chunk_shapes(tiny_cfg, perturbed_model):
    ro = Rollout(perturbed_model(tiny_cfg), tiny_cfg)
    assert ro.context == tiny_cfg.data.window - 1
    with pytest.raises(RuntimeError, match="reset"):
        ro.step(torch.zeros(B, dtype=torch.long))
    ro.reset(*context_and_actions(tiny_cfg))
    assert ro.step(torch.tensor([0, 1])).shape == (B, 3, 16, 16)
    frames = ro.chunk(torch.tensor([[0, 1], [2, 3]]))
    assert frames.shape == (B, 2, 3, 16, 16)
    assert frames.min() >= -1 and frames.max() <= 1
    with pytest.raises(ValueError, match="holds 2"):
        ro.step(torch.tensor([0, 1, 2]))


def test_reset_keeps_only_the_last_context_frames(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    frames, actions = context_and_actions(tiny_cfg, n=6)
    long, short = Rollout(model, tiny_cfg, seed=0), Rollout(model, tiny_cfg, seed=0)
    long.reset(frames, actions)
    short.reset(frames[:, -3:], actions[:, -3:])
    assert long.cache.positions.tolist() == [0, 1, 2]
    a = torch.tensor([4, 5])
    assert torch.equal(long.step(a), short.step(a))


def test_fresh_model_rollout_repeats_the_last_frame(tiny_cfg):
    """Zero-init residual: an untrained model is a static world, exactly."""
    torch.manual_seed(0)
    ro = Rollout(Denoiser(tiny_cfg.model), tiny_cfg, seed=0)
    frames, actions = context_and_actions(tiny_cfg)
    ro.reset(frames, actions)
    for a in step_actions(3):
        assert torch.equal(ro.step(a), frames[:, -1])


def test_same_seed_same_frames_other_seed_other_frames(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    first, again, other = run(model, tiny_cfg, 7), run(model, tiny_cfg, 7), run(model, tiny_cfg, 8)
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3


def test_reset_restarts_the_world_but_not_the_noise(tiny_cfg, perturbed_model):
    """A second reset from the same context gives the same kind of world from fresh noise: the
    cache holds nothing of the first rollout (a fresh Rollout drawing the same noise agrees)."""
    model = perturbed_model(tiny_cfg)
    ctx = context_and_actions(tiny_cfg)
    ro = Rollout(model, tiny_cfg, seed=3)
    ro.reset(*ctx)
    for a in step_actions(3):
        ro.step(a)
    states = [g.get_state() for g in ro.gens]
    ro.reset(*ctx)
    out = ro.step(torch.tensor([1, 2]))

    ref = Rollout(model, tiny_cfg, seed=0)
    ref.reset(*ctx)  # seeds its two worlds' streams...
    for g, st in zip(ref.gens, states):  # ...then takes over where the first rollout was
        g.set_state(st)
    ref.reset(*ctx)
    assert torch.equal(ref.step(torch.tensor([1, 2])), out)


def test_reset_with_seeds_restarts_each_worlds_noise(tiny_cfg, perturbed_model):
    """World i of a batch, seeded s_i, draws exactly what the single world seeded s_i draws."""
    model = perturbed_model(tiny_cfg)
    frames, actions = context_and_actions(tiny_cfg)
    ro = Rollout(model, tiny_cfg)
    ro.reset(frames, actions, seeds=[7, 8])
    noise = ro._noise((2, 3))
    for i, s in enumerate((7, 8)):
        one = Rollout(model, tiny_cfg)
        one.reset(frames[i:i + 1], actions[i:i + 1], seeds=[s])
        assert torch.equal(one._noise((1, 3))[0], noise[i])


def uncached_reference(model: Denoiser, cfg, frames: torch.Tensor, actions: torch.Tensor,
                       plan: list[torch.Tensor], noise: list[torch.Tensor],
                       window: int) -> torch.Tensor:
    """Generate like `Rollout`, but for every new chunk rebuild the KV cache from scratch:
    commit the *whole* history (each frame's noised context version, drawn as the rollout drew
    it) in one call into a cache that never slides, whose attention `window` equals the
    rollout's context. Context frames are conditioned as training_loss conditions its context
    stream. `plan`: (b, n) actions per chunk; `noise`: the rollout's draws in order (reset
    context noise, then per chunk: sampling noise, context noise)."""
    space = get_action_space(cfg.model.action_space)
    sigma = cfg.diffusion.context_noise
    b = frames.shape[0]
    acts = actions.clone()
    acts[:, 0] = -1  # the action before the first context frame is unknown
    clean = [frames]
    noised = [add_noise(frames, torch.full(frames.shape[:2], sigma), noise[0])]
    hist_act = [acts]
    out = []
    for k, a in enumerate(plan):
        x0, xc, xa = torch.cat(clean, 1), torch.cat(noised, 1), torch.cat(hist_act, 1)
        n = x0.shape[1]
        cache = KVCache(max_len=10_000, window=window)
        prev = torch.cat([torch.zeros_like(xc[:, :1]), xc[:, :-1]], 1)
        has_prev = torch.ones(b, n, dtype=torch.bool)
        has_prev[:, 0] = False
        t = torch.full((b, n), sigma)
        t_prev = t.clone()
        t_prev[:, 0] = 1.0  # as training_loss conditions a frame with no frame before it
        model(xc, prev, t, t_prev, has_prev, space.encode(xa.clamp(min=0)), xa < 0, cache=cache,
              commit=True)
        assert cache.positions.numel() == n  # nothing was dropped
        new = denoise_chunk(model, cache, xc[:, -1:], torch.full((b, 1), sigma),
                            torch.ones(b, 1, dtype=torch.bool), space.encode(a),
                            torch.zeros(a.shape, dtype=torch.bool), cfg.diffusion,
                            noise[1 + 2 * k], Conditioning(anchor=x0[:, -1:]))
        out.append(new)
        clean.append(new)
        noised.append(add_noise(new, torch.full(a.shape, sigma), noise[2 + 2 * k]))
        hist_act.append(a)
    return torch.cat(out, 1)


@pytest.mark.parametrize("chunk", [1, 2])
def test_sliding_kv_cache_matches_uncached_generation(tiny_cfg, perturbed_model, chunk):
    model = perturbed_model(tiny_cfg, seed=1)
    frames, actions = context_and_actions(tiny_cfg, n=3)
    steps = 6
    plan = [step_actions(steps).T[:, i:i + chunk] for i in range(0, steps, chunk)]

    ro = Rollout(model, tiny_cfg, seed=5)
    assert ro.context == 3 < frames.shape[1] + steps  # the cache must slide
    drawn: list[torch.Tensor] = []
    draw = ro._noise

    def recording_noise(shape):
        z = draw(shape)
        drawn.append(z.clone())
        return z

    ro._noise = recording_noise
    ro.reset(frames, actions)
    if chunk == 1:
        got = torch.stack([ro.step(a[:, 0]) for a in plan], 1)
    else:
        got = torch.cat([ro.chunk(a) for a in plan], 1)
    assert ro.cache.positions.tolist() == [6, 7, 8]
    assert len(drawn) == 1 + 2 * len(plan)

    with torch.no_grad():
        ref = uncached_reference(model, tiny_cfg, frames, actions, plan, drawn, ro.context)
    assert got.shape == ref.shape == (B, steps, 3, 16, 16)
    assert (got - frames[:, -1:]).abs().mean() > 1e-2  # not a copy: the comparison has teeth
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_uncached_reference_detects_a_cache_that_forgets(tiny_cfg, perturbed_model):
    """The reference is sensitive to the attention window: a rollout whose context were one
    frame shorter would not match it."""
    model = perturbed_model(tiny_cfg, seed=1)
    frames, actions = context_and_actions(tiny_cfg, n=3)
    plan = [a[:, None] for a in step_actions(4)]
    ro = Rollout(model, tiny_cfg, seed=5)
    drawn: list[torch.Tensor] = []
    draw = ro._noise
    ro._noise = lambda shape: drawn.append(draw(shape).clone()) or drawn[-1].clone()
    ro.reset(frames, actions)
    got = torch.stack([ro.step(a[:, 0]) for a in plan], 1)
    with torch.no_grad():
        ref_short = uncached_reference(model, tiny_cfg, frames, actions, plan, drawn, ro.context - 1)
    assert (got - ref_short).abs().max() > 1e-3


def test_bf16_on_cpu_is_opt_in_and_close_to_fp32(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    frames, actions = context_and_actions(tiny_cfg)
    outs = {}
    for bf16 in (None, True):
        ro = Rollout(model, tiny_cfg, seed=0, bf16=bf16)
        ro.reset(frames, actions)
        outs[bf16] = ro.step(torch.tensor([1, 2]))
    diff = (outs[None] - outs[True]).abs().max().item()
    assert 0 < diff < 0.1  # bf16 really ran (not bit-identical), and stays close


def test_append_commits_exactly_what_step_commits(tiny_cfg, perturbed_model):
    """Teacher forcing: appending the frame a step generated leaves the same state as the step."""
    model = perturbed_model(tiny_cfg)
    ctx, ctx_act = context_and_actions(tiny_cfg)
    acts = step_actions(3)
    gen = Rollout(model, tiny_cfg, seed=5)
    gen.reset(ctx, ctx_act)
    first = gen.step(acts[0])
    forced = Rollout(model, tiny_cfg, seed=5)
    forced.reset(ctx, ctx_act)
    s = tiny_cfg.model.frame_size
    forced._noise((B, 1, 3, s, s))  # the sampler noise the step drew, so the streams stay aligned
    forced.append(first[:, None], acts[0][:, None])
    assert torch.equal(forced.last_clean[:, 0], first)
    for a in acts[1:]:
        assert torch.equal(forced.step(a), gen.step(a))


def test_append_checks_its_input(tiny_cfg, perturbed_model):
    ro = Rollout(perturbed_model(tiny_cfg), tiny_cfg)
    s = tiny_cfg.model.frame_size
    with pytest.raises(RuntimeError, match="reset"):
        ro.append(torch.zeros(B, 1, 3, s, s), torch.zeros(B, 1, dtype=torch.long))
    ro.reset(*context_and_actions(tiny_cfg))
    with pytest.raises(ValueError, match="append takes frames"):
        ro.append(torch.zeros(B + 1, 1, 3, s, s), torch.zeros(B + 1, 1, dtype=torch.long))


def test_restarting_a_world_leaves_the_others_untouched(tiny_cfg, perturbed_model):
    """World 1 restarts after 3 steps: world 0 gets exactly the frames it gets when nothing
    restarts, and world 1 exactly those of a fresh rollout from its new context."""
    model = perturbed_model(tiny_cfg)
    acts = step_actions(7)
    new_ctx, new_acts = context_and_actions(tiny_cfg, seed=5)
    plain, restarted = Rollout(model, tiny_cfg, seed=0), Rollout(model, tiny_cfg, seed=0)
    out = {}
    for name, ro in (("plain", plain), ("restarted", restarted)):
        ro.reset(*context_and_actions(tiny_cfg))
        frames = [ro.step(a) for a in acts[:3]]
        if name == "restarted":
            ro.reset_worlds([1], new_ctx[1:], new_acts[1:], seeds=[9])
        out[name] = torch.stack(frames + [ro.step(a) for a in acts[3:]], 1)
    assert torch.equal(out["plain"][0], out["restarted"][0])
    fresh = Rollout(model, tiny_cfg)  # world 1 from its new context, beside any world 0
    fresh.reset(new_ctx, new_acts, seeds=[0, 9])
    again = torch.stack([fresh.step(a) for a in acts[3:]], 1)
    assert torch.equal(out["restarted"][1, 3:], again[1])
    assert not torch.equal(out["plain"][1, 3:], out["restarted"][1, 3:])
    with pytest.raises(ValueError, match="what the cache holds"):
        restarted.reset_worlds([0], new_ctx[:1, :2])
