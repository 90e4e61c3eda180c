"""Training windows (worldmodel/data/dataset.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_episode
from worldmodel.actions import get_action_space
from worldmodel.data.dataset import WindowDataset, to_float, to_uint8
from worldmodel.data.episode import EpisodeError

CRAFTER = get_action_space("crafter")


def counting_episode(path, start: int, steps: int):
    """Frame t of the episode is filled with the value start + t, action t is (start + t) % 17:
    every sampled window can be checked for contiguity and alignment."""
    frames = np.stack([np.full((8, 8, 3), start + t, np.uint8) for t in range(steps + 1)])
    actions = [(start + t + 1) % 17 for t in range(steps)]  # the action that produced frame t+1
    return write_episode(path, frames, actions)


def test_windows_are_contiguous_aligned_and_never_cross_episodes(tmp_path):
    counting_episode(tmp_path / "train_a", 0, 9)
    counting_episode(tmp_path / "train_b", 100, 5)
    counting_episode(tmp_path / "other_c", 200, 9)  # filtered out by the prefix
    data = WindowDataset(tmp_path, window=4, space=CRAFTER, prefix="train_")
    assert data.num_episodes == 2
    assert len(data) == (10 - 3) + (6 - 3)

    frames, acts = data.sample(64, np.random.default_rng(0))
    assert frames.shape == (64, 4, 8, 8, 3) and acts.shape == (64, 4)
    values = frames[:, :, 0, 0, 0].astype(int)
    assert (np.diff(values, axis=1) == 1).all()  # consecutive frames of one episode
    assert set(values[:, 0]) <= set(range(0, 7)) | set(range(100, 103))
    # acts[:, i] produced frame i (first frame of an episode: 0)
    expected = np.where(values % 100 == 0, 0, values % 17)
    np.testing.assert_array_equal(acts[:, 1:], expected[:, 1:])


def test_short_episodes_are_skipped_and_none_long_enough_is_an_error(tmp_path):
    counting_episode(tmp_path / "train_a", 0, 2)
    with pytest.raises(EpisodeError, match="has 4 frames"):
        WindowDataset(tmp_path, window=4, space=CRAFTER, prefix="train_")


def test_wrong_action_space_or_frame_size_is_an_error(tmp_path):
    counting_episode(tmp_path / "train_a", 0, 5)
    with pytest.raises(EpisodeError, match="expected 16"):
        WindowDataset(tmp_path, window=4, space=CRAFTER, frame_size=16)
    with pytest.raises(EpisodeError, match="action space"):
        WindowDataset(tmp_path, window=4, space=get_action_space("minecraft"))


def test_uint8_float_round_trip_is_exact():
    u8 = torch.arange(256, dtype=torch.uint8).repeat(3, 1).T.reshape(16, 16, 3)
    x = to_float(u8)
    assert x.shape == (3, 16, 16) and x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), u8)
