"""Collecting real Crafter episodes (simulator/collect.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import CRAFTER_SIZE
from games.crafter.policies import (MOVES, OPPOSITE, SHAPES, exploration_policy, out_and_back,
                                    revisit_policy)
from simulator.collect import SPLIT_SEED_BASE, collect_episode, main
from simulator.games import make_game
from worldmodel.data import Episode
from worldmodel.data.episode import load_episode
from worldmodel.game import get_game


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


STEP = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}  # action -> (dx, dy) if free


def walk(acts: list[int]) -> np.ndarray:
    """The cells (len + 1, 2) an unblocked player stands on, from (0, 0)."""
    return np.concatenate([[(0, 0)], np.cumsum([STEP[a] for a in acts], 0)]).astype(int)


def runs(acts: list[int]) -> list[tuple[int, int]]:
    """Run-length encoding: [(action, repeats), ...]."""
    return [(a, len(list(g))) for a, g in itertools.groupby(acts)]


def move_runs_of(acts: list[int]) -> list[np.ndarray]:
    from memory.revisit import move_runs

    return move_runs(Episode(np.zeros((len(acts) + 1, 1, 1, 3), np.uint8), np.asarray(acts), {}),
                     get_game("crafter").navigation().moves)


# revisit_policy's output before --shape existed: the default shape keeps these exactly.
BACK_BEFORE_SHAPES = {
    (0, 60, 24): [(0, 4), (3, 15), (4, 9), (0, 2), (3, 9), (4, 15), (0, 6)],
    (7, 60, 24): [(0, 4), (3, 18), (2, 6), (0, 2), (1, 6), (4, 18), (0, 6)],
    (2_000_000, 60, 24): [(0, 4), (2, 22), (4, 2), (0, 2), (3, 2), (1, 22), (0, 6)],
    (3_000_000, 12, 4): [(0, 4), (1, 3), (3, 1), (0, 2), (4, 1), (2, 1)],
    (1, 120, 40): [(0, 4), (4, 29), (3, 11), (0, 2), (4, 11), (3, 29), (0, 34)],
}


@pytest.mark.parametrize("key", BACK_BEFORE_SHAPES)
def test_back_trips_are_unchanged_by_the_shapes(key):
    seed, length, trip = key
    assert runs(list(revisit_policy(seed, length, trip))) == BACK_BEFORE_SHAPES[key]
    assert list(revisit_policy(seed, length, trip, "back")) == list(revisit_policy(seed, length,
                                                                                  trip))


@pytest.mark.parametrize("seed", range(6))
def test_loop_comes_back_to_the_start_by_another_path(seed):
    trip = 24
    acts = list(revisit_policy(seed, 60, trip, "loop"))
    assert len(acts) == 60 and acts[:4] == [0, 0, 0, 0]
    assert sum(a in MOVES for a in acts) == 2 * trip
    cells = walk(acts)
    assert (cells[-1] == 0).all()  # zero displacement: back at the start
    out, back = move_runs_of(acts)  # the pause splits the trip out from the way back
    assert len(out) == len(back) == trip
    (first, a), (second, b) = runs(acts[4:4 + trip])
    assert a + b == trip and min(a, b) >= trip // 4
    assert {first, second} not in ({1, 2}, {3, 4})  # perpendicular
    assert runs(acts[4 + trip:])[:3] == [(0, 2), (OPPOSITE[first], a), (OPPOSITE[second], b)]
    # another path: no cell the way back steps on, but the start, was passed on the way out
    way_out = {tuple(c) for c in cells[out]}
    way_back = [tuple(c) for c in cells[back[:-1]]]  # the last one is the start
    assert not way_out.intersection(way_back)


@pytest.mark.parametrize("seed", range(6))
def test_long_trip_has_three_turning_legs_and_retraces_them(seed):
    trip = 40
    acts = list(revisit_policy(seed, 120, trip, "long"))
    assert len(acts) == 120 and acts[:4] == [0, 0, 0, 0]
    out_acts = acts[4:4 + trip]
    legs = runs(out_acts)
    assert len(legs) == 3 and sum(n for _, n in legs) == trip
    for (a, _), (b, _) in zip(legs, legs[1:]):
        assert b != a and b != OPPOSITE[a]  # each leg turns, never reversing the one before
    assert acts[4 + trip:4 + trip + 2] == [0, 0]
    assert acts[6 + trip:6 + 2 * trip] == [OPPOSITE[m] for m in reversed(out_acts)]
    assert set(acts[6 + 2 * trip:]) == {0}
    out, back = move_runs_of(acts)
    cells = walk(acts)
    assert [tuple(c) for c in cells[back]] == [tuple(c) for c in cells[out - 1][::-1]]  # retraced
    assert (cells[-1] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_deterministic_per_seed(shape):
    a = list(revisit_policy(11, 80, 24, shape))
    assert a == list(revisit_policy(11, 80, 24, shape))
    assert any(a != list(revisit_policy(s, 80, 24, shape)) for s in (12, 13))


def test_shapes_refuse_trips_too_short_and_unknown_names():
    with pytest.raises(ValueError, match="long trip needs at least 3"):
        revisit_policy(0, 40, 2, "long")
    with pytest.raises(ValueError, match="shape must be one of"):
        revisit_policy(0, 40, 8, "zigzag")
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--shape", "loop"])  # --shape without --revisit


def test_shaped_trips_are_recorded_under_their_policy(tmp_path):
    main(["--out", str(tmp_path), "--revisit", "--shape", "loop", "--episodes", "1",
          "--first", "100", "--length", "16", "--trip", "4", "--size", str(CRAFTER_SIZE)])
    ep = load_episode(tmp_path / "revisit_2000100")
    assert ep.meta["policy"] == "revisit_loop" and ep.meta["seed"] == 2_000_100
    assert list(ep.actions) == list(revisit_policy(2_000_100, 16, 4, "loop"))
