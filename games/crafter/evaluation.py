"""Crafter's semantic evaluation (`../shared/CRAFTER.md`): the model against the real game on
per-tile labels, from the same real context under the same actions, with repeat-last beside it
(permanence, richness, smears, revealed land, scroll agreement), and the long rollout's labels.
`python -m worldmodel.evaluation.evaluate` runs it for a Crafter checkpoint (`CrafterEvaluation`, the game's
`evaluation()`), with Crafter's options and levers (--tiles, --no-land, --no-codebook).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import games.crafter.semantic as semantic
from games.crafter.night import NightStage
from games.crafter.tiles import DEFAULT_BANK, REJECT, TileClassifier
from worldmodel.evaluation import metrics
from worldmodel.actions import get_action_space
from worldmodel.config import Config
from worldmodel.data import Episode
from worldmodel.data.episode import EpisodeError
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.prediction import frame_actions, generate, player_positions
from worldmodel.evaluation.plots import _fmt, _grid, _plt

LAND, SNAP = "land prior", "codebook snap"  # the pipeline stages the levers leave out


def semantic_starts(episodes: list[Episode], worlds: int, context: int, horizon: int, wander: int,
                    seed: int) -> list[tuple[int, int]]:
    """(episode, s) for `worlds` worlds, s the last context frame, at least `wander` steps into
    the episode (past the grassy spawn): one world per labelled episode long enough, in a seeded
    order, then more starts from the same episodes if there are fewer episodes than worlds."""
    rng = np.random.default_rng(seed + 7)
    first = wander + context - 1
    ok = [e for e, ep in enumerate(episodes)
          if ep.labels is not None and player_positions(ep) is not None
          and len(ep.frames) - 1 - horizon >= first]
    if not ok:
        raise EpisodeError(f"no labelled episode has {wander} wander + {context} context + "
                           f"{horizon} future frames (collect held-out episodes with "
                           "python -m simulator.collect --split heldout)")
    order = rng.permutation(ok).tolist()
    return [(e, int(rng.integers(first, len(episodes[e].frames) - horizon)))
            for e in (order[i % len(order)] for i in range(worlds))]


def semantic_open_loop(model: Denoiser, cfg: Config, episodes: list[Episode], tiles: TileClassifier,
                       context: int, worlds: int, horizon: int, wander: int, batch: int,
                       seed: int, view_memory: bool = False) -> dict[str, Any]:
    """Model vs the real game from the same real context under the same actions, one frame per
    step, on per-tile labels (games.crafter.semantic), with repeat-last-frame beside the model."""
    starts = semantic_starts(episodes, worlds, context, horizon, wander, seed)
    grass = tiles.grass
    ctx = np.stack([episodes[e].frames[s - context + 1:s + 1] for e, s in starts])
    ctx_act = np.stack([frame_actions(episodes[e], s - context + 1, context) for e, s in starts])
    acts = np.stack([frame_actions(episodes[e], s + 1, horizon) for e, s in starts])
    real_frames = np.stack([episodes[e].frames[s + 1:s + 1 + horizon] for e, s in starts])
    real = np.stack([episodes[e].labels[s:s + 1 + horizon] for e, s in starts])
    pos = np.stack([player_positions(episodes[e])[s:s + 1 + horizon] for e, s in starts])
    seen = np.stack([player_positions(episodes[e])[s - context + 1:s + 1] for e, s in starts])
    gen = np.concatenate([generate(model, cfg, ctx[i:i + batch], ctx_act[i:i + batch],
                                   acts[i:i + batch], seed + 1000 + i,
                                   view_memory=view_memory)
                          for i in range(0, len(starts), batch)])
    drawn = tiles.classify(gen)
    last = tiles.classify(ctx[:, -1])
    real_classified = tiles.classify(real_frames)
    repeat = np.repeat(last[:, None], horizon, 1)
    horizons = [h for h in (1, 4, 16, 64, 128) if h <= horizon]
    names = getattr(get_action_space(cfg.model.action_space), "actions", ())
    n_labels = len(tiles.names)
    mse = metrics.mse(gen, real_frames)
    base_mse = metrics.mse(np.broadcast_to(ctx[:, -1:], real_frames.shape), real_frames)
    moving = (pos[:, 1:] != pos[:, :1]).any(-1)
    psnr = {}
    for h in horizons:
        for g, m in (("all", np.ones(len(starts), bool)), ("moving", moving[:, h - 1])):
            psnr.setdefault(g, {})[str(h)] = {
                "n": int(m.sum()),
                "model": float(metrics.psnr_from_mse(mse[m, h - 1].mean(), cap=None)) if m.any() else None,
                "repeat_last": (float(metrics.psnr_from_mse(base_mse[m, h - 1].mean(), cap=None))
                                if m.any() else None)}
    return {
        "worlds": len(starts), "horizon": horizon, "wander": wander,
        "starts": [[episodes[e].path.name, s] for e, s in starts],
        "permanence": {"model": semantic.permanence(drawn, real, pos, horizons, grass),
                       "repeat_last": semantic.repeat_last_permanence(last, real, pos, horizons, grass)},
        "buckets": {"model": semantic.bucket_shares(drawn, semantic.OPEN_BUCKETS, grass),
                    "real": semantic.bucket_shares(real[:, 1:], semantic.OPEN_BUCKETS, grass),
                    "real_classified": semantic.bucket_shares(real_classified, semantic.OPEN_BUCKETS, grass),
                    "repeat_last": semantic.bucket_shares(repeat, semantic.OPEN_BUCKETS, grass)},
        "revealed": {"model": semantic.revealed(drawn, real, pos, seen, n_labels),
                     "repeat_last": semantic.revealed(repeat, real, pos, seen, n_labels),
                     "bins": [*tiles.names, "reject"]},
        "distinct_labels": {"model": semantic.distinct_labels(drawn),
                            "real": semantic.distinct_labels(real[:, 1:]),
                            "repeat_last": semantic.distinct_labels(repeat)},
        "scroll": {"model": semantic.scroll_agreement(gen, ctx[:, -1], pos, acts, names),
                   "real_frames": semantic.scroll_agreement(real_frames, ctx[:, -1], pos, acts, names)},
        "psnr_mean_mse": psnr,
        "series": {"model": semantic.series(drawn, grass), "real": semantic.series(real[:, 1:], grass),
                   "real_classified": semantic.series(real_classified, grass)},
        "_strip": (ctx[:, -1], real_frames, gen),
    }


def real_long_run(episodes: list[Episode], tiles: TileClassifier, every: int = 8) -> dict[str, float]:
    """The real game's long-run shares over every labelled held-out frame: non-grass (true
    labels) and smear (its own frames classified, every `every`-th frame)."""
    labs = [ep.labels for ep in episodes if ep.labels is not None]
    if not labs:
        return {}
    true = np.concatenate(labs)
    frames = np.concatenate([ep.frames[::every] for ep in episodes if ep.labels is not None])
    cls = tiles.classify(frames)
    return {"frames": int(len(true)), "non_grass": float((true != tiles.grass).mean()),
            "smear": float((cls == REJECT).mean())}


def semantic_long(lr: dict[str, Any], tiles: TileClassifier) -> dict[str, Any]:
    """Smear and non-grass shares of the long rollout per LONG_BUCKETS (by frame step)."""
    labels, steps = lr["labels"], lr["label_steps"]
    return {"buckets": semantic.bucket_shares(labels, semantic.LONG_BUCKETS, tiles.grass, steps),
            "distinct_labels": semantic.distinct_labels(labels),
            "steps": steps.tolist(), "series": semantic.series(labels, tiles.grass)}


def plot_semantic(sem: dict[str, Any], long: dict[str, Any] | None, real_run: dict[str, float],
                  path: Path) -> None:
    """Non-grass share and smear share per frame: model vs the real game (open loop, same
    actions), and the model's long rollout against the real game's long-run share."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, title in ((axes[0], "non_grass", "non-grass share of tiles"),
                           (axes[1], "smear", "smear share (tiles like no real tile)")):
        t = np.arange(1, sem["horizon"] + 1)
        ax.plot(t, sem["series"]["real"][key], color="tab:green", label="real game (same actions)")
        ax.plot(t, sem["series"]["model"][key], color="tab:blue", label="model, open loop")
        if key == "smear":
            ax.plot(t, sem["series"]["real_classified"][key], color="tab:green", ls=":",
                    label="real frames classified")
        if long:
            ax.plot(long["steps"], long["series"][key], color="tab:blue", alpha=0.5, lw=0.8,
                    label="model, long rollout")
        if key in real_run:
            ax.axhline(real_run[key], color="tab:green", ls="--", lw=1, label="real long-run")
        ax.set_xscale("log")
        ax.set_xlabel("frames after the context")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_semantic_strip(strip: tuple[np.ndarray, np.ndarray, np.ndarray], path: Path,
                        worlds: int = 4) -> None:
    last, real, gen = strip
    cols = [h for h in (1, 4, 16, 32, 64, 128) if h <= real.shape[1]]
    rows, labels = [], []
    for w in range(min(worlds, len(last))):
        rows.append([last[w]] + [real[w, h - 1] for h in cols])
        rows.append([None] + [gen[w, h - 1] for h in cols])
        labels += [f"#{w} real", f"#{w} model"]
    _grid(rows, labels, ["last context"] + [f"+{h}" for h in cols], path,
          "After a wander, real game (top) vs model (bottom), same actions")


