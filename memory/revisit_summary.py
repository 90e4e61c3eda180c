"""The revisit benchmark's summary (`memory.revisit`): per-frame scores pooled over episodes
(every revisit, those back at the start, the control frames, the own-pose revisits), with gains
over memory off, and the lines it prints."""

from __future__ import annotations

from typing import Any

import numpy as np

from memory.revisit_scores import mean_or_none
from worldmodel.evaluation import metrics
from worldmodel.evaluation.reports import bootstrap_interval


def weighted_mean(values: list[float | None], weights: list[int]) -> float | None:
    """The mean of per-episode shares weighted by their frame counts; None if any is missing
    (or nothing is weighed)."""
    if not values or any(v is None for v in values) or sum(weights) == 0:
        return None
    return float(np.dot(values, weights) / sum(weights))


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
                    row[f"{ref}_{m}"] = mean_or_none(np.concatenate(vals)) if vals else None
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
        block["real_consistency_psnr"] = mean_or_none(np.concatenate(real)) if real else None
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
        block[mode] = {"vs_real_psnr": mean_or_none(np.concatenate(vals))}
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
        out[key] = {m: mean_or_none(np.asarray([r[key][m] for r in results if r[key][m] is not None]))
                    for m in modes if all(m in r.get(key, {}) for r in results)}
    out["own_pose"] = summarize_own_pose(results, modes)
    return out


def _pooled(blocks: list[dict[str, Any]], key: str, metric: str | None = None) -> float | None:
    """The frame mean of a per-revisit-frame list (`block[key]`, or `block[key][metric]`) pooled
    over episodes; None if an episode lacks it."""
    vals = [b[key] if metric is None else b[key].get(metric) for b in blocks]
    if not vals or any(v is None for v in vals):
        return None
    return mean_or_none(np.concatenate([np.asarray(v, float) for v in vals]))


def summarize_own_pose(results: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per mode, pooled over every episode: revisits paired by the model's own pose (`n`, tiles
    and PSNR vs its own first visit), the non-grass share of those revisit frames and of all its
    generated frames beside the real frames' (`real_non_grass`), and how often its pose is the
    real one. Shares of generated frames are weighted by each episode's generated frames."""
    generated = [r["frames"] - r["real_prefix"] for r in results]
    real = weighted_mean([r.get("real_non_grass") for r in results], generated)
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
            "non_grass_generated": weighted_mean(
                [r["modes"][mode].get("non_grass_generated") for r in results], generated),
            "real_non_grass": real,
            "pose_vs_real": weighted_mean([b["pose_vs_real"] for b, _ in tracked],
                                           [n for _, n in tracked]),
        }
    return out


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
