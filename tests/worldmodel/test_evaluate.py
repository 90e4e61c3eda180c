"""Frame metrics (PSNR, SSIM, drift statistics) and the evaluation CLI end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES
import games.crafter.evaluation as crafter_evaluation
from worldmodel.evaluation import evaluate
from worldmodel.evaluation import metrics
from worldmodel.actions import get_action_space
from worldmodel.checkpoint import save_checkpoint
from worldmodel.data.episode import EpisodeWriter, load_episode

ROOT = Path(__file__).resolve().parents[2]


def frames(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Blocky random uint8 frames (n, size, size, 3), like a tile game."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, size // 4, size // 4, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 4, 1), 4, 2)


# ---- PSNR / SSIM --------------------------------------------------------------------------------

def test_identical_frames_psnr_capped_or_inf_and_ssim_exactly_one():
    a = frames(3)
    assert np.all(metrics.psnr(a, a) == metrics.PSNR_CAP)
    assert np.all(np.isinf(metrics.psnr(a, a, cap=None)))
    assert np.all(metrics.ssim(a, a) == 1.0)


def test_psnr_known_values():
    a = np.full((2, 16, 16, 3), 100, np.uint8)
    assert metrics.psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1
    assert metrics.psnr(a, a + 16)[0] == pytest.approx(20 * math.log10(255 / 16), abs=1e-9)
    b = a.copy()
    b[0, :8] += 10  # half the pixels off by 10: MSE 50
    assert metrics.psnr(a, b)[0] == pytest.approx(10 * math.log10(255**2 / 50), abs=1e-9)
    assert metrics.psnr(a, b)[1] == metrics.PSNR_CAP
    assert metrics.psnr(a, b).shape == (2,)


def test_ssim_of_constant_frames_is_the_luminance_term():
    x, y = 80.0, 120.0
    a = np.full((16, 16, 3), x, np.uint8)
    b = np.full((16, 16, 3), y, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(a, b) == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), abs=1e-12)


def reference_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Textbook SSIM: direct 2D 11x11 gaussian convolution, 'valid', per channel."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x**2 / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None])[None, None].repeat(3, 1, 1, 1)
    X = torch.from_numpy(a).permute(0, 3, 1, 2).double()
    Y = torch.from_numpy(b).permute(0, 3, 1, 2).double()

    def blur(z):
        return F.conv2d(z, w, groups=3)

    mx, my = blur(X), blur(Y)
    sxx, syy, sxy = blur(X * X) - mx**2, blur(Y * Y) - my**2, blur(X * Y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def test_ssim_matches_direct_convolution_and_keeps_leading_dims():
    rng = np.random.default_rng(1)
    a = frames(6, 24)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    got = metrics.ssim(a.reshape(2, 3, 24, 24, 3), b.reshape(2, 3, 24, 24, 3))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.ravel(), reference_ssim(a, b), atol=1e-10)


def test_ssim_and_psnr_decrease_with_noise():
    rng = np.random.default_rng(0)
    a = frames(4)
    prev_s, prev_p = 1.0, metrics.PSNR_CAP
    for std in (3, 10, 30, 80):
        b = np.clip(a + rng.normal(0, std, a.shape), 0, 255).astype(np.uint8)
        s, p = metrics.ssim(a, b).mean(), metrics.psnr(a, b).mean()
        assert s < prev_s and p < prev_p
        prev_s, prev_p = s, p
    assert prev_s < 0.5


def test_metrics_reject_bad_input():
    a = frames(1)
    with pytest.raises(ValueError):
        metrics.psnr(a, a[:, :16])
    with pytest.raises(ValueError):
        metrics.ssim(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError):
        metrics.ssim(a[:, :8, :8], a[:, :8, :8])


def test_drift_stats_see_blur_noise_and_colour():
    a = frames(8, 32)
    blurred = ((a.astype(np.float32) + np.roll(a, 1, 1) + np.roll(a, 1, 2) + np.roll(a, (1, 1), (1, 2)))
               / 4).astype(np.uint8)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    g = metrics.gradient_magnitude
    assert g(blurred).mean() < g(a).mean() < g(noisy).mean()
    lv = metrics.laplacian_variance
    assert lv(blurred).mean() < lv(a).mean() < lv(noisy).mean()
    hist = metrics.color_histogram(a)
    assert hist.shape == (8, 512) and np.allclose(hist.sum(-1), 1)
    assert np.allclose(metrics.histogram_distance(hist, hist), 0)
    red = np.zeros_like(a)
    red[..., 0] = 255
    assert np.allclose(metrics.histogram_distance(metrics.color_histogram(red), hist.mean(0)),
                       1 - hist.mean(0)[7 * 64], atol=1e-9)
    assert np.all(metrics.frame_change(a, a) == 0)
    stats = metrics.drift_stats(a[1:], a[:-1], hist.mean(0))
    assert set(stats) == set(metrics.DRIFT_STATS) and all(v.shape == (7,) for v in stats.values())


def test_drift_summary_verdicts():
    band = {k: {"p5": 1.0, "median": 2.0, "p95": 3.0, "mean": 2.0} for k in metrics.DRIFT_STATS}
    fine = {k: np.full((2, 40), 2.0) for k in metrics.DRIFT_STATS}
    s = metrics.drift_summary(fine, band)
    assert s["verdict"] == "within the real band" and s["gradient"]["in_band_fraction"] == 1
    assert len(s["gradient"]["segments"]) == 10
    decaying = dict(fine, gradient=np.linspace(2, 0, 40)[None].repeat(2, 0),
                    frame_change=np.zeros((2, 40)))
    s = metrics.drift_summary(decaying, band)
    assert "blurry" in s["verdict"] and "frozen" in s["verdict"]
    assert s["gradient"]["final_quarter_in_band_fraction"] == 0
    s = metrics.drift_summary(dict(fine, laplacian_var=np.full((2, 40), 9.0)), band)
    assert "noisy" in s["verdict"]


# ---- helpers of the evaluation ------------------------------------------------------------------

def test_pick_starts_is_seeded_spread_and_leaves_room():
    lengths = [30, 12, 9, 50]  # the third is too short for 3 context + 8 future frames
    s1 = evaluate.pick_starts(lengths, 9, context=3, horizon=8, seed=5)
    assert s1 == evaluate.pick_starts(lengths, 9, context=3, horizon=8, seed=5)
    assert s1 != evaluate.pick_starts(lengths, 9, context=3, horizon=8, seed=6)
    assert sorted({e for e, _ in s1}) == [0, 1, 3]
    assert all(2 <= s and s + 8 < lengths[e] for e, s in s1)
    assert len(set(s1)) == len(s1)  # without replacement while an episode has room


def test_exploration_actions_are_sticky_movement_biased_and_seeded():
    space = get_action_space("crafter")
    acts = evaluate.exploration_actions(space, 3, 2000)
    assert acts.shape == (2000,) and acts.min() >= 0 and acts.max() < space.n
    assert np.array_equal(acts, evaluate.exploration_actions(space, 3, 2000))
    assert 0.65 < np.isin(acts, [1, 2, 3, 4]).mean() < 0.9
    assert (acts[1:] == acts[:-1]).mean() > 0.5  # sticky


def test_frame_actions_and_positions(tmp_path):
    ep = load_episode(write_episode(tmp_path / "ep", np.arange(6) * 10, moving=True, pos=True))
    assert evaluate.frame_actions(ep, 0, 3).tolist() == [-1, 1, 2]  # frame i made by action i-1
    assert evaluate.frame_actions(ep, 3, 3).tolist() == [1, 2, 1]
    pos = evaluate.player_positions(ep)
    assert pos.shape == (6, 2) and pos[0].tolist() == [5, 5] and pos[3].tolist() == [8, 5]


# ---- end to end ---------------------------------------------------------------------------------

SIZE = 16
STEPS = 20
SLOPE = 2  # frame t is one flat grey of 60 + SLOPE * t: the repeat baseline's error is known


def write_episode(path: Path, levels: np.ndarray, moving: bool, pos: bool) -> Path:
    """Flat grey frames at `levels`, alternating actions 1, 2; "pos" moves along x or stays."""
    meta = {"game": "synthetic", "action_space": "crafter", "seed": 0, "fps": 10}
    if pos:
        meta["start_pos"] = [5, 5]
    with EpisodeWriter(path, meta) as w:
        w.add_frame(np.full((SIZE, SIZE, 3), levels[0], np.uint8))
        for t in range(1, len(levels)):
            extra = {"pos": [5 + t if moving else 5, 5]} if pos else {}
            w.add_step(1 + (t - 1) % 2, np.full((SIZE, SIZE, 3), levels[t], np.uint8), **extra)
    return path


@pytest.fixture
def eval_setup(tmp_path, tiny_config, perturbed_model):
    cfg = tiny_config(size=SIZE)
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg)
    data = tmp_path / "data"
    levels = 60 + SLOPE * np.arange(STEPS + 1)
    write_episode(data / "heldout_a", levels, moving=True, pos=True)
    write_episode(data / "heldout_b", levels, moving=False, pos=True)
    write_episode(data / "heldout_c", levels, moving=True, pos=False)  # image fallback
    write_episode(data / "train_x", levels, moving=True, pos=True)  # not held out: ignored
    return ckpt, data, tmp_path / "out"


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_end_to_end(eval_setup, capsys, device):
    ckpt, data, out = eval_setup
    report = evaluate.main(["--checkpoint", str(ckpt), "--data", str(data), "--samples", "6",
                            "--horizons", "1", "4", "--batch", "4", "--long", "50",
                            "--long-worlds", "2", "--out", str(out), "--seed", "3",
                            "--device", device])
    for name in ("report.json", "metrics.png", "strip.png", "long_strip.png", "drift.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    for key in ("checkpoint", "config", "samples", "context_frames", "horizons", "results",
                "curves", "long", "time", "moving_test"):
        assert key in saved, key
    assert saved["samples"] == 6 and saved["episodes"] == 3 and saved["episodes_sampled"] == 3
    assert saved["context_frames"] == 3  # tiny: window 4
    assert "mean abs diff" in saved["moving_test"]

    res = saved["results"]
    for h in (1, 4):
        row = res["all"][str(h)]
        assert row["n"] == 6
        # Flat frames SLOPE grey levels apart per step: the baseline's PSNR is exact.
        assert row["baseline"]["psnr"] == pytest.approx(20 * math.log10(255 / (SLOPE * h)))
        assert row["baseline"]["exact_fraction"] == 0
        assert 0 < row["baseline"]["ssim"] < 1
        assert math.isfinite(row["model"]["psnr"]) and -1 <= row["model"]["ssim"] <= 1
        assert row["model"]["psnr"] != row["baseline"]["psnr"]
        assert res["moving"][str(h)]["n"] + res["static"][str(h)]["n"] == 6
    # Two samples per episode: a moves (pos), b stands still (pos), c moves by the image test
    # only once the view changed by more than MOVED_MAD (SLOPE * h grey levels).
    assert res["moving"]["1"]["n"] == 2
    assert res["moving"]["4"]["n"] == 4
    assert len(saved["curves"]["model_psnr_all"]) == 4

    long = saved["long"]
    assert long["frames"] == 50 and long["worlds"] == 2 and isinstance(long["verdict"], str)
    for k in metrics.DRIFT_STATS:
        assert {"p5", "median", "p95"} <= set(long["reference"][k])
        assert 0 <= long[k]["in_band_fraction"] <= 1
    printed = capsys.readouterr().out
    assert "horizon" in printed and "moving" in printed and "long rollout" in printed


def test_evaluate_is_deterministic_and_long_zero_skips(eval_setup):
    ckpt, data, out = eval_setup
    args = ["--checkpoint", str(ckpt), "--data", str(data), "--samples", "3", "--horizons", "2",
            "--long", "0"]
    r1 = evaluate.main(args + ["--out", str(out / "1")])
    r2 = evaluate.main(args + ["--out", str(out / "2")])
    assert r1["results"] == r2["results"]
    assert "long" not in r1 and not (out / "1" / "drift.png").exists()


def test_worldmodel_evaluation_imports_no_simulator_or_pygame():
    code = ("import sys, worldmodel.evaluation.evaluate, worldmodel.evaluation.bench; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('simulator', 'memory', 'pygame')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- semantic evaluation, end to end on real Crafter frames ---------------------------------------

def test_semantic_evaluation_end_to_end(semantic_report):
    ckpt, out, report = semantic_report
    for name in ("semantic.png", "semantic_strip.png"):
        assert (out / name).stat().st_size > 0, name
    sem = json.loads((out / "report.json").read_text())["semantic"]
    assert sem["worlds"] == 3 and sem["horizon"] == 16 and len(sem["starts"]) == 3
    assert all(s >= 4 + 3 - 1 for _, s in sem["starts"])  # past the wander (tiny: 3 context frames)
    for who in ("model", "repeat_last"):
        for h in ("1", "4", "16"):
            row = sem["permanence"][who][h]
            assert 0 <= row["all"] <= 1 and row["n_all"] > 0
    assert set(sem["buckets"]["model"]) == {"1-4", "5-16"}
    assert sem["buckets"]["real_classified"]["1-4"]["smear"] < 0.05  # real frames barely smear
    assert 0 <= sem["revealed"]["model"]["tv"] <= 1
    assert sem["distinct_labels"]["real"]["pooled"] >= 2
    assert sem["scroll"]["real_frames"]["free_moves"]["agree"] == 1.0  # the pose estimate
    long = report["long"]["semantic"]
    assert set(long["buckets"]) == {"1-16", "17-64"} and long["steps"][0] == 4
    assert report["command"].startswith("python -m worldmodel.evaluation.evaluate --checkpoint")
    assert "permanence non-grass" in crafter_evaluation.format_semantic(report)


def test_episodes_without_labels_skip_the_semantic_evaluation(eval_setup):
    ckpt, data, out = eval_setup
    report = evaluate.main(["--checkpoint", str(ckpt), "--data", str(data), "--samples", "2",
                            "--horizons", "1", "--long", "0", "--out", str(out)])
    assert "labels" in report["semantic"]["skipped"]


def test_psnr_is_of_the_mean_mse_without_caps():
    # Two samples at h=1: one exact frame (error 0), one with MSE 100: PSNR of the mean MSE is
    # 10 log10(255^2 / 50); the mean of capped per-frame PSNRs would be (100 + 28.13) / 2.
    zeros = np.zeros((2, 1))
    ol = evaluate.OpenLoop(model_mse=np.array([[0.0], [100.0]]), model_ssim=zeros + 1,
                           baseline_mse=np.array([[100.0], [100.0]]), baseline_ssim=zeros,
                           moving=np.array([[True], [False]]), strip_real=zeros, strip_gen=zeros)
    res = evaluate.summarize(ol, [1])
    assert res["all"]["1"]["model"]["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 50))
    assert res["all"]["1"]["model"]["psnr_frame_mean_capped"] == pytest.approx(
        (100 + 10 * math.log10(255 ** 2 / 100)) / 2)
    assert res["moving"]["1"]["model"]["psnr"] == math.inf
    assert res["static"]["1"]["baseline"]["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 100))


def test_a_negative_sample_steps_is_a_usage_error(eval_setup, capsys):
    ckpt, data, out = eval_setup
    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", str(ckpt), "--data", str(data), "--sample-steps", "-1"])
    assert "--sample-steps must be positive" in capsys.readouterr().err
