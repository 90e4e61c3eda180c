"""Helpers shared by the memory tests: seeded rollouts and a synthetic scrolling sequence."""

from __future__ import annotations

import torch

from conftest import smooth_frames
from memory.lora import lora_tensors
from worldmodel.rollout import Rollout


def rollout_frames(model, cfg, steps: int = 3, seed: int = 0) -> torch.Tensor:
    """A seeded rollout: context commit (temporal k/v into the cache) and generated frames."""
    s = cfg.model.frame_size
    ro = Rollout(model, cfg, seed=seed)
    ro.reset(smooth_frames((1, 3, 3, s, s), seed), torch.tensor([[-1, 1, 2]]))
    return torch.stack([ro.step(torch.tensor([a])) for a in range(1, steps + 1)], 1)


def randomize_lora_(model, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_tensors(model).values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def scroll_sequence(cfg, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image shifted a pixel per frame, (1, n, 3, s, s), with 'move right' actions (1, n)."""
    s = cfg.model.frame_size
    img = smooth_frames((1, 3, s, 2 * s), seed)
    frames = torch.stack([img[..., i:i + s] for i in range(n)], 1)
    return frames, torch.full((1, n), 2, dtype=torch.long)
