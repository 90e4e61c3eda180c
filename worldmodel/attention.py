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

    RECALL_BIAS = -3.0  # a gaining model attends to its remembered frames little at first

    def __init__(self, channels: int, heads: int, max_frames: int, recall_dim: int = 0):
        super().__init__()
        assert channels % heads == 0
        self.heads = heads
        self.max_frames = max_frames
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_(nn.Linear(channels, channels))
        self.rel_bias = nn.Parameter(torch.zeros(heads, max_frames))
        if recall_dim:  # worldmodel.recall: remembered frames' logits, keys and values moved by
            # their relative pose (embedded to recall_dim by the denoiser)
            self.recall_bias = zero_(nn.Linear(recall_dim, heads))
            nn.init.constant_(self.recall_bias.bias, self.RECALL_BIAS)
            self.recall_key = zero_(nn.Linear(recall_dim, channels))
            self.recall_value = zero_(nn.Linear(recall_dim, channels))

    def forward(self, x: Tensor, b: int, dist: Tensor, allowed: Tensor, cache: LayerCache,
                commit: bool, recall: tuple | None = None) -> Tensor:
        """`dist` (t, n_cached + t): query minus key frame position; `allowed` the same shape,
        bool (see `attention_mask`); both shared by every temporal layer of one forward.
        `recall`: (k, v, pose embedding, valid) of remembered frames (worldmodel.recall)."""
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
        if recall is None:
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=bias[None])
        else:
            y = self._with_recall(q, k_all, v_all, bias, b, recall)
        y = y.transpose(1, 2).reshape(b * h * w, t, c)
        y = self.out(y).view(b, h * w, t, c).permute(0, 2, 3, 1).reshape(bt, c, h, w)
        return x + y

    def _with_recall(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, b: int,
                     recall: tuple) -> Tensor:
        """Attention over the cached frames and m remembered ones: one softmax over both, the
        remembered keys and values moved by their pose relative to each target (`recall_key`,
        `recall_value`) and their logits biased by it (`recall_bias`), absent ones masked."""
        k_mem, v_mem, pose, valid = recall  # (b*hw, heads, m, dh) x2, (b, t, m, e), (b, m)
        bhw, heads, t, dh = q.shape
        hw, m = bhw // b, k_mem.shape[2]
        scale = dh ** -0.5
        logits = (q @ k.transpose(-1, -2)) * scale + bias[None]  # (b*hw, heads, t, n)
        qb = q.reshape(b, hw, heads, t, dh)
        key_off = self.recall_key(pose).reshape(b, t, m, heads, dh).to(q.dtype)
        val_off = self.recall_value(pose).reshape(b, t, m, heads, dh).to(q.dtype)
        mem = torch.einsum("bshtd,bshmd->bshtm", qb, k_mem.reshape(b, hw, heads, m, dh).to(q.dtype))
        mem = mem + torch.einsum("bshtd,btmhd->bshtm", qb, key_off)
        gate = self.recall_bias(pose).permute(0, 3, 1, 2)[:, None].to(q.dtype)  # (b, 1, heads, t, m)
        mem = (mem * scale + gate).masked_fill(~valid[:, None, None, None, :], float("-inf"))
        a = torch.cat([logits.reshape(b, hw, heads, t, -1), mem], -1).softmax(-1)
        n = k.shape[2]
        y = a[..., :n].reshape(bhw, heads, t, n) @ v
        a_mem = a[..., n:]
        y = y.reshape(b, hw, heads, t, dh) + a_mem @ v_mem.reshape(b, hw, heads, m, dh).to(q.dtype)
        y = y + torch.einsum("bshtm,btmhd->bshtd", a_mem, val_off)
        return y.reshape(bhw, heads, t, dh)
