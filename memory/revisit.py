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

Outputs in --out: revisit.json, revisit_psnr.png (error vs time, excursion marked), revisit_strip.png.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from memory.config import LOSS_FORMS, MemoryConfig, load_memory_config
from memory.episodic import EpisodicMemory
from games.crafter.view_memory import ViewMemory
from worldmodel.actions import get_action_space
from worldmodel import metrics
from worldmodel.checkpoint import load_checkpoint
from worldmodel.config import Config, to_dict
from worldmodel.data import Episode, list_episodes, load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.data.episode import write_json_atomic
from worldmodel.dynamics import Denoiser
from worldmodel.evaluate import frame_actions, player_positions
from worldmodel.reports import bootstrap_interval, command_line
from worldmodel.rollout import Rollout
from games.crafter.geometry import TILE, VIEW_COLS, VIEW_ROWS, intended_moves, track_poses
from games.crafter.tiles import DEFAULT_BANK, TileClassifier, TileError
from worldmodel.device import pick_device


WARMUPS = ("context", "trip")


@dataclass
class Revisits:
    """Frames j that revisit an earlier position whose first stay ended at e (out of context)."""

    frames: np.ndarray  # (k,) indices j
    first: np.ndarray  # (k,) the last frame e of the first stay at pos[j]
    at_start: np.ndarray  # (k,) bool: pos[j] is the start position


def find_revisits(pos: np.ndarray, context: int) -> Revisits:
    """pos (T+1, d) per frame -> the revisit frames (see module docstring)."""
    first_end: dict[tuple, int] = {}  # last frame of each position's first stay
    for i, p in enumerate(map(tuple, pos)):
        if p not in first_end or first_end[p] == i - 1:
            first_end[p] = i
    js, es, start = [], [], []
    for j in range(context, len(pos)):
        e = first_end[tuple(pos[j])]
        if j - e > context:
            js.append(j)
            es.append(e)
            start.append(bool((pos[j] == pos[0]).all()))
    return Revisits(np.asarray(js, np.int64), np.asarray(es, np.int64), np.asarray(start, bool))


def generated_revisits(pos: np.ndarray, context: int, prefix: int) -> Revisits:
    """`find_revisits`, kept to the frames the model generated (j >= prefix): those scored."""
    rv = find_revisits(pos, context)
    keep = rv.frames >= prefix
    return Revisits(rv.frames[keep], rv.first[keep], rv.at_start[keep])


def shows_world_view(frames: np.ndarray) -> bool:
    """Whether frames are big enough to hold Crafter's world view (VIEW_ROWS x VIEW_COLS tiles),
    which pose tracking and the tile classifier read; tiny synthetic frames are not."""
    return frames.shape[-3] >= VIEW_ROWS * TILE and frames.shape[-2] >= VIEW_COLS * TILE


def own_poses(frames: np.ndarray, actions: np.ndarray, action_names) -> np.ndarray:
    """(T+1, 2) the player's cell at every frame of a rollout, relative to the first, read from
    the frames' own pixels (geometry.track_poses, told the moves the actions asked for) and never
    from the game's state: where the model's imagined player went, not where the real one did.
    `actions` (T,): the action that made each frame after the first (an episode's actions)."""
    if len(actions) != len(frames) - 1:
        raise ValueError(f"pose tracking needs one action per frame after the first: "
                         f"{len(frames)} frames, {len(actions)} actions")
    return track_poses(frames, (0, 0), intended_moves(np.asarray(actions, np.int64), action_names))


def non_grass(labels: np.ndarray, grass: int) -> np.ndarray:
    """Tile labels (n, rows, cols) -> (n,) the share of each frame's world-view tiles that are
    not grass (rejected tiles count as not grass): how much a frame shows beyond the open plain."""
    return (np.asarray(labels) != grass).mean((-2, -1))