def format_semantic(report: dict[str, Any]) -> str:
    sem = report["semantic"]
    pm = sem["permanence"]
    lines = [f"semantic ({sem['worlds']} worlds, {sem['horizon']} frames after a {sem['wander']}-step "
             "wander): permanence non-grass / all, model | repeat-last"]
    for h, r in pm["model"].items():
        b = pm["repeat_last"][h]
        lines.append(f"  h={h:>3}: {_fmt(r['non_grass'], '.3f')} / {_fmt(r['all'], '.3f')}   |   "
                     f"{_fmt(b['non_grass'], '.3f')} / {_fmt(b['all'], '.3f')}")
    for k, r in sem["buckets"]["model"].items():
        real = sem["buckets"]["real"][k]
        lines.append(f"  frames {k:>7}: non-grass model {r['non_grass']:.3f} real {real['non_grass']:.3f}"
                     f"  smear model {r['smear']:.3f} real {sem['buckets']['real_classified'][k]['smear']:.3f}")
    rv = sem["revealed"]["model"]
    lines.append(f"  revealed cells: {rv['n']}, TV to real {_fmt(rv['tv'], '.3f')}; distinct labels "
                 f"model {sem['distinct_labels']['model']['pooled']} real "
                 f"{sem['distinct_labels']['real']['pooled']}")
    sc = sem["scroll"]["model"]
    lines.append("  scroll agrees with the real game: " + ", ".join(
        f"{k} {_fmt(v['agree'], '.3f')} (n={v['n']})" for k, v in sc.items()))
    long = report.get("long", {}).get("semantic")
    if long:
        lines.append("  long rollout smear / non-grass by frames: " + ", ".join(
            f"{k}: {v['smear']:.3f}/{v['non_grass']:.3f}" for k, v in long["buckets"].items())
            + f"  (real long-run non-grass {sem['real_long_run'].get('non_grass', float('nan')):.3f})")
    return "\n".join(lines)


