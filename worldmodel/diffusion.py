"""Rectified flow with an x_0-predicting denoiser: noising, the training loss, a few-step sampler.

    x_t = (1 - t) x_0 + t eps,     t in [0, 1]  (t = 1 is pure noise)

Training is teacher-forced like inference: a window's frames first go through the network as
*context* (lightly noised, keys/values written to a cache with gradients), then as *targets* at
sampled noise levels, each target attending to the context frames before its chunk. Chunks of
several targets at one shared level train the masked-conditional chunk schedule; chunks of one
train one-frame-per-step generation. Loss is MSE on x_0 over targets only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodel.config import DiffusionConfig
from worldmodel.dynamics import Conditioning, Denoiser, KVCache
from worldmodel.recall import Recall, encode_frames


def add_noise(x0: Tensor, t: Tensor, eps: Tensor | None = None) -> Tensor:
    """x0 (b, n, c, h, w), t (b, n) -> x_t."""
    eps = torch.randn_like(x0) if eps is None else eps
    tt = t[..., None, None, None].to(x0.dtype)
    return (1 - tt) * x0 + tt * eps


def sample_levels(shape: tuple[int, ...], cfg: DiffusionConfig, gen: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """Logit-normal noise levels, with 10% drawn uniformly so every level is seen."""
    z = torch.randn(shape, generator=gen, device=device) * cfg.logit_std + cfg.logit_mean
    t = torch.sigmoid(z)
    u = torch.rand(shape, generator=gen, device=device)
    mix = torch.rand(shape, generator=gen, device=device) < 0.1
    return torch.where(mix, u, t).clamp(1e-3, 1.0)


def chunk_starts(n: int, rng: np.random.Generator, max_chunk: int = 4) -> np.ndarray:
    """Random partition of positions 1..n-1 into chunks; returns each position's chunk start."""
    starts = np.zeros(n, np.int64)
    i = 1
    while i < n:
        size = int(rng.integers(2, max_chunk + 1))
        starts[i:i + size] = i
        i += size
    return starts


