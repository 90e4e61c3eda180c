"""Reward and termination from pixels: a tiny CNN on (previous frame, frame) -> (reward, done).

Crafter's reward is the change in health / 10 plus 1 per achievement unlocked, and an episode ends
(`done`) when health reaches 0. All of it is on screen: the inventory row shows health and the
items an achievement adds, and the heart vanishes at death. So a frame pair is enough, and a
world model's imagined frames can be scored by the same head (what `simulator.gym_env` does).

    python -m worldmodel.training.reward_head --data data/crafter --out assets/crafter_reward

trains on `train_*` episodes (rewards and dones from their actions.jsonl), evaluates on
`heldout_*`, and writes `reward_head.safetensors` + `config.json` + `metrics.json`, atomically.
Rewards are regressed (MSE); `snap_reward` rounds a prediction to Crafter's 0.1 grid.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from worldmodel.config import ConfigError, from_dict
from worldmodel.data.dataset import to_float
from worldmodel.data.episode import list_episodes, load_episode, write_json_atomic
from worldmodel.cli import common_flags, run_cli

WEIGHTS = "reward_head.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"


class RewardHeadError(ValueError):
    """A reward-head checkpoint that is missing, corrupt or does not match its config."""


@dataclass
class RewardHeadConfig:
    frame_size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 48, 64])  # stride 2 each
    hidden: int = 64
    reward_step: float = 0.1  # Crafter's rewards lie on this grid (health / 10, +1 per unlock)


class RewardHead(nn.Module):
    """(prev, frame) floats (b, 3, h, w) in [-1, 1] -> (reward (b,), done logit (b,))."""

    def __init__(self, cfg: RewardHeadConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RewardHeadConfig()
        layers: list[nn.Module] = []
        c_in = 9  # prev, frame, and their difference (what changed is what pays)
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        side = cfg.frame_size // 2 ** len(cfg.channels)
        # Flatten, not pool: where a change happens (inventory row vs. world) is the signal.
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, cfg.hidden), nn.SiLU(),
                                nn.Linear(cfg.hidden, 2))

    def forward(self, prev: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        assert prev.shape == frame.shape and prev.shape[1:] == (3, self.cfg.frame_size,
                                                                 self.cfg.frame_size), prev.shape
        out = self.fc(self.convs(torch.cat([prev, frame, frame - prev], 1)))
        return out[:, 0], out[:, 1]

    @torch.inference_mode()
    def predict(self, prev: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (..., h, w, 3) pairs -> (reward snapped to the grid, done probability), (...)."""
        prev, frame = np.asarray(prev), np.asarray(frame)
        lead = frame.shape[:-3]
        dev = next(self.parameters()).device
        p = to_float(torch.from_numpy(prev.reshape(-1, *prev.shape[-3:]))).to(dev)
        f = to_float(torch.from_numpy(frame.reshape(-1, *frame.shape[-3:]))).to(dev)
        rew, logit = self(p, f)
        rew = snap_reward(rew.float().cpu().numpy(), self.cfg.reward_step)
        return rew.reshape(lead), torch.sigmoid(logit).float().cpu().numpy().reshape(lead)


def snap_reward(r: np.ndarray, step: float = 0.1) -> np.ndarray:
    return (np.round(np.asarray(r, np.float64) / step) * step + 0.0).astype(np.float32)  # no -0.0


