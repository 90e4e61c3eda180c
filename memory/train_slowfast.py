"""Slow-fast training: the base model learns to use a memory that is fast-learned as it goes.

    python -m memory.train_slowfast --config configs/crafter.yaml --init runs/crafter \
        --out runs/slowfast --minutes 10 [--plain] [key=value ... memory.key=value ...]

Each training episode is a segment of a real episode. A fresh adapter (B = 0) first fast-learns
the segment's opening context, then for each chunk of `--chunk` frames that follows:

1. slow: the base model's loss on the chunk, predicted frame by frame from the frames before it
   (teacher forced, with actions, as in play), *with the adapter applied*; gradients accumulate
   into the base weights only. `--objective train` uses the world model's own training loss
   on the window ending with the chunk instead (self-forcing and context corruption included):
   the plain teacher-forced loss alone let 700 batch-1 steps degrade the base's rollouts;
2. fast: the adapter takes `memory.steps_per_update` Adam steps on the memory loss of the window
   ending with that chunk (base frozen), exactly as the live fast learner does.

After each episode (or `--accum` of them) the base takes one AdamW step (first-order: no gradient
flows through the fast updates, as in SlowFast-VGen's alternation). `--plain` runs the same loop
with the adapter disabled and no fast steps: the controlled baseline (same data, loss, optimiser).
Writes a normal checkpoint (EMA base weights, no adapter) and `slowfast_log.jsonl` to --out; the
log's `memory_gain` is the chunk loss without minus with the adapter (does memory help?).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from memory.config import MemoryConfig, load_configs
from memory.fast_learner import fast_loss, opposite_actions
from memory.lora import add_lora, lora_tensors, reset_lora, set_lora_enabled
from worldmodel.actions import get_action_space
from worldmodel.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import Config, DiffusionConfig, to_dict
from worldmodel.data import list_episodes, load_episode
from worldmodel.data.dataset import to_float
from worldmodel.diffusion import TrainBatch, add_noise, sample_levels, training_loss
from worldmodel.dynamics import Conditioning, Denoiser, KVCache
from worldmodel.device import generator, pick_device
from worldmodel.training.train import lr_at


def next_chunk_loss(model: Denoiser, frames: Tensor, act: Tensor, drop: Tensor,
                    dcfg: DiffusionConfig, n_new: int, context: int, gen: torch.Generator) -> Tensor:
    """MSE on x_0 of the last `n_new` frames of a window, each predicted from the (lightly
    noised) `context` frames before it and its action: the one-frame-per-step play schedule.
    Noise is drawn where `gen` lives and moved to the frames' device."""
    b, n = frames.shape[:2]
    dev, at = frames.device, gen.device
    t_ctx = torch.rand(b, n, generator=gen, device=at).to(dev) * dcfg.train_context_noise_max
    ctx = add_noise(frames, t_ctx, torch.randn(frames.shape, generator=gen, device=at).to(dev))
    has_prev = torch.ones(b, n, dtype=torch.bool, device=dev)
    has_prev[:, 0] = False
    prev = torch.cat([torch.zeros_like(ctx[:, :1]), ctx[:, :-1]], 1)
    t_prev = torch.cat([torch.ones_like(t_ctx[:, :1]), t_ctx[:, :-1]], 1)
    cache = KVCache(max_len=n, window=context)
    model(ctx, prev, t_ctx, t_prev, has_prev, act, drop, cache=cache, commit=True)
    s = n - n_new
    x0 = frames[:, s:]
    t = sample_levels((b, n_new), dcfg, gen, at).to(dev)
    xt = add_noise(x0, t, torch.randn(x0.shape, generator=gen, device=at).to(dev))
    cache.pos = s
    pred = model(xt, prev[:, s:], t, t_prev[:, s:], has_prev[:, s:], act[:, s:], drop[:, s:],
                 cache=cache, chunk_start=torch.arange(s, n, device=dev), 
                 conditioning=Conditioning(anchor=frames[:, s - 1:n - 1]))
    return (pred.float() - x0.float()).pow(2).mean()