class CrafterEvaluation:
    """The evaluation's Crafter part (`Game.evaluation`)."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--tiles", default=str(DEFAULT_BANK), help="tile bank (games.crafter.tiles)")
        p.add_argument("--no-codebook", action="store_true",
                       help="leave the checkpoint's tile codebook out (game.tile_codebook): "
                            "generated tiles are not snapped to real ones")
        p.add_argument("--no-land", action="store_true",
                       help="leave the checkpoint's land prior out (game.land_prior): what "
                            "moves reveal is drawn by the denoiser alone")
        p.add_argument("--night", action="store_true",
                       help="show the world view lit by the game's daylight at each step "
                            "(games.crafter.night; as the checkpoint's game.night)")
        p.add_argument("--semantic-worlds", type=int, default=16,
                       help="worlds of the semantic evaluation (0 = skip)")
        p.add_argument("--semantic-horizon", type=int, default=128, help="its frames after the context")
        p.add_argument("--wander", type=int, default=48,
                       help="steps into an episode before its context starts (past the spawn)")

    def apply_levers(self, args: argparse.Namespace, model: Denoiser, cfg: Config) -> None:
        """--no-land / --no-codebook: the same weights without that stage of the pipeline;
        --night: with the daylight stage."""
        names = [st.name for st in model.stages]
        if args.no_land and LAND in names:
            model.stages = [st for st in model.stages if st.name != LAND]
            cfg.game["land_prior"] = ""
        if args.no_codebook and SNAP in names:
            if any(st.name == LAND for st in model.stages):
                raise ValueError("--no-codebook: the land prior draws with the codebook's tiles; "
                                 "add --no-land")
            model.stages = [st for st in model.stages if st.name != SNAP]
            cfg.game["tile_codebook"] = ""
        if getattr(args, "night", False) and not any(isinstance(st, NightStage)
                                                     for st in model.stages):
            model.stages = [*model.stages, NightStage()]
            cfg.game["night"] = True

    def open_loop(self, args: argparse.Namespace, model: Denoiser, cfg: Config,
                  episodes: list[Episode], context: int, out: Path
                  ) -> tuple[dict[str, Any] | None, Callable | None]:
        """The report's "semantic" section and the labeller the long rollout uses."""
        self.tiles = None
        if args.semantic_worlds <= 0:
            return None, None
        if not any(ep.labels is not None for ep in episodes):
            return {"skipped": "no episode carries per-tile labels (labels.u8: collect with "
                               "python -m simulator.collect)"}, None
        tiles = self.tiles = TileClassifier.load(args.tiles)
        t3 = time.time()
        sem = semantic_open_loop(model, cfg, episodes, tiles, context, args.semantic_worlds,
                                 args.semantic_horizon, args.wander, args.batch, args.seed,
                                 args.view_memory)
        plot_semantic_strip(sem.pop("_strip"), out / "semantic_strip.png")
        real_run = real_long_run(episodes, tiles)
        sem.update(real_long_run=real_run, tiles=str(args.tiles),
                   tiles_info={k: tiles.info.get(k) for k in ("accuracy", "rejected", "command")},
                   time_s=time.time() - t3)
        return sem, tiles.classify

    def long(self, lr: dict[str, Any]) -> dict[str, Any]:
        return semantic_long(lr, self.tiles)

    def finish(self, report: dict[str, Any], out: Path) -> None:
        if "permanence" in (report.get("semantic") or {}):
            plot_semantic(report["semantic"], report.get("long", {}).get("semantic"),
                          report["semantic"]["real_long_run"], out / "semantic.png")

    def format(self, report: dict[str, Any]) -> str:
        return format_semantic(report) if "permanence" in (report.get("semantic") or {}) else ""
