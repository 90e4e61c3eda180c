"""Distil a one-pass student from a many-step teacher: `python -m worldmodel.training.distill
--teacher assets/crafter_memory --config configs/student.yaml key=value ...`.

Distribution matching (worldmodel.distill) on the teacher's training data: the student and a
fake score both start from the teacher's weights; every step the student draws each target of
a window in one pass, the fake score learns to denoise those frames, and the student follows
the teacher's x_0 minus the fake's, beside the flow-matching loss on the real window. The
student is written as an ordinary checkpoint of the teacher's architecture with
`diffusion.sample_steps = 1` (EMA weights, the teacher's side files copied beside it): every
entry point plays, evaluates and benchmarks it as any other. `--resume` continues a run (the
student's and the fake score's weights and optimizers are kept in `train.out`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from worldmodel.actions import get_action_space
from worldmodel.checkpoint import (TRAIN_STATE, CheckpointError, load_checkpoint,
                                   load_config_from_checkpoint, load_train_state,
                                   read_metrics, save_checkpoint, save_train_state)
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import Config, apply_overrides, config_from_mapping, to_dict
from worldmodel.device import generator, pick_device
from worldmodel.diffusion import TrainBatch
from worldmodel.distill import dmd_losses
from worldmodel.dynamics import Denoiser
from worldmodel.game import find_game
from worldmodel.training.train import EMA, draw_batch, lr_at, open_data

FAKE = "fake_score"  # the fake score's checkpoint and optimizer, inside train.out


def student_config(teacher: str, overrides: list[str]) -> Config:
    """The teacher's config with the run's overrides, a one-pass sampler and the teacher named."""
    data = to_dict(load_config_from_checkpoint(teacher))
    data["diffusion"]["sample_steps"] = 1
    data["distill"]["teacher"] = str(teacher)
    return config_from_mapping(apply_overrides(data, overrides))


def copy_side_files(teacher: str | Path, out: Path, cfg: Config) -> None:
    """The teacher's side files the config names (a codebook, a land prior) beside the student."""
    for value in cfg.game.values():
        if isinstance(value, str) and value and (Path(teacher) / value).is_file():
            if not (out / value).is_file():
                shutil.copy2(Path(teacher) / value, out / value)


