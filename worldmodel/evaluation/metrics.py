"""Frame metrics on uint8 frames `(..., h, w, 3)`: PSNR, SSIM, and per-frame image statistics
that show whether a long rollout drifts into blur, noise or wrong colours.

Everything takes and returns numpy; SSIM runs as batched torch matmuls (a separable gaussian).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

PSNR_MAX = 255.0
# Identical frames have infinite PSNR. The smallest non-zero error of a 64x64x3 uint8 frame (one
# value off by one) is ~89 dB, so a 100 dB cap keeps exact copies above every inexact frame
# while keeping averages finite. `exact_fraction` in reports says how often the cap was hit.
PSNR_CAP = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"metrics take uint8 frames, got {a.dtype} and {b.dtype}")
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"frames must be (..., h, w, 3), got {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame mean squared error on [0, 255]: (..., h, w, 3) -> (...)."""
    a, b = _check_pair(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return (d * d).mean(axis=(-3, -2, -1))


def psnr_from_mse(err: np.ndarray | float, cap: float | None = PSNR_CAP) -> np.ndarray:
    err = np.asarray(err, np.float64)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(PSNR_MAX ** 2 / err)
    return np.minimum(out, cap) if cap is not None else out


def psnr(a: np.ndarray, b: np.ndarray, cap: float | None = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR in dB with MAX = 255: (..., h, w, 3) -> (...). Identical frames give `cap`
    (or inf with cap=None)."""
    return psnr_from_mse(mse(a, b), cap)


def gaussian_band(n: int, size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(n - size + 1, n) matrix whose rows are the shifted 1D gaussian: a 'valid' 1D blur as a
    matmul (the 2D window is separable, so blur(X) = A X A^T)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    band = torch.zeros(n - size + 1, n, dtype=torch.float64)
    for i in range(n - size + 1):
        band[i, i:i + size] = g
    return band


def ssim(a: np.ndarray, b: np.ndarray, batch: int = 512) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004): 11x11 gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    L = 255, computed per channel over the 'valid' region (no padding) and averaged over pixels
    and channels. (..., h, w, 3) uint8 -> (...) in [-1, 1]; identical frames give exactly 1."""
    a, b = _check_pair(a, b)
    lead = a.shape[:-3]
    h, w = a.shape[-3:-1]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}px, got {h}x{w}")
    a2 = a.reshape(-1, h, w, 3)
    b2 = b.reshape(-1, h, w, 3)
    rows, cols = gaussian_band(h), gaussian_band(w).T
    c1 = (SSIM_K1 * PSNR_MAX) ** 2
    c2 = (SSIM_K2 * PSNR_MAX) ** 2
    out = []
    for s in range(0, len(a2), batch):
        x = torch.from_numpy(a2[s:s + batch]).permute(0, 3, 1, 2).double()
        y = torch.from_numpy(b2[s:s + batch]).permute(0, 3, 1, 2).double()
        mx, my, xx, yy, xy = (rows @ z @ cols for z in (x, y, x * x, y * y, x * y))
        sxx, syy, sxy = xx - mx * mx, yy - my * my, xy - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        out.append((num / den).mean(dim=(1, 2, 3)).cpu().numpy())
    res = np.concatenate(out) if out else np.zeros(0)
    return res.reshape(lead)


# ---- per-frame statistics for drift (no reference frame needed) --------------------------------

def _gray(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames, np.float64)
    return f @ np.array([0.299, 0.587, 0.114])


def gradient_magnitude(frames: np.ndarray) -> np.ndarray:
    """Mean gradient magnitude of the grey image (forward differences, [0, 255] units): blur
    lowers it, noise raises it. (..., h, w, 3) -> (...)."""
    g = _gray(frames)
    dx = g[..., :-1, 1:] - g[..., :-1, :-1]
    dy = g[..., 1:, :-1] - g[..., :-1, :-1]
    return np.sqrt(dx * dx + dy * dy).mean(axis=(-2, -1))


def laplacian_variance(frames: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of the grey image, a standard focus measure."""
    g = _gray(frames)
    lap = (g[..., :-2, 1:-1] + g[..., 2:, 1:-1] + g[..., 1:-1, :-2] + g[..., 1:-1, 2:]
           - 4 * g[..., 1:-1, 1:-1])
    return lap.var(axis=(-2, -1))


def color_histogram(frames: np.ndarray, levels: int = 8) -> np.ndarray:
    """Joint RGB histogram with `levels` bins per channel (levels**3 bins, sums to 1) per frame.
    Joint rather than per-channel: blur and noise invent colours the game's palette lacks."""
    f = np.asarray(frames)
    q = (f.astype(np.int64) * levels) // 256
    idx = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    lead = f.shape[:-3]
    idx = idx.reshape(-1, f.shape[-3] * f.shape[-2])
    n_bins = levels ** 3
    offs = np.arange(len(idx))[:, None] * n_bins
    hist = np.bincount((idx + offs).ravel(), minlength=len(idx) * n_bins).reshape(len(idx), n_bins)
    hist = hist / idx.shape[1]
    return hist.reshape(*lead, n_bins)


def histogram_distance(hist: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Total-variation distance (half the L1 distance) between histograms, in [0, 1]."""
    return 0.5 * np.abs(np.asarray(hist) - np.asarray(ref)).sum(axis=-1)


def frame_change(frames: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, [0, 255] units."""
    a, b = _check_pair(frames, prev)
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(-3, -2, -1))


DRIFT_STATS = ("gradient", "laplacian_var", "hist_distance", "frame_change")


def drift_stats(frames: np.ndarray, prev: np.ndarray, ref_hist: np.ndarray) -> dict[str, np.ndarray]:
    """All drift statistics for frames (..., h, w, 3), each frame's predecessor `prev`, and the
    reference colour histogram of real frames."""
    return {
        "gradient": gradient_magnitude(frames),
        "laplacian_var": laplacian_variance(frames),
        "hist_distance": histogram_distance(color_histogram(frames), ref_hist),
        "frame_change": frame_change(frames, prev),
    }


def drift_summary(stats: dict[str, np.ndarray], band: dict[str, dict[str, float]],
                  segments: int = 10) -> dict[str, Any]:
    """Read a rollout's drift statistics (each (worlds, frames)) against `band`, the p5, median,
    p95 and mean of the same statistics over real frames. Per statistic: means over `segments`
    equal stretches, the final quarter's median, the fractions of frames inside p5-p95; and a
    verdict from the final quarter (blurry, noisy, colours drifted, flickering, frozen)."""
    out: dict[str, Any] = {}
    flags = []
    for k, v in stats.items():
        m = v.mean(0)  # over worlds
        tail = v[:, -max(1, v.shape[1] // 4):]
        lo, hi = band[k]["p5"], band[k]["p95"]
        out[k] = {"segments": [float(s.mean()) for s in np.array_split(m, min(segments, len(m)))],
                  "final_quarter_median": float(np.median(tail)),
                  "in_band_fraction": float(((v >= lo) & (v <= hi)).mean()),
                  "final_quarter_in_band_fraction": float(((tail >= lo) & (tail <= hi)).mean())}
        med = out[k]["final_quarter_median"]
        if k == "gradient" and med < lo:
            flags.append("blurry (low gradient)")
        elif k in ("gradient", "laplacian_var") and med > hi:
            flags.append(f"noisy (high {k})")
        elif k == "hist_distance" and med > hi:
            flags.append("colours drifted")
        elif k == "frame_change" and med > hi:
            flags.append("flickering")
        elif k == "frame_change" and tail.mean() < 0.25 * band[k]["mean"]:
            flags.append("frozen (little frame-to-frame change)")
    out["verdict"] = "within the real band" if not flags else ", ".join(flags)
    return out
