"""Does fast learning on the trip out teach the model the way back? A quick, low-variance probe.

    python -m memory.probe --checkpoint assets/crafter --data data/crafter_revisit --samples 4 \
        --memory-config configs/crafter.yaml steps_per_update=8

For each revisit episode, a fresh memory learns the real trip out (the first real frames up to
the first move back, fed frame by frame as play feeds it: a window every `update_every`), and the
teacher-forced diffusion loss (`loss` form, forward windows, fixed noise) on the real way back is
measured before and after. Memory that helps on return lowers it; memory that only overfits the
windows it saw raises it. No sampling, so settings compare in a minute or two where the revisit
benchmark's rollouts (memory.revisit) are slower and noisier (one changed sample changes the
rest of a rollout).

`--ceiling N[,N...]` asks how far fast learning could go: instead of play's schedule, the adapter
takes N Adam steps on windows drawn at random from the real trip out, and the way-back loss is
measured after each count (the shipped model: at most ~6-7% lower on average; the model card).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from memory.config import MemoryConfig, load_memory_config
from memory.episodic import EpisodicMemory
from memory.fast_learner import FastLearner, fast_loss
from memory.revisit_trips import load_revisit_episodes, real_prefix
from worldmodel.checkpoint import load_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import Config, to_dict
from worldmodel.data import Episode
from worldmodel.data.dataset import to_float
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.prediction import frame_actions
from worldmodel.device import pick_device
from worldmodel.game import get_game


@torch.no_grad()
def way_back_loss(learner: FastLearner, frames: torch.Tensor, actions: torch.Tensor,
                  windows: list[tuple[int, int]], reps: int, seed: int) -> float:
    """Mean teacher-forced loss over windows [a, b) of the way back, the same noise every call."""
    mcfg = replace(learner.mcfg, reverse_prob=0.0)
    gen = torch.Generator().manual_seed(seed)  # host draws, as the learner's own
    frames = frames.to(learner.device)
    losses = [float(fast_loss(learner.model, frames[:, a:b], actions[:, a:b], learner.space,
                              learner.opposite, learner.dcfg, mcfg, gen))
              for a, b in windows for _ in range(reps)]
    return float(np.mean(losses))


def way_back_windows(mcfg: MemoryConfig, prefix: int, context: int,
                     ep: Episode) -> list[tuple[int, int]]:
    """Half-overlapping windows from the first move back, about as far as the trip went out."""
    end = min(len(ep.frames), 2 * prefix - context)
    step = max(1, mcfg.window // 2)
    windows = [(a, a + mcfg.window) for a in range(prefix - 1, end - mcfg.window + 1, step)]
    if not windows:
        raise ValueError(f"{ep.path}: no {mcfg.window}-frame window on the way back")
    return windows


def trip_and_way_back(cfg: Config, mcfg: MemoryConfig, ep: Episode):
    """(context, real prefix, frames (1, T+1, 3, h, w), actions (1, T+1), way-back windows)."""
    context = cfg.data.window - 1
    prefix = real_prefix(ep, context, "trip", get_game(cfg.model.game_name).navigation().moves)
    frames = to_float(torch.from_numpy(ep.frames))[None]
    actions = torch.from_numpy(frame_actions(ep, 0, len(ep.frames)))[None]
    return context, prefix, frames, actions, way_back_windows(mcfg, prefix, context, ep)


def probe_episode(model: Denoiser, cfg: Config, mcfg: MemoryConfig, ep: Episode,
                  reps: int = 6, seed: int = 123) -> dict[str, Any]:
    context, prefix, frames, actions, windows = trip_and_way_back(cfg, mcfg, ep)
    # The trip out goes through the memory as play feeds it (inline updates, same schedule).
    memory = EpisodicMemory(model, cfg, mcfg, threaded=False)
    memory.reset(frames[:, :context], actions[:, :context])
    learner = memory.learner
    before = way_back_loss(learner, frames, actions, windows, reps, seed)
    for j in range(context, prefix):
        memory.observe(frames[:, j:j + 1], actions[:, j:j + 1])
    after = way_back_loss(learner, frames, actions, windows, reps, seed)
    return {"episode": ep.path.name if ep.path else "?", "real_prefix": prefix,
            "updates": learner.updates, "last_train_loss": learner.last_loss,
            "way_back_before": before, "way_back_after": after, "change": after / before - 1}


def ceiling_episode(model: Denoiser, cfg: Config, mcfg: MemoryConfig, ep: Episode,
                    steps: list[int], reps: int = 6, seed: int = 123) -> dict[str, Any]:
    """The way-back loss after `steps` (increasing) Adam steps on random trip-out windows."""
    _, prefix, frames, actions, windows = trip_and_way_back(cfg, mcfg, ep)
    learner = FastLearner(model, cfg.diffusion, mcfg, cfg.model.action_space)
    gen = torch.Generator().manual_seed(seed)
    before = way_back_loss(learner, frames, actions, windows, reps, seed)
    after, done = [], 0
    for n in steps:
        for _ in range(n - done):
            a = int(torch.randint(0, max(1, prefix - mcfg.window + 1), (), generator=gen))
            learner.update(frames[:, a:a + mcfg.window], actions[:, a:a + mcfg.window])
        done = max(done, n)
        after.append(way_back_loss(learner, frames, actions, windows, reps, seed))
    return {"episode": ep.path.name if ep.path else "?", "real_prefix": prefix, "steps": steps,
            "way_back_before": before, "way_back_after": after,
            "change": [a / before - 1 for a in after]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(checkpoint={"required": True}, device=True)
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/crafter_revisit", help="revisit episodes")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--memory-config", help="YAML with a memory: section")
    p.add_argument("--reps", type=int, default=6, help="noise draws per way-back window")
    p.add_argument("--ceiling", help="Adam steps on random trip-out windows instead of play's "
                   "schedule, e.g. 10,30,100: the way-back loss after each")
    p.add_argument("overrides", nargs="*", help="memory settings, e.g. steps_per_update=8")
    args = p.parse_args(argv)
    steps = []
    if args.ceiling:
        try:
            steps = sorted(int(v) for v in args.ceiling.split(","))
        except ValueError:
            p.error(f"--ceiling takes step counts like 10,30,100, got {args.ceiling!r}")
        if steps[0] < 0:
            p.error(f"--ceiling step counts must be >= 0, got {args.ceiling!r}")
    model, cfg = load_checkpoint(args.checkpoint, pick_device(args.device))
    mcfg = load_memory_config(args.memory_config, args.overrides)
    rows = []
    episodes = load_revisit_episodes(args.data, args.samples, cfg.data.window - 1)
    if steps:
        for ep in episodes:
            rows.append(ceiling_episode(model, cfg, mcfg, ep, steps, args.reps))
            print(f"{rows[-1]['episode']}: way-back loss change after "
                  + ", ".join(f"{n} steps {100 * c:+.1f}%" for n, c in zip(steps, rows[-1]["change"])))
        mean = np.mean([r["change"] for r in rows], 0)
        print("mean: " + ", ".join(f"{n} steps {100 * c:+.1f}%" for n, c in zip(steps, mean)))
        return {"memory": to_dict(mcfg), "episodes": rows, "mean_change": mean.tolist()}
    for ep in episodes:
        rows.append(probe_episode(model, cfg, mcfg, ep, args.reps))
        r = rows[-1]
        print(f"{r['episode']}: {r['updates']} updates on the trip out; loss on the way back "
              f"{r['way_back_before']:.5f} -> {r['way_back_after']:.5f} ({100 * r['change']:+.1f}%)")
    mean = float(np.mean([r["change"] for r in rows]))
    print(f"mean change of the way-back loss: {100 * mean:+.1f}%")
    return {"memory": to_dict(mcfg), "episodes": rows, "mean_change": mean}


if __name__ == "__main__":
    run_cli(main)
