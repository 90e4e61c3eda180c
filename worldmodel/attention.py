"""Causal temporal attention across frames, with a KV cache of the frames before.

Every spatial position attends over the same position of the frames before it (and of its own
chunk, causally); `KVCache` keeps the keys and values of the last `max_len` context frames per
layer, so one new frame costs one pass over its own pixels. Temporal layers are
`...temporal.qkv` / `...temporal.out` (the temporal LoRA's targets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


@dataclass
class LayerCache:
    k: Tensor | None = None  # (b*h*w, heads, n, dh)
    v: Tensor | None = None


@dataclass
class KVCache:
    """Inference state of the temporal layers: keys/values of committed frames, oldest first.

    `positions` are the absolute frame indices held (a sliding window of at most `max_len`);
    `pos` is the index the next frame gets. Allocated empty, reset explicitly. A frame attends to
    at most `window` frames before it (default `max_len`; a larger cache with the same window
    recomputes exactly what a sliding cache computes, which the tests use).
    """

    max_len: int
    window: int = 0
    layers: dict[str, LayerCache] = field(default_factory=dict)
    positions: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    pos: int = 0

    def __post_init__(self) -> None:
        self.window = self.window or self.max_len

    def reset(self) -> None:
        self.layers.clear()
        self.positions = torch.zeros(0, dtype=torch.long)
        self.pos = 0

    def layer(self, name: str) -> LayerCache:
        return self.layers.setdefault(name, LayerCache())


def attention_mask(q_pos: Tensor, chunk_start: Tensor, k_pos: Tensor, n_cached: int,
                   window: int) -> Tensor:
    """Which keys each query may see: cached frames before its chunk, and its chunk up to itself,
    no further back than `window` frames (what a sliding KV cache of `window` frames holds).

    `q_pos`, `chunk_start`: (n,) for the frames in this call; `k_pos`: (n_cached + n,) positions of
    the cached keys followed by this call's frames. Returns (n, n_cached + n) bool.
    """
    kp = k_pos[None, :]
    recent = (q_pos[:, None] - kp) <= window
    in_cache = torch.arange(k_pos.numel(), device=k_pos.device)[None, :] < n_cached
    from_cache = in_cache & (kp < chunk_start[:, None])
    in_chunk = ~in_cache & (kp >= chunk_start[:, None]) & (kp <= q_pos[:, None])
    return (from_cache | in_chunk) & recent


class TemporalAttention(nn.Module):
    """Attention over frames at each spatial position, with a learned relative-time bias."""

    def __init__(self, channels: int, heads: int, max_frames: int):
        super().__init__()
        assert channels % heads == 0
        self.heads = heads
        self.max_frames = max_frames
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_(nn.Linear(channels, channels))
        self.rel_bias = nn.Parameter(torch.zeros(heads, max_frames))

    def forward(self, x: Tensor, b: int, dist: Tensor, allowed: Tensor, cache: LayerCache,
                commit: bool) -> Tensor:
        """`dist` (t, n_cached + t): query minus key frame position; `allowed` the same shape,
        bool (see `attention_mask`); both shared by every temporal layer of one forward."""
        bt, c, h, w = x.shape
        t = bt // b
        tokens = x.view(b, t, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, t, c)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        dh = c // self.heads
        q, k, v = (z.reshape(b * h * w, t, self.heads, dh).transpose(1, 2) for z in (q, k, v))
        if dist.shape[1] > t:  # cached frames come first
            k_all = torch.cat([cache.k, k], dim=2)
            v_all = torch.cat([cache.v, v], dim=2)
        else:
            k_all, v_all = k, v
        if commit:
            cache.k, cache.v = k_all, v_all
        bias = self.rel_bias[:, dist.clamp(0, self.max_frames - 1)]  # (heads, t, n)
        bias = bias.masked_fill(~allowed, float("-inf")).to(q.dtype)
        y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=bias[None])
        y = y.transpose(1, 2).reshape(b * h * w, t, c)
        y = self.out(y).view(b, h * w, t, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + y
