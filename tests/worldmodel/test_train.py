"""Training: the loss goes down, resume continues, DDP over 2 CPU processes works
(worldmodel/training/train.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import CRAFTER_SIZE, ROOT, TINY_YAML, perturb_
from worldmodel.checkpoint import (METRICS, TRAIN_META, TRAIN_STATE, WEIGHTS, CheckpointError,
                                   load_checkpoint, load_train_state, save_checkpoint)
from worldmodel.dynamics import Denoiser
from worldmodel.training.train import EMA, init_from, lr_at, train

CPU = torch.device("cpu")


def log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def config(tiny_config, episodes, out, *overrides):
    return tiny_config(f"data.train={episodes}", f"train.out={out}", *overrides,
                       size=CRAFTER_SIZE)


def test_training_lowers_the_loss(tiny_config, crafter_episodes, tmp_path):
    """From deliberately bad weights (seeded noise on every parameter) 40 steps must bring the
    logged loss well down: gradients, optimizer, schedule and data are wired together right."""
    cfg = config(tiny_config, crafter_episodes, tmp_path / "run", "train.steps=40",
                 "train.log_every=10", "train.ckpt_every=40")
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init", perturb_(Denoiser(cfg.model), 0, 0.1), cfg)

    stats = train(cfg, CPU, init=str(init), amp=False, quiet=True)

    curve = log(tmp_path / "run")
    assert [r["step"] for r in curve] == [10, 20, 30, 40]
    assert curve[-1]["loss"] < 0.5 * curve[0]["loss"], [r["loss"] for r in curve]
    assert stats["step"] == 40 and stats["loss"] == curve[-1]["loss"]
    model, _ = load_checkpoint(tmp_path / "run")
    assert json.loads((tmp_path / "run" / METRICS).read_text()) == {  # and where it started
        "train_step": 40, "init_from": str(init), "init_steps": 0}
    assert isinstance(model, Denoiser)


def test_init_from_a_checkpoint_without_the_shift_head_keeps_the_rest(tiny_config, tmp_path):
    """Turning `model.shift_kernel` on for a trained model: its weights load, the new head
    starts fresh (and is named); a checkpoint of another shape is an error naming the tensor."""
    cfg = tiny_config()
    torch.manual_seed(0)
    old = perturb_(Denoiser(cfg.model), 0, 0.05)
    path = save_checkpoint(tmp_path / "old", old, cfg)
    new = Denoiser(tiny_config("model.shift_kernel=5").model)
    fresh = init_from(new, str(path), CPU, verbose=False)
    assert fresh and all(name.startswith("shift.") for name in fresh)
    for name, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[name], value), name
    with pytest.raises(CheckpointError, match="shape"):
        init_from(Denoiser(tiny_config("model.channels=[8,24]").model), str(path), CPU)
    with pytest.raises(CheckpointError, match="unexpected"):  # a head the new config lacks
        init_from(Denoiser(cfg.model), str(save_checkpoint(tmp_path / "new", new,
                                                            tiny_config("model.shift_kernel=5"))), CPU)


def test_training_from_scratch_stays_finite_and_near_the_copy_baseline(tiny_config,
                                                                       crafter_episodes, tmp_path):
    """A fresh model starts as "copy the last frame"; a few steps must not blow that up."""
    cfg = config(tiny_config, crafter_episodes, tmp_path, "train.steps=10",
                 "train.log_every=5", "train.ckpt_every=10")
    train(cfg, CPU, amp=False, quiet=True)
    for r in log(tmp_path):
        assert 0 < r["loss"] < 2 * r["copy_mse"] and r["grad_norm"] < 1e3


def test_resume_continues_the_step_counter(tiny_config, crafter_episodes, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_config, crafter_episodes, out, "train.steps=10", "train.log_every=5",
                 "train.ckpt_every=10")
    train(cfg, CPU, amp=False, quiet=True)
    for name in (WEIGHTS, TRAIN_STATE, TRAIN_META, "config.json", "train_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / TRAIN_META).read_text())["step"] == 10
    raw_10, _, _ = load_train_state(out)
    ema_10, _ = load_checkpoint(out)

    # lr 0: the resumed run must start from (and so keep) the saved raw weights exactly
    cfg.train.steps, cfg.train.lr = 20, 0.0
    train(cfg, CPU, resume=True, amp=False, quiet=True)

    assert [r["step"] for r in log(out)] == [5, 10, 15, 20]
    assert json.loads((out / METRICS).read_text()) == {"train_step": 20}
    raw_20, opt_20, info = load_train_state(out)
    assert info["step"] == 20
    assert all(torch.equal(raw_20[k], v) for k, v in raw_10.items())
    assert all(float(st["step"]) == 20 for st in opt_20["state"].values())  # Adam's count too
    ema_20, _ = load_checkpoint(out)
    moved = [k for k, v in ema_20.state_dict().items() if not torch.equal(v, ema_10.state_dict()[k])]
    assert moved  # the EMA went on averaging from where it was

    # A run started from this checkpoint counts its own steps and keeps where it came from,
    # across its own resumes.
    cfg.train.out, cfg.train.steps, cfg.train.ckpt_every = str(tmp_path / "next"), 5, 5
    train(cfg, CPU, init=str(out), amp=False, quiet=True)
    cfg.train.steps = 10
    train(cfg, CPU, resume=True, init=str(out), amp=False, quiet=True)
    assert json.loads((tmp_path / "next" / METRICS).read_text()) == {
        "train_step": 10, "init_from": str(out), "init_steps": 20}


def test_resume_at_the_last_step_does_nothing(tiny_config, crafter_episodes, tmp_path):
    cfg = config(tiny_config, crafter_episodes, tmp_path, "train.steps=5", "train.log_every=5",
                 "train.ckpt_every=5")
    train(cfg, CPU, amp=False, quiet=True)
    before = (tmp_path / WEIGHTS).read_bytes()
    train(cfg, CPU, resume=True, amp=False, quiet=True)
    assert (tmp_path / WEIGHTS).read_bytes() == before
    assert [r["step"] for r in log(tmp_path)] == [5]


def test_warmup_ramps_the_learning_rate(tiny_config):
    cfg = tiny_config("train.warmup_steps=4", "train.lr=1e-3")
    assert [lr_at(s, cfg) for s in range(6)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]


def test_ema_follows_the_weights_with_a_warm_start():
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = EMA(lin, decay=0.99)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin, step=0)  # warm start: decay (1 + 0) / (10 + 0) = 0.1
    assert ema.shadow["weight"].item() == torch.tensor(0.9).item()
    copy = torch.nn.Linear(1, 1, bias=False)
    ema.copy_to(copy)
    assert copy.weight.item() == ema.shadow["weight"].item()


def test_ddp_with_two_cpu_processes_writes_a_loadable_checkpoint(crafter_episodes, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "worldmodel.training.train", "--config", str(TINY_YAML), "--no-amp",
           f"model.frame_size={CRAFTER_SIZE}", f"data.train={crafter_episodes}",
           f"train.out={out}", "train.steps=4", "train.log_every=2", "train.ckpt_every=4"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]

    model, cfg = load_checkpoint(out)
    assert cfg.train.steps == 4 and isinstance(model, Denoiser)
    assert [r["step"] for r in log(out)] == [2, 4]  # rank 0 alone writes the log
    # Each rank prints its final stats: different data, but the same all-reduced gradients.
    dec = json.JSONDecoder()
    finals = [dec.raw_decode(res.stdout, i)[0] for i in range(len(res.stdout))
              if res.stdout.startswith('{"loss"', i)]
    assert len(finals) == 2
    assert finals[0]["loss"] != finals[1]["loss"]
    assert finals[0]["grad_norm"] == finals[1]["grad_norm"]
