"""The few-step mode-seeking student (worldmodel.distill, worldmodel.training.distill): the DMD
gradient points the right way on a toy distribution, a tiny distillation lowers its losses and
writes a checkpoint every entry point loads, and the one-pass sampler is deterministic."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import CRAFTER_SIZE, perturb_
from worldmodel.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.distill import dmd_direction, dmd_surrogate
from worldmodel.dynamics import Denoiser
from worldmodel.rollout import Rollout
from worldmodel.training.distill import distill, student_config

CPU = torch.device("cpu")


def gaussian_x0(xt: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, s: float) -> torch.Tensor:
    """E[x_0 | x_t] for x_0 ~ N(mu, s^2), x_t = (1 - t) x_0 + t eps (the ideal x_0 predictor)."""
    a = 1 - t
    return mu + a * s * s / (a * a * s * s + t * t) * (xt - a * mu)


def follow_dmd(swap: bool, steps: int = 300) -> list[float]:
    """theta over `steps` SGD steps on the surrogate: a student that draws theta + noise, a
    teacher of N(2, 0.1^2) data, a fake score that knows the student's current distribution
    (`swap`: the two scores exchanged)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.1)
    s, mu_teacher = 0.1, torch.tensor(2.0)
    path = []
    for _ in range(steps):
        x = theta + s * torch.randn(64, 1, 4, generator=gen)
        t = (0.02 + 0.96 * torch.rand(64, 1, generator=gen))[..., None]
        xt = (1 - t) * x.detach() + t * torch.randn(x.shape, generator=gen)
        teacher = gaussian_x0(xt, t, mu_teacher, s)
        fake = gaussian_x0(xt, t, theta.detach(), s)
        if swap:
            teacher, fake = fake, teacher
        loss = dmd_surrogate(x, dmd_direction(x.detach(), teacher, fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(float(theta.detach()))
    return path


def test_the_dmd_gradient_moves_the_student_to_the_teacher_mode():
    path = follow_dmd(swap=False)
    assert abs(np.mean(path[-50:]) - 2.0) < 0.05, path[-5:]
    away = follow_dmd(swap=True, steps=5)
    assert all(b < a for a, b in zip([0.0] + away, away)), away  # scores swapped: it runs away


def test_dmd_direction_is_zero_when_student_and_teacher_agree():
    x = torch.randn(2, 3, 3, 4, 4)
    teacher = torch.randn_like(x)
    assert torch.equal(dmd_direction(x, teacher, teacher), torch.zeros_like(x))
    d = dmd_direction(x, teacher, teacher + 1)
    assert (d > 0).all()  # samples move down, away from the fake and toward the teacher


def tiny_teacher(tiny_config, episodes, tmp_path):
    cfg = tiny_config(f"data.train={episodes}", size=CRAFTER_SIZE)
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "teacher", perturb_(Denoiser(cfg.model), 0, 0.1), cfg,
                           {"train_step": 3})


def test_a_tiny_distillation_lowers_its_losses_and_plays(tiny_config, crafter_episodes, tmp_path):
    teacher = tiny_teacher(tiny_config, crafter_episodes, tmp_path)
    out = tmp_path / "student"
    cfg = student_config(str(teacher), [f"train.out={out}", "train.steps=36", "train.log_every=6",
                                        "train.ckpt_every=36", "train.lr=1e-3",
                                        "distill.flow_weight=1.0"])
    assert cfg.diffusion.sample_steps == 1 and cfg.distill.teacher == str(teacher)
    distill(cfg, CPU, amp=False, quiet=True)
    curve = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(curve) == 6

    def early_late(key):
        return np.mean([c[key] for c in curve[:2]]), np.mean([c[key] for c in curve[-2:]])

    flow, fake = early_late("flow"), early_late("fake")
    assert flow[1] < 0.8 * flow[0], curve  # mean seeking: the real windows' loss
    assert fake[1] < 0.8 * fake[0], curve  # the fake score learns the student's frames
    assert all(np.isfinite(c["dmd"]) for c in curve)
    model, scfg = load_checkpoint(out)
    assert scfg.diffusion.sample_steps == 1
    assert json.loads((out / "metrics.json").read_text())["distilled_from"] == str(teacher)
    frames = torch.rand(2, 4, 3, CRAFTER_SIZE, CRAFTER_SIZE) * 2 - 1

    def roll():
        ro = Rollout(model, scfg, seed=5)
        ro.reset(frames)
        return torch.stack([ro.step(torch.tensor([1, 3])) for _ in range(3)], 1)

    a, b = roll(), roll()
    assert torch.equal(a, b)  # the one-pass sampler is deterministic under a seed
    assert a.shape == (2, 3, 3, CRAFTER_SIZE, CRAFTER_SIZE) and torch.isfinite(a).all()


def test_distillation_resumes_where_it_stopped(tiny_config, crafter_episodes, tmp_path):
    teacher = tiny_teacher(tiny_config, crafter_episodes, tmp_path)
    out = tmp_path / "student"
    common = [f"train.out={out}", "train.log_every=2", "train.ckpt_every=2"]
    distill(student_config(str(teacher), common + ["train.steps=2"]), CPU, amp=False, quiet=True)
    distill(student_config(str(teacher), common + ["train.steps=4"]), CPU, resume=True, amp=False,
            quiet=True)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert json.loads((out / "metrics.json").read_text())["train_step"] == 4
