"""Evaluate a checkpoint against held-out real episodes:

    python -m worldmodel.evaluation.evaluate --checkpoint runs/crafter --data data/crafter --out runs/eval

1. Open-loop prediction. Each sample takes `context` real frames (the model's context window)
   and the real actions that produced them, then rolls out `max(horizons)` frames with the real
   actions that followed. Generated and real frames are compared at every step (PSNR, SSIM on
   uint8, see metrics.py) and reported at each horizon next to a baseline that repeats the last
   context frame. Steps are grouped into "moving" (the player stands elsewhere than at the last
   context frame, from "pos" in actions.jsonl) and "static". Episodes without "pos" fall back to
   an image test: the view moved if the real frame differs from the last context frame by more
   than `MOVED_MAD` in mean absolute difference (calibrated on held-out Crafter, where it agrees
   with "pos" on ~85% of steps).
2. Long rollout (`--long` frames, sticky random movement-biased actions, no game needed): per
   frame sharpness (mean gradient, Laplacian variance), colour histogram distance to real frames
   and frame-to-frame change, against the same statistics of real held-out frames (5th-95th
   percentile band), to show whether it stays game-like or collapses into blur or noise.

Outputs in --out: report.json, metrics.png, strip.png, long_strip.png, drift.png.

Its rollouts are worldmodel.evaluation.prediction's; its figures worldmodel.evaluation.plots'; a game adds its own
part (`Game.evaluation()`, e.g. a semantic evaluation against the real game's labels).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from worldmodel.evaluation import metrics
from worldmodel.checkpoint import load_checkpoint, load_config_from_checkpoint, read_metrics
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import to_dict
from worldmodel.data import list_episodes, load_episode
from worldmodel.data.episode import EpisodeError, write_json_atomic
from worldmodel.game import find_game
from worldmodel.rollout import Rollout
from worldmodel.device import pick_device
from worldmodel.evaluation.plots import format_table, plot_drift, plot_long_strip, plot_metrics, plot_strip
from worldmodel.evaluation.prediction import (GROUPS, MOVED_MAD, OpenLoop, curves, exploration_actions,
                                   frame_actions, generate, long_rollout, new_rollout, open_loop,
                                   pick_starts, player_positions, reference_stats, summarize)
from worldmodel.evaluation.reports import command_line

# The rollouts' names, importable from here as before the split.
__all__ = ["GROUPS", "MOVED_MAD", "OpenLoop", "curves", "evaluate", "exploration_actions",
           "frame_actions", "generate", "long_rollout", "main", "new_rollout", "open_loop",
           "pick_starts", "player_positions", "reference_stats", "summarize"]


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    game_eval = args.game_eval
    if game_eval is not None:
        game_eval.apply_levers(args, model, cfg)  # Crafter: --no-land, --no-codebook
    if getattr(args, "sample_steps", None):
        cfg.diffusion.sample_steps = args.sample_steps
    context = Rollout(model, cfg).context
    horizons = sorted(set(args.horizons))
    if not horizons or horizons[0] < 1:
        raise ValueError(f"horizons must be positive, got {args.horizons}")
    horizon = horizons[-1]
    paths = [p for p in list_episodes(args.data) if p.name.startswith(args.prefix)]
    if not paths:
        raise EpisodeError(f"no episodes named {args.prefix}* under {args.data}")
    episodes = [load_episode(p) for p in paths]
    for ep in episodes:
        if ep.meta.get("action_space") != cfg.model.action_space:
            raise EpisodeError(f"{ep.path} uses action space {ep.meta.get('action_space')!r}, "
                               f"the model expects {cfg.model.action_space!r}")
        if ep.frames.shape[1:3] != (cfg.model.frame_size,) * 2:
            raise EpisodeError(f"{ep.path} has {ep.frames.shape[1:3]} frames, the model takes "
                               f"{cfg.model.frame_size}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    starts = pick_starts([len(ep.frames) for ep in episodes], args.samples, context, horizon, args.seed)
    t1 = time.time()
    ol = open_loop(model, cfg, episodes, starts, context, horizon, args.batch, args.seed,
                   view_memory=args.view_memory)
    open_loop_s = time.time() - t1
    summary = summarize(ol, horizons)
    cv = curves(ol)
    plot_metrics(cv, horizons, len(starts), out / "metrics.png")
    plot_strip(ol, horizons, out / "strip.png")

    report: dict[str, Any] = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "checkpoint_metrics": read_metrics(args.checkpoint),
        "data": str(Path(args.data).resolve()), "prefix": args.prefix, "episodes": len(episodes),
        "samples": len(starts), "episodes_sampled": len({e for e, _ in starts}),
        "context_frames": context, "horizons": horizons, "seed": args.seed, "device": str(device),
        "view_memory": bool(args.view_memory),
        "moving_test": ("pos" if all(player_positions(ep) is not None for ep in episodes)
                        else f"pos where logged, else mean abs diff > {MOVED_MAD}"),
        "psnr": "PSNR of the mean MSE over a group's frames (no cap); psnr_frame_mean_capped: "
                f"mean of per-frame PSNRs capped at {metrics.PSNR_CAP:.0f} dB",
        "command": command_line(getattr(args, "module", "worldmodel.evaluation.evaluate"),
                                getattr(args, "argv", None)),
        "config": to_dict(cfg), "results": summary, "curves": cv,
        "time": {"open_loop_s": open_loop_s,
                 "open_loop_frames_per_s": len(starts) * horizon / max(open_loop_s, 1e-9)},
    }
    labeller = None
    if game_eval is not None:  # the game's semantic evaluation (Crafter: per-tile labels)
        sem, labeller = game_eval.open_loop(args, model, cfg, episodes, context, out)
        if sem is not None:
            report["semantic"] = sem
    if args.long > 0:
        every = args.long_every or max(1, args.long // 10)
        ref_hist, band = reference_stats(episodes, seed=args.seed)
        t2 = time.time()
        lr = long_rollout(model, cfg, episodes, context, args.long, args.long_worlds, args.seed,
                          ref_hist, every, labeller, view_memory=args.view_memory)
        report["long"] = {"frames": args.long, "worlds": args.long_worlds, "every": every,
                          "episodes": lr["episodes"], "starts": lr["starts"],
                          "reference": band, **metrics.drift_summary(lr["stats"], band),
                          "time_s": time.time() - t2}
        plot_drift(lr["stats"], band, out / "drift.png")
        plot_long_strip(lr["snapshots"], every, out / "long_strip.png")
        if labeller is not None:
            report["long"]["semantic"] = game_eval.long(lr)
    if game_eval is not None:
        game_eval.finish(report, out)
    report["time"]["total_s"] = time.time() - t0
    write_json_atomic(out / "report.json", report)
    return report


def main(argv: list[str] | None = None, view_memory: bool = False,
         module: str = "worldmodel.evaluation.evaluate") -> dict[str, Any]:
    """The evaluation; `view_memory` rolls every world with its game's view memory on:
    `python -m memory.evaluate` asks for it, and names itself as
    `module` in the report's command. The checkpoint's game adds its own options and its
    semantic evaluation (`Game.evaluation`)."""
    shared = common_flags(checkpoint={"required": True},
                          out={"default": "runs/eval"},
                          device=True,
                          threads=True,
                          seed=True)
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of episodes")
    p.add_argument("--prefix", default="heldout_", help="episode folder name prefix")
    p.add_argument("--samples", type=int, default=256, help="open-loop samples")
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--batch", type=int, default=16, help="worlds rolled out together")
    p.add_argument("--long", type=int, default=2000, help="long-rollout frames (0 = skip)")
    p.add_argument("--long-worlds", type=int, default=4, help="worlds in the long rollout")
    p.add_argument("--long-every", type=int, default=0, help="frames between long-strip images "
                   "(0 = a tenth of --long)")
    p.add_argument("--sample-steps", type=int, default=0,
                   help="sampler steps (default: the checkpoint's own)")
    known, _ = p.parse_known_args(argv)
    game = find_game(load_config_from_checkpoint(known.checkpoint).model.game_name)
    game_eval = None if game is None else game.evaluation()
    if game_eval is not None:
        game_eval.add_arguments(p)
    args = p.parse_args(argv)
    if args.sample_steps < 0:
        p.error(f"--sample-steps must be positive (0: the checkpoint's own), got {args.sample_steps}")
    args.argv = argv
    args.view_memory = view_memory
    args.module = module
    args.game_eval = game_eval
    report = evaluate(args)
    print(f"\n{report['samples']} samples from {report['episodes_sampled']} episodes, "
          f"{report['context_frames']} context frames, moving test: {report['moving_test']}")
    print(format_table(report["results"], report["horizons"]))
    if game_eval is not None and game_eval.format(report):
        print(game_eval.format(report))
    if "long" in report:
        lg = report["long"]
        print(f"long rollout: {lg['frames']} frames x {lg['worlds']} worlds: {lg['verdict']}")
        for k in metrics.DRIFT_STATS:
            ref = lg["reference"][k]
            print(f"  {k:<14} final quarter median {lg[k]['final_quarter_median']:8.3f}   "
                  f"real p5-p95 {ref['p5']:.3f}-{ref['p95']:.3f}   in band {lg[k]['in_band_fraction']:.0%}")
    print(f"wrote {args.out}/report.json ({report['time']['total_s']:.0f} s)")
    return report


if __name__ == "__main__":
    run_cli(main)