def fixed_chunk_starts(n: int, size: int) -> np.ndarray:
    """Positions 1..n-1 in consecutive chunks of `size` (the last may be shorter)."""
    pos = np.arange(n)
    starts = 1 + ((pos - 1) // size) * size
    starts[0] = 0
    return starts


def progressive_levels(starts: np.ndarray, window: int, b: int, gen: torch.Generator | None,
                       device: torch.device | str) -> Tensor:
    """(b, n) levels of the progressive sampler's window (PA-VDM): the j-th frame of each chunk
    at (j + u) / window, u ~ U(0, 1] shared by the chunk, noise rising from its oldest frame."""
    n = len(starts)
    j = torch.as_tensor(np.arange(n) - starts, device=device, dtype=torch.float32)
    u = 1 - torch.rand(b, n, generator=gen, device=device)
    u = u.gather(1, torch.as_tensor(starts, device=device)[None].expand(b, -1))
    return ((j + u) / window).clamp(1e-3, 1.0)


@dataclass
class TrainBatch:
    frames: Tensor  # (b, n, 3, h, w) in [-1, 1]
    actions: Tensor  # (b, n, A): action that produced each frame (row 0 unused)
    moves: Tensor | None = None  # (b, n) long: the anchor head's real decision into each frame
    # (row 0 unused; Crafter: the camera move), for a model with an anchor head
    memory: Tensor | None = None  # (b, n, C, CH, CW): the game's memory canvas around the frame
    # before each frame (row 0 unused), for a model with a memory stem
    recall_frames: Tensor | None = None  # (b, m, 3, h, w): frames of the episode before the
    # window whose views overlap its targets most, for a recall model (worldmodel.recall)
    recall_pose: Tensor | None = None  # (b, n, m, P): each as seen from each frame (row 0 unused)
    recall_valid: Tensor | None = None  # (b, m) bool


def training_loss(model: Denoiser, batch: TrainBatch, cfg: DiffusionConfig,
                  rng: np.random.Generator, gen: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """Teacher-forced masked-conditional diffusion loss on targets 1..n-1 of each window."""
    x0, act = batch.frames, batch.actions
    b, n = x0.shape[:2]
    dev = x0.device
    drop = torch.rand(b, n, generator=gen, device=dev) < cfg.action_dropout
    drop[:, 0] = True  # the action before the window is not given
    ctx_x0 = x0
    memory = batch.memory
    if model.memory_stem is None:
        memory = None
    elif memory is not None:
        memory = augment_memory(memory, cfg, gen, model.move.cell)
    if cfg.self_forcing_prob > 0 and rng.random() < cfg.self_forcing_prob:
        ctx_x0 = self_forced_context(model, x0, act, drop, cfg, gen, memory)
    ctx_x0 = corrupt_context(ctx_x0, cfg, gen)

    # Context stream: every frame lightly noised, written to a cache (with gradients).
    cache, ctx_prev, t_ctx_prev, has_prev = encode_context(model, ctx_x0, act, drop, cfg, gen)

    # Target stream: positions 1..n-1, grouped into chunks (one frame each, or several).
    mode = rng.random()
    committed = model.move is not None and batch.moves is not None
    # A committed move is one step's: every target opens its own chunk on the frame before it.
    chunked = mode < cfg.chunk_prob + cfg.independent_prob and not committed
    progressive = (not committed and cfg.chunk_prob + cfg.independent_prob <= mode
                   < cfg.chunk_prob + cfg.independent_prob + cfg.progressive_prob)
    if progressive:
        starts = fixed_chunk_starts(n, cfg.progressive_window)
    else:
        starts = chunk_starts(n, rng) if chunked else np.arange(n)
    tgt = slice(1, n)
    starts_t = torch.as_tensor(starts[1:], device=dev)
    t_tgt = sample_levels((b, n), cfg, gen, dev)
    if progressive:
        t_tgt = progressive_levels(starts, cfg.progressive_window, b, gen, dev)
    elif mode < cfg.chunk_prob:
        # A chunk shares one level (the schedule at inference denoises a chunk together);
        # otherwise levels are independent per frame (diffusion forcing).
        t_tgt = t_tgt.gather(1, torch.as_tensor(starts, device=dev)[None].expand(b, -1))
    xt = add_noise(x0, t_tgt)
    # prev of a target: the context frame before it if it opens a chunk, else the noisy target.
    opens = torch.as_tensor(starts == np.arange(n), device=dev)[None, :, None, None, None]
    prev = torch.where(opens, ctx_prev, torch.cat([xt[:, :1], xt[:, :-1]], 1))
    t_prev = torch.where(opens[:, :, 0, 0, 0], t_ctx_prev, torch.cat([t_tgt[:, :1], t_tgt[:, :-1]], 1))
    # The residual is anchored on the clean frame before each target's chunk.
    anchor = ctx_x0[:, torch.as_tensor(starts[1:] - 1, device=dev)]
    cache.pos = 1  # targets take positions 1..n-1 next to the cached context 0..n-1
    cond = Conditioning(anchor=anchor, choice=batch.moves[:, tgt] if committed else None,
                        memory=None if memory is None else memory[:, tgt], want_logits=committed,
                        recall=training_recall(model, batch, cfg, gen))
    pred = model(xt[:, tgt], prev[:, tgt], t_tgt[:, tgt], t_prev[:, tgt], has_prev[:, tgt],
                 act[:, tgt], drop[:, tgt], cache=cache, chunk_start=starts_t, conditioning=cond)
    if committed:
        pred, logits = pred
    err = (pred.float() - x0[:, tgt].float()).pow(2).mean(dim=(2, 3, 4))
    loss = err.mean()
    with torch.no_grad():
        copy_err = (x0[:, tgt] - x0[:, :-1]).float().pow(2).mean()
    info = {"loss": loss.detach(), "copy_mse": copy_err}
    if committed:
        target = batch.moves[:, tgt].flatten()
        move_loss = F.cross_entropy(logits.float(), target)
        loss = loss + cfg.move_loss_weight * move_loss
        info.update(move_loss=move_loss.detach(),
                    move_acc=(logits.argmax(-1) == target).float().mean())
    return loss, info


def training_recall(model: Denoiser, batch: TrainBatch, cfg: DiffusionConfig,
                    gen: torch.Generator | None) -> Recall | None:
    """The remembered frames a training window's targets see (a recall model, a batch with
    them): written alone at context levels t ~ U(0, train_context_noise_max) with a rollout's
    errors on half of them (at inference they are the model's own frames), with gradients; all
    of a window's are dropped in `memory_drop` of the windows (the model without memory stays
    good)."""
    if getattr(model, "recall_pose", None) is None or batch.recall_frames is None:
        return None
    frames = batch.recall_frames
    b, m = frames.shape[:2]
    dev = frames.device
    keep = torch.rand(b, 1, generator=gen, device=dev) >= cfg.memory_drop
    valid = batch.recall_valid & keep
    level = torch.rand(b, m, generator=gen, device=dev) * cfg.train_context_noise_max
    noisy = corrupt_context(frames[:, :, None].flatten(0, 1), cfg, gen).view_as(frames)
    eps = torch.randn(frames.shape, generator=gen, device=dev)
    kv = encode_frames(model, noisy, level, eps)
    return Recall(kv, batch.recall_pose[:, 1:], valid)


def encode_context(model: Denoiser, x0: Tensor, act: Tensor, drop: Tensor, cfg: DiffusionConfig,
                   gen: torch.Generator | None, t_ctx: Tensor | None = None,
                   eps: Tensor | None = None) -> tuple[KVCache, Tensor, Tensor, Tensor]:
    """Write a window's frames, lightly noised, into a fresh KV cache as context: at levels
    `t_ctx` (b, n) with noise `eps` when given (the fast learner uses inference's level), else
    t ~ U(0, train_context_noise_max). Returns the cache and each frame's previous context frame,
    its level and whether it exists (what a target at that position stacks when it opens a
    chunk); the first frame has none, which the network sees as pure noise (level 1)."""
    b, n = x0.shape[:2]
    dev = x0.device
    if t_ctx is None:
        t_ctx = torch.rand(b, n, generator=gen, device=dev) * cfg.train_context_noise_max
    ctx = add_noise(x0, t_ctx, eps)
    has_prev = torch.ones(b, n, dtype=torch.bool, device=dev)
    has_prev[:, 0] = False
    prev = torch.cat([torch.zeros_like(ctx[:, :1]), ctx[:, :-1]], 1)
    t_prev = torch.cat([torch.ones_like(t_ctx[:, :1]), t_ctx[:, :-1]], 1)
    cache = KVCache(max_len=n)
    model(ctx, prev, t_ctx, t_prev, has_prev, act, drop, cache=cache, commit=True)
    return cache, prev, t_prev, has_prev


def self_forced_context(model: Denoiser, x0: Tensor, act: Tensor, drop: Tensor,
                        cfg: DiffusionConfig, gen: torch.Generator | None,
                        memory: Tensor | None = None) -> Tensor:
    """`cfg.self_forcing_depth` rounds of `own_predictions`, each predicting every frame from the
    previous round's frames: frame i then carries errors compounded over up to that many of the
    model's own steps, as in a rollout (a copying model turns frame i into frame i - depth)."""
    for _ in range(cfg.self_forcing_depth):
        x0 = own_predictions(model, x0, act, drop, cfg, gen, memory)
    return x0


def augment_memory(memory: Tensor, cfg: DiffusionConfig, gen: torch.Generator | None,
                   cell: int) -> Tensor:
    """View-memory canvases (b, n, 5, H, W) of `cell`-px cells as training sees them: the whole
    memory dropped in `memory_drop` of the windows; in `memory_corrupt` of them a random share
    (up to half) of the cells forgotten and the pixels given a rollout's errors (speckle, colour
    drift)."""
    b, n, _, hh, ww = memory.shape
    dev = memory.device
    keep = (torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev) >= cfg.memory_drop).float()
    bad = (torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev) < cfg.memory_corrupt).float()
    rate = torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev) * 0.5
    cells = torch.rand(b, n, 1, hh // cell, ww // cell, generator=gen, device=dev)
    cells = cells.repeat_interleave(cell, -2).repeat_interleave(cell, -1)
    known = memory[:, :, 3:4] * keep * (1 - bad * (cells < rate).float())
    std = torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev) * 0.1
    noise = (torch.randn(b, n, 3, hh, ww, generator=gen, device=dev) * std
             + torch.randn(b, n, 3, 1, 1, generator=gen, device=dev) * 0.04) * bad
    rgb = ((memory[:, :, :3] + noise).clamp(-1, 1)) * known
    return torch.cat([rgb, known, memory[:, :, 4:5] * known], 2)