def distill(cfg: Config, device: torch.device, resume: bool = False, amp: bool = True,
            quiet: bool = False) -> dict:
    tc, dc = cfg.train, cfg.distill
    if not dc.teacher:
        raise SystemExit("distill.teacher: name the teacher checkpoint (--teacher DIR)")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    gen = generator(device, tc.seed + 7)
    out = Path(tc.out)
    teacher, tcfg = load_checkpoint(dc.teacher, device)
    if to_dict(tcfg.model) != to_dict(cfg.model):
        raise SystemExit("distill: the student's model section must be the teacher's "
                         f"({dc.teacher}); change the sampler or the losses, not the network")
    teacher.requires_grad_(False).eval()
    student, fake = Denoiser(cfg.model).to(device), Denoiser(cfg.model).to(device)
    for net in (student, fake):
        net.load_state_dict(teacher.state_dict())
    space = get_action_space(cfg.model.action_space)
    game = find_game(cfg.model.game_name)
    data = open_data(cfg, quiet)
    opt = torch.optim.AdamW(student.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    fake_opt = torch.optim.AdamW(fake.parameters(), lr=tc.lr * dc.fake_lr_mult,
                                 weight_decay=tc.weight_decay)
    ema = EMA(student, tc.ema_decay)
    step = 0
    if resume and (out / TRAIN_STATE).is_file():
        raw, opt_state, info = load_train_state(out)
        student.load_state_dict(raw)
        opt.load_state_dict(opt_state)
        ema.shadow = {k: v.float().clone() for k, v in load_checkpoint(out, device)[0].state_dict().items()}
        f_raw, f_opt, _ = load_train_state(out / FAKE)
        fake.load_state_dict(f_raw)
        fake_opt.load_state_dict(f_opt)
        step = int(info["step"])
        rng = np.random.default_rng([tc.seed, step])
        gen.manual_seed(tc.seed + 7 + 100003 * step)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    use_amp = device.type == "cuda" or amp
    amp_ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)
    stop = {"signal": None}

    def request_stop(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    bar = tqdm(total=tc.steps, initial=step, desc="distill", disable=quiet, dynamic_ncols=True)
    running: dict[str, float] = {}
    stats: dict[str, float] = {}
    t0, frames_seen = time.time(), 0
    with_moves = student.move is not None
    while step < tc.steps:
        for o, mult in ((opt, 1.0), (fake_opt, dc.fake_lr_mult)):
            for g in o.param_groups:
                g["lr"] = lr_at(step, cfg) * mult
        frames, actions, moves, memory, recall = draw_batch(data, cfg, game, space, rng, device,
                                                            tc.batch_size, with_moves)
        batch = TrainBatch(frames, actions, moves, memory)
        with amp_ctx:
            loss, fake_loss, info = dmd_losses(student, teacher, fake, batch, cfg.diffusion, dc,
                                               rng, gen)
        opt.zero_grad(set_to_none=True)
        fake_opt.zero_grad(set_to_none=True)
        (loss + fake_loss).backward()  # disjoint networks: one backward serves both
        gnorm = nn.utils.clip_grad_norm_(student.parameters(), tc.grad_clip)
        nn.utils.clip_grad_norm_(fake.parameters(), tc.grad_clip)
        opt.step()
        fake_opt.step()
        ema.update(student, step)
        step += 1
        frames_seen += frames.shape[0] * frames.shape[1]
        for k, v in info.items():
            running[k] = running.get(k, 0.0) + float(v)
        running["grad_norm"] = running.get("grad_norm", 0.0) + float(gnorm)
        bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            stats = {k: v / tc.log_every for k, v in running.items()}
            running = {}
            stats.update(step=step, lr=lr_at(step, cfg),
                         frames_per_s=frames_seen / (time.time() - t0), time=time.time())
            bar.set_postfix(dmd=f"{stats['dmd']:.4f}", flow=f"{stats['flow']:.4f}")
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(stats) + "\n")
        stopping = stop["signal"] is not None
        if step % tc.ckpt_every == 0 or step == tc.steps or stopping:
            save_student(out, student, fake, ema, opt, fake_opt, cfg, step)
        if stopping:
            print(f"\nstopped by signal at step {step}; checkpoint saved to {out}")
            break
    bar.close()
    return stats


def save_student(out: Path, student: Denoiser, fake: Denoiser, ema: EMA,
                 opt: torch.optim.Optimizer, fake_opt: torch.optim.Optimizer, cfg: Config,
                 step: int) -> None:
    ema_model = Denoiser(cfg.model)
    ema.copy_to(ema_model)
    prior = read_metrics(cfg.distill.teacher) or {}
    lineage = {"distilled_from": cfg.distill.teacher,
               "teacher_steps": int(prior.get("train_step", 0)) + int(prior.get("init_steps", 0))}
    save_checkpoint(out, ema_model, cfg, metrics={"train_step": step, **lineage})
    copy_side_files(cfg.distill.teacher, out, cfg)
    save_train_state(out, opt, {k: v.float() for k, v in student.state_dict().items()},
                     {"step": step, "lineage": lineage})
    (out / FAKE).mkdir(exist_ok=True)
    save_train_state(out / FAKE, fake_opt, {k: v.float() for k, v in fake.state_dict().items()},
                     {"step": step})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, parents=[common_flags(device=True)],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="the teacher checkpoint (else distill.teacher of --resume's run)")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CPU (bf16 autocast is default)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.out=runs/student")
    args = p.parse_args(argv)
    if args.teacher:
        cfg = student_config(args.teacher, args.overrides)
    else:
        raise SystemExit("worldmodel.training.distill: --teacher DIR is required")
    try:
        stats = distill(cfg, pick_device(args.device), args.resume, amp=not args.no_amp)
    except CheckpointError as e:
        raise SystemExit(f"worldmodel.training.distill: {e}") from None
    print(json.dumps(stats))


if __name__ == "__main__":
    run_cli(main)
