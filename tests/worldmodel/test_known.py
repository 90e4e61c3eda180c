"""Known pixels (worldmodel/known.py): a view seen again from the same place is reprojected from the
frames remembered there, and the sampler keeps those pixels; the network draws only the rest."""

from __future__ import annotations

import numpy as np
import torch

from conftest import TINY_YAML, perturb_, smooth_frames
from games.minetest.actions import ACTION_SPACE
from games.minetest.geometry import pixel_rays
from games.minetest.pose_memory import PoseGeometry
from worldmodel.config import load_config
from worldmodel.diffusion import denoise_chunk
from worldmodel.dynamics import Conditioning, Denoiser
from worldmodel.known import Known, feather, known_pixels
from worldmodel.recall import RecallMemory, has_view_memory, make_view_memory
from worldmodel.rollout import Rollout

A = {name: i for i, name in enumerate(ACTION_SPACE.actions)}
SIZE = 16


def plain_model(seed: int = 0):
    """A tiny Minetest model without recall layers: its view memory gives known pixels only."""
    cfg = load_config(TINY_YAML, [f"model.frame_size={SIZE}", "model.action_space=minetest",
                                  "model.game=minetest", "data.window=4"])
    torch.manual_seed(seed)
    return perturb_(Denoiser(cfg.model), seed, 0.1).eval(), cfg


def sky(pose: np.ndarray, size: int = 48) -> np.ndarray:
    """A synthetic world at infinity seen from `pose`: colours a smooth function of each pixel's
    ray direction (what a view of far things looks like from one eye, whatever its turn)."""
    d = pixel_rays(pose[3], pose[4], size)
    az, el = np.arctan2(d[..., 0], d[..., 2]), d[..., 1]
    img = np.stack([np.sin(3 * az), np.cos(2 * az) * el, el], -1)
    return ((img * 0.5 + 0.5) * 255).round().clip(0, 255).astype(np.uint8)


def test_a_view_from_the_same_eye_is_reprojected_exactly_and_one_from_elsewhere_not_at_all():
    g = PoseGeometry(ACTION_SPACE.actions)
    here = np.array([3.0, 2.0, -1.0, 30.0, 0.0])
    turned, tilted = here + [0, 0, 0, 15, 0], here + [0, 0, 0, 0, 30]
    away, elsewhere = here + [0, 0, 0, 180, 0], here + [1.0, 0, 0, 0, 0]
    grid, ok = g.reproject(here, np.stack([here, turned, tilted, away, elsewhere]), 48)
    assert ok[0].all() and ok[1].mean() > 0.6 and ok[2].mean() > 0.5
    assert not ok[3].any() and not ok[4].any()  # turned away, or seen from a node off
    c = (2 * np.arange(48) + 1) / 48 - 1  # the same view maps every pixel to itself
    assert np.allclose(grid[0, ..., 0], c[None, :], atol=1e-6)
    assert np.allclose(grid[0, ..., 1], c[:, None], atol=1e-6)
    # the turned and tilted views' pixels land where those views saw the same directions
    target = sky(here).astype(np.float64)
    for key, gk, okk in ((turned, grid[1], ok[1]), (tilted, grid[2], ok[2])):
        src = torch.from_numpy(sky(key)).permute(2, 0, 1)[None].float()
        warped = torch.nn.functional.grid_sample(src, torch.from_numpy(gk)[None],
                                                 align_corners=False)[0].permute(1, 2, 0).numpy()
        err = np.abs(warped - target)[okk & (feather(okk, 2) == 1)].mean()
        assert err < 3.0, err  # grey levels: resampling only
        assert np.abs(sky(key).astype(np.float64) - target).mean() > 20  # the views do differ


