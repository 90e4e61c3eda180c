"""Model-predictive control in imagination: the cross-entropy method over action sequences.

    python -m simulator.planner --task reach --episodes 10 --checkpoint runs/crafter

Each replan, `CEMPlanner` samples `population` action sequences of `horizon` steps from one
categorical distribution per step, imagines them all in one batched rollout from the real frames
seen so far, scores every imagined frame by its distance to the goal frame, refits the
distribution to the best `elites` sequences, and repeats for `iterations`. The agent then plays
the first actions of the best sequence (up to the step it gets closest, at most `replan_every`)
in the REAL game and replans from what it really sees.

Goal distance: mean squared difference of per-cell mean colours of Crafter's local view (the 9x7
tiles above the inventory; the player's own cell, whose sprite turns with the last move, left
out). Crafter's view is egocentric and drawn from a tile grid, so "the same place" means "the same
tiles in the same cells" and a cell's mean colour is a tile descriptor; averaging 7x7 pixels also
absorbs the blur and small pixel errors of imagined frames, and the inventory row (health, food,
items) changes over time without saying anything about place. The denoiser's encoder features
were the alternative: they are conditioned on a noise level, trained to reconstruct rather than to
tell places apart, would cost another network pass per imagined frame, and would move with every
checkpoint while the pixel metric stays fixed and checkable on real frames.

Tasks, run on the real game (`simulator.games.CrafterGame`) from held-out seeds:
  reach   the goal is the real frame `k` random moves from the start; the world is then restored
          to the start and the agent must get there;
  return  the agent is walked `k` random moves away; the goal is the start frame.
Success: the real player position equals the goal position at some step within `budget` steps.
Baseline: uniformly random moves, on the same episodes.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from simulator.games import make_game
from simulator.seeds import SEED_RANGES

MOVES = (1, 2, 3, 4)  # Crafter's move_left, move_right, move_up, move_down
PLAN_ACTIONS = (0, *MOVES)  # plus noop: "stay here" is a plan once at the goal
TASKS = ("reach", "return")
SEED_BASE = SEED_RANGES["plan"].first  # worlds no collected split uses (simulator/seeds.py)

Features = Callable[[np.ndarray], np.ndarray]


class Imagination(Protocol):
    """What the planner needs from a world model (`WorldSession` is one)."""

    batch: int

    def rollout(self, actions: np.ndarray, context: np.ndarray | None = None,
                context_actions: np.ndarray | None = None) -> np.ndarray:
        """actions (B, T) from context (B, n, h, w, 3) -> frames (B, T, h, w, 3) uint8."""
        ...


def crafter_features(frames: np.ndarray, grid: tuple[int, int] = (9, 9), item_rows: int = 2) -> np.ndarray:
    """uint8 (..., h, w, 3) -> float32 (..., rows, cols, 3): mean colour of each local-view cell,
    the player's cell zeroed (see module docstring)."""
    frames = np.asarray(frames)
    unit = frames.shape[-2] // grid[0]
    rows, cols = grid[1] - item_rows, grid[0]
    x = frames[..., : rows * unit, : cols * unit, :].astype(np.float32) / 255.0
    x = x.reshape(*x.shape[:-3], rows, unit, cols, unit, 3).mean(axis=(-4, -2))
    x[..., rows // 2, cols // 2, :] = 0.0
    return x


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
    actions: tuple[int, ...] = PLAN_ACTIONS


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
                 features: Features = crafter_features, seed: int = 0):
        self.world = world
        self.cfg = cfg = cfg or CEMConfig()
        if cfg.population != world.batch:
            raise ValueError(f"population {cfg.population} must equal the world's batch {world.batch}")
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

    def __init__(self, batch: int):
        self.batch = batch
        self.game: object | None = None

    def bind(self, game: object) -> None:
        self.game = game

    def rollout(self, actions: np.ndarray, context: np.ndarray | None = None,
                context_actions: np.ndarray | None = None) -> np.ndarray:
        out = []
        for row in np.asarray(actions):
            g = snapshot(self.game)
            out.append(np.stack([g.step(int(a)).obs for a in row]))
        return np.stack(out)