def corrupt_context(x0: Tensor, cfg: DiffusionConfig, gen: torch.Generator | None) -> Tensor:
    """Errors of the kind a rollout accumulates (speckle, colour drift), on half the frames."""
    if cfg.anchor_noise_max <= 0 and cfg.anchor_color_shift <= 0:
        return x0
    b, n = x0.shape[:2]
    dev = x0.device
    on = (torch.rand(b, n, 1, 1, 1, generator=gen, device=dev) < 0.5).to(x0.dtype)
    std = torch.rand(b, n, 1, 1, 1, generator=gen, device=dev) * cfg.anchor_noise_max
    speckle = torch.randn(x0.shape, generator=gen, device=dev) * std
    shift = torch.randn(b, n, 3, 1, 1, generator=gen, device=dev) * cfg.anchor_color_shift
    return (x0 + on * (speckle + shift).to(x0.dtype)).clamp(-1, 1)


@torch.no_grad()
def own_predictions(model: Denoiser, x0: Tensor, act: Tensor, drop: Tensor, cfg: DiffusionConfig,
                    gen: torch.Generator | None, memory: Tensor | None = None) -> Tensor:
    """Frames 1..n-1 replaced by the model's one-step predictions from real context (no grad),
    at levels the few-step sampler visits: context as it will look in the model's own rollouts."""
    b, n = x0.shape[:2]
    dev = x0.device
    cache, prev, t_prev, has_prev = encode_context(model, x0, act, drop, cfg, gen)
    t = 0.3 + 0.7 * torch.rand(b, n, generator=gen, device=dev)
    xt = add_noise(x0, t)
    cache.pos = 1
    cond = Conditioning(anchor=x0[:, :-1], memory=None if memory is None else memory[:, 1:])
    pred = model(xt[:, 1:], prev[:, 1:], t[:, 1:], t_prev[:, 1:], has_prev[:, 1:], act[:, 1:],
                 drop[:, 1:], cache=cache, conditioning=cond)
    return torch.cat([x0[:, :1], pred.to(x0.dtype).clamp(-1, 1)], 1)


