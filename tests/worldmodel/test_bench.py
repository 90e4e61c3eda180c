"""The speed benchmark on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest

import worldmodel.rollout as rollout_module
from conftest import DEVICES
from worldmodel.evaluation import bench
from worldmodel.checkpoint import save_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config, perturbed_model):
    cfg = tiny_config()
    return save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg)


@pytest.mark.parametrize("device", DEVICES)
def test_bench_writes_json_with_positive_fps(tiny_checkpoint, tmp_path, capsys, device):
    out = tmp_path / "bench.json"
    original = rollout_module.denoise_chunk
    report = bench.main(["--checkpoint", str(tiny_checkpoint), "--frames", "4", "--warmup", "1",
                         "--batch", "1", "2", "--device", device, "--out", str(out)])
    assert rollout_module.denoise_chunk is original  # the timing hooks are undone
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert [r["batch"] for r in saved["results"]] == [1, 2]
    for r in saved["results"]:
        assert r["fps_per_world_median"] > 0 and r["imagined_fps_median"] > 0
        assert r["imagined_fps_median"] == pytest.approx(r["batch"] * r["fps_per_world_median"])
        assert set(r["stage_ms"]) == set(bench.STAGES)
        assert r["stage_ms"]["denoiser"] > 0 and r["stage_ms"]["cache_write"] > 0
        assert sum(r["stage_ms"].values()) == pytest.approx(r["step_ms_mean"], rel=1e-6)
        assert r["peak_rss_mb"] > 0
    assert saved["results"][0]["imagined_fps_vs_batch1"] == 1.0
    assert saved["denoiser_passes_per_frame"] == saved["config"]["diffusion"]["sample_steps"]
    assert "imagined fps" in capsys.readouterr().out
