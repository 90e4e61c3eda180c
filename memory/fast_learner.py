"""The fast learner: a few Adam steps on a LoRA copy of the denoiser, from frames just generated.

Two forms of the loss on a window of recent frames `(b, n, 3, h, w)`:

* `trajectory` (SlowFast-VGen's action-agnostic, whole-trajectory form): frame 0 is clean
  context; frames 1..n-1 (the previous context and the chunk just generated) are one chunk, noised
  at one level and denoised together with every action dropped.
* `next_frame` (input -> output): every frame is predicted from the clean frames before it and
  its action, exactly the one-frame-per-step schedule of play (teacher forced).

With `reverse_prob` a window is learned played backwards (moves swapped for their opposites,
other actions dropped): what scrolled off one edge on the way out is what scrolls in on the way
back, so a memory learned only forwards is not asked the question a return trip asks. Time
reversal gets some things wrong, and both are handled: pixels it cannot get right (in Crafter the
player sprite, which faces the way out, and the status bars) are left out of the loss
(`reverse_ignore`), and a step whose frame did not change (a blocked move) reverses to a noop
rather than the opposite move (`reverse_still`). Off by default: measured on the shipped model it
does not beat forward-only windows (memory/config.py).

Noise levels are either the sampler's own (`levels: sampler`, where a few-step sampler spends
all of its passes) or the training distribution's. Only the adapter has gradients; the frozen
base weights never change. The learner is synchronous; `worker.MemoryWorker` runs it off the
frame loop.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from memory.config import MemoryConfig
from memory.lora import add_lora, lora_tensors, reset_lora
from worldmodel.actions import ActionSpace, get_action_space
from worldmodel.config import DiffusionConfig
from worldmodel.diffusion import add_noise, encode_context, sample_levels, sample_schedule
from worldmodel.dynamics import Conditioning, Denoiser


def draw_levels(shape: tuple[int, ...], dcfg: DiffusionConfig, mode: str,
                gen: torch.Generator) -> Tensor:
    if mode == "sampler":
        levels = torch.tensor(sample_schedule(dcfg.sample_steps))
        return levels[torch.randint(len(levels), shape, generator=gen)]
    return sample_levels(shape, dcfg, gen)


def memory_loss(model: Denoiser, frames: Tensor, act: Tensor, act_drop: Tensor,
                dcfg: DiffusionConfig, mcfg: MemoryConfig, gen: torch.Generator,
                weight: Tensor | None = None) -> Tensor:
    """Diffusion loss (MSE on x_0) of a window; frames (b, n, 3, h, w) in [-1, 1], act (b, n, A)
    encoded actions (act[:, i] produced frame i), act_drop (b, n) bool; weight (h, w): per-pixel
    weights of the error (None: all 1)."""
    b, n = frames.shape[:2]
    assert frames.ndim == 5 and n >= 2 and act.shape[:2] == (b, n), (frames.shape, act.shape)
    trajectory = mcfg.loss == "trajectory"
    if trajectory:
        act_drop = torch.ones_like(act_drop)
    n_ctx = 1 if trajectory else n
    dev = frames.device
    # Context: noised at inference's level, written to a cache the targets attend to (the
    # same stream the world model trains on).
    t_ctx = torch.full((b, n_ctx), dcfg.context_noise, device=dev)
    ctx_eps = torch.randn(frames[:, :n_ctx].shape, generator=gen).to(dev)
    cache, ctx_prev, t_ctx_prev, _ = encode_context(model, frames[:, :n_ctx], act[:, :n_ctx],
                                                    act_drop[:, :n_ctx], dcfg, gen, t_ctx, ctx_eps)
    x0 = frames[:, 1:]
    eps = torch.randn(x0.shape, generator=gen).to(dev)
    if trajectory:
        # One chunk at one level, anchored on the clean frame before it (the masked-conditional
        # chunk schedule, with the whole trajectory as the chunk).
        t = draw_levels((b, 1), dcfg, mcfg.levels, gen).to(dev).expand(b, n - 1)
        xt = add_noise(x0, t, eps)
        prev = torch.cat([add_noise(frames[:, :1], t_ctx, ctx_eps), xt[:, :-1]], 1)
        t_prev = torch.cat([t_ctx, t[:, :-1]], 1)
        anchor = frames[:, :1]
        chunk_start = None  # all targets attend to the cached frame 0 and causally to each other
    else:
        t = draw_levels((b, n - 1), dcfg, mcfg.levels, gen).to(dev)
        xt = add_noise(x0, t, eps)
        prev, t_prev, anchor = ctx_prev[:, 1:], t_ctx_prev[:, 1:], frames[:, :-1]
        chunk_start = torch.arange(1, n, device=dev)  # each frame is its own chunk after the clean ones
        cache.pos = 1
    has_prev = torch.ones(b, n - 1, dtype=torch.bool, device=dev)
    pred = model(xt, prev, t, t_prev, has_prev, act[:, 1:], act_drop[:, 1:], cache=cache,
                 chunk_start=chunk_start, conditioning=Conditioning(anchor=anchor))
    return weighted_mse(pred, x0, weight)


def weighted_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean squared error over (..., h, w); weight (h, w) weighs each pixel (a 0/1 mask: the
    mean over the pixels it keeps)."""
    err = (pred.float() - target.float()).pow(2)
    if weight is None:
        return err.mean()
    weight = weight.to(err.device)
    return (err * weight).sum() / (weight.sum() * (err.numel() / weight.numel()))


