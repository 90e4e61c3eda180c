"""Long-rollout drift against the real game: `python -m games.crafter.drift --frames 1000 2000`.

The real game runs from held-out seeds under the exploration policy for each length; the model
starts from each run's first `context` frames and imagines the rest under the same actions,
memory on (a model that has one), with the checkpoint's stages (as a player gets it). Every frame's world view is read
per tile (the real game's from its semantic map, the model's by the tile classifier) and the
two label histograms are compared: over the whole run and over its last quarter (the late
frames, where drift shows), as total variation, per-label shares and the issue's checks:

- every label with a real share >= 1% within a factor of 1.5 of it,
- no label above 1% where the real game has < 0.5% (lava),
- the non-grass share within 25% of the real one, smears (tiles like no real tile) <= 1%,
- the late-frame histogram <= 0.08 total variation from the real one.

`--sample-steps N` measures the checkpoint at another sampler length (a few-step student's 1);
`--sampler progressive --window K` with the progressive sampler (`Rollout.stream`, PA-VDM).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from games.crafter.tiles import DEFAULT_BANK, REJECT, TileClassifier

SHARE_FLOOR, SHARE_FACTOR = 0.01, 1.5  # labels the real game shows >= 1%: within 1.5x
RARE, RARE_CAP = 0.005, 0.01  # labels the real game shows < 0.5%: the model <= 1%
NON_GRASS_TOL, SMEAR_CAP, LATE_TV_CAP = 0.25, 0.01, 0.08


def histogram(labels: np.ndarray, bins: int) -> np.ndarray:
    """Share of each label id among `labels` (any shape), REJECT left out of the shares."""
    flat = labels[labels != REJECT].ravel().astype(np.int64)
    h = np.bincount(flat, minlength=bins)[:bins].astype(np.float64)
    return h / max(1.0, h.sum())


def compare(real: np.ndarray, drawn: np.ndarray, names: tuple[str, ...], grass: int) -> dict[str, Any]:
    """Label figures of the model's view labels `drawn` against the real game's `real` (both
    (W, T, 7, 9), the same frames), whole run and last quarter."""
    bins = len(names)
    out: dict[str, Any] = {}
    for part, sl in (("all", slice(None)), ("late", slice(-max(1, real.shape[1] // 4), None))):
        hr, hm = histogram(real[:, sl], bins), histogram(drawn[:, sl], bins)
        out[part] = {"tv": round(float(0.5 * np.abs(hr - hm).sum()), 4),
                     "real": {n: round(float(hr[i]), 4) for i, n in enumerate(names) if hr[i] or hm[i]},
                     "model": {n: round(float(hm[i]), 4) for i, n in enumerate(names) if hr[i] or hm[i]}}
    hr, hm = histogram(real, bins), histogram(drawn, bins)
    common = [n for i, n in enumerate(names) if hr[i] >= SHARE_FLOOR and i != grass]
    off = {n: round(float(hm[names.index(n)] / hr[names.index(n)]), 3) for n in common}
    rare = {n: round(float(hm[i]), 4) for i, n in enumerate(names) if hr[i] < RARE and hm[i] > RARE_CAP}
    ng_r, ng_m = 1 - hr[grass], 1 - hm[grass]
    smear = float((drawn == REJECT).mean())
    out["checks"] = {
        "ratio_to_real": off,
        "common_within_1.5x": all(1 / SHARE_FACTOR <= r <= SHARE_FACTOR for r in off.values()),
        "rare_over_1pct": rare,
        "non_grass": {"real": round(float(ng_r), 4), "model": round(float(ng_m), 4),
                      "within_25pct": bool(abs(ng_m - ng_r) <= NON_GRASS_TOL * ng_r)},
        "smear": round(smear, 5), "smear_ok": smear <= SMEAR_CAP,
        "late_tv_ok": out["late"]["tv"] <= LATE_TV_CAP,
    }
    c = out["checks"]
    c["all_met"] = bool(c["common_within_1.5x"] and not rare and c["non_grass"]["within_25pct"]
                        and c["smear_ok"] and c["late_tv_ok"])
    return out


def measure(model: Any, cfg: Any, tiles: TileClassifier, seeds: list[int], frames: int) -> dict[str, Any]:
    """One length: real runs from `seeds`, the model's imagined runs, their label figures."""
    from games.crafter.status import imagine, real_runs

    real, acts, labels, _ = real_runs(seeds, frames)
    t0 = time.time()
    gen = imagine(model, cfg, real, acts, model.stages)
    took = time.time() - t0
    n_ctx = real.shape[1] - gen.shape[1]
    drawn = tiles.classify(gen)
    out = compare(labels[:, n_ctx:], drawn, tiles.names, tiles.grass)
    out.update(frames=frames, seeds=seeds, context=n_ctx,
               imagined_frames_per_s=round(gen.shape[0] * gen.shape[1] / took, 1))
    return out


