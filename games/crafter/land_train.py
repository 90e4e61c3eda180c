"""Training the land prior (`python -m games.crafter.land`): examples of revealed lines from
labelled episodes, the line loss, the fit with held-out episodes, and the figures it is judged by
(the sampled lines' non-grass share, the walks' drift from the real label histogram)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from games.crafter.geometry import SCROLLS, VIEW_COLS, VIEW_ROWS, window_moves
from games.crafter.land_model import LINE, LandError, LandPrior, canonical, revealed_line


def examples(episodes: list, space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every step of `episodes` (with the game's labels) whose camera scrolled: the labels before
    (k, VIEW_ROWS, VIEW_COLS), the move (k,) and the labels after."""

    before, moves, after = [], [], []
    for ep in episodes:
        if ep.labels is None:
            raise LandError(f"{ep.path} has no tile labels (labels.u8): collect it with "
                            "python -m simulator.collect")
        n = min(len(ep.frames), len(ep.labels))
        acts = np.concatenate([[0], space.validate(ep.actions)])[:n]
        mv = window_moves(ep.frames[None, :n], acts[None], space)[0]  # move into each frame
        idx = np.flatnonzero(mv[1:] > 0)
        before.append(ep.labels[idx])
        moves.append(mv[idx + 1])
        after.append(ep.labels[idx + 1])
    return np.concatenate(before), np.concatenate(moves), np.concatenate(after)


def given_mask(valid: Tensor, gen: torch.Generator) -> Tensor:
    """(n, LINE) True for the line cells given as drawn, as the sampler's two passes see them:
    none (the first pass, which keeps the even cells) or the even cells (the second)."""
    evens = (torch.arange(LINE) % 2 == 0)[None].expand(len(valid), -1)
    second = torch.rand(len(valid), 1, generator=gen) < 0.5
    return evens & second


