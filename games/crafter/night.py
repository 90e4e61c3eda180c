"""Night in imagination: the world view lit by the game's own daylight, as the real game lights it.

    python -m games.crafter.night --checkpoint assets/crafter_memory --worlds 4 --steps 600 \\
        --out assets/crafter_memory/eval/night.json

Crafter's day is a function of the step alone (`crafter/env.py`): progress = (step / 300) % 1
+ 0.3, daylight = 1 - |cos(pi * progress)|^3, darkest at step 210 of every 300. Its renderer
lights the world view (`engine.LocalView._light`) by blending the day-lit tiles with a night
version of them: below daylight 0.5 a noise vignette (uniform grey noise, stronger towards the
edges), then the colour saturation at 0.4 and a 50% blue tint. The status and inventory rows are
not lit.

A model trained on day-lit starts draws day; `NightStage` (the checkpoint's `game.night`) applies
that same light to the world view of what is shown, at each world's step (`Rollout.clock`), and
only to what is shown: the context and the memories keep the day-lit frames the model draws
from. The noise is drawn from (world, step), so a world's night is the same on every replay.
Not handled: a start in the dark (the model then draws the night itself and the stage darkens
it again).

The measurement plays the real game from held-out seeds under the exploration policy, rolls the
model from the real context under the same actions (memory on, as a player gets it), with and
without the stage, and reports per world the correlation of the world view's mean brightness
with the real game's, step by step, and each series' range.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldmodel.pipeline import Stage

DAY = 300  # steps per day
WORLD = (0, 49, 0, 63)  # the lit world view in frame pixels (y0, y1, x0, x1)
TINT = (0.0, 16.0, 64.0)
NOISE_SEED = 7919


def daylight(step: int | np.ndarray) -> np.ndarray:
    """The game's daylight at an episode step (1 noon, 0 midnight)."""
    progress = (np.asarray(step, np.float64) / DAY) % 1 + 0.3
    return 1 - np.abs(np.cos(np.pi * progress)) ** 3


@functools.lru_cache(4)
def vignette(h: int, w: int, stddev: float = 0.5) -> Tensor:
    """(h, w) the renderer's vignette: 0 at the centre, rising towards the edges."""
    ys, xs = torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return (1 - torch.exp(-0.5 * r2 / stddev ** 2)).float()


def light(view: Tensor, level: float, noise: Tensor | None = None) -> Tensor:
    """A day-lit world view (3, h, w) in 0..255 lit at daylight `level` as the game does;
    `noise` (h, w), uniform in 32..127, is what the game draws below daylight 0.5."""
    night = view
    if level < 0.5 and noise is None:
        raise ValueError("below daylight 0.5 the game's light needs its noise (h, w)")
    if level < 0.5:
        mask = (2 * (0.5 - level)) * vignette(*view.shape[-2:]).to(view)
        night = (1 - mask) * night + mask * noise.to(view)
    night = night.clamp(0, 255).floor()  # the renderer goes through uint8 here
    grey = (night[0] * 299 + night[1] * 587 + night[2] * 114) / 1000
    night = grey + 0.4 * (night - grey)  # PIL's ImageEnhance.Color(0.4)
    tint = torch.tensor(TINT, dtype=view.dtype, device=view.device)[:, None, None]
    night = 0.5 * night + 0.5 * tint
    return level * view + (1 - level) * night


class NightStage(Stage):
    """Shows the world view lit by the game's daylight at each world's step (see module
    docstring); the frames the model keeps stay day-lit."""

    name = "daylight"

    def show(self, ro: Any, frame: Any) -> None:
        frames = frame.frames
        b, n = frames.shape[:2]
        y0, y1, x0, x1 = WORLD
        out = None
        for w in range(b):
            for i in range(n):
                step = ro.clock[w] + i + 1
                level = float(daylight(step))
                if level >= 1.0 - 1e-6:
                    continue
                if out is None:
                    out = frames.clone()
                view = (frames[w, i, :, y0:y1, x0:x1].float() + 1) * 127.5
                gen = torch.Generator().manual_seed(NOISE_SEED * 1_000_003 + w * 100_003 + step)
                noise = torch.rand((y1 - y0, x1 - x0), generator=gen) * 95 + 32
                lit = light(view, level, noise.to(view.device))
                out[w, i, :, y0:y1, x0:x1] = (lit / 127.5 - 1).to(out.dtype)
        if out is not None:
            frame.shown = out


def brightness(frames: np.ndarray) -> np.ndarray:
    """(T,) the world view's mean grey level of uint8 frames (T, H, W, 3)."""
    y0, y1, x0, x1 = WORLD
    return frames[:, y0:y1, x0:x1].astype(np.float64).mean((1, 2, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def measure(model: Any, cfg: Any, seeds: list[int], steps: int, stages: list[Stage]) -> dict:
    """Real and imagined brightness series of `seeds` worlds (see module docstring)."""
    from games.crafter.status import imagine, real_runs

    real, acts, _, _ = real_runs(seeds, steps)
    gen = imagine(model, cfg, real, acts, stages)
    n_ctx = cfg.data.window - 1
    out = []
    for w in range(len(seeds)):
        rb, mb = brightness(real[w, n_ctx:]), brightness(gen[w])
        out.append({"seed": int(seeds[w]), "correlation": round(correlation(rb, mb), 4),
                    "real_range": round(float(rb.max() - rb.min()), 1),
                    "model_range": round(float(mb.max() - mb.min()), 1)})
    return {"worlds": out, "correlation_median": float(np.median([o["correlation"] for o in out])),
            "steps": steps, "context": n_ctx}


def main(argv: list[str] | None = None) -> dict:
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.cli import common_flags
    from worldmodel.data.episode import write_json_atomic
    from worldmodel.evaluation.reports import command_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(checkpoint={"default": "assets/crafter_memory"},
                                                      out={"help": "write the JSON report here"})])
    p.add_argument("--worlds", type=int, default=4)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--first-seed", type=int, default=1_000_000, help="held-out seeds from here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg = load_checkpoint(args.checkpoint, "cpu")
    base = [st for st in model.stages if st.name != NightStage.name]  # (as __main__: by name)
    seeds = list(range(args.first_seed, args.first_seed + args.worlds))
    report = {"command": command_line("games.crafter.night", argv), "checkpoint": args.checkpoint,
              "memory": "on", "with_night_stage": measure(model, cfg, seeds, args.steps,
                                                          base + [NightStage()]),
              "without": measure(model, cfg, seeds, args.steps, base)}
    for key in ("with_night_stage", "without"):
        print(f"{key:17s} brightness correlation, median over {args.worlds} worlds: "
              f"{report[key]['correlation_median']:.3f}  "
              + " ".join(f"{w['correlation']:.2f}" for w in report[key]["worlds"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
    return report


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)
