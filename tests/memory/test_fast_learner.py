"""The fast learner (memory/fast_learner.py): it learns, it only touches the adapter, it resets."""

from __future__ import annotations

import copy

import pytest
import torch

from memory.config import MemoryConfig
from memory.fast_learner import FastLearner
from memory.lora import base_tensors, lora_tensors
from memory_fixtures import rollout_frames, scroll_sequence


def fixed_noise_loss(learner: FastLearner, frames, actions, draws: int = 8) -> float:
    """The loss averaged over the same noise draws every time it is asked."""
    state = learner.gen.get_state()
    learner.gen.manual_seed(123)
    with torch.no_grad():
        value = sum(learner.loss(frames, actions).item() for _ in range(draws)) / draws
    learner.gen.set_state(state)
    return value


@pytest.mark.parametrize("form", ["trajectory", "next_frame"])
def test_loss_falls_on_a_repeated_sequence(tiny_cfg, perturbed_model, form):
    frames, actions = scroll_sequence(tiny_cfg)
    learner = FastLearner(perturbed_model(tiny_cfg), tiny_cfg.diffusion,
                          MemoryConfig(rank=8, lr=1e-2, loss=form, reverse_prob=0.0),
                          tiny_cfg.model.action_space)
    before = fixed_noise_loss(learner, frames, actions)
    for _ in range(30):
        learner.update(frames, actions)
    after = fixed_noise_loss(learner, frames, actions)
    assert after < 0.92 * before, (before, after)


def test_updates_change_outputs_never_the_base_and_reset_restores_it(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    reference = copy.deepcopy(base.state_dict())
    learner = FastLearner(base, tiny_cfg.diffusion, MemoryConfig(rank=4, lr=1e-2),
                          tiny_cfg.model.action_space)
    before = {k: v.clone() for k, v in base_tensors(learner.model).items()}
    expected = rollout_frames(base, tiny_cfg)
    frames, actions = scroll_sequence(tiny_cfg)
    for _ in range(3):
        learner.update(frames, actions)
    assert learner.updates == 3
    assert not torch.equal(rollout_frames(learner.model, tiny_cfg), expected)
    for k, v in base_tensors(learner.model).items():
        assert torch.equal(v, before[k]), k
    for k, v in base.state_dict().items():  # the model handed in is untouched too
        assert torch.equal(v, reference[k]), k
    learner.reset()
    assert all(not v.any() for k, v in lora_tensors(learner.model).items() if ".lora_B." in k)
    assert torch.equal(rollout_frames(learner.model, tiny_cfg), expected)


def test_a_reversed_window_undoes_each_move():
    from memory.fast_learner import opposite_actions, reverse_window
    from worldmodel.actions import get_action_space

    space = get_action_space("crafter")
    opp = opposite_actions(space)
    left, right, up, down, noop, do = (space.index(a) for a in
                                       ("move_left", "move_right", "move_up", "move_down", "noop", "do"))
    frames = torch.arange(5.0).view(1, 5, 1, 1, 1)
    actions = torch.tensor([[-1, right, up, noop, do]])  # actions[:, i] made frame i
    rev_f, rev_a = reverse_window(frames, actions, opp)
    assert rev_f.flatten().tolist() == [4, 3, 2, 1, 0]
    # frame 3 -> 2 undoes noop (noop); 2 -> 1 undoes up (down); 1 -> 0 undoes right (left);
    # 4 -> 3 would undo "do": unknown
    assert rev_a.tolist() == [[-1, -1, noop, down, left]]
    assert opp[left] == right and opp[down] == up


def test_a_blocked_move_reverses_to_a_noop():
    """A move that did not change the frame (walked into a wall) undoes nothing: reversed, it is
    a noop, not the opposite move (which would teach that moving does not scroll)."""
    from memory.fast_learner import noop_action, opposite_actions, reverse_window, still_frames
    from worldmodel.actions import get_action_space

    space = get_action_space("crafter")
    right, left, noop = (space.index(a) for a in ("move_right", "move_left", "noop"))
    assert noop_action(space) == noop
    frames = torch.zeros(1, 4, 3, 8, 8)
    frames[:, 1:3] = 0.5  # frame 1 scrolled; frame 2 is the same as 1 (blocked); frame 3 scrolled
    frames[:, 3] = -0.5
    frames[:, 2, :, 0, 0] = 0.51  # a sprite-sized change stays under the threshold
    still = still_frames(frames, None, 0.01)
    assert still.tolist() == [[False, False, True, False]]
    actions = torch.tensor([[-1, right, right, right]])
    _, rev_a = reverse_window(frames, actions, opposite_actions(space), still, noop)
    # reversed: 3 -> 2 undoes the move that made 3 (left); 2 -> 1 was blocked (noop); 1 -> 0 (left)
    assert rev_a.tolist() == [[-1, left, noop, left]]
    # pixels a mask ignores do not count as change
    weight = torch.ones(8, 8)
    weight[:, :4] = 0
    frames[:, 2, :, :, :4] = 0.9
    assert still_frames(frames, weight, 0.01)[0, 2]


def test_ignored_pixels_do_not_count_in_a_reversed_windows_loss():
    from memory.fast_learner import ignore_weight, weighted_mse

    w = ignore_weight([[0, 2, 0, 8]], (8, 8))
    assert w[:2].sum() == 0 and w[2:].all()
    target = torch.zeros(2, 3, 3, 8, 8)
    pred = target.clone()
    pred[..., :2, :] = 5.0  # wrong only where ignored
    assert weighted_mse(pred, target, w) == 0
    pred[..., 2:, :] = 1.0  # wrong by 1 everywhere kept: the mean over kept pixels is 1
    assert torch.isclose(weighted_mse(pred, target, w), torch.tensor(1.0))
    assert torch.isclose(weighted_mse(pred, target), torch.tensor((25 * 2 + 6) / 8))
    with pytest.raises(ValueError, match="whole"):
        ignore_weight([[0, 8, 0, 8]], (8, 8))


@pytest.mark.parametrize("bad", [{"reverse_ignore": [[5, 2, 0, 8]]}, {"reverse_ignore": [[0, 1, 2]]},
                                 {"reverse_still": -0.1}, {"replay": 1.5}])
def test_bad_reversal_and_replay_settings_are_clear_errors(bad):
    from memory.config import memory_config_from_dict
    from worldmodel.config import ConfigError

    with pytest.raises(ConfigError, match=f"memory.{next(iter(bad))}"):
        memory_config_from_dict(bad)
