"""Model-predictive control in imagination, on the real game's navigation tasks.

    python -m simulator.planner --task reach --episodes 10 --checkpoint runs/crafter

The search is the cross-entropy method over action sequences (`simulator.cem`): each replan
imagines `population` sequences of the game's moves in one batched rollout from the real frames
seen so far, scores them by their distance to the goal frame in the game's goal features, and
plays the first actions of the best in the REAL game before replanning from what it really sees.

The game is the checkpoint's (`model.game`); what the planner needs of it is its navigation
(`Game.navigation()`): its moves, its goal features (Crafter's: mean colours of the local view's
cells, see games/crafter/navigation.py), copies of a running real game and the player's cell.

Tasks, run on the real game from held-out seeds:
  reach   the goal is the real frame `k` random moves from the start; the world is then restored
          to the start and the agent must get there;
  return  the agent is walked `k` random moves away; the goal is the start frame.
Success: the real player position equals the goal position at some step within `budget` steps.
Baseline: uniformly random moves, on the same episodes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from simulator.cem import (Agent, CEMConfig, CEMPlanner, GameImagination, MPCAgent, Plan,
                           RandomAgent, goal_distance, pixel_features)
from simulator.seeds import SEED_RANGES
from simulator.session import DEFAULT_CHECKPOINT, WorldSession
from worldmodel.checkpoint import load_config_from_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.data.episode import write_json_atomic
from worldmodel.game import Game, get_game
from worldmodel.evaluation.reports import command_line

TASKS = ("reach", "return")
SEED_BASE = SEED_RANGES["plan"].first  # worlds no collected split uses (simulator/seeds.py)

# The search's parts, importable from here as before the split.
__all__ = ["CEMConfig", "CEMPlanner", "GameImagination", "MPCAgent", "Plan", "RandomAgent",
           "evaluate", "goal_distance", "make_episode", "pixel_features", "run", "run_episode"]


# ------------------------------------------------------------------------------ real-game tasks


@dataclass
class Episode:
    """A task instance: a real game snapshot to start from and a goal to reach."""

    seed: int
    game: object  # the real game at the start state (copied for each agent by `nav.snapshot`)
    frames: list[np.ndarray]  # real frames seen before the start (the last one is the start)
    actions: list[int]  # the actions that produced them (-1: none)
    goal_frame: np.ndarray
    goal_pos: tuple[int, int]
    start_pos: tuple[int, int]
    nav: Any  # the game's navigation (`Game.navigation()`)


def make_episode(game: Game, task: str, seed: int, k: int, size: int = 64,
                 tries: int = 20) -> Episode | None:
    """A random walk of `k` of the game's moves that ends off the start cell; None if no try
    does."""
    nav = game.navigation()
    env = game.make_env(size=size)
    obs0 = env.reset(seed)
    start_env = nav.snapshot(env)
    start_pos = nav.position(env)
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        g = nav.snapshot(start_env)
        frames, acts = [obs0], [-1]
        for a in rng.choice(nav.moves, k):
            frames.append(g.step(int(a)).obs)
            acts.append(int(a))
        if nav.position(g) == start_pos:
            continue
        if task == "reach":
            return Episode(seed, start_env, [obs0], [-1], frames[-1], nav.position(g), start_pos,
                           nav)
        return Episode(seed, g, frames, acts, obs0, start_pos, nav.position(g), nav)
    return None


def run_episode(ep: Episode, agent: Agent, budget: int) -> dict:
    game = ep.nav.snapshot(ep.game)
    frames, acts = list(ep.frames), list(ep.actions)
    agent.reset()
    if hasattr(agent, "bind"):
        agent.bind(game)
    path = [ep.nav.position(game)]
    for t in range(budget + 1):
        if ep.nav.position(game) == ep.goal_pos:
            return {"success": True, "steps": t, "path": path}
        if t == budget:
            break
        a = agent.act(frames, acts, ep.goal_frame)
        frames.append(game.step(a).obs)
        acts.append(a)
        path.append(ep.nav.position(game))
    return {"success": False, "steps": budget, "path": path}


def manhattan(a: Sequence[int], b: Sequence[int]) -> int:
    return int(abs(a[0] - b[0]) + abs(a[1] - b[1]))


def evaluate(game: Game, tasks: Sequence[str], episodes: int, agents: dict[str, Agent], k: int,
             budget: int, first_seed: int = SEED_BASE, size: int = 64,
             log: Callable[[str], None] = print) -> dict:
    results: dict = {}
    for task in tasks:
        rows: dict[str, list] = {name: [] for name in agents}
        seed = first_seed
        made = 0
        while made < episodes:
            ep = make_episode(game, task, seed, k, size)
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


def shared_flags() -> argparse.ArgumentParser:
    """The planner's shared flags (worldmodel.cli), a parent of its parsers."""
    return common_flags(checkpoint={"help": "world model checkpoint (default: the shipped one)"},
                        seed=True, threads=True, device=True,
                        out={"help": "write the results JSON here"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The planner's own flags (beside `shared_flags`)."""
    p.add_argument("--task", choices=[*TASKS, "both"], default="both")
    p.add_argument("--episodes", type=int, default=10, help="per task")
    p.add_argument("--k", type=int, default=4, help="random moves between start and goal")
    p.add_argument("--budget", type=int, default=12, help="real steps allowed per episode")
    p.add_argument("--horizon", type=int, default=6)
    p.add_argument("--population", type=int, default=32, help="= the session's batch")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--elites", type=int, default=6)
    p.add_argument("--replan-every", type=int, default=2)
    p.add_argument("--sample-steps", type=int, help="denoising passes per imagined frame")
    p.add_argument("--first-seed", type=int, default=SEED_BASE, help="first real-game seed")
    p.add_argument("--oracle", action="store_true",
                   help="also run CEM with the real game as its model (an upper bound)")
    p.add_argument("--no-model", action="store_true", help="skip the world model (with --oracle)")


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    game = get_game(load_config_from_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT).model.game_name)
    nav = game.navigation()
    cfg = CEMConfig(horizon=args.horizon, population=args.population, iterations=args.iterations,
                    elites=args.elites, replan_every=args.replan_every, actions=(0, *nav.moves))
    agents: dict[str, Agent] = {}
    mpc = None
    size, checkpoint = 64, None
    if not args.no_model:
        sess = WorldSession.load(args.checkpoint, device=args.device, batch=args.population,
                                 seed=args.seed, sample_steps=args.sample_steps)
        size, checkpoint = sess.frame_size, sess.checkpoint
        mpc = agents["cem"] = MPCAgent(CEMPlanner(sess, cfg, nav.features, args.seed),
                                       sess.context_len)
    if args.oracle:
        agents["oracle"] = MPCAgent(CEMPlanner(GameImagination(args.population, nav), cfg, nav.features,
                                                args.seed), 1)
    agents["random"] = RandomAgent(args.seed, nav.moves)
    tasks = TASKS if args.task == "both" else (args.task,)
    t0 = time.time()
    results = evaluate(game, tasks, args.episodes, agents, args.k, args.budget, args.first_seed, size)
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
    p = argparse.ArgumentParser(description=__doc__, parents=[shared_flags()],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