def mirror(view: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The same step seen in a mirror along the line (Crafter's land has no up or down): the
    canonical view's rows and the line's cells reversed, within each line's length."""
    n = view.shape[0]
    length = valid.sum(1)  # 7 or 9
    idx = torch.arange(LINE)[None].expand(n, -1)
    src = torch.where(idx < length[:, None], length[:, None] - 1 - idx, idx)
    return (view.gather(1, src[:, :, None].expand(-1, -1, view.shape[2])),
            target.gather(1, src))


def line_loss(prior: LandPrior, before: Tensor, moves: Tensor, after: Tensor,
              gen: torch.Generator, augment: bool = False) -> Tensor:
    """Cross-entropy of the line cells not given (see `given_mask`); `augment` mirrors half the
    steps."""
    view, valid = canonical(before, moves)
    target = revealed_line(after, moves)
    if augment:
        flip = torch.rand(len(view), generator=gen) < 0.5
        mv, mt = mirror(view, target, valid)
        view = torch.where(flip[:, None, None], mv, view)
        target = torch.where(flip[:, None], mt, target)
    given = given_mask(valid, gen) & valid
    line = torch.where(given, target, torch.full_like(target, -1))
    logits = prior(view, line, valid)
    score = valid & ~given
    return F.cross_entropy(logits[score], target[score])


def train_prior(train: tuple, held: tuple, num_labels: int, names: list[str], steps: int = 3000,
                batch: int = 256, lr: float = 2e-3, seed: int = 0, log_every: int = 250,
                width: int = 32) -> tuple[LandPrior, dict[str, Any]]:
    """Fit a LandPrior on (before, moves, after) arrays, mirrored at random; keeps the weights
    of the best held-out cross-entropy (checked every `log_every` steps)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    prior = LandPrior(num_labels, width, names=names)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=1e-4)
    tb, tm, ta = (torch.from_numpy(np.asarray(a, np.int64)) for a in train)
    hb, hm, ha = (torch.from_numpy(np.asarray(a, np.int64)) for a in held)
    log = []
    best: tuple[float, dict | None, int] = (float("inf"), None, 0)
    t0 = time.time()
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        i = torch.randint(0, len(tb), (batch,), generator=gen)
        loss = line_loss(prior, tb[i], tm[i], ta[i], gen, augment=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                held_loss = float(line_loss(prior, hb, hm, ha, torch.Generator().manual_seed(1)))
            log.append({"step": step, "loss": float(loss.detach()), "heldout_loss": held_loss,
                        "seconds": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
            if held_loss < best[0]:
                best = (held_loss, {k: v.clone() for k, v in prior.state_dict().items()}, step)
    prior.load_state_dict(best[1])
    return prior.eval(), {"log": log, "best_step": best[2], "best_heldout_loss": best[0]}


@torch.no_grad()
def sampled_shares(prior: LandPrior, held: tuple, grass: int, seed: int = 0) -> dict[str, Any]:
    """On held-out steps: the non-grass share of sampled revealed lines against the real ones,
    and the total variation between their label histograms."""
    hb, hm, ha = (torch.from_numpy(np.asarray(a, np.int64)) for a in held)
    gen = torch.Generator().manual_seed(seed)
    line = prior.sample(hb, hm, torch.rand(len(hb), LINE, generator=gen))
    real = revealed_line(ha, hm)
    got, ref = line[line >= 0], real[real >= 0]
    hist = lambda x: torch.bincount(x, minlength=prior.num_labels).float() / max(1, len(x))
    return {"steps": int(len(hb)), "non_grass_sampled": float((got != grass).float().mean()),
            "non_grass_real": float((ref != grass).float().mean()),
            "tv": float(0.5 * (hist(got) - hist(ref)).abs().sum()),
            "same_as_real": float((line == real)[real >= 0].float().mean())}


def _moved(labels: Tensor, move: int, line: Tensor) -> Tensor:
    """Labels (n, VIEW_ROWS, VIEW_COLS) after the player's move (a SCROLLS index) that revealed
    `line` (n, LINE), canonical order: the view scrolls one cell and the line fills its edge."""
    dx, dy = SCROLLS[move]
    out = labels.clone()
    if dx > 0:
        out[:, :, :-1], out[:, :, -1] = labels[:, :, 1:], line[:, :VIEW_ROWS]
    elif dx < 0:
        out[:, :, 1:], out[:, :, 0] = labels[:, :, :-1], line[:, :VIEW_ROWS]
    elif dy > 0:
        out[:, :-1], out[:, -1] = labels[:, 1:], line[:, :VIEW_COLS]
    elif dy < 0:
        out[:, 1:], out[:, 0] = labels[:, :-1], line[:, :VIEW_COLS]
    return out


@torch.no_grad()
def walk_tv(prior: LandPrior, episodes: list, space, temperature: float, seeds: int = 4,
            start: int = 48, steps: int = 256) -> float:
    """The prior alone as a world: from a real view `start` steps into each episode, walk the
    episode's real moves for `steps` steps, every revealed line sampled given the walked view
    (no denoiser). Returns the total variation between the label histograms of the sampled and
    the real revealed lines, averaged over `seeds` walks: how far the land drifts when every
    draw is conditioned on earlier draws, which a one-step fit does not show."""

    tvs = []
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        got = torch.zeros(prior.num_labels)
        real = torch.zeros(prior.num_labels)
        for ep in episodes:
            if ep.labels is None or len(ep.frames) <= start + 1:
                continue
            acts = np.concatenate([[0], space.validate(ep.actions)])
            moves = window_moves(ep.frames[None], acts[None], space)[0]
            labels = torch.from_numpy(ep.labels[start].astype(np.int64))[None]
            for t in range(start + 1, min(len(ep.frames), start + 1 + steps)):
                k = int(moves[t])
                if k == 0:
                    continue
                mv = torch.tensor([k])
                line = prior.sample(labels, mv, torch.rand(1, LINE, generator=gen), temperature)
                true = revealed_line(torch.from_numpy(ep.labels[t].astype(np.int64))[None], mv)
                got += torch.bincount(line[line >= 0], minlength=prior.num_labels)
                real += torch.bincount(true[true >= 0], minlength=prior.num_labels)
                labels = _moved(labels, k, line)
        tvs.append(float(0.5 * (got / got.sum().clamp(min=1) - real / real.sum().clamp(min=1))
                         .abs().sum()))
    return float(np.mean(tvs))


def revealed_shares(episodes: list, space, num_labels: int) -> Tensor:
    """The share of each label among the cells the real game's moves reveal in `episodes`."""
    real = torch.zeros(num_labels)
    for ep in episodes:
        if ep.labels is None:
            continue
        acts = np.concatenate([[0], space.validate(ep.actions)])
        moves = window_moves(ep.frames[None], acts[None], space)[0]
        for t in np.flatnonzero(moves[1:]) + 1:
            true = revealed_line(torch.from_numpy(ep.labels[t].astype(np.int64))[None],
                                 torch.tensor([int(moves[t])]))
            real += torch.bincount(true[true >= 0], minlength=num_labels).float()
    return real / real.sum().clamp(min=1)


def long_walk_shares(prior: LandPrior, episodes: list, space, steps: int, seed: int = 0,
                     start: int = 48) -> Tensor:
    """The prior alone as a world over a long trip: from each episode's real view `start` steps
    in, `steps` moves drawn from the episodes' own moves, every revealed line sampled given the
    walked view. Returns the share of each label among the sampled cells: where the land goes
    when every draw is conditioned on earlier draws for far longer than an episode."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    views, pool = [], []
    for ep in episodes:
        if ep.labels is None or len(ep.frames) <= start:
            continue
        acts = np.concatenate([[0], space.validate(ep.actions)])
        moves = window_moves(ep.frames[None], acts[None], space)[0]
        pool.append(moves[1:][moves[1:] > 0])
        views.append(torch.from_numpy(ep.labels[start].astype(np.int64)))
    if not views:
        raise ValueError("no labelled episode long enough to start a walk from")
    labels = torch.stack(views)
    pool = np.concatenate(pool)
    got = torch.zeros(prior.num_labels)
    for _ in range(steps):
        mv = torch.from_numpy(rng.choice(pool, len(labels)).astype(np.int64))
        line = prior.sample(labels, mv, torch.rand(len(labels), LINE, generator=gen))
        got += torch.bincount(line[line >= 0], minlength=prior.num_labels).float()
        labels = torch.cat([_moved(labels[i:i + 1], int(mv[i]), line[i:i + 1])
                            for i in range(len(labels))])
    return got / got.sum().clamp(min=1)


def calibrate_bias(prior: LandPrior, episodes: list, space, steps: int = 600, rounds: int = 5,
                   rate: float = 0.8, floor: float = 1e-4) -> dict[str, Any]:
    """Fit `prior.label_bias` so that long walks (`long_walk_shares`) draw each label as often
    as the real game reveals it in `episodes` (training seeds): each round moves every label's
    offset by `rate` times the log ratio of the real share to the walked one. A label the game
    never reveals keeps no offset (the network gives it ~0 already). Returns each round's total
    variation and the final offsets."""
    real = revealed_shares(episodes, space, prior.num_labels)
    log = []
    for r in range(rounds + 1):
        walked = long_walk_shares(prior, episodes, space, steps, seed=r)
        tv = float(0.5 * (walked - real).abs().sum())
        log.append({"round": r, "walk_tv": round(tv, 4)})
        if r == rounds:
            break
        step = torch.log((real + floor) / (walked + floor)) * (real > 0).float()
        prior.label_bias = (prior.label_bias + rate * step).clamp(-4, 4)
    return {"rounds": log, "real_shares": [round(float(v), 5) for v in real],
            "label_bias": [round(float(v), 4) for v in prior.label_bias]}
