"""What the evaluation (`worldmodel.evaluation.evaluate`) rolls out: starts and actions from held-out
episodes, open-loop prediction from real context under the real actions (scored by horizon
against repeat-last-frame), and the long rollout's per-frame statistics against real frames."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from worldmodel.evaluation import metrics
from worldmodel.actions import DiscreteActionSpace, get_action_space
from worldmodel.config import Config
from worldmodel.data import Episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.data.episode import EpisodeError
from worldmodel.dynamics import Denoiser
from worldmodel.recall import has_view_memory, make_view_memory
from worldmodel.rollout import Rollout

MOVED_MAD = 5.0  # image fallback for "moving": mean abs difference on [0, 255]
GROUPS = ("all", "moving", "static")


# ---- data ---------------------------------------------------------------------------------------

def player_positions(ep: Episode) -> np.ndarray | None:
    """(T+1, d) position at every frame (start_pos, then "pos" after each step), or None."""
    start = ep.meta.get("start_pos")
    if start is None or any("pos" not in s for s in ep.steps):
        return None
    return np.asarray([start] + [s["pos"] for s in ep.steps])


def frame_actions(ep: Episode, first: int, n: int) -> np.ndarray:
    """Actions that produced frames first..first+n-1 (-1 for frame 0, which has none)."""
    idx = np.arange(first, first + n) - 1
    acts = np.full(n, -1, np.int64)
    acts[idx >= 0] = ep.actions[idx[idx >= 0]]
    return acts


def pick_starts(lengths: list[int], n: int, context: int, horizon: int,
                seed: int) -> list[tuple[int, int]]:
    """(episode, s) pairs, s the last context frame: round-robin over episodes in a seeded order,
    random starts without replacement (short episodes drop out when used up); repeats only once
    every valid start is taken."""
    rng = np.random.default_rng(seed)
    valid = {e: rng.permutation(np.arange(context - 1, L - horizon))
             for e, L in enumerate(lengths) if L - horizon > context - 1}
    if not valid:
        raise EpisodeError(f"no episode has {context} context + {horizon} future frames")
    order = rng.permutation(sorted(valid)).tolist()
    rounds = max(len(v) for v in valid.values())
    pool = [(e, int(valid[e][r])) for r in range(rounds) for e in order if r < len(valid[e])]
    return [pool[i % len(pool)] for i in range(n)]


def exploration_actions(space: DiscreteActionSpace, seed: int, length: int) -> np.ndarray:
    """Sticky random actions biased to movement (the idea of simulator.collect's policy, without
    its scripted trips): moves share 76%, "do" 4%, the rest 20%; each repeats ~3 times."""
    rng = np.random.default_rng(seed)
    moves = [i for i, a in enumerate(space.actions) if a.startswith("move_")]
    probs = np.full(space.n, 0.2 / max(1, space.n - len(moves)))
    if moves:
        probs[moves] = 0.8 * 0.95 / len(moves)
    if "do" in space.actions:
        probs[space.actions.index("do")] += 0.8 * 0.05
    probs /= probs.sum()
    out: list[int] = []
    while len(out) < length:
        out += [int(rng.choice(space.n, p=probs))] * int(rng.geometric(0.3))
    return np.asarray(out[:length], np.int64)


# ---- open-loop prediction -----------------------------------------------------------------------

@dataclass
class OpenLoop:
    """Per-sample, per-step results (n_samples, horizon)."""

    model_mse: np.ndarray
    model_ssim: np.ndarray
    baseline_mse: np.ndarray
    baseline_ssim: np.ndarray
    moving: np.ndarray
    strip_real: np.ndarray  # (k, 1 + horizon, h, w, 3): last context frame, then the future
    strip_gen: np.ndarray   # (k, horizon, h, w, 3)


def new_rollout(model: Denoiser, cfg: Config, seed: int, batch: int,
                view_memory: bool = False) -> Rollout:
    """A rollout of `batch` worlds; with `view_memory` each world records its frames in the
    model's view memory (`worldmodel.recall.make_view_memory`: the game's canvas for a model with
    a memory stem, frames kept by pose for a game with poses) and draws with it, as a session
    with memory on."""
    ro = Rollout(model, cfg, seed=seed)
    if view_memory:
        if not has_view_memory(model, cfg):
            raise ValueError("this checkpoint has no view memory (model.view_memory, or a game "
                             "with poses)")
        ro.view = make_view_memory(model, cfg, batch, ro.context, ro.device)
        ro.view.set_on(True, range(batch))
    return ro


def generate(model: Denoiser, cfg: Config, context: np.ndarray, ctx_actions: np.ndarray,
             actions: np.ndarray, seed: int, on_step=None,
             view_memory: bool = False) -> np.ndarray:
    """Roll B worlds open loop: uint8 context (b, n, h, w, 3) + its actions (b, n), then
    `actions` (b, T) -> generated uint8 frames (b, T, h, w, 3)."""
    ro = new_rollout(model, cfg, seed, len(context), view_memory)
    ro.reset(to_float(torch.from_numpy(np.ascontiguousarray(context))), torch.from_numpy(ctx_actions))
    out = np.empty((*actions.shape, *context.shape[2:]), np.uint8)
    for k in range(actions.shape[1]):
        out[:, k] = to_uint8(ro.step(torch.from_numpy(actions[:, k]))).cpu().numpy()
        if on_step is not None:
            on_step(len(actions))
    return out


def open_loop(model: Denoiser, cfg: Config, episodes: list[Episode], starts: list[tuple[int, int]],
              context: int, horizon: int, batch: int, seed: int, strip_samples: int = 4,
              view_memory: bool = False) -> OpenLoop:
    positions = [player_positions(ep) for ep in episodes]
    n = len(starts)
    res = {k: np.zeros((n, horizon)) for k in ("model_mse", "model_ssim", "baseline_mse", "baseline_ssim")}
    moving = np.zeros((n, horizon), bool)
    strip_real, strip_gen = [], []
    bar = tqdm(total=n * horizon, desc="open loop", unit="frame", dynamic_ncols=True)
    for b0 in range(0, n, batch):
        chunk = starts[b0:b0 + batch]
        ctx = np.stack([episodes[e].frames[s - context + 1:s + 1] for e, s in chunk])
        ctx_act = np.stack([frame_actions(episodes[e], s - context + 1, context) for e, s in chunk])
        real = np.stack([episodes[e].frames[s + 1:s + 1 + horizon] for e, s in chunk])
        acts = np.stack([frame_actions(episodes[e], s + 1, horizon) for e, s in chunk])
        gen = generate(model, cfg, ctx, ctx_act, acts, seed + b0, bar.update, view_memory)
        last = np.broadcast_to(ctx[:, -1:], real.shape)
        sl = slice(b0, b0 + len(chunk))
        res["model_mse"][sl] = metrics.mse(gen, real)
        res["model_ssim"][sl] = metrics.ssim(gen, real)
        res["baseline_mse"][sl] = metrics.mse(last, real)
        res["baseline_ssim"][sl] = metrics.ssim(last, real)
        for i, (e, s) in enumerate(chunk):
            pos = positions[e]
            if pos is not None:
                moving[b0 + i] = (pos[s + 1:s + 1 + horizon] != pos[s]).any(-1)
            else:
                moving[b0 + i] = metrics.frame_change(real[i], last[i]) > MOVED_MAD
        keep = max(0, strip_samples - b0)
        strip_real += list(np.concatenate([ctx[:keep, -1:], real[:keep]], 1))
        strip_gen += list(gen[:keep])
    bar.close()
    return OpenLoop(**res, moving=moving, strip_real=np.asarray(strip_real),
                    strip_gen=np.asarray(strip_gen))


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def summarize(ol: OpenLoop, horizons: list[int]) -> dict[str, Any]:
    """Per horizon and group: n, and for model and baseline the PSNR of the mean squared error
    over the group's frames ("psnr": no cap; an exact frame adds zero error instead of a capped
    100 dB), the mean of per-frame PSNRs capped at metrics.PSNR_CAP ("psnr_frame_mean_capped",
    kept for comparison with older reports), SSIM, and the fraction of exact frames."""
    out: dict[str, Any] = {}
    for g in GROUPS:
        out[g] = {}
        for h in horizons:
            col = h - 1
            mask = {"all": np.ones(len(ol.moving), bool), "moving": ol.moving[:, col],
                    "static": ~ol.moving[:, col]}[g]
            row: dict[str, Any] = {"n": int(mask.sum())}
            for who in ("model", "baseline"):
                err = getattr(ol, f"{who}_mse")[mask, col]
                row[who] = {
                    "psnr": (float(metrics.psnr_from_mse(err.mean(), cap=None))
                             if err.size else None),
                    "psnr_frame_mean_capped": _mean(metrics.psnr_from_mse(err)),
                    "ssim": _mean(getattr(ol, f"{who}_ssim")[mask, col]),
                    "exact_fraction": _mean(err == 0),
                }
            out[g][str(h)] = row
    return out


def curves(ol: OpenLoop) -> dict[str, list[float | None]]:
    """Per step 1..horizon, for plots: {model,baseline}_{psnr,ssim}_{all,moving}; PSNR of the
    step's mean MSE, mean SSIM."""
    out = {}
    for who in ("model", "baseline"):
        for m in ("psnr", "ssim"):
            vals = getattr(ol, f"{who}_mse" if m == "psnr" else f"{who}_ssim")
            for g, mask in (("all", np.ones_like(ol.moving)), ("moving", ol.moving)):
                n = mask.sum(0)
                mean = np.where(n > 0, (vals * mask).sum(0) / np.maximum(n, 1), np.nan)
                if m == "psnr":
                    with np.errstate(divide="ignore", invalid="ignore"):
                        mean = metrics.psnr_from_mse(mean, cap=None)
                out[f"{who}_{m}_{g}"] = [None if not math.isfinite(v) else float(v) for v in mean]
    return out


