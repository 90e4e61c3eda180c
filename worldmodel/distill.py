"""A few-step mode-seeking student: distribution matching distillation (DMD) on sliding windows.

The student is the same `Denoiser` as its teacher, sampled in one pass from pure noise
(`diffusion.sample_steps = 1`). Three networks see the same window, its context written the
same way into three KV caches:

- the **teacher** (frozen, the many-step model): its x_0 prediction at a noised student frame
  points toward the real data's mode near it;
- the **fake score** (trained here, started from the teacher): denoises the student's own
  frames, so its x_0 prediction points toward what the student draws now;
- the **student**: one pass from noise per target frame. Its frames move along
  (teacher x_0 - fake x_0), the reverse-KL gradient of DMD (Yin et al. 2024: the real score
  minus the fake score, both read through x_0 predictions), normalised per frame by the mean
  distance to the teacher's prediction. Beside it, the mean-seeking term: the ordinary
  flow-matching loss on the real window (with its committed move head), as
  *Mode Seeking meets Mean Seeking* keeps its two heads.

Sliding windows of the student's own rollouts: in `self_rollout_prob` of the batches the
context frames are the student's own one-pass predictions (`rollout_depth` rounds, each from the
previous round's frames, so frame i carries errors compounded as in a rollout), and the student
learns to draw the next frame from its own past.

    x_t = (1 - t) x_0 + t eps;   grad_x = (x0_fake(x_t) - x0_teacher(x_t)) / mean|x - x0_teacher|
    student loss = 0.5 ||x - sg(x - grad_x)||^2 * dmd_weight + flow loss * flow_weight
    fake loss    = ||x0_fake(x_t(sg(x))) - sg(x)||^2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldmodel.config import DiffusionConfig, DistillConfig
from worldmodel.diffusion import (TrainBatch, add_noise, augment_memory, corrupt_context,
                                  encode_context, sample_levels)
from worldmodel.dynamics import Conditioning, Denoiser, KVCache


@dataclass
class Context:
    """A window's frames written as context into one network's cache (see `write_context`)."""

    cache: KVCache
    prev: Tensor  # (b, n, 3, h, w) each frame's previous context frame as written
    t_prev: Tensor  # (b, n)
    has_prev: Tensor  # (b, n) bool


def write_context(model: Denoiser, ctx_x0: Tensor, act: Tensor, drop: Tensor, cfg: DiffusionConfig,
                  t_ctx: Tensor, eps: Tensor) -> Context:
    """The window written at levels `t_ctx` with noise `eps` (every network the same way)."""
    return Context(*encode_context(model, ctx_x0, act, drop, cfg, None, t_ctx, eps))


def one_frame_targets(model: Denoiser, ctx: Context, xt: Tensor, t: Tensor, act: Tensor,
                      drop: Tensor, cond: Conditioning):
    """x_0 of targets 1..n-1 at levels `t` (b, n-1), each its own chunk on the context frame
    before it: the one-frame-per-step schedule (a pass that writes nothing)."""
    n = ctx.prev.shape[1]
    ctx.cache.pos = 1
    starts = torch.arange(1, n, device=xt.device)
    return model(xt, ctx.prev[:, 1:], t, ctx.t_prev[:, 1:], ctx.has_prev[:, 1:], act[:, 1:],
                 drop[:, 1:], cache=ctx.cache, chunk_start=starts, conditioning=cond)


def dmd_direction(x: Tensor, teacher_x0: Tensor, fake_x0: Tensor) -> Tensor:
    """DMD's per-frame gradient on samples x (b, n, ...): toward the teacher's x_0 and away from
    the fake score's, normalised by each frame's mean distance to the teacher's prediction."""
    dims = tuple(range(2, x.ndim))
    scale = (x - teacher_x0).abs().mean(dim=dims, keepdim=True).clamp_min(1e-4)
    return (fake_x0 - teacher_x0) / scale


def dmd_surrogate(x: Tensor, direction: Tensor) -> Tensor:
    """0.5 ||x - sg(x - direction)||^2 per element (mean): its gradient in x is `direction`/N."""
    return 0.5 * F.mse_loss(x.float(), (x - direction).detach().float())


@torch.no_grad()
def own_rollout_context(student: Denoiser, x0: Tensor, act: Tensor, drop: Tensor,
                        cfg: DiffusionConfig, moves: Tensor | None, memory: Tensor | None,
                        depth: int, gen: torch.Generator | None) -> Tensor:
    """Frames 1..n-1 replaced by the student's own one-pass frames (`depth` rounds, each drawn
    from the previous round's frames as context): a window of its own rollout."""
    b, n = x0.shape[:2]
    dev = x0.device
    for _ in range(depth):
        t_ctx = torch.full((b, n), cfg.context_noise, device=dev)
        eps = torch.randn(x0.shape, generator=gen, device=dev)
        ctx = write_context(student, x0, act, drop, cfg, t_ctx, eps)
        noise = torch.randn(x0[:, 1:].shape, generator=gen, device=dev)
        cond = Conditioning(anchor=x0[:, :-1], choice=moves,
                            memory=None if memory is None else memory[:, 1:])
        out = one_frame_targets(student, ctx, noise, torch.ones(b, n - 1, device=dev), act, drop,
                                cond)
        out = out[0] if isinstance(out, tuple) else out
        x0 = torch.cat([x0[:, :1], out.to(x0.dtype).clamp(-1, 1)], 1)
    return x0


