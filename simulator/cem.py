"""The cross-entropy method over action sequences, scored in imagination (`simulator.planner`
runs it on the real game's tasks).

Each replan, `CEMPlanner` samples `population` action sequences of `horizon` steps from one
categorical distribution per step, imagines them all in one batched rollout from the real frames
seen so far, scores every imagined frame by its distance to the goal frame (in the game's goal
features: `Game.navigation().features`), refits the distribution to the best `elites` sequences,
and repeats for `iterations`. `MPCAgent` then plays the first actions of the best sequence (up to
the step it gets closest, at most `replan_every`) in the REAL game and replans from what it
really sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

Features = Callable[[np.ndarray], np.ndarray]


class Imagination(Protocol):
    """What the planner needs from a world model (`WorldSession` is one)."""

    batch: int

    def rollout(self, actions: np.ndarray, context: np.ndarray | None = None,
                context_actions: np.ndarray | None = None) -> np.ndarray:
        """actions (B, T) from context (B, n, h, w, 3) -> frames (B, T, h, w, 3) uint8."""
        ...


def pixel_features(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, np.float32) / 255.0


def goal_distance(feats: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(..., *F) features against (*F) goal features -> (...) mean squared difference."""
    d = (feats - goal) ** 2
    return d.reshape(*d.shape[: d.ndim - goal.ndim], -1).mean(-1)


@dataclass
class CEMConfig:
    horizon: int = 6
    population: int = 32  # sequences per iteration: the world's batch, one forward pass per step
    iterations: int = 2
    elites: int = 6
    smoothing: float = 0.2  # weight kept on the previous distribution when refitting
    time_cost: float = 1e-5  # per step: a tie-break toward shorter plans (one-cell offsets cost ~5e-4)
    replan_every: int = 2  # real actions played from one plan before replanning
    # A plan must get this much closer than where we stand (a one-cell offset is ~5e-4), else
    # imagination has nothing to say (e.g. an untrained model that only copies) and the agent
    # explores with a random move instead of standing still.
    min_gain: float = 1e-4
    # Score a plan by how much closer it gets than the imagined standstill (all noops) at the same
    # step, from the real distance now: drift the model adds to every rollout (blur, fading)
    # cancels. With a perfect model the standstill is the current frame and nothing changes.
    relative: bool = True
    # The actions to plan over: the game's moves (`Game.navigation().moves`) and 0, its noop:
    # "stay here" is a plan once at the goal.
    actions: tuple[int, ...] = ()


@dataclass
class Plan:
    actions: np.ndarray  # (horizon,) best sequence found
    cost: float  # its cost: min over t of distance(frame t, goal) + time_cost * t
    reach: int  # the step t of that minimum (0: the current frame is the closest)
    iteration_costs: list[float] = field(default_factory=list)  # best cost after each iteration
    imagined_frames: int = 0
    start_cost: float = 0.0  # distance of the current frame to the goal


class CEMPlanner:
    """Cross-entropy method over discrete action sequences, scored in imagination."""

    def __init__(self, world: Imagination, cfg: CEMConfig | None = None,
                 features: Features = pixel_features, seed: int = 0):
        self.world = world
        self.cfg = cfg = cfg or CEMConfig()
        if cfg.population != world.batch:
            raise ValueError(f"population {cfg.population} must equal the world's batch {world.batch}")
        if not cfg.actions:
            raise ValueError("CEMConfig.actions is empty: plan over the game's moves and 0 (noop)")
        if cfg.population < 2:
            raise ValueError("population must be at least 2")
        if not 0 < cfg.elites <= cfg.population:
            raise ValueError(f"elites must be in 1..population, got {cfg.elites}")
        self.features = features
        self.rng = np.random.default_rng(seed)
        self.table = np.asarray(cfg.actions, np.int64)
        self.last_indices = np.zeros(cfg.horizon, np.int64)  # the last plan, as indices

    def _sample(self, probs: np.ndarray) -> np.ndarray:
        """probs (H, K) -> indices (N, H), by inverse CDF per step."""
        u = self.rng.random((self.cfg.population, probs.shape[0], 1))
        return (u > np.cumsum(probs, -1)[None]).sum(-1).clip(max=probs.shape[1] - 1)

    def plan(self, context: np.ndarray, context_actions: np.ndarray | None, goal: np.ndarray,
             warm: np.ndarray | None = None) -> Plan:
        """context (n, h, w, 3) real frames so far (and their actions, -1 for none), goal frame
        (h, w, 3). `warm`: indices (H,) of a previous plan to seed the distribution with."""
        cfg = self.cfg
        n_act = len(self.table)
        goal_f = self.features(goal)
        d_now = float(goal_distance(self.features(context[-1]), goal_f))
        probs = np.full((cfg.horizon, n_act), 1.0 / n_act)
        if warm is not None:
            probs = 0.5 * probs + 0.5 * np.eye(n_act)[warm]
        ctx = np.repeat(np.asarray(context)[None], cfg.population, 0)
        ctx_act = None
        if context_actions is not None:
            ctx_act = np.repeat(np.asarray(context_actions, np.int64)[None], cfg.population, 0)
        steps = np.arange(cfg.horizon + 1) * cfg.time_cost
        best = Plan(self.table[np.zeros(cfg.horizon, np.int64)], d_now, 0, start_cost=d_now)
        best_idx = np.zeros(cfg.horizon, np.int64)
        stay = int(np.flatnonzero(self.table == 0)[0]) if 0 in self.table else None
        for _ in range(cfg.iterations):
            idx = self._sample(probs)
            idx[0] = best_idx  # the best so far stays in the running (imagination is noisy)
            if stay is not None and cfg.relative:
                idx[1] = stay  # the imagined standstill: the reference every plan must beat
            frames = self.world.rollout(self.table[idx], context=ctx, context_actions=ctx_act)
            d = goal_distance(self.features(frames), goal_f)  # (N, H)
            if stay is not None and cfg.relative:
                d = d_now + d - d[1]
            cost_t = np.concatenate([np.full((len(d), 1), d_now), d], 1) + steps
            cost, reach = cost_t.min(1), cost_t.argmin(1)
            order = np.argsort(cost, kind="stable")
            if cost[order[0]] < best.cost or best.imagined_frames == 0:
                best_idx = idx[order[0]].copy()
                best = Plan(self.table[best_idx], float(cost[order[0]]), int(reach[order[0]]),
                            best.iteration_costs, best.imagined_frames, d_now)
            best.iteration_costs.append(best.cost)
            best.imagined_frames += frames.shape[0] * frames.shape[1]
            freq = np.eye(n_act)[idx[order[: cfg.elites]]].mean(0)
            probs = cfg.smoothing * probs + (1 - cfg.smoothing) * freq
        self.last_indices = best_idx
        return best


