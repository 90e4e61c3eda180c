"""Night in imagination (games/crafter/night.py): the world view shown lit by the game's own
daylight at each world's step, the frames the model keeps day-lit."""

from __future__ import annotations

import numpy as np
import torch

from conftest import TINY_YAML, perturb_, smooth_frames
from games.crafter import night
from games.crafter.env import CrafterEnv
from worldmodel.config import load_config
from worldmodel.dynamics import Denoiser
from worldmodel.rollout import Rollout


def test_the_daylight_follows_the_game_and_lights_a_view_as_its_renderer_does():
    assert night.daylight(60) > 0.999 and night.daylight(210) < 1e-6  # noon, midnight
    assert np.isclose(night.daylight(0), night.daylight(300))  # a day is 300 steps
    env = CrafterEnv()
    env.reset(5)
    game = env._env
    game._world.daylight = 1.0
    day = game.render()[0:49, 0:63]
    for level in (0.9, 0.6):  # no noise above 0.5: the same picture, up to rounding
        game._world.daylight = level
        real = game.render()[0:49, 0:63].astype(np.float64)
        lit = night.light(torch.from_numpy(day).permute(2, 0, 1).double(), level)
        assert np.abs(lit.permute(1, 2, 0).numpy() - real).mean() < 1.0
    game._world.daylight = 0.05  # at night the noise differs, the darkness does not
    real = game.render()[0:49, 0:63].astype(np.float64)
    lit = night.light(torch.from_numpy(day).permute(2, 0, 1).double(), 0.05,
                      torch.rand(49, 63, dtype=torch.float64) * 95 + 32)
    assert abs(lit.mean().item() - real.mean()) < 2.0 < day.mean() - real.mean()


def test_a_rollout_darkens_what_it_shows_past_the_day_and_keeps_day_frames_in_its_context():
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "data.window=4"])
    torch.manual_seed(0)
    model = perturb_(Denoiser(cfg.model), 0, 0.05).eval()
    ctx = smooth_frames((1, 3, 3, 64, 64), seed=2)

    def run(stages, clock):
        model.stages = stages
        ro = Rollout(model, cfg, context=3, seed=0)
        ro.reset(ctx, clock=[clock])
        shown = ro.step(torch.tensor([0]))
        return shown, ro.last_clean[:, 0], ro.clock[0]

    plain, kept_plain, _ = run([], 60)
    noon, _, _ = run([night.NightStage()], 59)  # drawn at step 60: full daylight
    assert torch.equal(noon, plain)
    dark, kept, clock = run([night.NightStage()], 209)  # drawn at step 210: midnight
    assert clock == 210
    world = (slice(None), slice(None), slice(0, 49), slice(0, 63))
    assert dark[world].mean() < plain[world].mean() - 0.1
    assert torch.equal(dark[:, :, 49:], plain[:, :, 49:])  # the status rows are not lit
    assert torch.equal(kept, kept_plain)  # the context keeps the frame as drawn
    again, _, _ = run([night.NightStage()], 209)
    assert torch.equal(again, dark)  # the night's noise is the world's and the step's
    model.stages = []


def test_the_clock_counts_drawn_and_appended_frames_and_resumes_with_a_saved_world():
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "data.window=4"])
    model = Denoiser(cfg.model).eval()
    ro = Rollout(model, cfg, context=3, seed=0)
    ro.reset(smooth_frames((2, 3, 3, 64, 64), seed=3), clock=[100, 7])
    ro.step(torch.tensor([0, 0]))
    ro.append(smooth_frames((2, 2, 3, 64, 64), seed=4), torch.zeros(2, 2, dtype=torch.long))
    assert ro.clock == [103, 10]
    state = ro.world_state(0)
    ro.reset_worlds([0], smooth_frames((1, 3, 3, 64, 64), seed=5))
    assert ro.clock == [2, 10]  # a restarted world's context starts its episode
    ro.load_world_state(0, state)
    assert ro.clock == [103, 10]