def sample_schedule(steps: int) -> list[float]:
    """Noise levels visited by the sampler, from pure noise down; the last prediction is kept."""
    return [1.0 - i / steps for i in range(steps)]


@torch.no_grad()
def denoise_chunk(model: Denoiser, cache: KVCache, prev_ctx: Tensor, t_prev_ctx: Tensor,
                  has_prev: Tensor, actions: Tensor, act_drop: Tensor, cfg: DiffusionConfig,
                  noise: Tensor, cond: Conditioning) -> Tensor:
    """Generate `n` frames after the cached context, jointly (a chunk; n = 1 for one per step).

    prev_ctx (b, 1, 3, h, w) is the last context frame as it was written to the cache (at level
    t_prev_ctx (b, 1)); actions (b, n, A); noise (b, n, 3, h, w) the starting noise; `cond` the
    conditioning bundle: `cond.anchor` (b, 1, 3, h, w) the same frame clean, and with an anchor
    head the decisions for the chunk (default: the head's, at every pass) and the memory
    canvases; `cond.known` pixels the view memory already knows (worldmodel.known), set at every
    call's level and kept in the result. Returns x_0 (b, n, 3, h, w) in [-1, 1].
    """
    b, n = noise.shape[:2]
    x = noise
    levels = sample_schedule(cfg.sample_steps)
    known = cond.known  # pixels the view memory already knows (worldmodel.known), kept
    if known is not None and known.full:  # nothing left to draw: no network call
        return known.image.to(noise.dtype)
    hp = torch.cat([has_prev[:, :1], torch.ones(b, n - 1, dtype=torch.bool, device=x.device)], 1)
    x0 = x
    for i, lv in enumerate(levels):
        if known is not None:
            x = known.keep(x, lv, noise)
        t = torch.full((b, n), lv, device=x.device)
        prev = torch.cat([prev_ctx, x[:, :-1]], 1)
        t_prev = torch.cat([t_prev_ctx, t[:, :-1]], 1)
        x0 = model(x, prev, t, t_prev, hp, actions, act_drop, cache=cache, conditioning=cond)
        if cfg.guidance != 1.0:
            x0_u = model(x, prev, t, t_prev, hp, actions, torch.ones_like(act_drop), cache=cache,
                         conditioning=cond)
            x0 = x0_u + cfg.guidance * (x0 - x0_u)
        x0 = x0.clamp(-1, 1)
        nxt = levels[i + 1] if i + 1 < len(levels) else 0.0
        if nxt > 0:
            eps = (x - (1 - lv) * x0) / lv
            x = (1 - nxt) * x0 + nxt * eps
    return x0 if known is None else known.paste(x0)
