"""Crafter's exploration policies for collecting data (`simulator.collect`).

Sticky random actions biased to movement, plus scripted out-and-back trips (walk one way, then
retrace the same steps) so revisits appear in the data. Deterministic per seed. A revisit episode
is a short look around (4 noops), one trip of `trip` moves out, a pause of 2 noops (where
`memory.revisit.move_runs` splits the way out from the way back), the way back, then noops up to
`length`; the trip's shape (`TRIPS`): back (one or two legs out, the same steps reversed), loop (a
rectangle back by the other two sides), long (three legs out, retraced).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

MOVES = (1, 2, 3, 4)  # left, right, up, down
OPPOSITE = {1: 2, 2: 1, 3: 4, 4: 3}
PERPENDICULAR = {1: (3, 4), 2: (3, 4), 3: (1, 2), 4: (1, 2)}


def exploration_policy(seed: int, length: int, trip_prob: float = 0.15) -> Iterator[int]:
    """Sticky random actions biased to movement, with occasional out-and-back trips."""
    rng = np.random.RandomState(seed)
    probs = np.full(17, 0.2 / 12)  # 12 non-movement actions share 20%
    probs[list(MOVES)] = 0.8 / 4 * 0.95
    probs[5] += 0.8 * 0.05  # "do": interact with what is in front
    probs /= probs.sum()
    t = 0
    while t < length:
        if rng.rand() < trip_prob / 10:
            for a in out_and_back(rng, rng.randint(4, 12)):
                yield a
                t += 1
            continue
        a = int(rng.choice(17, p=probs))
        for _ in range(rng.geometric(0.3)):  # sticky: mean ~3 repeats
            yield a
            t += 1


def out_and_back(rng: np.random.RandomState, length: int, pause: int = 0) -> list[int]:
    """A trip of `length` moves (one or two legs), optional pause, then the same steps reversed."""
    first, second = rng.choice(MOVES, 2, replace=False)
    split = rng.randint(length // 2, length + 1)
    out = [int(first)] * split + [int(second)] * (length - split)
    back = [OPPOSITE[a] for a in reversed(out)]
    return out + [0] * pause + back


def loop_trip(rng: np.random.RandomState, trip: int, pause: int = 0) -> list[int]:
    """A rectangle of 2 * `trip` moves that comes back by another path: `a` moves one way, `b` at a
    right angle (a + b = trip, each at least trip // 4 and 1), optional pause, then `a` moves and
    `b` moves reversed. No place on the way back was passed on the way out but the two ends."""
    first = int(rng.choice(MOVES))
    second = int(rng.choice(PERPENDICULAR[first]))
    shortest = max(1, trip // 4)
    a = rng.randint(shortest, trip - shortest + 1)
    b = trip - a
    out = [first] * a + [second] * b
    back = [OPPOSITE[first]] * a + [OPPOSITE[second]] * b
    return out + [0] * pause + back


def long_trip(rng: np.random.RandomState, trip: int, pause: int = 0, legs: int = 3) -> list[int]:
    """An excursion of `legs` straight legs out, then the same steps reversed (after an optional
    pause). Directions are random, each leg turning a right angle from the one before (never
    reversing it, nor running on as one longer leg); lengths sum to `trip`, each at least
    trip // (2 * legs) and 1, so no leg is a mere step."""
    shortest = max(1, trip // (2 * legs))
    spare = trip - legs * shortest  # the moves past each leg's shortest, cut at random points
    cuts = np.sort(rng.randint(0, spare + 1, legs - 1))
    lengths = shortest + np.diff(np.concatenate([[0], cuts, [spare]]))
    out: list[int] = []
    move = int(rng.choice(MOVES))
    for k, n in enumerate(lengths):
        if k:
            move = int(rng.choice(PERPENDICULAR[move]))
        out += [move] * int(n)
    back = [OPPOSITE[a] for a in reversed(out)]
    return out + [0] * pause + back


# --shape -> (the trip's moves, the meta "policy" that records it, the fewest moves out it takes)
TRIPS = {"back": (out_and_back, "revisit", 0),
         "loop": (loop_trip, "revisit_loop", 2),
         "long": (long_trip, "revisit_long", 3)}
SHAPES = tuple(TRIPS)
POLICY_SHAPES = {policy: shape for shape, (_, policy, _) in TRIPS.items()}


def check_trip(shape: str, trip: int) -> None:
    """Raise ValueError (one line) for an unknown shape or a trip too short to take that shape."""
    if shape not in TRIPS:
        raise ValueError(f"trip shape must be one of {SHAPES}, got {shape!r}")
    fewest = TRIPS[shape][2]
    if trip < fewest:
        raise ValueError(f"a {shape} trip needs at least {fewest} moves out, got {trip}")


def revisit_policy(seed: int, length: int, trip: int, shape: str = "back") -> Iterator[int]:
    """A short look around, then one long trip of the given shape (see the module docstring) with
    a pause before the way back, then noops until `length`."""
    check_trip(shape, trip)  # here, not at the first action taken
    rng = np.random.RandomState(seed)
    acts = [0] * 4 + TRIPS[shape][0](rng, trip, pause=2)
    acts += [0] * max(0, length - len(acts))
    return iter(acts[:length])


def policy_actions(policy: str, seed: int, length: int, trip: int) -> Iterator[int]:
    """The actions of a named policy: "explore", or a revisit trip's ("revisit", "revisit_loop",
    "revisit_long")."""
    if policy == "explore":
        return exploration_policy(seed, length)
    if policy not in POLICY_SHAPES:
        raise ValueError(f"policy must be 'explore' or one of {tuple(POLICY_SHAPES)}, "
                         f"got {policy!r}")
    return revisit_policy(seed, length, trip, POLICY_SHAPES[policy])


# name -> policy(seed, length, trip=...) -> actions: what `Game.policies` hands simulator.collect
POLICIES = {name: (lambda seed, length, trip=24, _n=name: policy_actions(_n, seed, length, trip))
            for name in ("explore", *POLICY_SHAPES)}
