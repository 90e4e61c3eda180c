"""Minetest's part of `python -m worldmodel.evaluation.evaluate` (`Game.evaluation()`): the model
against the real game per pixel, from the same real context under the same actions.

On held-out episodes labelled on every frame (`simulator.collect --game minetest --split heldout
--env label_every=1`), the imagined frames are read by the labeller (`games.minetest.labeller`)
and compared with the real game's own label maps at h = 1/4/16/64: pixel accuracy and mean IoU,
beside repeat-last (the last real frame's labels held) and the labeller's own accuracy on the
real frames (the ceiling). Also: scene cuts (a frame-to-frame change larger than any step of the
real game's held-out episodes), blocked moves (the real view stayed still) that the model keeps
still, and PSNR by mean MSE against repeat-last.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from games.minetest.labeller import Labeller
from games.minetest.labels import LABEL_NAMES
from worldmodel.actions import get_action_space
from worldmodel.config import Config
from worldmodel.data import Episode
from worldmodel.data.episode import NO_LABEL
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation import metrics
from worldmodel.evaluation.prediction import frame_actions, generate

DEFAULT_LABELLER = Path(__file__).resolve().parents[2] / "assets" / "minetest" / "labeller.safetensors"
STILL = 1.0  # mean absolute frame change (grey levels) below which a view stayed still


def frame_change(frames: np.ndarray) -> np.ndarray:
    """(..., T-1) mean absolute change between consecutive frames of (..., T, H, W, 3)."""
    f = frames.astype(np.float32)
    return np.abs(f[..., 1:, :, :, :] - f[..., :-1, :, :, :]).mean(axis=(-3, -2, -1))


def mean_iou(pred: np.ndarray, real: np.ndarray) -> float:
    """Mean over the labels present in `real` of intersection over union."""
    ious = [((pred == i) & (real == i)).sum() / ((pred == i) | (real == i)).sum()
            for i in np.unique(real)]
    return float(np.mean(ious)) if ious else float("nan")


def fully_labelled(ep: Episode) -> bool:
    return ep.labels is not None and not (ep.labels == NO_LABEL).all(axis=(1, 2)).any()


def semantic_open_loop(model: Denoiser, cfg: Config, episodes: list[Episode], labeller: Labeller,
                       context: int, worlds: int, horizon: int, batch: int, seed: int,
                       view_memory: bool = False) -> dict[str, Any]:
    eps = [ep for ep in episodes if fully_labelled(ep) and len(ep.frames) > context + horizon]
    if not eps:
        return {"skipped": f"no held-out episode labelled on every frame with {context} + "
                           f"{horizon} frames (collect with --env label_every=1)"}
    rng = np.random.default_rng(seed + 11)
    starts = [(e, int(rng.integers(context - 1, len(eps[e].frames) - horizon)))
              for e in (i % len(eps) for i in range(worlds))]
    ctx = np.stack([eps[e].frames[s - context + 1:s + 1] for e, s in starts])
    ctx_act = np.stack([frame_actions(eps[e], s - context + 1, context) for e, s in starts])
    acts = np.stack([frame_actions(eps[e], s + 1, horizon) for e, s in starts])
    real_frames = np.stack([eps[e].frames[s + 1:s + 1 + horizon] for e, s in starts])
    real = np.stack([eps[e].labels[s + 1:s + 1 + horizon] for e, s in starts])
    gen = np.concatenate([generate(model, cfg, ctx[i:i + batch], ctx_act[i:i + batch],
                                   acts[i:i + batch], seed + 1000 + i, view_memory=view_memory)
                          for i in range(0, len(starts), batch)])
    drawn = labeller.predict(gen.reshape(-1, *gen.shape[2:])).reshape(real.shape)
    read_real = labeller.predict(real_frames.reshape(-1, *gen.shape[2:])).reshape(real.shape)
    last = labeller.predict(ctx[:, -1])
    horizons = [h for h in (1, 4, 16, 64) if h <= horizon]
    labels: dict[str, Any] = {}
    for name, pred in (("model", drawn), ("repeat_last", np.repeat(last[:, None], horizon, 1)),
                       ("labeller_on_real_frames", read_real)):
        labels[name] = {str(h): {"accuracy": round(float((pred[:, h - 1] == real[:, h - 1]).mean()), 4),
                                 "mean_iou": round(mean_iou(pred[:, h - 1], real[:, h - 1]), 4)}
                        for h in horizons}
    # sky/ground boundary: the share of columns whose sky-to-ground row (first non-sky from the
    # top) is within one label pixel of the real one
    sky = LABEL_NAMES.index("sky")

    def horizon_rows(lab):
        ground = lab != sky
        return np.where(ground.any(-2), ground.argmax(-2), lab.shape[-2])

    boundary = {str(h): round(float((np.abs(horizon_rows(drawn[:, h - 1])
                                            - horizon_rows(real[:, h - 1])) <= 1).mean()), 4)
                for h in horizons}
    # scene cuts against the largest real step of these episodes; blocked moves kept still
    real_steps = np.concatenate([frame_change(ep.frames[None])[0] for ep in eps])
    cut = float(real_steps.max())
    with_prev = np.concatenate([ctx[:, -1:], gen], 1)
    gen_change = frame_change(with_prev)
    real_change = frame_change(np.concatenate([ctx[:, -1:], real_frames], 1))
    moves = np.isin(acts, [i for i, a in enumerate(cfg_actions(cfg)) if a in
                           ("forward", "back", "left", "right", "jump")])
    blocked = moves & (real_change < STILL)
    mse = metrics.mse(gen, real_frames)
    base = metrics.mse(np.broadcast_to(ctx[:, -1:], real_frames.shape), real_frames)
    psnr = {str(h): {"model": round(float(metrics.psnr_from_mse(mse[:, h - 1].mean(), cap=None)), 2),
                     "repeat_last": round(float(metrics.psnr_from_mse(base[:, h - 1].mean(), cap=None)), 2)}
            for h in horizons}
    return {
        "worlds": len(starts), "horizon": horizon, "context": context,
        "starts": [[eps[e].path.name, s] for e, s in starts],
        "labels": labels, "sky_boundary_within_1": boundary,
        "scene_cuts": {"threshold_mad": round(cut, 2),
                       "model_share": round(float((gen_change > cut).mean()), 5),
                       "real_share": round(float((real_steps > cut).mean()), 5)},
        "blocked_moves": {"n": int(blocked.sum()),
                          "model_still_share": (round(float((gen_change[blocked] < STILL).mean()), 4)
                                                if blocked.any() else None)},
        "psnr_mean_mse": psnr,
        "_strip": (ctx[:, -1], real_frames, gen),
    }


def cfg_actions(cfg: Config) -> tuple[str, ...]:
    return getattr(get_action_space(cfg.model.action_space), "actions", ())


def format_semantic(report: dict[str, Any]) -> str:
    sem = report.get("semantic") or {}
    if "labels" not in sem:
        return f"semantic: {sem.get('skipped', 'not run')}" if sem else ""
    lines = [f"per-pixel labels, {sem['worlds']} worlds (accuracy / mean IoU):"]
    for name, by_h in sem["labels"].items():
        lines.append(f"  {name:<24} " + "   ".join(f"h={h}: {v['accuracy']:.3f} / {v['mean_iou']:.3f}"
                                                  for h, v in by_h.items()))
    lines.append("  sky boundary within 1 px: " + "  ".join(f"h={h}: {v:.3f}" for h, v in
                                                          sem["sky_boundary_within_1"].items()))
    sc, bm = sem["scene_cuts"], sem["blocked_moves"]
    lines.append(f"  scene cuts: model {sc['model_share']:.4f}, real {sc['real_share']:.4f} "
                 f"(change > {sc['threshold_mad']})   blocked moves kept still: "
                 f"{bm['model_still_share']} of {bm['n']}")
    lines.append("  PSNR (mean MSE) model vs repeat-last: " + "  ".join(
        f"h={h}: {v['model']:.2f} vs {v['repeat_last']:.2f}" for h, v in sem["psnr_mean_mse"].items()))
    return "\n".join(lines)


class MinetestEvaluation:
    """The evaluation's Minetest part (`Game.evaluation`)."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--labeller", default=str(DEFAULT_LABELLER),
                       help="per-pixel labeller (python -m games.minetest.labeller)")
        p.add_argument("--semantic-worlds", type=int, default=16,
                       help="worlds of the per-pixel evaluation (0 = skip)")
        p.add_argument("--semantic-horizon", type=int, default=64, help="its frames after the context")

    def apply_levers(self, args: argparse.Namespace, model: Denoiser, cfg: Config) -> None:
        """No levers: the model has no Minetest stages yet."""

    def open_loop(self, args: argparse.Namespace, model: Denoiser, cfg: Config,
                  episodes: list[Episode], context: int, out: Path
                  ) -> tuple[dict[str, Any] | None, Callable | None]:
        if args.semantic_worlds <= 0:
            return None, None
        labeller = Labeller.load(args.labeller)
        t = time.time()
        sem = semantic_open_loop(model, cfg, episodes, labeller, context, args.semantic_worlds,
                                 args.semantic_horizon, args.batch, args.seed,
                                 getattr(args, "view_memory", False))
        strip = sem.pop("_strip", None)
        if strip is not None:
            plot_strip(strip, out / "semantic_strip.png")
        sem.update(labeller=str(args.labeller), time_s=round(time.time() - t, 1))
        return sem, None

    def long(self, lr: dict[str, Any]) -> dict[str, Any]:
        return {}

    def finish(self, report: dict[str, Any], out: Path) -> None:
        """Nothing beyond the strip written in open_loop."""

    def format(self, report: dict[str, Any]) -> str:
        return format_semantic(report)


def plot_strip(strip: tuple[np.ndarray, np.ndarray, np.ndarray], path: Path, worlds: int = 4,
               steps: tuple[int, ...] = (1, 4, 16, 64)) -> None:
    """Rows of real and imagined frames at the horizons, a pair of rows per world (PNG)."""
    last, real, gen = strip
    hs = [h for h in steps if h <= real.shape[1]]
    rows = []
    for w in range(min(worlds, len(last))):
        rows.append(np.concatenate([last[w]] + [real[w, h - 1] for h in hs], 1))
        rows.append(np.concatenate([last[w]] + [gen[w, h - 1] for h in hs], 1))
    img = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(img[:, :, ::-1], None, fx=3, fy=3,
                                      interpolation=cv2.INTER_NEAREST))