def save_reward_head(path: str | Path, head: RewardHead, metrics: dict | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{WEIGHTS}.tmp{os.getpid()}"
    save_file({k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()},
              str(tmp), metadata={"format": "reward-head-v1"})
    os.replace(tmp, path / WEIGHTS)
    write_json_atomic(path / CONFIG, asdict(head.cfg))
    if metrics is not None:
        write_json_atomic(path / METRICS, metrics)
    return path


def load_reward_head(path: str | Path, device: str | torch.device = "cpu") -> RewardHead:
    path = Path(path)
    try:
        cfg = from_dict(RewardHeadConfig, json.loads((path / CONFIG).read_text()), "reward_head")
        state = load_file(str(path / WEIGHTS), device=str(device))
    except (OSError, json.JSONDecodeError, ConfigError, SafetensorError) as e:
        raise RewardHeadError(f"{path} is not a reward-head checkpoint: {e}") from e
    head = RewardHead(cfg)
    expected = head.state_dict()
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise RewardHeadError(f"{path / WEIGHTS} does not match its config")
    head.load_state_dict(state)
    return head.to(device).eval()


# ---------------------------------------------------------------------------------- training


@dataclass
class Transitions:
    """Every (frame t, frame t+1, reward t, done t) of a set of episodes; frames held once."""

    frames: np.ndarray  # (N, h, w, 3) uint8
    prev_idx: np.ndarray  # (M,) index of frame t; frame t+1 is prev_idx + 1
    rewards: np.ndarray  # (M,)
    dones: np.ndarray  # (M,)

    @classmethod
    def load(cls, root: str | Path, prefix: str, max_episodes: int = 0) -> "Transitions":
        paths = [p for p in list_episodes(root) if p.name.startswith(prefix)]
        if max_episodes:
            paths = paths[:max_episodes]
        if not paths:
            raise FileNotFoundError(f"no episodes named {prefix}* under {root}")
        frames, idx, rew, done = [], [], [], []
        total = 0
        for p in paths:
            ep = load_episode(p)
            frames.append(ep.frames)
            idx.append(total + np.arange(len(ep)))
            rew.append(ep.rewards)
            done.append(ep.dones)
            total += len(ep.frames)
        return cls(np.concatenate(frames), np.concatenate(idx), np.concatenate(rew),
                   np.concatenate(done))

    def __len__(self) -> int:
        return len(self.prev_idx)

    def batch(self, sel: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        i = self.prev_idx[sel]
        return (to_float(torch.from_numpy(self.frames[i])), to_float(torch.from_numpy(self.frames[i + 1])),
                torch.from_numpy(self.rewards[sel]).float(), torch.from_numpy(self.dones[sel]).float())


def sample_balanced(data: Transitions, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly uniform, 1/8 non-zero rewards, 1/32 deaths: events are ~5% and ~0.6% of steps.
    (More oversampling biases ambiguous steps toward a reward: false positives on zero steps.)"""
    events = np.flatnonzero(np.abs(data.rewards) > 1e-6)
    deaths = np.flatnonzero(data.dones)
    n_ev, n_d = batch // 8, batch // 32
    parts = [rng.integers(0, len(data), batch - n_ev - n_d)]
    if len(events):
        parts.append(rng.choice(events, n_ev))
    if len(deaths):
        parts.append(rng.choice(deaths, n_d))
    return np.concatenate(parts)


@torch.inference_mode()
def evaluate(head: RewardHead, data: Transitions, batch: int = 256) -> dict[str, float]:
    """Accuracy figures on every transition of `data` (no resampling)."""
    head.eval()
    preds, probs = [], []
    for s in range(0, len(data), batch):
        prev, frame, _, _ = data.batch(np.arange(s, min(s + batch, len(data))))
        r, logit = head(prev, frame)
        preds.append(r.cpu().numpy())
        probs.append(torch.sigmoid(logit).cpu().numpy())
    raw = np.concatenate(preds)
    prob = np.concatenate(probs)
    pred = snap_reward(raw, head.cfg.reward_step)
    true = snap_reward(data.rewards, head.cfg.reward_step)
    nz = true != 0
    ach_t, ach_p = true > 0.45, pred > 0.45
    done_p = prob > 0.5

    def pr(p: np.ndarray, t: np.ndarray, name: str) -> dict[str, float]:
        tp = float((p & t).sum())
        return {f"{name}_precision": tp / max(1, p.sum()), f"{name}_recall": tp / max(1, t.sum()),
                f"{name}_count": int(t.sum())}

    return {
        "transitions": len(data),
        "reward_mae": float(np.abs(raw - data.rewards).mean()),
        "reward_exact_acc": float((pred == true).mean()),
        "reward_exact_acc_always_zero": float((true == 0).mean()),
        "reward_exact_acc_nonzero": float((pred[nz] == true[nz]).mean()) if nz.any() else float("nan"),
        "reward_exact_acc_zero": float((pred[~nz] == 0).mean()),
        **pr(ach_p, ach_t, "achievement"),
        **pr(pred != 0, nz, "nonzero"),
        **pr(pred < 0, true < 0, "damage"),
        "done_acc": float((done_p == data.dones).mean()),
        **pr(done_p, data.dones.astype(bool), "done"),
    }


def train(data: Transitions, steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0,
          minutes: float = 0.0, cfg: RewardHeadConfig | None = None, log_every: int = 200,
          quiet: bool = False) -> tuple[RewardHead, dict]:
    """AdamW, linear decay to 0 over `steps` (or over `minutes` of wall clock, if that ends first)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = RewardHead(cfg).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    t0 = time.time()
    budget = minutes * 60 if minutes else float("inf")
    step, run = 0, 0.0
    while step < steps:
        frac = max(step / steps, (time.time() - t0) / budget)
        if frac >= 1:
            break
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * (1 - frac)
        prev, frame, rew, done = data.batch(sample_balanced(data, batch, rng))
        # Light noise: the head also scores imagined frames, which are never pixel-exact.
        noise = lambda x: x + 0.03 * torch.randn_like(x)  # noqa: E731
        r, logit = head(noise(prev), noise(frame))
        loss = F.mse_loss(r, rew) + 0.1 * F.binary_cross_entropy_with_logits(logit, done)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run += loss.item()
        if not quiet and step % log_every == 0:
            print(f"step {step} loss {run / log_every:.4f} ({time.time() - t0:.0f}s)", flush=True)
            run = 0.0
    head.eval()
    return head, {"train_steps": step, "train_seconds": round(time.time() - t0, 1),
                  "train_transitions": len(data), "batch": batch, "lr": lr, "seed": seed}


def main(argv: list[str] | None = None) -> None:
    shared = common_flags(out={"required": True, "help": "checkpoint folder to write"},
                          seed=True,
                          threads={"default": 1})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of episodes (train_* and heldout_*)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--minutes", type=float, default=4.0, help="wall-clock cap on training (0 = none)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-episodes", type=int, default=0, help="train on the first N only (0 = all)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set = Transitions.load(args.data, "train_", args.max_episodes)
    heldout = Transitions.load(args.data, "heldout_")
    print(f"{len(train_set)} train transitions, {len(heldout)} heldout")
    cfg = RewardHeadConfig(frame_size=train_set.frames.shape[1])
    head, info = train(train_set, args.steps, args.batch, args.lr, args.seed, args.minutes, cfg)
    metrics = {"heldout": evaluate(head, heldout), **info}
    save_reward_head(args.out, head, metrics)
    print(json.dumps(metrics["heldout"], indent=2))
    print(f"wrote {args.out}/{WEIGHTS} ({(Path(args.out) / WEIGHTS).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    run_cli(main)