# ---- long rollout -------------------------------------------------------------------------------

def reference_stats(episodes: list[Episode], max_frames: int = 4000,
                    seed: int = 0) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Colour histogram of real frames, and the band of each drift statistic over real frames."""
    rng = np.random.default_rng(seed)
    pairs = [(e, i) for e, ep in enumerate(episodes) for i in range(1, len(ep.frames))]
    if len(pairs) > max_frames:
        pairs = [pairs[j] for j in np.sort(rng.choice(len(pairs), max_frames, replace=False))]
    cur = np.stack([episodes[e].frames[i] for e, i in pairs])
    prev = np.stack([episodes[e].frames[i - 1] for e, i in pairs])
    ref_hist = metrics.color_histogram(cur).mean(0)
    stats = metrics.drift_stats(cur, prev, ref_hist)
    band = {k: {"p5": float(np.percentile(v, 5)), "median": float(np.median(v)),
                "p95": float(np.percentile(v, 95)), "mean": float(v.mean())}
            for k, v in stats.items()}
    return ref_hist, band


def long_rollout(model: Denoiser, cfg: Config, episodes: list[Episode], context: int, length: int,
                 worlds: int, seed: int, ref_hist: np.ndarray, every: int,
                 labeller: Callable | None = None, tiles_every: int = 4,
                 view_memory: bool = False) -> dict[str, Any]:
    """Roll `worlds` worlds `length` frames from held-out contexts with exploration actions;
    per-frame drift statistics (worlds, length), frames every `every` steps, and (with the game's
    labeller of frames, uint8 (b, h, w, 3) -> labels) the labels of every `tiles_every`-th frame."""
    space = get_action_space(cfg.model.action_space)
    if not isinstance(space, DiscreteActionSpace):
        raise ValueError(f"the long rollout's policy needs a discrete action space, not {space.name}")
    rng = np.random.default_rng(seed + 1)
    eligible = rng.permutation([e for e, ep in enumerate(episodes) if len(ep.frames) >= context])
    if not len(eligible):
        raise EpisodeError(f"no episode has {context} context frames")
    eps = [int(eligible[w % len(eligible)]) for w in range(worlds)]
    starts = [int(rng.integers(context - 1, len(episodes[e].frames))) for e in eps]
    ctx = np.stack([episodes[e].frames[s - context + 1:s + 1] for e, s in zip(eps, starts)])
    ctx_act = np.stack([frame_actions(episodes[e], s - context + 1, context)
                        for e, s in zip(eps, starts)])
    acts = np.stack([exploration_actions(space, seed + w, length) for w in range(worlds)])
    ro = new_rollout(model, cfg, seed + 2, len(ctx), view_memory)
    ro.reset(to_float(torch.from_numpy(ctx)), torch.from_numpy(ctx_act))
    stats = {k: np.zeros((worlds, length)) for k in metrics.DRIFT_STATS}
    prev = ctx[:, -1]
    snaps = [prev]
    labels, label_steps = [], []
    for t in tqdm(range(length), desc="long rollout", unit="frame", dynamic_ncols=True):
        cur = to_uint8(ro.step(torch.from_numpy(acts[:, t]))).cpu().numpy()
        for k, v in metrics.drift_stats(cur, prev, ref_hist).items():
            stats[k][:, t] = v
        if (t + 1) % every == 0:
            snaps.append(cur)
        if labeller is not None and (t + 1) % tiles_every == 0:
            labels.append(labeller(cur))
            label_steps.append(t + 1)
        prev = cur
    return {"stats": stats, "snapshots": np.stack(snaps, 1), "episodes": [episodes[e].path.name for e in eps],
            "starts": starts, "labels": np.stack(labels, 1) if labels else None,
            "label_steps": np.asarray(label_steps)}
