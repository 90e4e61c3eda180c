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