class Agent(Protocol):
    def reset(self) -> None: ...

    def act(self, frames: Sequence[np.ndarray], actions: Sequence[int], goal: np.ndarray) -> int: ...


class RandomAgent:
    """Uniformly random moves: the baseline."""

    name = "random"

    def __init__(self, seed: int = 0, actions: Sequence[int] = MOVES):
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
                return int(self.planner.rng.choice(MOVES))
            n = max(1, min(plan.reach, cfg.replan_every))
            self.queue = [int(a) for a in plan.actions[:n]]
            # Warm start: what is left of this plan, then uniform for the new last steps.
            left = self.planner.last_indices[n:]
            self.warm = np.concatenate([left, self.planner.rng.integers(
                0, len(self.planner.table), len(plan.actions) - len(left))])
        return self.queue.pop(0)


# ------------------------------------------------------------------------------ real-game tasks


@dataclass
class Episode:
    """A task instance: a real game snapshot to start from and a goal to reach."""

    seed: int
    game: object  # a CrafterGame at the start state (deep-copied for each agent)
    frames: list[np.ndarray]  # real frames seen before the start (the last one is the start)
    actions: list[int]  # the actions that produced them (-1: none)
    goal_frame: np.ndarray
    goal_pos: tuple[int, int]
    start_pos: tuple[int, int]


def make_episode(task: str, seed: int, k: int, size: int = 64, tries: int = 20) -> Episode | None:
    """A random walk of `k` moves that ends off the start cell; None if no try does."""
    game = make_game("crafter", size=size)
    obs0 = game.reset(seed)
    start_game = snapshot(game)
    start_pos = game.player_pos
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        g = snapshot(start_game)
        frames, acts = [obs0], [-1]
        for a in rng.choice(MOVES, k):
            frames.append(g.step(int(a)).obs)
            acts.append(int(a))
        if g.player_pos == start_pos:
            continue
        if task == "reach":
            return Episode(seed, start_game, [obs0], [-1], frames[-1], g.player_pos, start_pos)
        return Episode(seed, g, frames, acts, obs0, start_pos, g.player_pos)
    return None


def snapshot(game: object) -> object:
    """A deep copy of a real game (Crafter worlds copy in ~10 ms; a reset takes seconds). The
    crafter module it refers to is shared, not copied (modules cannot be)."""
    import crafter

    return copy.deepcopy(game, {id(crafter): crafter})


def run_episode(ep: Episode, agent: Agent, budget: int) -> dict:
    game = snapshot(ep.game)
    frames, acts = list(ep.frames), list(ep.actions)
    agent.reset()
    if hasattr(agent, "bind"):
        agent.bind(game)
    path = [game.player_pos]
    for t in range(budget + 1):
        if game.player_pos == ep.goal_pos:
            return {"success": True, "steps": t, "path": path}
        if t == budget:
            break
        a = agent.act(frames, acts, ep.goal_frame)
        frames.append(game.step(a).obs)
        acts.append(a)
        path.append(game.player_pos)
    return {"success": False, "steps": budget, "path": path}


def manhattan(a: Sequence[int], b: Sequence[int]) -> int:
    return int(abs(a[0] - b[0]) + abs(a[1] - b[1]))


def evaluate(tasks: Sequence[str], episodes: int, agents: dict[str, Agent], k: int, budget: int,
             first_seed: int = SEED_BASE, size: int = 64, log: Callable[[str], None] = print) -> dict:
    results: dict = {}
    for task in tasks:
        rows: dict[str, list] = {name: [] for name in agents}
        seed = first_seed
        made = 0
        while made < episodes:
            ep = make_episode(task, seed, k, size)
            seed += 1
            if ep is None:
                continue
            made += 1
            dist = manhattan(ep.start_pos, ep.goal_pos)
            for name, agent in agents.items():
                r = run_episode(ep, agent, budget)
                rows[name].append({"seed": ep.seed, "distance": dist, "success": r["success"],
                                   "steps": r["steps"],
                                   "final_distance": manhattan(r["path"][-1], ep.goal_pos)})
            log(f"{task} ep {made}/{episodes} seed {ep.seed} dist {dist}: " + ", ".join(
                f"{n} {'ok' if rows[n][-1]['success'] else '--'} ({rows[n][-1]['steps']})" for n in agents))
        results[task] = {name: summarize(r) for name, r in rows.items()}
        for name, r in rows.items():
            results[task][name]["episodes"] = r
    return results


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["success"]]
    return {"success_rate": len(ok) / max(1, len(rows)), "n": len(rows),
            "mean_steps_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
            "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])),
            "mean_start_distance": float(np.mean([r["distance"] for r in rows]))}