def test_the_sampler_keeps_known_pixels_and_draws_the_rest():
    model, cfg = plain_model()
    ro = Rollout(model, cfg, context=3, seed=0)
    ro.reset(smooth_frames((1, 3, 3, SIZE, SIZE), seed=1))
    image = smooth_frames((1, 1, 3, SIZE, SIZE), seed=2)
    ok = np.zeros((SIZE, SIZE), bool)
    ok[:, :10] = True
    mask = torch.from_numpy(feather(ok))[None, None, None]
    noise = torch.randn(1, 1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    def draw(known):
        t = torch.full((1, 1), cfg.diffusion.context_noise)
        act = torch.zeros(1, 1, model.action_dim)
        return denoise_chunk(model, ro.cache, ro.last, t, torch.ones(1, 1, dtype=torch.bool), act,
                             torch.ones(1, 1, dtype=torch.bool), cfg.diffusion, noise,
                             Conditioning(anchor=ro.last_clean, known=known))

    with torch.inference_mode():
        free, kept = draw(None), draw(Known(image, mask))
    deep = torch.from_numpy(feather(ok) == 1)
    assert torch.allclose(kept[0, 0][:, deep], image[0, 0][:, deep])
    assert not torch.allclose(free[0, 0][:, deep], image[0, 0][:, deep], atol=0.05)
    assert not torch.allclose(kept[0, 0][:, ~torch.from_numpy(ok)],
                              image[0, 0][:, ~torch.from_numpy(ok)], atol=0.05)


def test_after_a_full_turn_the_first_view_comes_back_and_a_dig_forgets_it():
    """Memory on, any model of a game with poses: the frame after 24 turns of 15 degrees is the
    first view (uint8, as remembered) wherever it was seen; memory off it is drawn anew; a dig
    forgets what was seen from there; a jump paints nothing while the pose is unsure."""
    model, cfg = plain_model()
    assert has_view_memory(model, cfg)
    ctx = smooth_frames((1, 4, 3, SIZE, SIZE), seed=3).add(1).mul(127.5).round() / 127.5 - 1
    acts = torch.full((1, 4), A["noop"])

    def run(on: bool, trip: list[int]):
        ro = Rollout(model, cfg, context=3, seed=0)
        ro.view = make_view_memory(model, cfg, 1, ro.context, "cpu")
        assert isinstance(ro.view, RecallMemory) and ro.view.encoder is None
        ro.view.set_on(on, [0])
        ro.reset(ctx, acts)
        return torch.stack([ro.step(torch.tensor([a])) for a in trip], 1), ro.view

    turn = [A["turn_left"]] * 24
    on, mem = run(True, turn)
    assert np.allclose(mem.pose[0], 0) and mem.remembered(0) >= 6
    assert torch.allclose(on[0, -1], ctx[0, 0], atol=1e-5)  # the first view, exactly
    assert torch.equal(run(True, turn)[0], on)  # deterministic under the seed
    off, mem_off = run(False, turn)
    assert mem_off.remembered(0) == 0 and not torch.allclose(off[0, -1], ctx[0, 0], atol=0.05)
    dug, mem_dug = run(True, [A["dig"]] + turn[1:])
    assert not torch.allclose(dug[0, -1], ctx[0, 0], atol=0.05)  # the start view was forgotten
    still, _ = run(True, turn + [A["noop"]])
    assert torch.allclose(still[0, -1], ctx[0, 0], atol=1e-5)  # standing there, the same view
    jumped, _ = run(True, turn + [A["jump"]])
    assert not torch.allclose(jumped[0, -1], ctx[0, 0], atol=0.05)  # no paint while unsure


def test_known_pixels_come_from_frames_drawn_before_of_worlds_switched_on_oldest_on_top():
    g = PoseGeometry(ACTION_SPACE.actions)
    mem = RecallMemory(g, 2, k=0, context=3)
    first, later = smooth_frames((2, 2, 3, SIZE, SIZE), seed=4).unbind(0)
    as_kept = lambda f: f.add(1).mul(127.5).round() / 127.5 - 1  # noqa: E731 (stored as uint8)
    mem.set_on(True, [0])
    mem.write(first)  # world 0 remembers its first view; world 1 is off
    assert mem.remembered(0) == 1 and mem.remembered(1) == 0
    mem.advance(np.array([A["turn_left"], A["noop"]]))
    mem.write(later)  # a turned view: new, so remembered
    assert mem.remembered(0) == 2
    mem.advance(np.array([A["turn_right"], A["noop"]]))  # facing the first view again
    got = known_pixels(mem, np.stack([mem.pose[0], mem.pose[1]])[:, None], SIZE)
    assert got is not None and got.mask[0].min() == 1 and got.mask[1].max() == 0
    # the pixels both views showed come from the oldest: the first view, whole
    assert torch.allclose(got.image[0, 0], as_kept(first[0]), atol=1e-5)
    mem.set_on(False, [0])
    assert known_pixels(mem, np.stack([mem.pose[0], mem.pose[1]])[:, None], SIZE) is None


def test_a_session_on_a_model_without_recall_plays_saves_and_resumes_its_view_memory(tmp_path):
    """The session keeps a pose-keyed view memory for any Minetest model: on by default where the
    model has one (run_sim), switched by `set_memory`, saved with F5 and resumed to draw the same
    next frames, the first view back after a full turn."""
    from simulator.session import WorldSession

    model, cfg = plain_model()
    ctx = (smooth_frames((3, 3, SIZE, SIZE), seed=5).add(1).mul(127.5).round().clamp(0, 255)
           .to(torch.uint8).permute(0, 2, 3, 1).numpy())
    sess = WorldSession(model, cfg, game="minetest", context=3, memory=False)
    assert sess.memory_stores == ["view"] and isinstance(sess.view, RecallMemory)
    sess.set_memory(True)
    sess.reset(context=ctx, noise_seed=0)
    for _ in range(12):
        sess.step("turn_left")
    sess.save_memory(tmp_path / "world")
    saved = sess.view.remembered(0)
    ahead = [sess.step("turn_left") for _ in range(12)]
    assert np.array_equal(ahead[-1], ctx[0])  # a full turn: the first view again
    other = WorldSession(model, cfg, game="minetest", context=3, memory=False)
    other.reset(context=ctx, noise_seed=9)
    other.set_memory(True)
    other.load_memory(tmp_path / "world")
    assert other.view.remembered(0) == saved > 0
    again = [other.step("turn_left") for _ in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(ahead, again))
    sess.close()
    other.close()


def test_a_walk_writes_every_new_place_and_standing_still_writes_nothing():
    """Known pixels need a frame from the same eye, so the memory writes each place a walk
    reaches, even where a view from a step behind covers most of its field of view."""
    g = PoseGeometry(ACTION_SPACE.actions)
    mem = RecallMemory(g, 1, k=0, context=3)
    mem.set_on(True, [0])
    frames = smooth_frames((1, 3, SIZE, SIZE), seed=6)
    mem.write(frames)
    for _ in range(3):
        mem.advance(np.array([A["noop"]]))
        assert mem.write(frames) == 0
    for i in range(4):
        mem.advance(np.array([A["forward"]]))
        assert mem.write(frames) == 1 and mem.remembered(0) == 2 + i


def test_a_wholly_known_frame_skips_the_network_and_draws_the_same():
    """Standing still where the view was seen whole: the sampler would keep every pixel, so it
    does not call the network at all, and the frames are those it would have drawn."""
    model, cfg = plain_model()
    ctx = smooth_frames((1, 4, 3, SIZE, SIZE), seed=8).add(1).mul(127.5).round() / 127.5 - 1
    acts = torch.full((1, 4), A["noop"])
    ro = Rollout(model, cfg, context=3, seed=0)
    ro.view = make_view_memory(model, cfg, 1, ro.context, "cpu")
    ro.view.set_on(True, [0])
    ro.reset(ctx, acts)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        still = ro.step(torch.tensor([A["noop"]]))
        n_still = len(calls)
        ro.step(torch.tensor([A["forward"]]))  # a new place: drawn
        n_walk = len(calls) - n_still
    finally:
        hook.remove()
    assert torch.allclose(still[0], ctx[0, 0], atol=1e-5)
    assert n_still == 1 and n_walk == 1 + cfg.diffusion.sample_steps  # the cache write only
