"""The revisit benchmark's figures (`memory.revisit`): PSNR against time with the excursion
marked, and a strip of revisit frames beside the same positions on the first visit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from memory.revisit_scores import mean_or_none
from memory.revisit_trips import excursion
from worldmodel.data import Episode
from worldmodel.evaluation.plots import _plt


def plot_curves(results: list[dict[str, Any]], episodes: list[Episode], modes: list[str],
                context: int, path: Path, moves: Sequence[int]) -> None:
    """Revisit PSNR vs real against time (the median excursion shaded; `moves`: the game's)."""
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
    ex = np.median([excursion(ep, moves) for ep in episodes], 0).astype(int)
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
        vals = [mean_or_none(np.asarray(r["modes"][mode]["vs_real"]["psnr"])) or np.nan for r in results]
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
