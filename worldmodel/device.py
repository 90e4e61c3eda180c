"""Where tensors live: the default device, and noise generators that draw on it.

Its own small module so that whatever only needs a device (the session, the memory, the
benchmarks) does not import the trainer. Every entry point runs on CUDA when it is present, so
the helpers here are what keeps a hot path device-agnostic: a `torch.Generator` draws only on its
own device, and numpy only reads host memory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def pick_device(name: str | None = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1, ...), or CUDA when it is present and the CPU otherwise."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A seeded generator for draws made on `device` (`torch.rand(..., device=device,
    generator=g)` refuses a generator of another device)."""
    return torch.Generator(torch.device(device)).manual_seed(int(seed))


def to_numpy(x: Tensor) -> np.ndarray:
    """A tensor on any device as a host numpy array (detached)."""
    return x.detach().cpu().numpy()