def ignore_weight(boxes: list[list[int]], size: tuple[int, int]) -> Tensor:
    """(h, w) weights: 0 inside each [y0, y1, x0, x1] pixel box, 1 elsewhere."""
    w = torch.ones(size)
    for y0, y1, x0, x1 in boxes:
        w[y0:y1, x0:x1] = 0
    if w.sum() == 0:
        raise ValueError(f"memory.reverse_ignore {boxes} covers the whole {size} frame")
    return w


def noop_action(space: ActionSpace) -> int:
    """The index of a discrete space's do-nothing action (-1: none, or not discrete)."""
    if space.kind != "discrete":
        return -1
    names = list(space.actions)
    return next((i for i, n in enumerate(names) if n in ("noop", "none", "idle")), -1)


def opposite_actions(space: ActionSpace) -> Tensor | None:
    """For a discrete space with move_<dir> actions: index -> the index that undoes it (moves
    swap with their opposites, noop stays, anything else -1: not reversible). None otherwise."""
    if space.kind != "discrete":
        return None
    names = list(space.actions)
    pairs = {"left": "right", "right": "left", "up": "down", "down": "up",
             "forward": "backward", "backward": "forward"}
    out = torch.full((len(names),), -1, dtype=torch.long)
    noop = noop_action(space)
    for i, name in enumerate(names):
        if i == noop:
            out[i] = i
        elif name.startswith("move_") and f"move_{pairs.get(name[5:], '')}" in names:
            out[i] = names.index(f"move_{pairs[name[5:]]}")
    return out


def reverse_window(frames: Tensor, actions: Tensor, opposite: Tensor | None,
                   still: Tensor | None = None, noop: int = -1) -> tuple[Tensor, Tensor]:
    """A window played backwards: frames (b, n, ...) flipped in time; actions (b, n) ints, where
    actions[:, i] made frame i, become the opposite moves (-1 where unknown). still (b, n) bool,
    in the original order: frame i did not change from frame i-1 (a blocked move undoes nothing),
    so its reversed step becomes `noop`."""
    rev = actions.flip(1)  # rev[:, k] = actions[:, n-1-k], made original frame n-1-k
    out = torch.full_like(actions, -1)
    if opposite is not None:
        # reversed frame k (= original n-1-k) comes from reversed frame k-1 (= original n-k)
        # by undoing the action that made original frame n-k: rev[:, k-1].
        prev = rev[:, :-1]
        out[:, 1:] = torch.where(prev >= 0, opposite[prev.clamp(min=0)], -1)
        if still is not None:
            out[:, 1:] = torch.where(still.flip(1)[:, :-1], noop, out[:, 1:])
    return frames.flip(1), out


