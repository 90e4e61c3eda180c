"""Where tensors live: the default device, and noise generators that draw on it.

Its own small module so that whatever only needs a device (the session, the memory, the
benchmarks) does not import the trainer. Every entry point runs on CUDA when it is present, so
a hot path must stay device-agnostic: a `torch.Generator` draws only on its own device (make it
with `generator`, or draw on the host and move the result), and numpy reads only host memory
(`.cpu().numpy()`).
"""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name` (cpu, cuda, cuda:1, ...), or CUDA when it is present and the CPU otherwise."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A seeded generator for draws made on `device` (`torch.rand(..., device=device,
    generator=g)` refuses a generator of another device)."""
    return torch.Generator(torch.device(device)).manual_seed(int(seed))