def dmd_losses(student: Denoiser, teacher: Denoiser, fake: Denoiser, batch: TrainBatch,
               cfg: DiffusionConfig, dcfg: DistillConfig, rng: np.random.Generator,
               gen: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict]:
    """(student loss, fake-score loss, figures) for one batch of windows (module docstring).
    The two losses touch disjoint networks: their sum can be back-propagated at once."""
    x0, act = batch.frames, batch.actions
    b, n = x0.shape[:2]
    dev = x0.device
    drop = torch.rand(b, n, generator=gen, device=dev) < cfg.action_dropout
    drop[:, 0] = True
    memory = batch.memory
    if student.memory_stem is None:
        memory = None
    elif memory is not None:
        memory = augment_memory(memory, cfg, gen, student.move.cell)
    committed = student.move is not None and batch.moves is not None
    moves = batch.moves[:, 1:] if committed else None
    ctx_x0 = x0
    if dcfg.self_rollout_prob > 0 and rng.random() < dcfg.self_rollout_prob:
        ctx_x0 = own_rollout_context(student, x0, act, drop, cfg, moves, memory,
                                     dcfg.rollout_depth, gen)
    ctx_x0 = corrupt_context(ctx_x0, cfg, gen)
    t_ctx = torch.rand(b, n, generator=gen, device=dev) * cfg.train_context_noise_max
    eps = torch.randn(x0.shape, generator=gen, device=dev)
    anchor = ctx_x0[:, :-1]
    mem = None if memory is None else memory[:, 1:]

    def cond(logits: bool = False) -> Conditioning:
        return Conditioning(anchor=anchor, choice=moves, memory=mem, want_logits=logits and committed)

    # The student: one pass from pure noise per target.
    s_ctx = write_context(student, ctx_x0, act, drop, cfg, t_ctx, eps)
    noise = torch.randn(x0[:, 1:].shape, generator=gen, device=dev)
    ones = torch.ones(b, n - 1, device=dev)
    drawn = one_frame_targets(student, s_ctx, noise, ones, act, drop, cond())
    drawn = drawn[0] if isinstance(drawn, tuple) else drawn
    drawn = drawn.float()

    # Both scores at the student's frames, noised to t ~ U(t_min, t_max).
    t = dcfg.t_min + (dcfg.t_max - dcfg.t_min) * torch.rand(b, n - 1, generator=gen, device=dev)
    xt = add_noise(drawn.detach(), t)
    with torch.no_grad():
        t_c = write_context(teacher, ctx_x0, act, drop, cfg, t_ctx, eps)
        teacher_x0 = one_frame_targets(teacher, t_c, xt, t, act, drop, cond())
        teacher_x0 = (teacher_x0[0] if isinstance(teacher_x0, tuple) else teacher_x0).float()
    f_ctx = write_context(fake, ctx_x0, act, drop, cfg, t_ctx, eps)
    fake_x0 = one_frame_targets(fake, f_ctx, xt, t, act, drop, cond())
    fake_x0 = (fake_x0[0] if isinstance(fake_x0, tuple) else fake_x0).float()
    fake_loss = F.mse_loss(fake_x0, drawn.detach())

    direction = dmd_direction(drawn.detach(), teacher_x0, fake_x0.detach())
    dmd = dmd_surrogate(drawn, direction)

    # Mean seeking: flow matching on the real window's targets at sampled levels, same cache.
    t_real = sample_levels((b, n - 1), cfg, gen, dev)
    pred = one_frame_targets(student, s_ctx, add_noise(x0[:, 1:], t_real), t_real, act, drop,
                             cond(logits=True))
    logits = None
    if committed:
        pred, logits = pred
    flow = (pred.float() - x0[:, 1:].float()).pow(2).mean()
    loss = dcfg.dmd_weight * dmd + dcfg.flow_weight * flow
    info = {"dmd": dmd.detach(), "flow": flow.detach(), "fake": fake_loss.detach(),
            "student_vs_real_mse": (drawn.detach() - x0[:, 1:].float()).pow(2).mean(),
            "teacher_gap": (drawn.detach() - teacher_x0).pow(2).mean()}
    if logits is not None:
        target = batch.moves[:, 1:].flatten()
        move_loss = F.cross_entropy(logits.float(), target)
        loss = loss + cfg.move_loss_weight * move_loss
        info["move_loss"] = move_loss.detach()
    return loss, fake_loss, info