def summary(r: dict[str, Any]) -> str:
    c = r["checks"]
    worst = sorted(c["ratio_to_real"].items(), key=lambda kv: -abs(np.log(max(kv[1], 1e-3))))[:4]
    return (f"{r['frames']} frames: late TV {r['late']['tv']:.3f} (all {r['all']['tv']:.3f}), "
            f"non-grass {c['non_grass']['model']:.1%} vs {c['non_grass']['real']:.1%}, smear "
            f"{c['smear']:.2%}, rare over 1%: {c['rare_over_1pct'] or 'none'}, worst model/real: "
            + ", ".join(f"{n} {v:.2f}x" for n, v in worst) + f"; all met: {c['all_met']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.cli import common_flags
    from worldmodel.data.episode import write_json_atomic
    from worldmodel.evaluation.reports import command_line
    from worldmodel.recall import has_view_memory

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(checkpoint={"default": "assets/crafter_memory"},
                                                      out={"help": "write the JSON report here"})])
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 2000], help="run lengths")
    p.add_argument("--worlds", type=int, default=4, help="real runs per length")
    p.add_argument("--first-seed", type=int, default=1_200_000, help="held-out seeds from here")
    p.add_argument("--sample-steps", type=int, default=0, help="sampler passes (0: the checkpoint's)")
    p.add_argument("--sampler", choices=("steps", "progressive"), default=None,
                   help="the sampler (default: the checkpoint's)")
    p.add_argument("--window", type=int, default=0, help="progressive sampler's frames in flight")
    p.add_argument("--tiles", default=str(DEFAULT_BANK), help="tile bank (games.crafter.tiles)")
    args = p.parse_args(argv)
    if min(args.frames) < 16 or args.worlds < 1:
        raise SystemExit("games.crafter.drift: --frames must be >= 16 and --worlds >= 1")
    model, cfg = load_checkpoint(args.checkpoint, "cpu")
    if args.sample_steps:
        cfg.diffusion.sample_steps = args.sample_steps
    if args.sampler:
        cfg.diffusion.sampler = args.sampler
    if args.window:
        cfg.diffusion.progressive_window = args.window
    tiles = TileClassifier.load(args.tiles)
    report: dict[str, Any] = {"command": command_line("games.crafter.drift", argv),
                              "checkpoint": args.checkpoint,
                              "memory": "on" if has_view_memory(model, cfg) else "none",
                              "sample_steps": cfg.diffusion.sample_steps,
                              "sampler": cfg.diffusion.sampler,
                              "progressive_window": cfg.diffusion.progressive_window,
                              "lengths": {}}
    for i, n in enumerate(args.frames):
        seeds = list(range(args.first_seed + 1000 * i, args.first_seed + 1000 * i + args.worlds))
        r = measure(model, cfg, tiles, seeds, n)
        report["lengths"][str(n)] = r
        print(summary(r), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
    return report


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)
