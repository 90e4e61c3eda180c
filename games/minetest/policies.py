"""Minetest's exploration policies for collecting data (`simulator.collect --game minetest`).

Each policy is deterministic per seed and yields action indices. What a first-person model must
see is what they cover:

    explore   a mixture of the segments below, sticky, mostly walking (the default)
    walk      walking and strafing with gentle turns and jumps
    turn      full turns in place (the view leaves and comes back), with pauses
    look      looking up and down and around from one place
    revisit   out-and-back trips: walk out (with turns), turn round, walk the same way back,
              turn round again: the start comes back into view after tens of steps turned away
    build     digging and placing in front of the player, looking down at the work

and the revisit protocols (`PROTOCOLS`: full_turn, turn_away_back, out_and_back, look_down_up),
each a fixed trip after a few noops, recorded with `--split revisit` for memory.revisit_3d.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from games.minetest.actions import ACTION_SPACE

A = {name: i for i, name in enumerate(ACTION_SPACE.actions)}
HALF_TURN = 12  # turns of 15 degrees
MIRROR = {A["turn_left"]: A["turn_right"], A["turn_right"]: A["turn_left"],
          A["left"]: A["right"], A["right"]: A["left"]}


def _sticky(rng: np.random.RandomState, action: int, mean: float = 3.0) -> list[int]:
    return [action] * int(rng.geometric(1.0 / mean))


def walk_segment(rng: np.random.RandomState) -> list[int]:
    out: list[int] = []
    for _ in range(rng.randint(3, 8)):
        r = rng.rand()
        if r < 0.55:
            out += _sticky(rng, A["forward"], 5)
        elif r < 0.75:
            out += _sticky(rng, A[rng.choice(["turn_left", "turn_right"])], 2)
        elif r < 0.85:
            out += _sticky(rng, A[rng.choice(["left", "right"])], 2)
        elif r < 0.92:
            out += [A["jump"], A["forward"], A["forward"]]
        elif r < 0.96:
            out += _sticky(rng, A["back"], 2)
        else:
            out += [A["noop"]] * rng.randint(1, 3)
    return out


def turn_segment(rng: np.random.RandomState) -> list[int]:
    turn = A[rng.choice(["turn_left", "turn_right"])]
    return [turn] * (2 * HALF_TURN) + [A["noop"]] * rng.randint(0, 3)


def look_segment(rng: np.random.RandomState) -> list[int]:
    k = rng.randint(1, 5)  # tilt k steps of 15 degrees and back, up or down first
    first, second = (A["look_up"], A["look_down"]) if rng.rand() < 0.5 else (A["look_down"], A["look_up"])
    out = [first] * k + [A["noop"]] * rng.randint(0, 2) + [second] * k
    turn = A[rng.choice(["turn_left", "turn_right"])]
    return out + [turn] * rng.randint(1, 6)


def build_segment(rng: np.random.RandomState) -> list[int]:
    down = rng.randint(1, 4)
    out = [A["look_down"]] * down
    for _ in range(rng.randint(3, 9)):
        out += [A[rng.choice(["dig", "dig", "place", "place", "turn_left", "noop"])]]
    return out + [A["look_up"]] * down


def out_and_back(rng: np.random.RandomState, moves: int, pause: int = 2) -> list[int]:
    """`moves` walking steps out (forward, with a few turns), a pause, a half turn, the same steps
    back (turns mirrored), a half turn: facing the way the trip started, where it started."""
    out: list[int] = []
    while len(out) < moves:
        if rng.rand() < 0.2:
            out += [A[rng.choice(["turn_left", "turn_right"])]] * rng.randint(1, 4)
        else:
            out += [A["forward"]] * rng.randint(2, 6)
    out = out[:moves]
    back = [MIRROR.get(a, a) for a in reversed(out)]
    turn = A[rng.choice(["turn_left", "turn_right"])]
    return out + [A["noop"]] * pause + [turn] * HALF_TURN + back + [turn] * HALF_TURN


SEGMENTS: dict[str, Callable[[np.random.RandomState], list[int]]] = {
    "walk": walk_segment, "turn": turn_segment, "look": look_segment, "build": build_segment,
}
EXPLORE_MIX = {"walk": 0.45, "turn": 0.1, "look": 0.15, "build": 0.2, "trip": 0.1}


def explore(seed: int, length: int, trip: int = 24, **_) -> Iterator[int]:
    """The default mixture: walking most, then turns, looks, building and out-and-back trips."""
    rng = np.random.RandomState(seed)
    names, p = list(EXPLORE_MIX), np.asarray(list(EXPLORE_MIX.values()))
    while True:
        name = names[rng.choice(len(names), p=p / p.sum())]
        if name == "trip":
            yield from out_and_back(rng, rng.randint(max(2, trip // 3), trip + 1))
        else:
            yield from SEGMENTS[name](rng)


def _only(segment: Callable[[np.random.RandomState], list[int]]):
    def policy(seed: int, length: int, trip: int = 24, **_) -> Iterator[int]:
        rng = np.random.RandomState(seed)
        while True:
            yield from segment(rng)
    policy.__doc__ = segment.__doc__
    return policy


def revisit(seed: int, length: int, trip: int = 24, **_) -> Iterator[int]:
    """A short look around (4 noops), then out-and-back trips of `trip` moves until `length`."""
    rng = np.random.RandomState(seed)
    yield from [A["noop"]] * 4
    while True:
        yield from out_and_back(rng, trip)


# The revisit protocols (issue 22; scored by memory.revisit_3d): after CONTEXT_STEPS
# noops, one fixed trip whose last frame faces a view seen before, long after it left the
# model's context. (trip, how many of its steps come before the frame it revisits)
CONTEXT_STEPS = 7
PROTOCOLS: dict[str, tuple[list[int], int]] = {
    # 24 turns of 15 degrees in place: the frame after the turn against the first
    "full_turn": ([A["turn_left"]] * 24, 0),
    # a few steps, then turn away (half a turn) and back: the view after the walk again
    "turn_away_back": ([A["forward"]] * 4 + [A["turn_right"]] * 12 + [A["turn_left"]] * 12, 4),
    # walk out, turn round, walk back along the same line, turn round: the start again
    "out_and_back": ([A["forward"]] * 8 + [A["turn_left"]] * 12 + [A["forward"]] * 8
                     + [A["turn_left"]] * 12, 0),
    # look straight down at the ground and up again
    "look_down_up": ([A["look_down"]] * 6 + [A["look_up"]] * 6, 0),
}


def protocol_policy(name: str) -> Callable[..., Iterator[int]]:
    trip = PROTOCOLS[name][0]

    def policy(seed: int, length: int, **_) -> Iterator[int]:
        yield from [A["noop"]] * CONTEXT_STEPS + trip
        while True:
            yield A["noop"]
    policy.__doc__ = f"The {name} revisit protocol: {CONTEXT_STEPS} noops, then {len(trip)} steps."
    return policy


POLICIES: dict[str, Callable[..., Iterator[int]]] = {
    "explore": explore, "walk": _only(walk_segment), "turn": _only(turn_segment),
    "look": _only(look_segment), "build": _only(build_segment), "revisit": revisit,
    **{name: protocol_policy(name) for name in PROTOCOLS},
}
