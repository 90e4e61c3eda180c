import json

from worldmodel.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.dynamics import Denoiser
from worldmodel.model_card import main as card_main


def _entry(n, model_psnr, base_psnr):
    return {"n": n, "model": {"psnr": model_psnr, "ssim": 0.9}, "baseline": {"psnr": base_psnr, "ssim": 0.8}}


def test_consecutive_training_logs_join_into_one_step_axis(tmp_path):
    from worldmodel.model_card import join_training_logs, trained_steps

    first, resumed, restarted = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    first.write_text("\n".join(json.dumps({"step": s, "loss": 1.0}) for s in (50, 100)))
    resumed.write_text(json.dumps({"step": 150, "loss": 1.0}))  # --resume: the counter goes on
    restarted.write_text(json.dumps({"step": 50, "loss": 1.0}))  # --init: counts from 0 again
    rows, starts = join_training_logs([first, resumed, restarted])
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    assert starts == [100, 150]
    assert trained_steps({"train_step": 7}) == "7"
    assert trained_steps({"train_step": 50, "init_steps": 150, "init_from": "x"}) == "200 (150 up to x, then 50)"


def test_card_reports_figures_and_target_verdicts(tmp_path, tiny_cfg):
    ckpt = save_checkpoint(tmp_path / "ck", Denoiser(tiny_cfg.model), tiny_cfg, {"train_step": 7})
    report = {"horizons": [1, 4], "context_frames": 3, "prefix": "heldout_", "data": "d",
              "moving_test": "pos",
              "results": {"all": {"1": _entry(10, 31.0, 30.0), "4": _entry(10, 20.0, 19.0)},
                          "moving": {"1": _entry(4, 25.0, 20.0), "4": _entry(5, 18.0, 16.5)}}}
    bench = {"params": 1000, "device": "cpu", "denoiser_passes_per_frame": 2,
             "results": [{"batch": 1, "fps_per_world_median": 25.0, "imagined_fps_median": 25.0,
                          "imagined_fps_vs_batch1": 1.0, "peak_rss_mb": 100.0,
                          "stage_ms": {"denoiser": 30.0, "cache_write": 8.0, "decoder": 0.1,
                                       "overhead": 1.0}}]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps(bench))
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / i, "copy_mse": 0.5})
                                                 for i in range(1, 5)))
    card_main(["--checkpoint", str(ckpt), "--eval", str(tmp_path / "r.json"),
               "--bench", str(tmp_path / "b.json"), "--train-log", str(tmp_path / "log.jsonl")])
    assert (ckpt / "train_curve.png").stat().st_size > 1000
    card = (ckpt / "MODEL_CARD.md").read_text()
    assert "| 1 | all | 10 | 31.00 | 30.00 | +1.00 |" in card
    assert "all steps >= 30 dB: 31.00 dB (met)" in card
    assert "horizon 4 by >= 3 dB: +1.50 dB (missed by 1.50 dB)" in card
    assert "horizon 1: +5.00 dB (met)" in card
    assert ">= 20 fps: 25.0 fps (met)" in card
    assert "Trained 7 steps" in card
    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert metrics["train_step"] == 7 and metrics["evaluation"]["all"]["1"]["n"] == 10
    load_checkpoint(ckpt)  # still a loadable checkpoint