def table(results: dict) -> str:
    lines = [f"{'task':8} {'agent':8} {'success':>9} {'n':>4} {'steps(ok)':>10} {'end dist':>9} {'start dist':>11}"]
    for task, by_agent in results.items():
        for name, s in by_agent.items():
            steps = f"{s['mean_steps_success']:.1f}" if s["mean_steps_success"] is not None else "-"
            lines.append(f"{task:8} {name:8} {s['success_rate']:9.0%} {s['n']:4d} {steps:>10} "
                         f"{s['mean_final_distance']:9.2f} {s['mean_start_distance']:11.2f}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=[*TASKS, "both"], default="both")
    p.add_argument("--episodes", type=int, default=10, help="per task")
    p.add_argument("--checkpoint", help="world model checkpoint (default: the shipped one)")
    p.add_argument("--k", type=int, default=4, help="random moves between start and goal")
    p.add_argument("--budget", type=int, default=12, help="real steps allowed per episode")
    p.add_argument("--horizon", type=int, default=6)
    p.add_argument("--population", type=int, default=32, help="= the session's batch")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--elites", type=int, default=6)
    p.add_argument("--replan-every", type=int, default=2)
    p.add_argument("--sample-steps", type=int, help="denoising passes per imagined frame")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-seed", type=int, default=SEED_BASE, help="first real-game seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--oracle", action="store_true",
                   help="also run CEM with the real game as its model (an upper bound)")
    p.add_argument("--no-model", action="store_true", help="skip the world model (with --oracle)")
    p.add_argument("--out", help="write the results JSON here")


def run(args: argparse.Namespace) -> dict:
    import torch

    from simulator.session import WorldSession
    from worldmodel.data.episode import write_json_atomic
    from worldmodel.reports import command_line

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CEMConfig(horizon=args.horizon, population=args.population, iterations=args.iterations,
                    elites=args.elites, replan_every=args.replan_every)
    agents: dict[str, Agent] = {}
    mpc = None
    size, checkpoint = 64, None
    if not args.no_model:
        sess = WorldSession.load(args.checkpoint, device=args.device, batch=args.population,
                                 seed=args.seed, sample_steps=args.sample_steps)
        size, checkpoint = sess.frame_size, sess.checkpoint
        mpc = agents["cem"] = MPCAgent(CEMPlanner(sess, cfg, seed=args.seed), sess.context_len)
    if args.oracle:
        agents["oracle"] = MPCAgent(CEMPlanner(GameImagination(args.population), cfg, seed=args.seed), 1)
    agents["random"] = RandomAgent(args.seed)
    tasks = TASKS if args.task == "both" else (args.task,)
    t0 = time.time()
    results = evaluate(tasks, args.episodes, agents, args.k, args.budget, args.first_seed, size)
    report = {"results": results, "config": {**vars(args), "cem": asdict(cfg)},
              "checkpoint": checkpoint, "seconds": round(time.time() - t0, 1),
              "command": command_line(None)}
    print(table(results))
    if mpc is not None:
        report["imagined_frames"] = mpc.imagined_frames
        report["imagined_fps"] = mpc.imagined_frames / max(mpc.plan_seconds, 1e-9)
        report["explored_replans"] = mpc.explored
        print(f"planner: {mpc.imagined_frames} imagined frames in {mpc.plan_seconds:.0f} s "
              f"({report['imagined_fps']:.1f} fps at batch {args.population}); "
              f"{mpc.explored} replans found no gain and explored")
    if args.out:
        write_json_atomic(Path(args.out), report)
        print(f"wrote {args.out}")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