class Segments:
    """Random segments of `length` frames (uint8) and the actions that produced them."""

    def __init__(self, root: str, prefix: str, length: int, max_episodes: int, space_name: str):
        self.space = get_action_space(space_name)
        self.episodes = []
        for p in list_episodes(root):
            if p.name.startswith(prefix):
                ep = load_episode(p)
                if len(ep.frames) >= length:
                    self.episodes.append(ep)
            if max_episodes and len(self.episodes) >= max_episodes:
                break
        if not self.episodes:
            raise ValueError(f"no {prefix}* episode of {length} frames under {root}")
        self.length = length

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ep = self.episodes[rng.integers(len(self.episodes))]
        s = int(rng.integers(0, len(ep.frames) - self.length + 1))
        acts = np.concatenate([[-1], ep.actions])[s:s + self.length]  # acts[i] made frame i
        acts[0] = -1
        return ep.frames[s:s + self.length], acts


OBJECTIVES = ("chunk", "train")


def slow_loss(model: Denoiser, objective: str, frames: Tensor, act: Tensor, drop: Tensor,
              cfg: Config, chunk: int, rng: np.random.Generator, gen: torch.Generator) -> Tensor:
    """The base's loss on a window ending with the new chunk: `chunk` -> `next_chunk_loss` (the
    chunk predicted frame by frame, plain teacher forcing); `train` -> the world model's own
    training loss on the window's last `data.window` frames (self-forcing, context corruption and
    chunked targets included, so fine-tuning keeps what makes rollouts robust; it draws on the
    frames' device, so `gen` must live there)."""
    ctx_len = cfg.data.window - 1
    if objective == "chunk":
        return next_chunk_loss(model, frames, act, drop, cfg.diffusion, chunk, ctx_len, gen)
    w = slice(max(0, frames.shape[1] - cfg.data.window), frames.shape[1])
    return training_loss(model, TrainBatch(frames[:, w], act[:, w]), cfg.diffusion, rng, gen)[0]


