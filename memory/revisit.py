"""Revisit benchmark: does the world look the same when the player comes back?

    python -m memory.revisit --checkpoint runs/crafter --data data/crafter_revisit --out runs/revisit

Episodes come from `python -m simulator.collect --revisit`: a few noops, a trip out, a pause, the
way back (the same moves reversed, or the other sides of a loop: its `--shape`), then noops, with
the player's position per step. From the same real context
(the first `context` frames) and the real actions, the model rolls the episode twice with the
same sampler noise: memory off (the base model) and memory on (the fast-learned temporal LoRA,
updated inline every `update_every` frames as the worker would). With `--warmup trip` the whole
trip out is given real instead (teacher-forced into the context and learned by the memory as it
goes) and only the way back is generated and scored. A *revisit frame* j stands where
the player stood in an earlier run of frames that had left the context window by then (its last
frame e < j - context); `at_start` are the revisit frames back at the start position.

On revisit frames it reports, for both modes: PSNR and SSIM against the real frame, and against
the model's own frame from the first visit (frame e; real for context frames), plus a feature
similarity in the spirit of SlowFast-VGen's SRC: cosine similarity of a fixed, seeded random conv
net's features (independent of the checkpoint, so scores compare across checkpoints). The real
frames' own revisit consistency (real j vs real e) is the ceiling: facing, daylight and animals
change between visits.

Those pairs come from the real game's positions, and after its first divergence the model's
imagined player need not stand where the real one does (the real one is blocked by a tree the
model never drew; the model draws grass there and walks on), so a real-position pair may compare
two different places of the imagined world. Each mode is therefore also paired by its *own* pose:
the player's cell read from the rollout's frames by pixel tracking (`own_poses`, the same for
every mode, never the game's state), its revisits found the same way and scored generated frame
against generated frame (`own_pose` per mode: `vs_own_first_visit`, the revisit frames' non-grass
tile share, and how often the own pose equals the real one). A model that keeps only an empty
meadow consistent scores well there too, so the non-grass share of its frames is reported beside
the real frames' (`real_non_grass`). The view memory's pose against the game's is split into the
real frames given and the generated ones (`pose_accuracy_real`, `pose_accuracy_generated`).

The benchmark's parts: memory.revisit_trips (revisit frames, real prefix, the rollouts),
memory.revisit_scores (frame scores, own-pose revisits, one episode), memory.revisit_summary
(pooled over episodes, the printed lines), memory.revisit_plots (the figures). The game's part
(its moves, pose tracking from pixels, its cell labeller) is `Game.navigation()`.

Outputs in --out: revisit.json, revisit_psnr.png (error vs time, excursion marked), revisit_strip.png.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from memory.config import LOSS_FORMS, MemoryConfig, load_memory_config
from memory.revisit_plots import plot_curves, plot_strip
from memory.revisit_scores import (RandomFeatures, evaluate_episode, mean_or_none, own_pose_scores,
                                   own_poses, view_pose_accuracy)
from memory.revisit_summary import format_summary, summarize, summarize_own_pose
from memory.revisit_trips import (WARMUPS, find_revisits, generated_revisits, load_revisit_episodes,
                                  move_runs, real_prefix)
from worldmodel.checkpoint import load_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import Config, to_dict
from worldmodel.data import Episode
from worldmodel.data.episode import write_json_atomic
from worldmodel.device import pick_device
from worldmodel.dynamics import Denoiser
from worldmodel.game import get_game
from worldmodel.evaluation.reports import command_line

# The benchmark's parts, importable from here as before the split.
__all__ = ["RandomFeatures", "find_revisits", "format_summary", "generated_revisits",
           "load_revisit_episodes", "main", "move_runs", "own_pose_scores", "own_poses",
           "real_prefix", "run_benchmark", "summarize", "summarize_own_pose", "view_pose_accuracy"]


def run_benchmark(model: Denoiser, cfg: Config, episodes: list[Episode],
                  variants: dict[str, MemoryConfig], seed: int = 0,
                  out: Path | None = None, log=print, warmup: str = "context",
                  tiles: Any = None) -> dict[str, Any]:
    """Every episode's rollouts and scores, the summary and (with `out`) revisit.json and the
    figures. `tiles`: the game's cell labeller for tile agreement, or None."""
    context = cfg.data.window - 1
    nav = get_game(cfg.model.game_name).navigation()
    net = RandomFeatures(seed)
    modes = ["off", *variants]
    results = []
    t0 = time.perf_counter()
    for i, ep in enumerate(episodes):
        results.append(evaluate_episode(model, cfg, ep, context, variants, seed + i, net, warmup,
                                        tiles))
        r = results[-1]
        log(f"{r['episode']}: {len(r['revisit_frames'])} revisit frames; revisit PSNR vs real " +
            ", ".join(f"{m} {mean_or_none(np.asarray(r['modes'][m]['vs_real']['psnr'])):.2f}" for m in modes))
    summary = summarize(results, modes)
    gen_frames = sum(len(ep.frames) - context for ep in episodes)
    report = {"context": context, "warmup": warmup, "episodes": len(episodes), "seed": seed,
              "tiles": nav.tile_note if tiles is not None and all(ep.labels is not None for ep in episodes)
                       else None,
              "memory": {k: to_dict(v) for k, v in variants.items()},
              "summary": summary, "seconds": time.perf_counter() - t0,
              "update_ms_per_frame": {m: 1000 * sum(r["modes"][m]["update_s"] for r in results)
                                      / gen_frames for m in modes},
              "per_episode": [{k: v for k, v in r.items() if k != "_gens"} for r in results]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "revisit.json", report)
        plot_curves(results, episodes, modes, context, out / "revisit_psnr.png", nav.moves)
        best = max(range(len(results)), key=lambda k: len(results[k]["revisit_frames"]))
        plot_strip(results[best], episodes[best], modes, out / "revisit_strip.png")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(checkpoint={"required": True}, device=True, seed=True,
                          out={"help": "folder for revisit.json and the plots"})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/crafter_revisit", help="revisit episodes")
    p.add_argument("--samples", type=int, default=4, help="episodes (those with revisit frames)")
    p.add_argument("--memory-config", help="YAML with a memory: section (default: MemoryConfig())")
    p.add_argument("--compare-stores", action="store_true",
                   help="memory modes view (the view memory alone), lora (the temporal LoRA "
                        "alone) and both, beside off")
    p.add_argument("--compare-loss", action="store_true",
                   help=f"one memory-on mode per loss form {LOSS_FORMS}")
    p.add_argument("--warmup", choices=WARMUPS, default="context",
                   help="real frames before the model takes over: the context alone, or the "
                        "whole trip out (the memory learns the real trip; the way back is "
                        "generated, so every first visit is a real frame)")
    p.add_argument("--tiles", help="the game's cell labels for tile agreement (Crafter: a tile "
                                   "bank; default: the game's own); 'none' skips it")
    p.add_argument("overrides", nargs="*", help="memory settings, e.g. lr=1e-3 update_every=4")
    args = p.parse_args(argv)
    model, cfg = load_checkpoint(args.checkpoint, pick_device(args.device))
    mcfg = load_memory_config(args.memory_config, args.overrides)
    variants = {"on": mcfg}
    if args.compare_stores:  # the view memory alone, the temporal LoRA alone, both
        if model.memory_stem is None:
            raise ValueError(f"--compare-stores: {args.checkpoint} has no view memory "
                             f"(model.view_memory)")
        variants = {name: replace(mcfg, stores=name) for name in ("view", "lora", "both")}
    if args.compare_loss:
        variants = {form: replace(mcfg, loss=form) for form in LOSS_FORMS}
    episodes = load_revisit_episodes(args.data, args.samples, cfg.data.window - 1)
    tiles = None
    if args.tiles != "none" and all(ep.labels is not None for ep in episodes):
        tiles = get_game(cfg.model.game_name).navigation().labeller(args.tiles)
    report = run_benchmark(model, cfg, episodes, variants, args.seed,
                           Path(args.out) if args.out else None, warmup=args.warmup, tiles=tiles)
    report["checkpoint"] = str(args.checkpoint)
    report["command"] = command_line("memory.revisit", argv)
    if args.out:
        write_json_atomic(Path(args.out) / "revisit.json", report)
    print(format_summary(report["summary"]))
    return report


if __name__ == "__main__":
    run_cli(main)