class GameImagination:
    """The real game as a perfect 'world model' (snapshots played forward): an upper bound that
    tells how good the goal distance and the search are, apart from the learned model."""

    def __init__(self, batch: int, nav: Any):
        self.batch = batch
        self.nav = nav  # the game's navigation: its snapshots
        self.game: object | None = None

    def bind(self, game: object) -> None:
        self.game = game

    def rollout(self, actions: np.ndarray, context: np.ndarray | None = None,
                context_actions: np.ndarray | None = None) -> np.ndarray:
        out = []
        for row in np.asarray(actions):
            g = self.nav.snapshot(self.game)
            out.append(np.stack([g.step(int(a)).obs for a in row]))
        return np.stack(out)


class Agent(Protocol):
    def reset(self) -> None: ...

    def act(self, frames: Sequence[np.ndarray], actions: Sequence[int], goal: np.ndarray) -> int: ...


class RandomAgent:
    """Uniformly random moves (`actions`: the game's): the baseline."""

    name = "random"

    def __init__(self, seed: int, actions: Sequence[int]):
        self.rng = np.random.default_rng(seed)
        self.actions = list(actions)

    def reset(self) -> None:
        pass

    def act(self, frames: Sequence[np.ndarray], actions: Sequence[int], goal: np.ndarray) -> int:
        return int(self.rng.choice(self.actions))


class MPCAgent:
    """Replans with `CEMPlanner` from the last `context` real frames; plays a plan's first steps."""

    name = "cem"

    def __init__(self, planner: CEMPlanner, context: int):
        self.planner = planner
        self.context = context
        self.queue: list[int] = []
        self.warm: np.ndarray | None = None
        self.imagined_frames = 0
        self.plan_seconds = 0.0
        self.explored = 0  # replans that found nothing better than standing still
        self.moves = [a for a in planner.cfg.actions if a != 0]  # to explore with

    def reset(self) -> None:
        self.queue, self.warm = [], None

    def bind(self, game: object) -> None:
        """See the live real game: only `GameImagination` (the oracle) uses it."""
        if hasattr(self.planner.world, "bind"):
            self.planner.world.bind(game)

    def act(self, frames: Sequence[np.ndarray], actions: Sequence[int], goal: np.ndarray) -> int:
        if not self.queue:
            t0 = time.perf_counter()
            ctx = np.stack(frames[-self.context:])
            plan = self.planner.plan(ctx, np.asarray(actions[-self.context:]), goal, self.warm)
            self.plan_seconds += time.perf_counter() - t0
            self.imagined_frames += plan.imagined_frames
            cfg = self.planner.cfg
            if plan.iteration_costs and plan.cost > plan.start_cost - cfg.min_gain:
                self.explored += 1
                self.warm = None
                return int(self.planner.rng.choice(self.moves))
            n = max(1, min(plan.reach, cfg.replan_every))
            self.queue = [int(a) for a in plan.actions[:n]]
            # Warm start: what is left of this plan, then uniform for the new last steps.
            left = self.planner.last_indices[n:]
            self.warm = np.concatenate([left, self.planner.rng.integers(
                0, len(self.planner.table), len(plan.actions) - len(left))])
        return self.queue.pop(0)