def train(cfg: Config, mcfg: MemoryConfig, out: Path, init: str | None, minutes: float,
          max_episodes: int, segment: int, chunk: int, accum: int, plain: bool,
          device: torch.device, log_every: int = 5, max_steps: int = 0,
          objective: str = "chunk") -> dict:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    tc = cfg.train
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed + 7)  # host draws (the fast learner's, dropout)
    # The slow loss's draws: the world model's training loss makes them on the model's device.
    slow_gen = gen if device.type == "cpu" else generator(device, tc.seed + 8)
    model = load_checkpoint(init, device)[0] if init else Denoiser(cfg.model).to(device)
    base = dict(model.named_parameters())  # the same Parameter objects survive the injection
    add_lora(model, mcfg)
    for p in base.values():
        p.requires_grad_(True)
    lora = lora_tensors(model)
    set_lora_enabled(model, not plain)
    slow = torch.optim.AdamW(base.values(), lr=tc.lr, weight_decay=tc.weight_decay)
    fast = torch.optim.Adam(lora.values(), lr=mcfg.lr)
    ema = {k: v.detach().clone().float() for k, v in base.items()}
    space = get_action_space(cfg.model.action_space)
    opposite = opposite_actions(space)
    data = Segments(cfg.data.train, cfg.data.split_prefix, segment, max_episodes, space.name)
    ctx_len = cfg.data.window - 1
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "slowfast_log.jsonl"
    t0 = time.time()
    episodes = steps = 0
    running: dict[str, list[float]] = {}
    while time.time() - t0 < minutes * 60 and not (max_steps and episodes >= max_steps):
        u8, acts = data.sample(rng)
        frames = to_float(torch.from_numpy(u8))[None].to(device)
        a = torch.from_numpy(acts)[None]
        act, drop = space.encode(a.clamp(min=0)).to(device), (a < 0).to(device)
        dropped = torch.rand(drop.shape, generator=gen) < cfg.diffusion.action_dropout
        drop_slow = drop | dropped.to(device)
        reset_lora(model, mcfg.seed)
        fast.state.clear()

        def fast_update(end: int) -> float:
            lo = max(0, end - mcfg.window)
            for _ in range(mcfg.steps_per_update):
                loss = fast_loss(model, frames[:, lo:end], a[:, lo:end], space, opposite,
                                 cfg.diffusion, mcfg, gen)
                grads = torch.autograd.grad(loss, list(lora.values()))
                for p, g in zip(lora.values(), grads):
                    p.grad = g
                torch.nn.utils.clip_grad_norm_(lora.values(), mcfg.grad_clip)
                fast.step()
            return float(loss.detach())

        if not plain:
            fast_update(ctx_len)  # the memory starts from the real context, as in play
        for s in range(ctx_len, segment - chunk + 1, chunk):
            w = slice(max(0, s - ctx_len), s + chunk)  # the chunk and the context before it
            state, np_state = slow_gen.get_state(), rng.bit_generator.state
            loss = slow_loss(model, objective, frames[:, w], act[:, w], drop_slow[:, w], cfg,
                             chunk, rng, slow_gen)
            (loss / accum).backward(inputs=list(base.values()))
            running.setdefault("loss", []).append(float(loss.detach()))
            if not plain and steps % log_every == 0:
                with torch.no_grad():  # the same draw without the adapter: what memory adds
                    after, np_after = slow_gen.get_state(), rng.bit_generator.state
                    slow_gen.set_state(state)
                    rng.bit_generator.state = np_state
                    set_lora_enabled(model, False)
                    bare = slow_loss(model, objective, frames[:, w], act[:, w], drop_slow[:, w],
                                     cfg, chunk, rng, slow_gen)
                    slow_gen.set_state(after)
                    rng.bit_generator.state = np_after
                    set_lora_enabled(model, True)
                running.setdefault("memory_gain", []).append(float(bare) - float(loss.detach()))
            if not plain:
                running.setdefault("fast_loss", []).append(fast_update(s + chunk))
            steps += 1
        episodes += 1
        if episodes % accum == 0:
            for g in slow.param_groups:  # the plain trainer's warmup, per base step
                g["lr"] = lr_at(episodes // accum - 1, cfg)
            torch.nn.utils.clip_grad_norm_(base.values(), tc.grad_clip)
            slow.step()
            slow.zero_grad(set_to_none=True)
            d = min(tc.ema_decay, (1 + episodes) / (10 + episodes))
            with torch.no_grad():
                for k, v in base.items():
                    ema[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
        if episodes % log_every == 0:
            row = {k: float(np.mean(v)) for k, v in running.items()}
            row.update(episodes=episodes, chunks=steps, seconds=time.time() - t0)
            running = {}
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    plain_model = Denoiser(cfg.model)
    plain_model.load_state_dict({k: v.to(plain_model.state_dict()[k].dtype) for k, v in ema.items()})
    info = {"slowfast_episodes": episodes, "slowfast_chunks": steps, "plain": plain, "init": init,
            "memory": to_dict(mcfg), "segment": segment, "chunk": chunk, "objective": objective}
    save_checkpoint(out, plain_model, cfg, metrics=info)
    return info


def main(argv: list[str] | None = None) -> dict:
    shared = common_flags(out={"default": "runs/slowfast", "help": "checkpoint + log folder"},
                          device=True)
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config; an optional memory: section")
    p.add_argument("--init", help="start from this checkpoint")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget")
    p.add_argument("--segment", type=int, default=24, help="frames per training episode")
    p.add_argument("--chunk", type=int, default=4, help="frames per chunk")
    p.add_argument("--accum", type=int, default=1, help="episodes per base step")
    p.add_argument("--episodes", type=int, default=50, help="real episodes loaded (0: all)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many training episodes")
    p.add_argument("--plain", action="store_true", help="the same loop without memory (baseline)")
    p.add_argument("--objective", choices=OBJECTIVES, default="chunk",
                   help="the base's loss: the next chunk, teacher forced (chunk), or the world "
                        "model's training loss on the window ending with it (train)")
    p.add_argument("overrides", nargs="*", help="train.lr=1e-4 memory.lr=1e-3 ...")
    args = p.parse_args(argv)
    cfg, mcfg = load_configs(args.config, args.overrides)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if Path(args.out).resolve() == Path(cfg.train.out).resolve():
        raise SystemExit(f"--out {args.out} is the config's plain-training folder; pick another")
    info = train(cfg, mcfg, Path(args.out), args.init, args.minutes, args.episodes, args.segment,
                 args.chunk, args.accum, args.plain, pick_device(args.device),
                 max_steps=args.steps, objective=args.objective)
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    run_cli(main)