class RandomFeatures(nn.Module):
    """A fixed, seeded random conv net; features for a perceptual-ish frame similarity."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList([nn.Conv2d(3, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1),
                                    nn.Conv2d(64, 64, 3, 1, 1)])
        with torch.no_grad():
            for c in self.convs:
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) / (c.weight[0].numel() ** 0.5))
                c.bias.zero_()

    @torch.no_grad()
    def forward(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (n, h, w, 3) -> unit-norm features (n, d)."""
        x = to_float(torch.from_numpy(np.ascontiguousarray(frames)))
        for i, c in enumerate(self.convs):
            x = c(x)
            x = torch.relu(x) if i + 1 < len(self.convs) else x
        return nn.functional.normalize(x.flatten(1), dim=1)


def feature_similarity(a: np.ndarray, b: np.ndarray, net: RandomFeatures) -> np.ndarray:
    if len(a) == 0:
        return np.zeros(0)
    return (net(a) * net(b)).sum(1).cpu().numpy()


def roll(model: Denoiser, cfg: Config, ep: Episode, context: int, seed: int,
         memory: EpisodicMemory | None = None, prefix: int | None = None,
         view: ViewMemory | None = None, poses: list | None = None
         ) -> tuple[np.ndarray, float]:
    """All T+1 frames of an episode: the real context, then one frame per real action, real
    (teacher-forced, and observed by the memory as if generated) up to frame `prefix` (default:
    the context alone) and generated after. `view`: a view memory the rollout records into and
    is conditioned on (its pose at every frame appended to `poses`). Returns (frames uint8,
    seconds in memory updates)."""
    prefix = max(context, prefix or context)
    ctx = to_float(torch.from_numpy(ep.frames[:context]))[None]
    ctx_act = torch.from_numpy(frame_actions(ep, 0, context))[None]
    ro = Rollout(memory.model if memory is not None else model, cfg, context=context, seed=seed)
    if view is not None:
        ro.view = view
        view.set_on(True, [0])
    ro.reset(ctx, ctx_act)
    if memory is not None:
        memory.reset(ctx, ctx_act)
    out = [ep.frames[i] for i in range(context)]
    if poses is not None and view is not None:
        poses.extend([None] * (context - 1) + [(view.pose[0] - view.grid // 2).tolist()])
    upd = 0.0
    for j in range(context, len(ep.frames)):
        act = torch.tensor([[int(ep.actions[j - 1])]])
        if j < prefix:
            frame = to_float(torch.from_numpy(ep.frames[j]))[None]
            ro.append(frame[:, None], act)
        else:
            frame = ro.step(act[:, 0])
        if memory is not None:
            t0 = time.perf_counter()
            memory.observe(frame[:, None], act)
            upd += time.perf_counter() - t0
        out.append(to_uint8(frame[0]).cpu().numpy())
        if poses is not None and view is not None:
            poses.append((view.pose[0] - view.grid // 2).tolist())
    return np.stack(out), upd


def _at(labels: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if labels is None else labels[idx]


def frame_scores(gen: np.ndarray, ref: np.ndarray, net: RandomFeatures,
                 gen_labels: np.ndarray | None = None,
                 ref_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per frame: PSNR, MSE, SSIM, feature similarity and, with tile labels of both sides, the
    share of world-view tiles with the same label ("tiles")."""
    out = {"psnr": metrics.psnr(gen, ref), "mse": metrics.mse(gen, ref),
           "ssim": metrics.ssim(gen, ref), "feat": feature_similarity(gen, ref, net)}
    if gen_labels is not None and ref_labels is not None:
        out["tiles"] = (gen_labels == ref_labels).mean((-2, -1))
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _weighted_mean(values: list[float | None], weights: list[int]) -> float | None:
    """The mean of per-episode shares weighted by their frame counts; None if any is missing
    (or nothing is weighed)."""
    if not values or any(v is None for v in values) or sum(weights) == 0:
        return None
    return float(np.dot(values, weights) / sum(weights))


def move_runs(ep: Episode) -> list[np.ndarray]:
    """The frames moves made, split where the player paused: [trip out, way back, ...]."""
    moving = np.flatnonzero(np.isin(ep.actions, (1, 2, 3, 4))) + 1
    return np.split(moving, np.flatnonzero(np.diff(moving) > 1) + 1) if len(moving) else []


def real_prefix(ep: Episode, context: int, warmup: str) -> int:
    """Frames given real: `context` -> the model's context alone; `trip` -> every frame up to
    the first move back (the trip out and the pause are real, the way back is generated)."""
    if warmup == "context":
        return context
    if warmup != "trip":
        raise ValueError(f"warmup must be one of {WARMUPS}, got {warmup!r}")
    runs = move_runs(ep)
    return max(context, int(runs[1][0]) if len(runs) > 1 else context)


def view_pose_accuracy(poses: list, real_rel: np.ndarray, context: int,
                       prefix: int) -> tuple[float, float, float | None]:
    """The share of frames where the view memory's pose (`roll`'s `poses`: None before frame
    context - 1) equals the game's relative position: over all of them, over the real frames
    given (< prefix; the scroll reads them exactly) and over the generated ones (None if none)."""
    got = np.asarray([p for p in poses if p is not None])
    idx = np.arange(context - 1, context - 1 + len(got))
    hit = (got == real_rel[idx]).all(1)
    return float(hit.mean()), _mean(hit[idx < prefix]), _mean(hit[idx >= prefix])


def own_pose_scores(gen: np.ndarray, actions: np.ndarray, action_names, real_rel: np.ndarray,
                    context: int, prefix: int, net: RandomFeatures,
                    labels: np.ndarray | None, grass: int | None) -> dict[str, Any] | None:
    """A rollout's revisits by its own pose (`own_poses`; generated frames only), each scored
    against the rollout's frame at the first visit, with the revisit frames' non-grass share
    (`labels`: the tile classifier's of every frame, or None to skip it) and the share of
    generated frames where the own pose is the real one. None where the frames show no world
    view to track."""
    if not shows_world_view(gen):
        return None
    own = own_poses(gen, actions, action_names)
    rv = generated_revisits(own, context, prefix)
    j, e = rv.frames, rv.first
    share = None if labels is None else non_grass(labels, grass)
    return {"revisit_frames": j.tolist(), "first_visit": e.tolist(),
            "vs_own_first_visit": {k: v.tolist() for k, v in frame_scores(
                gen[j], gen[e], net, _at(labels, j), _at(labels, e)).items()},
            "non_grass": None if share is None else share[j].tolist(),
            "pose_vs_real": _mean((own[prefix:] == real_rel[prefix:]).all(1))}


def evaluate_episode(model: Denoiser, cfg: Config, ep: Episode, context: int,
                     variants: dict[str, MemoryConfig], seed: int,
                     net: RandomFeatures, warmup: str = "context",
                     tiles: TileClassifier | None = None) -> dict[str, Any]:
    pos = player_positions(ep)
    prefix = real_prefix(ep, context, warmup)
    rv = generated_revisits(pos, context, prefix)  # only generated frames are scored
    gens = {"off": roll(model, cfg, ep, context, seed, prefix=prefix)}
    pose_acc: dict[str, float] = {}
    pose_acc_real: dict[str, float | None] = {}
    pose_acc_gen: dict[str, float | None] = {}
    real_rel = pos - pos[0]
    action_names = get_action_space(cfg.model.action_space).actions
    for name, mcfg in variants.items():
        use_view, use_lora = mcfg.uses(model.memory_stem is not None)
        mem = EpisodicMemory(model, cfg, mcfg, threaded=False) if use_lora else None
        view = None
        if use_view:
            view = ViewMemory(1, action_names, device=next(model.parameters()).device)
        poses: list = []
        gens[name] = roll(model, cfg, ep, context, seed, mem, prefix=prefix, view=view,
                          poses=poses)
        if view is not None:  # the pose the memory read from the frames, against the game's
            pose_acc[name], pose_acc_real[name], pose_acc_gen[name] = view_pose_accuracy(
                poses, real_rel, context, prefix)
    res: dict[str, Any] = {"episode": ep.path.name if ep.path else "?", "frames": len(ep.frames),
                           "context": context, "real_prefix": prefix,
                           "revisit_frames": rv.frames.tolist(), "first_visit": rv.first.tolist(),
                           "at_start": rv.at_start.tolist(), "modes": {},
                           "pose_accuracy": pose_acc, "pose_accuracy_real": pose_acc_real,
                           "pose_accuracy_generated": pose_acc_gen}
    j, e = rv.frames, rv.first
    real = ep.frames
    labels = ep.labels if tiles is not None else None  # the real game's own tile labels
    res["real_consistency"] = {k: v.tolist() for k, v in frame_scores(
        real[j], real[e], net, _at(labels, j), _at(labels, e)).items()}
    legible = tiles is not None and shows_world_view(real)  # the classifier can read the frames
    grass = tiles.grass if legible else None
    # The richness reference: the real frames' non-grass share where the modes generate, read by
    # the same classifier as theirs.
    res["real_non_grass"] = (_mean(non_grass(tiles.classify(real[prefix:]), grass)) if legible
                             else None)
    for name, (gen, upd) in gens.items():
        seen = tiles.classify(gen) if legible else None  # every frame's tiles, as the model drew
        drawn = seen if labels is not None else None
        res["modes"][name] = {
            "psnr_curve": metrics.psnr(gen, real).tolist(),  # every frame (context: capped)
            "vs_real": {k: v.tolist() for k, v in frame_scores(
                gen[j], real[j], net, _at(drawn, j), _at(labels, j)).items()},
            "vs_first_visit": {k: v.tolist() for k, v in frame_scores(
                gen[j], gen[e], net, _at(drawn, j), _at(drawn, e)).items()},
            "update_s": upd,
            "non_grass_generated": None if seen is None else _mean(non_grass(seen[prefix:], grass)),
            "own_pose": own_pose_scores(gen, ep.actions, action_names, real_rel, context, prefix,
                                        net, seen, grass),
        }
    res["_gens"] = gens
    return res


def episode_gains(results: list[dict[str, Any]], mode: str, subset: str) -> list[float]:
    """Per episode with frames in `subset`: mean revisit PSNR vs real, `mode` minus off."""
    out = []
    for r in results:
        keep = (np.asarray(r["at_start"], bool) if subset == "at_start"
                else np.ones(len(r["revisit_frames"]), bool))
        if keep.any():
            on = np.asarray(r["modes"][mode]["vs_real"]["psnr"])[keep].mean()
            off = np.asarray(r["modes"]["off"]["vs_real"]["psnr"])[keep].mean()
            out.append(float(on - off))
    return out


def summarize(results: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Pooled over every revisit frame of every episode (and over those back at the start)."""
    out: dict[str, Any] = {}
    for subset in ("revisit", "at_start"):
        block: dict[str, Any] = {"n": 0}
        for mode in modes:
            row: dict[str, Any] = {}
            for ref in ("vs_real", "vs_first_visit"):
                for m in ("psnr", "mse", "ssim", "feat", "tiles"):
                    if any(m not in r["modes"][mode][ref] for r in results):
                        continue
                    vals = []
                    for r in results:
                        v = np.asarray(r["modes"][mode][ref][m])
                        vals.append(v[np.asarray(r["at_start"], bool)] if subset == "at_start" else v)
                    row[f"{ref}_{m}"] = _mean(np.concatenate(vals)) if vals else None
                mse = row.pop(f"{ref}_mse", None)  # PSNR of the mean MSE: no per-frame cap
                row[f"{ref}_psnr_mean_mse"] = (None if mse is None else
                                               float(metrics.psnr_from_mse(mse, cap=None)))
            block[mode] = row
        block["n"] = int(sum(np.asarray(r["at_start"], bool).sum() if subset == "at_start"
                             else len(r["revisit_frames"]) for r in results))
        real = []
        for r in results:
            v = np.asarray(r["real_consistency"]["psnr"])
            real.append(v[np.asarray(r["at_start"], bool)] if subset == "at_start" else v)
        block["real_consistency_psnr"] = _mean(np.concatenate(real)) if real else None
        for mode in modes:
            if mode != "off" and block["off"]["vs_real_psnr"] is not None:
                gain = block[mode]["vs_real_psnr"] - block["off"]["vs_real_psnr"]
                block[mode]["gain_vs_real_psnr_db"] = gain
                block[mode]["gain_per_episode_db"] = per_episode = episode_gains(
                    results, mode, subset)
                block[mode]["gain_interval90_db"] = bootstrap_interval(per_episode)
        out[subset] = block
    # Control: generated frames that are not revisits. Memory that only adapts to the episode's
    # look (colours, textures; less drift) gains here as much as on revisits; memory of places
    # gains more on revisits.
    block = {"n": 0}
    for mode in modes:
        vals = []
        for r in results:
            curve = np.asarray(r["modes"][mode]["psnr_curve"])
            keep = np.ones(len(curve), bool)
            keep[:r["real_prefix"]] = False
            keep[np.asarray(r["revisit_frames"], int)] = False
            vals.append(curve[keep])
        block[mode] = {"vs_real_psnr": _mean(np.concatenate(vals))}
        block["n"] = int(sum(len(v) for v in vals))
    for mode in modes:
        if mode != "off":  # no control frames (every generated frame a revisit): no gain
            on, off = block[mode]["vs_real_psnr"], block["off"]["vs_real_psnr"]
            gain = None if on is None or off is None else on - off
            block[mode]["gain_vs_real_psnr_db"] = gain
            rv = out["revisit"][mode].get("gain_vs_real_psnr_db")
            out["revisit"][mode]["gain_over_control_db"] = (None if rv is None or gain is None
                                                            else rv - gain)
    out["control"] = block
    # The view memory's pose, read from the frames (real, then generated), against the game's:
    # over all of them, and over the real frames given and the generated ones apart.
    for key in ("pose_accuracy", "pose_accuracy_real", "pose_accuracy_generated"):
        out[key] = {m: _mean(np.asarray([r[key][m] for r in results if r[key][m] is not None]))
                    for m in modes if all(m in r.get(key, {}) for r in results)}
    out["own_pose"] = summarize_own_pose(results, modes)
    return out


def _pooled(blocks: list[dict[str, Any]], key: str, metric: str | None = None) -> float | None:
    """The frame mean of a per-revisit-frame list (`block[key]`, or `block[key][metric]`) pooled
    over episodes; None if an episode lacks it."""
    vals = [b[key] if metric is None else b[key].get(metric) for b in blocks]
    if not vals or any(v is None for v in vals):
        return None
    return _mean(np.concatenate([np.asarray(v, float) for v in vals]))


def summarize_own_pose(results: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per mode, pooled over every episode: revisits paired by the model's own pose (`n`, tiles
    and PSNR vs its own first visit), the non-grass share of those revisit frames and of all its
    generated frames beside the real frames' (`real_non_grass`), and how often its pose is the
    real one. Shares of generated frames are weighted by each episode's generated frames."""
    generated = [r["frames"] - r["real_prefix"] for r in results]
    real = _weighted_mean([r.get("real_non_grass") for r in results], generated)
    out: dict[str, Any] = {}
    for mode in modes:
        rows = [(r["modes"][mode].get("own_pose"), n) for r, n in zip(results, generated)]
        tracked = [(b, n) for b, n in rows if b is not None]
        blocks = [b for b, _ in tracked]
        out[mode] = {
            "n": int(sum(len(b["revisit_frames"]) for b in blocks)),
            "vs_own_first_visit_tiles": _pooled(blocks, "vs_own_first_visit", "tiles"),
            "vs_own_first_visit_psnr": _pooled(blocks, "vs_own_first_visit", "psnr"),
            "non_grass": _pooled(blocks, "non_grass"),
            "non_grass_generated": _weighted_mean(
                [r["modes"][mode].get("non_grass_generated") for r in results], generated),
            "real_non_grass": real,
            "pose_vs_real": _weighted_mean([b["pose_vs_real"] for b, _ in tracked],
                                           [n for _, n in tracked]),
        }
    return out


# ---- plots --------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def excursion(ep: Episode) -> tuple[int, int, int]:
    """Frame indices: first move out, last move out (turnaround), last move back."""
    runs = move_runs(ep)
    if not runs:
        return 0, 0, 0
    moving = np.concatenate(runs)
    turn = int(runs[0][-1]) if len(runs) > 1 else int(moving[len(moving) // 2])
    return int(moving[0]), turn, int(moving[-1])


def plot_curves(results: list[dict[str, Any]], episodes: list[Episode], modes: list[str],
                context: int, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    n = min(len(r["modes"]["off"]["psnr_curve"]) for r in results)
    t = np.arange(n)
    colors = {"off": "tab:gray"}
    first = min(r["real_prefix"] for r in results)
    for k, mode in enumerate(modes):
        curves = np.asarray([r["modes"][mode]["psnr_curve"][:n] for r in results], float)
        for c, r in zip(curves, results):
            c[:r["real_prefix"]] = np.nan  # real frames: nothing generated to score
        curve = np.nanmean(curves[:, first:], 0)  # every column has a generated frame
        line, = ax.plot(t[first:], curve, label=f"memory {mode}",
                        color=colors.get(mode, f"C{k}"))
        colors[mode] = line.get_color()
    ex = np.median([excursion(ep) for ep in episodes], 0).astype(int)
    ax.axvspan(ex[0], ex[1], color="tab:orange", alpha=0.12, label="trip out")
    ax.axvspan(ex[1], ex[2], color="tab:green", alpha=0.12, label="trip back")
    real = int(np.median([r["real_prefix"] for r in results]))
    ax.axvline(real - 0.5, color="k", lw=0.8, ls=":",
               label="end of real frames" + (" (median)" if real > context else ""))
    for r in results:
        j = np.asarray(r["revisit_frames"], int)
        for mode in modes:
            ax.plot(j, np.asarray(r["modes"][mode]["psnr_curve"])[j], ".", ms=3, alpha=0.5,
                    color=colors[mode])
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR vs real (dB)")
    ax.set_title(f"Mean over {len(results)} episodes (dots: revisit frames)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    x = np.arange(len(results))
    w = 0.8 / len(modes)
    for k, mode in enumerate(modes):
        vals = [_mean(np.asarray(r["modes"][mode]["vs_real"]["psnr"])) or np.nan for r in results]
        ax.bar(x + k * w, vals, w, label=f"memory {mode}", color=colors[mode])
    ax.set_xticks(x + w * (len(modes) - 1) / 2, [r["episode"][-4:] for r in results], fontsize=7)
    ax.set_ylabel("revisit PSNR vs real (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_strip(result: dict[str, Any], ep: Episode, modes: list[str], path: Path,
               cols: int = 8, scale: int = 2) -> None:
    j_all = np.asarray(result["revisit_frames"], int)
    e_all = np.asarray(result["first_visit"], int)
    pick = np.unique(np.linspace(0, len(j_all) - 1, min(cols, len(j_all))).round().astype(int))
    rows = [("real", [ep.frames[j] for j in j_all[pick]])]
    rows += [(f"memory {m}", [result["_gens"][m][0][j] for j in j_all[pick]]) for m in modes]
    rows += [("real, 1st visit", [ep.frames[e] for e in e_all[pick]])]
    last = modes[-1]
    rows += [(f"{last}, 1st visit", [result["_gens"][last][0][e] for e in e_all[pick]])]
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(pick), squeeze=False,
                             figsize=(len(pick) * 1.4 + 1, len(rows) * 1.4 + 0.5))
    for r, (label, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = axes[r][c]
            ax.imshow(np.repeat(np.repeat(img, scale, 0), scale, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {j_all[pick][c]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"{result['episode']}: frames on return (rows 1-{1 + len(modes)}) and the same "
                 "positions on the first visit", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- entry point --------------------------------------------------------------------------------

def load_revisit_episodes(root: str | Path, samples: int, context: int) -> list[Episode]:
    """The first `samples` episodes (sorted) that have revisit frames and positions."""
    out = []
    for p in list_episodes(root):
        ep = load_episode(p)
        pos = player_positions(ep)
        if pos is None or len(ep.frames) <= context + 1:
            continue
        if len(find_revisits(pos, context).frames):
            out.append(ep)
        if len(out) == samples:
            break
    if not out:
        raise ValueError(f"no episode under {root} revisits a position after leaving the context")
    return out


def run_benchmark(model: Denoiser, cfg: Config, episodes: list[Episode],
                  variants: dict[str, MemoryConfig], seed: int = 0,
                  out: Path | None = None, log=print, warmup: str = "context",
                  tiles: TileClassifier | None = None) -> dict[str, Any]:
    context = cfg.data.window - 1
    net = RandomFeatures(seed)
    modes = ["off", *variants]
    results = []
    t0 = time.perf_counter()
    for i, ep in enumerate(episodes):
        results.append(evaluate_episode(model, cfg, ep, context, variants, seed + i, net, warmup,
                                        tiles))
        r = results[-1]
        log(f"{r['episode']}: {len(r['revisit_frames'])} revisit frames; revisit PSNR vs real " +
            ", ".join(f"{m} {_mean(np.asarray(r['modes'][m]['vs_real']['psnr'])):.2f}" for m in modes))
    summary = summarize(results, modes)
    gen_frames = sum(len(ep.frames) - context for ep in episodes)
    report = {"context": context, "warmup": warmup, "episodes": len(episodes), "seed": seed,
              "tiles": "tile agreement: share of world-view tiles with the same label "
                       "(games.crafter.tiles; real frames by the game's own labels)"
                       if tiles is not None and all(ep.labels is not None for ep in episodes)
                       else None,
              "memory": {k: to_dict(v) for k, v in variants.items()},
              "summary": summary, "seconds": time.perf_counter() - t0,
              "update_ms_per_frame": {m: 1000 * sum(r["modes"][m]["update_s"] for r in results)
                                      / gen_frames for m in modes},
              "per_episode": [{k: v for k, v in r.items() if k != "_gens"} for r in results]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "revisit.json", report)
        plot_curves(results, episodes, modes, context, out / "revisit_psnr.png")
        best = max(range(len(results)), key=lambda k: len(results[k]["revisit_frames"]))
        plot_strip(results[best], episodes[best], modes, out / "revisit_strip.png")
    return report


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def format_own_pose(block: dict[str, Any]) -> list[str]:
    """One line per mode: its revisits paired by its own pose, and how rich its world is."""
    lines = ["own-pose revisits (paired by the model's pose read from its frames):"]
    for mode, row in block.items():
        lines.append(f"  memory {mode:>10}: {row['n']} frames, tiles vs own first visit "
                     f"{_fmt(row['vs_own_first_visit_tiles'])}, PSNR "
                     f"{_fmt(row['vs_own_first_visit_psnr'], '.2f')} | non-grass "
                     f"{_fmt(row['non_grass'])} (all generated {_fmt(row['non_grass_generated'])}, "
                     f"real {_fmt(row['real_non_grass'])}) | own pose = the game's on "
                     f"{_fmt(row['pose_vs_real'])} of generated frames")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for subset, block in summary.items():
        if subset == "pose_accuracy":
            if block:
                lines.append("view memory pose (from the frames) = the game's: " + ", ".join(
                    f"{m} {v:.3f} (real frames {_fmt(summary.get('pose_accuracy_real', {}).get(m))}"
                    f", generated {_fmt(summary.get('pose_accuracy_generated', {}).get(m))})"
                    for m, v in block.items()))
            continue
        if subset in ("pose_accuracy_real", "pose_accuracy_generated"):
            continue  # on the pose_accuracy line
        if subset == "own_pose":
            lines += format_own_pose(block)
            continue
        if subset == "control":
            lines.append(f"control (generated, not revisits): {block['n']} frames, PSNR vs real " +
                         ", ".join(f"{m} {_fmt(row['vs_real_psnr'], '.2f')}"
                                   for m, row in block.items() if isinstance(row, dict)))
            continue
        lines.append(f"{subset} frames: {block['n']} (real frames' own consistency "
                     f"{block['real_consistency_psnr'] or float('nan'):.2f} dB)")
        for mode, row in block.items():
            if not isinstance(row, dict):
                continue
            f = {k: (float("nan") if v is None else v) for k, v in row.items()}
            lines.append(f"  memory {mode:>10}: vs real PSNR {f['vs_real_psnr']:6.2f} SSIM "
                         f"{f['vs_real_ssim']:.3f} feat {f['vs_real_feat']:.3f} | vs own first "
                         f"visit PSNR {f['vs_first_visit_psnr']:6.2f} "
                         f"SSIM {f['vs_first_visit_ssim']:.3f} "
                         f"feat {f['vs_first_visit_feat']:.3f}"
                         + (f" | tiles vs real {f['vs_real_tiles']:.3f} vs own first visit "
                            f"{f['vs_first_visit_tiles']:.3f}" if "vs_real_tiles" in f else "")
                         + f" | PSNR of mean MSE {f['vs_real_psnr_mean_mse']:.2f}"
                         + (f" | gain {f['gain_vs_real_psnr_db']:+.2f} dB"
                            if "gain_vs_real_psnr_db" in f else "")
                         + (f" (over control {f['gain_over_control_db']:+.2f})"
                            if "gain_over_control_db" in f else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint folder (model.safetensors + config.json)")
    p.add_argument("--data", default="data/crafter_revisit", help="revisit episodes")
    p.add_argument("--out", help="folder for revisit.json and the plots")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--tiles", default=str(DEFAULT_BANK),
                   help="tile bank for tile agreement (games.crafter.tiles); 'none' skips it")
    p.add_argument("overrides", nargs="*", help="memory settings, e.g. lr=1e-3 update_every=4")
    args = p.parse_args(argv)
    model, cfg = load_checkpoint(args.checkpoint, pick_device(args.device))
    mcfg = load_memory_config(args.memory_config, args.overrides)
    variants = {"on": mcfg}
    if args.compare_stores:  # the view memory alone, the temporal LoRA alone, both
        from dataclasses import replace

        if model.memory_stem is None:
            raise ValueError(f"--compare-stores: {args.checkpoint} has no view memory "
                             f"(model.view_memory)")
        variants = {name: replace(mcfg, stores=name) for name in ("view", "lora", "both")}
    if args.compare_loss:
        from dataclasses import replace

        variants = {form: replace(mcfg, loss=form) for form in LOSS_FORMS}
    episodes = load_revisit_episodes(args.data, args.samples, cfg.data.window - 1)
    tiles = None
    if args.tiles != "none" and all(ep.labels is not None for ep in episodes):
        tiles = TileClassifier.load(args.tiles)
    report = run_benchmark(model, cfg, episodes, variants, args.seed,
                           Path(args.out) if args.out else None, warmup=args.warmup, tiles=tiles)
    report["checkpoint"] = str(args.checkpoint)
    report["command"] = command_line("memory.revisit", argv)
    if args.out:
        write_json_atomic(Path(args.out) / "revisit.json", report)
    print(format_summary(report["summary"]))
    return report


if __name__ == "__main__":
    from memory.lora import MemoryFileError
    from worldmodel.cli import run_cli

    run_cli(main, (MemoryFileError, TileError))
