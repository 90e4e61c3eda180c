"""The denoiser: a per-frame 2D UNet, causal across frames through temporal attention.

Each frame is denoised by a small UNet that sees its noisy self and, stacked on the input
channels, the frame before it (so copying and shifting what is on screen is a local operation).
Longer context reaches it through temporal attention blocks in the encoder and middle, where every
spatial position attends causally over the frames before it. Each frame carries its own noise
level (and its previous frame's), and its own action, so one network serves teacher-free training,
masked-conditional chunks and one-frame-per-step rollouts.

The network predicts x_0 as `anchor + residual`, where the anchor is the last *clean* frame before
the frame's chunk (the model's own output at inference): a static view is the zero residual, and
the noise that augments the context inputs never reaches the output through the skip. With
`shift_kernel` set, the anchor is first moved by a predicted per-frame kernel under a predicted
mask (`ShiftHead`), so a camera move is a copy too, and textures survive long rollouts instead of
being redrawn every frame.

Shapes: frames are `(b, t, 3, h, w)` floats in [-1, 1]; levels `(b, t)` in [0, 1]; actions
`(b, t, action_dim)`. Temporal layers are `...temporal.qkv` / `...temporal.out` (LoRA targets).
Because temporal attention sits only in the encoder and middle, writing a finished frame into the
KV cache (`commit`) runs only that half of the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.actions import get_action_space
from worldmodel.attention import (KVCache, LayerCache, TemporalAttention,  # noqa: F401 (LayerCache:
                                  attention_mask, zero_)  # re-exported)
from worldmodel.config import ModelConfig
from worldmodel.game import find_game
from worldmodel.known import Known  # noqa: F401 (Conditioning's annotation)
from worldmodel.recall import Recall  # noqa: F401 (Conditioning's annotation)


@dataclass
class Conditioning:
    """What a denoiser call is conditioned on beyond the frames, levels and actions: one bundle
    the game's features travel in, so the core's signature names none of them."""

    anchor: Tensor | None = None  # (b, n or 1, 3, h, w) clean frame the residual is added to
    choice: Tensor | None = None  # (b, n) long: the anchor head's decisions (training: the real ones)
    memory: Tensor | None = None  # (b, n or 1, C, H', W') the game's memory canvases
    recall: "Recall | None" = None  # remembered frames (worldmodel.recall), for a recall model
    known: "Known | None" = None  # pixels the sampler keeps (worldmodel.known); not the network's
    want_logits: bool = False  # also return the anchor head's logits (b * n, K)


def anchor_head(cfg: ModelConfig, action_dim: int) -> nn.Module | None:
    """The game's anchor head for this config (`Game.anchor_head`), or None. The game is
    `cfg.game`, else the one named like the action space, if any."""
    game = find_game(cfg.game_name)
    head = None if game is None else game.anchor_head(cfg, action_dim)
    if head is None and (cfg.committed_move or cfg.view_memory):
        raise ValueError(f"model.committed_move / model.view_memory need a game with an anchor "
                         f"head; {cfg.game_name!r} has none")
    return head


def fourier_features(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    ang = (t.float()[..., None] * 1000.0) * freqs
    return torch.cat([ang.sin(), ang.cos()], -1)


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4), c)


class ResBlock(nn.Module):
    """Conv residual block with per-frame scale/shift from the conditioning embedding (AdaGN)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.mod = zero_(nn.Linear(emb_dim, 2 * c_out))
        self.norm2 = group_norm(c_out)
        self.conv2 = zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.mod(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class TemporalBlock(nn.Module):
    """A ResBlock followed by temporal attention; named `temporal` for LoRA targeting."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, heads: int, max_frames: int,
                 temporal: bool, recall_dim: int = 0):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim)
        self.temporal = (TemporalAttention(c_out, heads, max_frames, recall_dim) if temporal
                         else None)


def shift_image(x: Tensor, kernel: Tensor) -> Tensor:
    """Move each image by its own normalised kernel: x (n, c, h, w), kernel (n, k, k) -> (n, c, h, w).

    out[y, x] = sum_ij kernel[i, j] * x[y + i - r, x + j - r] with edges replicated, so a one-hot
    kernel is an exact integer shift and a centred one the identity. Runs in float32.
    """
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    r = k // 2
    with torch.autocast(x.device.type, enabled=False):  # bf16 would round what it copies
        xp = F.pad(x.float(), (r, r, r, r), mode="replicate").reshape(1, n * c, h + 2 * r, w + 2 * r)
        weight = kernel.float().repeat_interleave(c, 0).reshape(n * c, 1, k, k)
        return F.conv2d(xp, weight, groups=n * c).reshape(n, c, h, w)


class ShiftHead(nn.Module):
    """Motion compensation of the anchor (cf. CDNA, Finn et al. 2016): from the bottleneck
    features, one softmax kernel per frame that moves the whole anchor; from the last decoder
    features, a per-pixel mask of where the moved anchor replaces the still one (a HUD or the
    player's sprite stays put). The residual then only paints what the move revealed.

    Starts as (almost) the identity: uniform kernel logits, mask -4 (sigmoid 0.018), so an
    existing model gains it without changing its outputs much, and learns the moves from there.
    Both logits carry a fixed gain: a sharp kernel needs logits ~10 apart and an open mask a move
    of ~8, which Adam at lr 3e-4 (steps of ~lr per weight) would take tens of thousands of
    steps to reach without it (measured: no visible learning in 100 steps).
    """

    KERNEL_GAIN = 30.0
    MASK_GAIN = 10.0

    def __init__(self, c_bottleneck: int, c_top: int, kernel: int, patch: int):
        super().__init__()
        assert kernel % 2 == 1, f"shift_kernel must be odd, got {kernel}"
        self.kernel = kernel
        self.patch = patch
        self.pool = nn.Conv2d(c_bottleneck, 64, 1)
        self.logits = zero_(nn.Linear(128, kernel * kernel))
        self.mask = zero_(nn.Conv2d(c_top, patch * patch, 3, padding=1))
        nn.init.constant_(self.mask.bias, -4.0 / self.MASK_GAIN)

    def kernels(self, h: Tensor) -> Tensor:
        """Bottleneck features (n, c, h, w) -> kernels (n, k, k), each summing to 1."""
        g = self.pool(F.silu(h))
        g = torch.cat([g.mean((2, 3)), g.amax((2, 3))], 1)
        logits = self.logits(g).float() * self.KERNEL_GAIN
        return logits.softmax(-1).view(-1, self.kernel, self.kernel)

    def forward(self, anchor: Tensor, kernels: Tensor, top: Tensor) -> Tensor:
        """anchor (n, 3, H, W), kernels from `kernels`, top decoder features (n, c, H/p, W/p)."""
        m = self.mask(top).float() * self.MASK_GAIN
        m = torch.sigmoid(F.pixel_shuffle(m, self.patch) if self.patch > 1 else m)
        moved = shift_image(anchor, kernels)
        return anchor.float() + m * (moved - anchor.float())


class Denoiser(nn.Module):
    """x_0-predicting denoiser over a window of frames (see module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        space = get_action_space(cfg.action_space)
        self.action_dim = space.dim
        p = cfg.stem_patch
        ch = cfg.channels
        e = cfg.emb_dim
        self.noise_emb = nn.Sequential(nn.Linear(2 * 64, e), nn.SiLU(), nn.Linear(e, e))
        self.action_emb = nn.Linear(self.action_dim, e)
        self.null_action = nn.Parameter(torch.zeros(e))
        self.cond = nn.Sequential(nn.SiLU(), nn.Linear(e, e))
        # worldmodel.recall: remembered frames' poses relative to each target, embedded once a
        # call for every temporal layer (model.recall frames; the game's pose features)
        rdim = e if cfg.recall else 0
        self.recall_pose = (nn.Sequential(nn.Linear(cfg.recall_pose_dim, e), nn.SiLU(),
                                          nn.Linear(e, e)) if cfg.recall else None)
        self.stem = nn.Conv2d(6 * p * p + 1, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = ch[0]
        for i, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(TemporalBlock(c_prev, c, e, cfg.attn_heads, cfg.max_frames,
                                            i in cfg.temporal_levels, rdim))
                c_prev = c
            self.down.append(blocks)
            self.downsample.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1)
                                   if i + 1 < len(ch) else nn.Identity())
            c_prev = ch[i + 1] if i + 1 < len(ch) else c
        self.mid = TemporalBlock(ch[-1], ch[-1], e, cfg.attn_heads, cfg.max_frames, True, rdim)
        self.mid2 = ResBlock(ch[-1], ch[-1], e)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for j in range(cfg.blocks_per_level):
                blocks.append(ResBlock(c_prev + ch[i], ch[i], e))
                c_prev = ch[i]
            self.up.append(blocks)
            self.upsample.append(nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2)
                                 if i > 0 else nn.Identity())
            c_prev = ch[i - 1] if i > 0 else ch[i]
        self.head_norm = group_norm(ch[0])
        self.head = zero_(nn.Conv2d(ch[0], 3 * p * p, 3, padding=1))
        self.shift = ShiftHead(ch[-1], ch[0], cfg.shift_kernel, p) if cfg.shift_kernel else None
        # The game's network part (`Game.anchor_head`): a committed transform of the anchor (Crafter:
        # the one-tile camera move), decided from the clean anchor and the action, with the
        # conditioning channels it composes from a memory canvas. Named `move` in the state dict.
        self.move = anchor_head(cfg, self.action_dim)
        # The game's stages of the frame pipeline (worldmodel.pipeline), from side files of the
        # checkpoint (`Game.stages`, set by checkpoint.load_checkpoint); a plain model has none.
        self.stages: list = []
        self.memory_stem = None
        if self.move is not None and self.move.cond_channels:
            # The composed anchor and its memory channels enter beside the stem; zero at first,
            # so a model trained without them starts out computing exactly what it did.
            self.memory_stem = zero_(nn.Conv2d(self.move.cond_channels * p * p, ch[0], 3, padding=1))

    def canvas_shape(self) -> tuple[int, ...]:
        """The shape of one memory canvas the anchor head composes from (C, H', W')."""
        return self.move.canvas_shape()

    def temporal_layers(self) -> list[tuple[str, TemporalAttention]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, TemporalAttention)]

    def embed(self, t: Tensor, t_prev: Tensor, act: Tensor, act_drop: Tensor) -> Tensor:
        """(b, t) levels, (b, t, A) actions, (b, t) bool drop -> (b*t, emb_dim)."""
        noise = self.noise_emb(torch.cat([fourier_features(t, 64), fourier_features(t_prev, 64)], -1))
        a = self.action_emb(act.to(noise.dtype))
        a = torch.where(act_drop[..., None], self.null_action.to(a.dtype).expand_as(a), a)
        return self.cond(noise + a).flatten(0, 1)

    def forward(self, x: Tensor, prev: Tensor, t: Tensor, t_prev: Tensor, has_prev: Tensor,
                act: Tensor, act_drop: Tensor, cache: KVCache | None = None,
                chunk_start: Tensor | None = None, commit: bool = False,
                conditioning: Conditioning | None = None):
        """Predict clean frames x_0 `(b, n, 3, h, w)` for `n` frames that follow the cached ones.

        `prev[:, i]` is the frame before `x[:, i]` at level `t_prev[:, i]`; `has_prev` is False
        where there is none. The frames take positions `cache.pos + i`; frame i attends to cached
        frames before `chunk_start[i]` and to this call's frames from `chunk_start[i]` up to
        itself (default: all cached frames, causal within the call). `commit=True` appends this
        call's keys/values to the cache, trims it to `cache.max_len` frames, stops after the last
        temporal layer and returns None (finished frames are written as context this way).

        `conditioning` (a `Conditioning`) carries the rest: the clean anchor the residual is
        added to (default `prev`), and for a model with a game anchor head (`self.move`) the
        decisions to apply (default: the head's argmax), the memory canvases it composes the
        anchor from, and whether to return its logits as well (`(x0, logits)`).
        """
        c_in = conditioning or Conditioning()
        anchor, moves, memory = c_in.anchor, c_in.choice, c_in.memory
        b, n, c, hh, ww = x.shape
        assert c == 3 and prev.shape == x.shape, (x.shape, prev.shape)
        assert t.shape == (b, n) and act.shape[:2] == (b, n), (t.shape, act.shape)
        if cache is None:
            assert not commit, "commit needs a cache"
            cache = KVCache(max_len=n)
        q_pos = torch.arange(cache.pos, cache.pos + n, device=x.device)
        if chunk_start is None:
            chunk_start = torch.full((n,), cache.pos, device=x.device, dtype=torch.long)
        cached_pos = cache.positions.to(x.device)
        k_pos = torch.cat([cached_pos, q_pos])
        dist = q_pos[:, None] - k_pos[None, :]
        allowed = attention_mask(q_pos, chunk_start, k_pos, cached_pos.numel(), cache.window)
        emb = self.embed(t, t_prev, act, act_drop)
        hp = has_prev.to(x.dtype)[..., None, None, None]
        inp = torch.cat([x, prev * hp], 2).flatten(0, 1)
        p = self.cfg.stem_patch
        inp = F.pixel_unshuffle(inp, p) if p > 1 else inp
        flag = hp.flatten(0, 1).expand(-1, 1, *inp.shape[-2:])
        h = self.stem(torch.cat([inp, flag], 1))
        logits = composed = None
        if self.move is not None and not commit:
            # The decision is made from the clean anchor alone, before the network runs.
            src = (prev if anchor is None else anchor).expand(b, n, 3, hh, ww).flatten(0, 1)
            logits = self.move(src, act.flatten(0, 1), act_drop.flatten(0, 1))
            chosen = moves.flatten() if moves is not None else logits.argmax(-1)
            canvas = None if memory is None else memory.expand(b, n, *memory.shape[2:]).flatten(0, 1)
            composed, extra = self.move.transform(src, chosen, canvas)
            if self.memory_stem is not None:
                extra = F.pixel_unshuffle(extra, p) if p > 1 else extra
                h = h + self.memory_stem(extra.to(h.dtype))
        recall = c_in.recall if self.recall_pose is not None and not commit else None
        pose_emb = None if recall is None else self.recall_pose(recall.pose.to(h.dtype))

        def remembered(name: str) -> tuple | None:
            if recall is None:
                return None
            k, v = recall.kv[name]
            return k, v, pose_emb, recall.valid

        skips = []
        for i, (blocks, down) in enumerate(zip(self.down, self.downsample)):
            for j, blk in enumerate(blocks):
                h = blk.res(h, emb)
                if blk.temporal is not None:
                    name = f"down{i}.{j}"
                    h = blk.temporal(h, b, dist, allowed, cache.layer(name), commit,
                                     remembered(name))
                skips.append(h)
            h = down(h)
        h = self.mid.res(h, emb)
        h = self.mid.temporal(h, b, dist, allowed, cache.layer("mid"), commit, remembered("mid"))
        if commit:
            cache.positions = torch.cat([cached_pos, q_pos])
            cache.pos += n
            if cache.positions.numel() > cache.max_len:
                keep = cache.max_len
                cache.positions = cache.positions[-keep:]
                for lc in cache.layers.values():
                    lc.k, lc.v = lc.k[:, :, -keep:], lc.v[:, :, -keep:]
            return None
        h = self.mid2(h, emb)
        if self.move is None:
            kernels = self.shift.kernels(h) if self.shift is not None else None
        for blocks, up in zip(self.up, self.upsample):
            for blk in blocks:
                h = blk(torch.cat([h, skips.pop()], 1), emb)
            h = up(h)
        top = F.silu(self.head_norm(h))
        out = self.head(top)
        out = F.pixel_shuffle(out, p) if p > 1 else out
        anchor = prev if anchor is None else anchor
        if composed is not None:
            anchor = composed.view(b, n, 3, hh, ww)
        elif self.shift is not None:
            anchor = anchor.expand(b, n, 3, hh, ww).flatten(0, 1)
            anchor = self.shift(anchor, kernels, top).view(b, n, 3, hh, ww)
        x0 = anchor * hp + out.view(b, n, 3, hh, ww)
        return (x0, logits) if c_in.want_logits else x0
