"""The evaluation's figures and tables (`worldmodel.evaluation.evaluate`): PSNR/SSIM by horizon, strips of
real against generated frames, the long rollout's drift, and the grid and format helpers a
game's own evaluation draws with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(cv: dict[str, list], horizons: list[int], n: int, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, len(cv["model_psnr_all"]) + 1)
    for ax, m in zip(axes, ("psnr", "ssim")):
        for who, color in (("baseline", "tab:gray"), ("model", "tab:blue")):
            for g, style in (("all", "-"), ("moving", "--")):
                y = np.array([np.nan if v is None else v for v in cv[f"{who}_{m}_{g}"]])
                ax.plot(steps, y, style, color=color, label=f"{who} ({g})")
                ax.plot(horizons, y[np.asarray(horizons) - 1], "o", color=color, ms=4)
        ax.set_xscale("log")
        ax.set_xlabel("horizon (frames after the context)")
        ax.set_ylabel("PSNR (dB)" if m == "psnr" else "SSIM")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Open-loop prediction vs real, {n} samples (baseline: repeat last context frame)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _grid(images: list[list[np.ndarray | None]], row_labels: list[str], col_labels: list[str],
          path: Path, title: str, scale: int = 2) -> None:
    plt = _plt()
    rows, cols = len(images), len(images[0])
    size = images[0][-1].shape[0] * scale / 100 + 0.1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size + 1.2, rows * size + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = images[r][c]
            if img is None:
                ax.set_frame_on(False)
            else:
                ax.imshow(np.repeat(np.repeat(img, scale, 0), scale, 1), interpolation="nearest")
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_strip(ol: Any, horizons: list[int], path: Path) -> None:
    rows, labels = [], []
    for i in range(len(ol.strip_gen)):
        rows.append([ol.strip_real[i][0]] + [ol.strip_real[i][h] for h in horizons])
        rows.append([None] + [ol.strip_gen[i][h - 1] for h in horizons])
        labels += [f"#{i} real", f"#{i} model"]
    if rows:
        _grid(rows, labels, ["last context"] + [f"+{h}" for h in horizons], path,
              "Open loop with the real actions: real (top) vs generated (bottom)")


def plot_long_strip(snaps: np.ndarray, every: int, path: Path) -> None:
    rows = [list(w) for w in snaps]
    cols = ["context"] + [f"t={every * (i + 1)}" for i in range(snaps.shape[1] - 1)]
    _grid(rows, [f"world {w}" for w in range(len(rows))], cols, path,
          "Long rollout, sticky random movement-biased actions")


def plot_drift(stats: dict[str, np.ndarray], band: dict[str, dict[str, float]], path: Path) -> None:
    plt = _plt()
    names = {"gradient": "mean gradient (sharpness)", "laplacian_var": "Laplacian variance",
             "hist_distance": "colour histogram distance to real", "frame_change": "frame-to-frame change"}
    fig, axes = plt.subplots(len(stats), 1, figsize=(10, 2.3 * len(stats)), sharex=True)
    for ax, (k, v) in zip(np.atleast_1d(axes), stats.items()):
        t = np.arange(1, v.shape[1] + 1)
        m = v.mean(0)
        win = np.ones(max(1, min(25, len(m) // 20)))
        smooth = np.convolve(m, win, mode="same") / np.convolve(np.ones_like(m), win, mode="same")
        ax.axhspan(band[k]["p5"], band[k]["p95"], color="tab:green", alpha=0.15, label="real p5-p95")
        ax.axhline(band[k]["median"], color="tab:green", ls="--", lw=1, label="real median")
        ax.plot(t, m, color="tab:blue", alpha=0.3, lw=0.7)
        ax.plot(t, smooth, color="tab:blue", lw=1.5, label=f"generated (mean of {len(v)})")
        ax.set_ylabel(names[k], fontsize=8)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(summary: dict[str, Any], horizons: list[int]) -> str:
    lines = [f"{'horizon':>7} {'group':<7} {'n':>5}  {'PSNR model':>10} {'base':>6}  "
             f"{'SSIM model':>10} {'base':>6}"]
    for h in horizons:
        for g in ("all", "moving"):
            r = summary[g][str(h)]
            lines.append(f"{h:>7} {g:<7} {r['n']:>5}  {_fmt(r['model']['psnr'], '10.2f')} "
                         f"{_fmt(r['baseline']['psnr'], '6.2f')}  {_fmt(r['model']['ssim'], '10.3f')} "
                         f"{_fmt(r['baseline']['ssim'], '6.3f')}")
    return "\n".join(lines)
