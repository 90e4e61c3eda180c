"""Train the world model: `python -m worldmodel.training.train --config configs/crafter.yaml key=value ...`

Seeded, with a progress bar, EMA weights, bf16 autocast (CUDA always; CPU with train.amp), atomic
checkpoints every `train.ckpt_every` steps into `train.out` (EMA weights + config: a loadable
checkpoint; optimizer and raw weights apart, for `--resume`), and a training curve in
`train_log.jsonl`. Many GPUs (or CPU processes): `torchrun --nproc_per_node N -m worldmodel.training.train`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from worldmodel.actions import get_action_space
from worldmodel.checkpoint import (TRAIN_STATE, CheckpointError, check_state_dict,
                                   load_checkpoint, load_train_state, read_metrics,
                                   save_checkpoint, save_train_state)
from worldmodel.config import Config, DiffusionConfig, load_config, to_dict
from worldmodel.data.dataset import WindowDataset, to_float
from worldmodel.device import generator, pick_device
from worldmodel.diffusion import TrainBatch, training_loss
from worldmodel.dynamics import Denoiser
from worldmodel.game import find_game
from worldmodel.cli import common_flags, run_cli


class DiffusionLoss(nn.Module):
    """The denoiser plus its loss in one forward, so DDP sees one forward per backward."""

    def __init__(self, model: Denoiser, cfg: DiffusionConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, frames: torch.Tensor, actions: torch.Tensor, rng: np.random.Generator,
                gen: torch.Generator, moves: torch.Tensor | None = None,
                memory: torch.Tensor | None = None,
                recall: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, dict]:
        batch = TrainBatch(frames, actions, moves, memory)
        if recall is not None:
            batch.recall_frames, batch.recall_pose, batch.recall_valid = recall
        return training_loss(self.model, batch, self.cfg, rng, gen)


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm start
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def init_from(model: Denoiser, path: str, device: torch.device, verbose: bool = True) -> list[str]:
    """Load a checkpoint's weights into `model`. Modules the config adds and the checkpoint lacks
    (e.g. `model.shift_kernel` turned on) keep their fresh initialisation; anything else that
    differs is an error naming it. Returns the names left fresh."""
    src = load_checkpoint(path, device)[0].state_dict()
    own = model.state_dict()
    fresh = sorted(set(own) - set(src))
    check_state_dict(src, {k: v for k, v in own.items() if k in src}, f"--init {path}",
                     "the training config", CheckpointError)
    model.load_state_dict({**own, **src})
    if fresh and verbose:
        print(f"--init {path}: {len(fresh)} tensors the checkpoint lacks start fresh: "
              f"{', '.join(fresh)}", flush=True)
    return fresh


MOVE_LR_MULT = 10.0
RECALL_LR_MULT = 10.0


def lr_at(step: int, cfg: Config) -> float:
    warm = cfg.train.warmup_steps
    return cfg.train.lr * min(1.0, (step + 1) / max(1, warm))


def train(cfg: Config, device: torch.device, resume: bool = False, init: str | None = None,
          amp: bool = True, quiet: bool = False) -> dict:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed + rank)
    rng = np.random.default_rng(tc.seed + 1000 * rank)
    gen = generator(device, tc.seed + 7 + rank)
    out = Path(tc.out)
    space = get_action_space(cfg.model.action_space)
    game = find_game(cfg.model.game_name)  # the anchor head's targets, the canvases
    view_memory = cfg.model.view_memory
    data = open_data(cfg, quiet=rank != 0 or quiet)

    model = Denoiser(cfg.model).to(device)
    lineage: dict = {}  # where the weights came from, kept in every checkpoint's metrics
    fresh = [n for n, _ in model.named_parameters()]
    if init:
        fresh = init_from(model, init, device, verbose=rank == 0 and not quiet)
        lineage = init_lineage(init)
    if view_memory and "move.fill" in fresh:
        with torch.no_grad():  # every rank draws the same tiles: the same start everywhere
            model.move.fill.copy_(game.fill_init(data.frames, np.random.default_rng(tc.seed)))
    model_move = model.move  # the anchor head, supervised with the real decisions
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    # A move head is a small classifier that starts from scratch beside a trained network: it
    # learns at MOVE_LR_MULT times the rate of the rest.
    # Recall's layers (worldmodel.recall) likewise start from nothing beside a trained network:
    # at lr 3e-4 their gate moved 0.004 of the 3 it must in 100 steps (measured), so they learn at
    # RECALL_LR_MULT times the rate.
    head = [p for n, p in model.named_parameters() if n.startswith("move.")]
    recall = [p for n, p in model.named_parameters() if ".recall_" in n or n.startswith("recall_")]
    taken = {id(p) for p in head + recall}
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups = [{"params": rest, "lr_mult": 1.0}]
    if head:
        groups.append({"params": head, "lr_mult": MOVE_LR_MULT})
    if recall:
        groups.append({"params": recall, "lr_mult": RECALL_LR_MULT})
    opt = torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    ema = EMA(model, tc.ema_decay)
    step = 0
    curve_path = out / "train_log.jsonl"
    if resume and (out / TRAIN_STATE).is_file():
        raw, opt_state, info = load_train_state(out)
        model.load_state_dict(raw)
        opt.load_state_dict(opt_state)
        ema_model, _ = load_checkpoint(out, device)
        ema.shadow = {k: v.float().clone() for k, v in ema_model.state_dict().items()}
        step = int(info["step"])
        lineage = info.get("lineage", lineage)
        rng = np.random.default_rng([tc.seed + 1000 * rank, step])
        gen.manual_seed(tc.seed + 7 + rank + 100003 * step)
    loss_mod: nn.Module = DiffusionLoss(model, cfg.diffusion)
    if distributed:
        # With a move head the soft shift kernel's layers are not used (they stay for --init).
        loss_mod = nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(cfg.model.committed_move))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    use_amp = device.type == "cuda" or amp
    amp_ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)
    per_rank = max(1, tc.batch_size // world)
    bar = tqdm(total=tc.steps, initial=step, desc="train", disable=rank != 0 or quiet,
               dynamic_ncols=True)
    stop = {"signal": None}

    def request_stop(signum, frame):  # finish the step, checkpoint, exit: nothing is lost
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):  # every rank: torchrun forwards the signal
        signal.signal(sig, request_stop)
    t0 = time.time()
    frames_seen = 0
    stats: dict[str, float] = {}
    running: dict[str, float] = {}
    while step < tc.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg) * g["lr_mult"]
        frames, actions, moves, memory, recall = draw_batch(data, cfg, game, space, rng, device,
                                                            per_rank, model_move is not None)
        with amp_ctx:
            loss, info = loss_mod(frames, actions, rng, gen, moves, memory, recall)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        ema.update(model, step)
        step += 1
        frames_seen += frames.shape[0] * frames.shape[1] * world
        for k, v in info.items():
            running[k] = running.get(k, 0.0) + float(v)
        running["grad_norm"] = running.get("grad_norm", 0.0) + float(gnorm)
        bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            stats = {k: v / tc.log_every for k, v in running.items()}
            running = {}
            el = time.time() - t0
            stats.update(step=step, lr=lr_at(step, cfg), frames_per_s=frames_seen / el, time=time.time())
            if "copy_mse" in stats and stats["loss"] > 0:
                stats["psnr_gain_over_copy_db"] = 10 * math.log10(stats["copy_mse"] / stats["loss"])
            if rank == 0:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", fps=f"{stats['frames_per_s']:.0f}")
                with open(curve_path, "a") as f:
                    f.write(json.dumps(stats) + "\n")
        stopping = stop["signal"] is not None
        if distributed:  # all ranks stop at the same step, so no collective is left waiting
            flag = torch.tensor([float(stopping)], device=device)
            dist.all_reduce(flag)
            stopping = bool(flag.item())
        if rank == 0 and (step % tc.ckpt_every == 0 or step == tc.steps or stopping):
            save(out, model, ema, opt, cfg, step, lineage)
        if stopping:
            if rank == 0:
                print(f"\nstopped by signal at step {step}; checkpoint saved to {out}")
            break
    bar.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return stats


def open_data(cfg: Config, quiet: bool = True) -> WindowDataset:
    """The training windows a config names (with memory canvases and recalled frames where its
    model takes them)."""
    view_memory = cfg.model.view_memory
    data = WindowDataset(cfg.data.train, cfg.data.window, get_action_space(cfg.model.action_space),
                         cfg.data.split_prefix, cfg.data.max_episodes, cfg.model.frame_size,
                         cfg.data.extra_train, poses=view_memory,
                         imagined=view_memory and cfg.data.imagined_memory > 0,
                         recall=cfg.model.recall)
    if view_memory and cfg.data.imagined_memory > 0 and not quiet:
        print(f"memories from the model's own rollouts: {data.num_imagined} of "
              f"{data.num_episodes} episodes have an imagined copy (memory.imagined)")
    return data


def draw_batch(data: WindowDataset, cfg: Config, game, space, rng: np.random.Generator,
               device: torch.device, batch: int, with_moves: bool) -> tuple:
    """One batch of training windows on `device`: frames, encoded actions, the anchor head's
    real decisions (`with_moves`), memory canvases (a view-memory model), recalled frames (a
    recall model); the absent ones None."""
    memory = None
    if cfg.model.view_memory:
        frames_u8, acts, canvases = data.sample(batch, rng, canvases=True,
                                                imagined=cfg.data.imagined_memory)
        memory = torch.from_numpy(canvases).to(device, non_blocking=True)
    else:
        frames_u8, acts = data.sample(batch, rng)
    frames = to_float(torch.from_numpy(frames_u8)).to(device, non_blocking=True)
    actions = space.encode(torch.from_numpy(acts)).to(device)
    moves = (torch.from_numpy(game.window_choices(frames_u8, acts, space)).to(device)
             if with_moves else None)
    recall = None
    if cfg.model.recall:
        r_frames, r_pose, r_valid = data.sample_recall(data.last_starts)
        recall = (to_float(torch.from_numpy(r_frames)).to(device),
                  torch.from_numpy(r_pose).to(device), torch.from_numpy(r_valid).to(device))
    return frames, actions, moves, memory, recall


def init_lineage(path: str) -> dict:
    """What a run started with `--init path` continues: that checkpoint and the steps behind it
    (its own and those of whatever it started from)."""
    prior = read_metrics(path) or {}
    before = int(prior.get("train_step", 0)) + int(prior.get("init_steps", 0))
    return {"init_from": str(path), "init_steps": before}


def save(out: Path, model: Denoiser, ema: EMA, opt: torch.optim.Optimizer, cfg: Config, step: int,
         lineage: dict | None = None) -> None:
    ema_model = Denoiser(cfg.model)
    ema.copy_to(ema_model)
    lineage = lineage or {}
    save_checkpoint(out, ema_model, cfg, metrics={"train_step": step, **lineage})
    save_train_state(out, opt, {k: v.float() for k, v in model.state_dict().items()},
                     {"step": step, "lineage": lineage})


def main(argv: list[str] | None = None) -> None:
    shared = common_flags(device=True)
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from train.out if it has state")
    p.add_argument("--init", help="start from this checkpoint's weights")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CPU (bf16 autocast is default)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=1e-3")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    stats = train(cfg, pick_device(args.device), args.resume, args.init, amp=not args.no_amp)
    print(json.dumps(stats))


if __name__ == "__main__":
    run_cli(main)