def still_frames(frames: Tensor, weight: Tensor | None, threshold: float) -> Tensor:
    """(b, n) bool: frame i's mean absolute change from frame i-1 (over pixels of nonzero
    weight) is below threshold; frame 0 is False."""
    diff = (frames[:, 1:] - frames[:, :-1]).abs().mean(2)  # (b, n-1, h, w)
    if weight is not None:
        diff = diff[..., weight.to(diff.device) > 0]
    change = diff.flatten(2).mean(-1)
    first = torch.zeros_like(change[:, :1], dtype=torch.bool)
    return torch.cat([first, change < threshold], 1)


def fast_loss(model: Denoiser, frames: Tensor, actions: Tensor, space: ActionSpace,
              opposite: Tensor | None, dcfg: DiffusionConfig, mcfg: MemoryConfig,
              gen: torch.Generator) -> Tensor:
    """`memory_loss` from integer actions (b, n) (negative: none), reversing the window with
    probability `mcfg.reverse_prob`; a reversed window's error ignores `mcfg.reverse_ignore`."""
    weight = None
    if mcfg.reverse_prob > 0 and torch.rand((), generator=gen) < mcfg.reverse_prob:
        if mcfg.reverse_ignore:
            weight = ignore_weight(mcfg.reverse_ignore, tuple(frames.shape[-2:]))
        still = (still_frames(frames, weight, mcfg.reverse_still).to(actions.device)
                 if mcfg.reverse_still > 0 else None)  # the frames may be on a device, actions not
        frames, actions = reverse_window(frames, actions, opposite, still, noop_action(space))
    dev = frames.device
    if space.kind == "discrete":
        act, drop = space.encode(actions.clamp(min=0)), actions < 0
    else:
        act, drop = space.encode(actions), torch.zeros(actions.shape[:2], dtype=torch.bool)
    return memory_loss(model, frames, act.to(dev), drop.to(dev), dcfg, mcfg, gen, weight)


class FastLearner:
    """Owns a LoRA copy of the denoiser and its Adam state; `update(frames, actions)` trains it.

    Memory is fixed after construction: the adapter, Adam's two moments, nothing that grows.
    """

    def __init__(self, base: Denoiser, dcfg: DiffusionConfig, mcfg: MemoryConfig,
                 action_space: str):
        self.dcfg = dcfg
        self.mcfg = mcfg
        self.space = get_action_space(action_space)
        self.opposite = opposite_actions(self.space)
        self.model = add_lora(copy.deepcopy(base).float().eval(), mcfg)
        self.params = lora_tensors(self.model)
        self.gen = torch.Generator().manual_seed(mcfg.seed + 1)
        self.opt = torch.optim.Adam(self.params.values(), lr=mcfg.lr)
        self.updates = 0
        self.last_loss = float("nan")

    @property
    def device(self) -> torch.device:
        """Where the learner's model (and so its training) lives."""
        return next(self.model.parameters()).device

    def loss(self, frames: Tensor, actions: Tensor) -> Tensor:
        return fast_loss(self.model, frames.to(self.device, torch.float32),
                         torch.as_tensor(actions), self.space, self.opposite, self.dcfg, self.mcfg,
                         self.gen)

    def update(self, frames: Tensor, actions: Tensor) -> float:
        """`steps_per_update` Adam steps on a window: frames (b, n, 3, h, w), actions (b, n)."""
        with torch.enable_grad():
            for _ in range(self.mcfg.steps_per_update):
                loss = self.loss(frames, actions)
                self.opt.zero_grad(set_to_none=False)
                loss.backward()
                if self.mcfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params.values(), self.mcfg.grad_clip)
                self.opt.step()
        self.updates += 1
        self.last_loss = float(loss.detach())
        return self.last_loss

    def reset(self) -> None:
        """Back to a fresh adapter (B = 0) and fresh Adam moments."""
        reset_lora(self.model, self.mcfg.seed)
        self.opt.state.clear()
        for p in self.params.values():
            p.grad = None
        self.updates = 0
        self.last_loss = float("nan")
