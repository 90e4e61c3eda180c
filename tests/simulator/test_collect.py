"""Collecting real Crafter episodes (simulator/collect.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CRAFTER_SIZE
from simulator.collect import (MOVES, OPPOSITE, SPLIT_SEED_BASE, collect_episode,
                               exploration_policy, main, out_and_back, revisit_policy)
from simulator.games import make_game
from worldmodel.data.episode import load_episode


@pytest.fixture(scope="module")
def game():
    return make_game("crafter", size=CRAFTER_SIZE)


def test_same_seed_same_episode_other_seed_other_episode(game, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert collect_episode(game, tmp_path / name, seed, length=12) == 12
    a, b, c = (load_episode(tmp_path / n) for n in "abc")
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert [s["pos"] for s in a.steps] == [s["pos"] for s in b.steps]
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (13, CRAFTER_SIZE, CRAFTER_SIZE, 3)
    assert a.meta["seed"] == 3 and a.meta["complete"] and a.meta["action_space"] == "crafter"
    assert len(a.meta["start_pos"]) == 2


def test_positions_follow_the_moves(game, tmp_path):
    """`pos` is the player's position after each step: a move changes it by at most one tile."""
    collect_episode(game, tmp_path / "ep", 5, length=20)
    ep = load_episode(tmp_path / "ep")
    pos = np.array([ep.meta["start_pos"]] + [s["pos"] for s in ep.steps])
    steps = np.abs(np.diff(pos, axis=0)).sum(1)
    assert steps.max() <= 1
    moved = steps == 1
    assert np.isin(ep.actions[moved], MOVES).all()


def test_train_and_heldout_splits_use_disjoint_seeds(tmp_path):
    seeds = {split: {base + i for i in range(1000)} for split, base in SPLIT_SEED_BASE.items()}
    assert sum(map(len, seeds.values())) == len(set().union(*seeds.values()))  # pairwise disjoint

    for split in ("train", "heldout"):
        main(["--out", str(tmp_path), "--split", split, "--episodes", "1", "--length", "4",
              "--size", str(CRAFTER_SIZE)])
    train = load_episode(tmp_path / "train_0000000")
    heldout = load_episode(tmp_path / "heldout_1000000")
    assert train.meta["seed"] == 0 and heldout.meta["seed"] == 1_000_000
    assert not np.array_equal(train.frames[0], heldout.frames[0])


def test_revisit_trips_for_training_use_their_own_seeds(tmp_path):
    """`--revisit` records the benchmark's held-out trips; `--revisit --split train` records trips
    of training seeds (for slow-fast training), never the benchmark's."""
    common = ["--out", str(tmp_path), "--revisit", "--episodes", "1", "--length", "12",
              "--trip", "4", "--size", str(CRAFTER_SIZE)]
    main(common)
    main(common + ["--split", "train"])
    bench, train = load_episode(tmp_path / "revisit_2000000"), load_episode(tmp_path / "revisit_train_3000000")
    assert bench.meta["policy"] == train.meta["policy"] == "revisit"
    assert train.meta["seed"] == 3_000_000
    assert list(train.actions) == list(revisit_policy(3_000_000, 12, trip=4))


def test_exploration_policy_is_seeded_valid_and_mostly_moves():
    a = list(exploration_policy(7, 300))
    assert a == list(exploration_policy(7, 300))
    assert a != list(exploration_policy(8, 300))
    assert all(0 <= x < 17 for x in a)
    assert np.isin(a, MOVES).mean() > 0.5


def test_out_and_back_retraces_its_steps():
    rng = np.random.RandomState(0)
    for length in (4, 7, 12):
        trip = out_and_back(rng, length, pause=2)
        out, back = trip[:length], trip[length + 2:]
        assert trip[length:length + 2] == [0, 0]
        assert back == [OPPOSITE[m] for m in reversed(out)]


def test_revisit_policy_has_the_requested_length():
    acts = list(revisit_policy(0, 60, trip=24))
    assert len(acts) == 60 and acts[:4] == [0, 0, 0, 0]
    assert sum(a in MOVES for a in acts) == 48
