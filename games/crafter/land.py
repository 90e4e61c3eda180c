"""A land prior: what the cells a move reveals hold, sampled, not averaged.

    python -m games.crafter.land --data data/crafter --checkpoint assets/crafter_memory

When the player steps, a row or column of cells comes into view that nothing has shown. A
denoiser trained on squared error draws there what is most likely on average: in Crafter the
average is grass, so imagined land came out ~93% grass where the real game has ~67%
(`../shared/CRAFTER.md`: a third of revealed cells are not grass). This is a small categorical
model of the revealed line, sampled cell by cell: a cell is one draw among the game's labels
(water, tree, stone, sand, coal, a cow...), given the view it borders, and the line's odd cells
also given the even ones drawn first, so a lake that reaches the edge goes on and a forest stays
a forest. Two passes of a small network a frame (`LandPrior.sample`).

The draws go into the view memory's canvas as if the memory had seen those cells (each label's
real tile at the frame's light, from the tile codebook): the denoiser, trained to draw what the
memory knows, draws them (`MoveHead.compose`). Cells the memory does know keep its tiles. Once
drawn, a sampled cell is an ordinary cell of the world: it is carried, snapped, and remembered.

Geometry: every move is turned so the revealed line is a column on the right of the view
(`canonical`): the view's labels sit in a 9 x 10 grid, right-aligned, with the line in the last
column (7 cells for a left/right move, 9 for up/down) and a pad flag elsewhere.

Training reads the game's own labels (`labels.u8`) of consecutive frames with a scroll between
them; live, the anchor's labels come from the codebook's snap. `diffusion.land_prior` names the
file in a checkpoint folder (needs a codebook with labels and model.view_memory).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.game import GameError
from games.crafter.geometry import SCROLLS, TILE, VIEW_COLS, VIEW_ROWS
from worldmodel import tensorfile
from games.crafter.geometry import window_moves
from worldmodel.actions import get_action_space
from worldmodel.data import list_episodes, load_episode
from worldmodel.reports import command_line
from worldmodel.checkpoint import attach_side_file
from worldmodel.cli import common_flags, run_cli, side_file_flags

VERSION = 1
DEFAULT_NAME = "land.safetensors"
GRID_ROWS, GRID_COLS = max(VIEW_ROWS, VIEW_COLS), max(VIEW_ROWS, VIEW_COLS) + 1  # 9 x 10
LINE = GRID_ROWS  # cells in the longest revealed line
LAND_AGE = 0.1  # the age the canvas gives a sampled cell (seen a while ago, as memory cells are)


class LandError(GameError):
    """A land prior file that cannot be read or used."""


def _line_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per move class (SCROLLS), the canvas cells (row, col; games.crafter.viewmap's one-tile
    margin) of the line the move reveals, in canonical order, and which of the LINE are real.
    Unused entries point at the canvas corner, which no line holds."""
    rows = np.zeros((len(SCROLLS), LINE), np.int64)
    cols = np.zeros((len(SCROLLS), LINE), np.int64)
    valid = np.zeros((len(SCROLLS), LINE), bool)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx:
            n = VIEW_ROWS
            rows[k, :n] = np.arange(n) + 1
            cols[k, :n] = 0 if dx < 0 else VIEW_COLS + 1
        elif dy:
            n = VIEW_COLS
            rows[k, :n] = 0 if dy < 0 else VIEW_ROWS + 1
            cols[k, :n] = np.arange(n) + 1
        else:
            continue
        valid[k, :n] = True
    return rows, cols, valid


LINE_ROWS, LINE_COLS, LINE_VALID = _line_cells()
_TABLES: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}


def _tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """LINE_ROWS, LINE_COLS and LINE_VALID on `device`, copied there once (not every frame)."""
    if device not in _TABLES:
        _TABLES[device] = tuple(torch.as_tensor(a, device=device)
                                for a in (LINE_ROWS, LINE_COLS, LINE_VALID))
    return _TABLES[device]


def _turned(labels: Tensor, dx: int, dy: int) -> Tensor:
    """The view (n, rows, cols) turned so a (dx, dy) move reveals a column on its right."""
    g = labels.transpose(1, 2) if dy else labels  # for up/down, rows are x and columns y
    return g.flip(2) if dx < 0 or dy < 0 else g


def canonical(labels: Tensor, moves: Tensor) -> tuple[Tensor, Tensor]:
    """labels (n, VIEW_ROWS, VIEW_COLS) long, moves (n,) SCROLLS indices -> the view turned so
    the move reveals a column on its right, in a (n, GRID_ROWS, GRID_COLS - 1) grid right-aligned
    (-1 where the view is not), and (n, LINE) which line cells exist. A stay gives an empty grid.
    Every orientation is built and each world picks its own (no host sync)."""
    n = labels.shape[0]
    grids = torch.full((n, len(SCROLLS), GRID_ROWS, GRID_COLS - 1), -1, dtype=torch.long,
                       device=labels.device)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx or dy:
            g = _turned(labels.long(), dx, dy)
            r, c = g.shape[1:]
            grids[:, k, :r, GRID_COLS - 1 - c:] = g
    pick = grids[torch.arange(n, device=labels.device), moves]
    return pick, _tables(labels.device)[2][moves]


def revealed_line(next_labels: Tensor, moves: Tensor) -> Tensor:
    """The labels (n, LINE) of the cells the moves revealed, in canonical order, read from the
    next frames' labels (n, VIEW_ROWS, VIEW_COLS); -1 where a line has no cell."""
    n = next_labels.shape[0]
    lines = torch.full((n, len(SCROLLS), LINE), -1, dtype=torch.long, device=next_labels.device)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx or dy:  # the new view's edge the move brought in: its last column once turned
            g = _turned(next_labels.long(), dx, dy)
            lines[:, k, :g.shape[1]] = g[:, :, -1]
    return lines[torch.arange(n, device=next_labels.device), moves]


class LandPrior(nn.Module):
    """p(cell | the view, the line's cells before it) for the revealed line (module docstring)."""

    def __init__(self, num_labels: int, width: int = 32, names: list[str] | None = None):
        super().__init__()
        self.num_labels = num_labels
        self.width = width
        self.names = list(names or [])
        cin = num_labels + 2  # one-hot label, "no cell here", "this line cell is drawn"
        self.inp = nn.Conv2d(cin, width, 3, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(width, width, 3, padding=d, dilation=d)
                                   for d in (1, 2, 4, 1, 2)])
        self.row_embed = nn.Parameter(torch.zeros(1, width, GRID_ROWS, 1))
        self.out = nn.Conv2d(width, num_labels, 1)
        self.temperature = 1.0  # chosen by `walk_tv` on training worlds (saved with the file)

    def grid(self, view: Tensor, line: Tensor, line_valid: Tensor) -> Tensor:
        """The network's input (n, L + 2, GRID_ROWS, GRID_COLS): the canonical view (n, 9, 9)
        and the line (n, LINE) with the cells drawn so far (-1: not yet)."""
        full = torch.cat([view, line[:, :, None]], 2)  # (n, 9, 10)
        x = F.one_hot(full.clamp(min=0), self.num_labels).permute(0, 3, 1, 2).float()
        x = x * (full >= 0)[:, None].float()
        pad = torch.ones_like(full, dtype=torch.float)
        pad[:, :, :-1] = (view < 0).float()
        pad[:, :, -1] = (~line_valid).float()
        drawn = torch.zeros_like(pad)
        drawn[:, :, -1] = (line >= 0).float()
        return torch.cat([x, pad[:, None], drawn[:, None]], 1)

    def forward(self, view: Tensor, line: Tensor, line_valid: Tensor) -> Tensor:
        """-> (n, LINE, num_labels) logits for every line cell."""
        h = F.gelu(self.inp(self.grid(view, line, line_valid))) + self.row_embed
        for conv in self.body:
            h = h + F.gelu(conv(h))
        return self.out(h)[:, :, :, -1].transpose(1, 2)

    @torch.no_grad()
    def sample(self, labels: Tensor, moves: Tensor, uniforms: Tensor,
               temperature: float | None = None) -> Tensor:
        """labels (n, VIEW_ROWS, VIEW_COLS) of the anchors, moves (n,), uniforms (n, LINE) in
        [0, 1) (each world's own draws) -> (n, LINE) sampled labels of the revealed lines in
        canonical order (-1 where a line has no cell). Two passes: the line's even cells, each
        given the view, then its odd cells, each given the view and both its drawn neighbours.
        `temperature` defaults to the prior's own."""
        temperature = self.temperature if temperature is None else temperature
        view, valid = canonical(labels.long(), moves)
        line = torch.full(valid.shape, -1, dtype=torch.long, device=labels.device)
        for parity in (0, 1):
            logits = self(view, line, valid).float() / temperature  # (n, LINE, L)
            cdf = logits.softmax(-1).cumsum(-1)
            pick = (cdf < uniforms[..., None] * cdf[..., -1:]).sum(-1).clamp(max=self.num_labels - 1)
            take = valid & (torch.arange(LINE, device=line.device) % 2 == parity)[None]
            line = torch.where(take, pick, line)
        return line

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | Path, info: dict | None = None) -> Path:
        return tensorfile.write(path, dict(self.state_dict()), {
            "format": "land-prior", "version": VERSION, "labels": self.num_labels,
            "width": self.width, "names": json.dumps(self.names), "temperature": self.temperature,
            "info": json.dumps(info or {})})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "LandPrior":
        state, meta = tensorfile.read(path, LandError, "land prior", "train one: python -m "
                                      "games.crafter.land --data DIR --checkpoint DIR")
        if meta.get("format") != "land-prior" or meta.get("version") != str(VERSION):
            raise LandError(f"{path} is not a version-{VERSION} land prior")
        for k, v in state.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise LandError(f"{path}: {k} holds NaN or infinite values")
        try:
            prior = cls(int(meta["labels"]), int(meta["width"]), json.loads(meta.get("names", "[]")))
            prior.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as e:
            raise LandError(f"{path}: its weights do not fit a land prior ({e})") from None
        prior.info = json.loads(meta.get("info", "{}"))
        prior.temperature = float(meta.get("temperature", 1.0))
        return prior.to(device).eval()


def fill_canvas(canvas: Tensor, moves: Tensor, line: Tensor, level: Tensor,
                textures: Tensor) -> Tensor:
    """Write sampled line labels (n, LINE) into view-memory canvases (n, 5, CH, CW) where they do
    not know the cell: each label's tile at the anchor's light level (n,) from the codebook's
    `textures()` (levels, labels, 147), known, age LAND_AGE. Returns a new canvas."""
    n = canvas.shape[0]
    dev = canvas.device
    ch, cw = canvas.shape[-2] // TILE, canvas.shape[-1] // TILE
    out = canvas.clone()
    cells = out.view(n, 5, ch, TILE, cw, TILE).permute(0, 2, 4, 1, 3, 5)  # (n, ch, cw, 5, T, T)
    line_rows, line_cols, _ = _tables(dev)
    rows, cols = line_rows[moves], line_cols[moves]
    bi = torch.arange(n, device=dev)[:, None].expand(-1, LINE)
    old = cells[bi, rows, cols]  # (n, LINE, 5, T, T)
    write = (line >= 0) & (old[:, :, 3, 0, 0] < 0.5)
    tex = textures[level[:, None].expand(-1, LINE), line.clamp(min=0)]  # (n, LINE, 147)
    rgb = tex.view(n, LINE, TILE, TILE, 3).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    new = torch.cat([rgb, torch.ones_like(rgb[:, :, :1]),
                     torch.full_like(rgb[:, :, :1], LAND_AGE)], 2)
    cells[bi, rows, cols] = torch.where(write[:, :, None, None, None], new, old)
    return out


# ---- training -----------------------------------------------------------------------------------

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(seed=True, **side_file_flags("land prior", DEFAULT_NAME, "land_prior"))
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of labelled training episodes")
    p.add_argument("--prefix", default="train_", help="episode name prefix (training seeds)")
    p.add_argument("--extra", nargs="*", default=[], help="more folders of labelled training "
                   "episodes, all of theirs (e.g. simulator.collect --revisit --split train)")
    p.add_argument("--heldout", type=int, default=8, help="of them, the last N are held out to "
                   "report the fit (still training seeds: the evaluation's worlds are never read)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=32, help="channels of the network (32: ~1 ms "
                   "a pass on one CPU core at batch 1)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.9],
                   help="sampling temperatures to try: the one whose walks (walk_tv) on the "
                        "held-out training episodes drift least is kept with the prior")
    args = p.parse_args(argv)
    if not args.out and not args.checkpoint:
        p.error("give --out FILE or --checkpoint DIR")
    paths = [q for q in list_episodes(args.data) if q.name.startswith(args.prefix)]
    if len(paths) <= args.heldout:
        raise LandError(f"{len(paths)} episodes {args.prefix}* under {args.data}: need more than "
                        f"--heldout {args.heldout}")
    eps = [load_episode(q) for q in paths]
    more = [load_episode(q) for folder in args.extra for q in list_episodes(folder)]
    names = list(eps[0].meta.get("label_names") or [])
    if "grass" not in names:
        raise LandError(f"{paths[0]} names no labels (meta label_names)")
    space = get_action_space(eps[0].meta.get("action_space", "crafter"))
    train = examples(eps[:-args.heldout] + more, space)
    held = examples(eps[-args.heldout:], space)
    prior, fit = train_prior(train, held, len(names), names, steps=args.steps, seed=args.seed,
                             width=args.width)
    walks = {str(t): walk_tv(prior, eps[-args.heldout:], space, t) for t in args.temperatures}
    prior.temperature = float(min(walks, key=walks.get))
    print(json.dumps({"walk_tv": walks, "temperature": prior.temperature}), flush=True)
    info = {"command": command_line("games.crafter.land", argv), "train_steps": int(len(train[0])),
            "walk_tv": walks, "temperature": prior.temperature,
            "heldout_steps": int(len(held[0])), "episodes": len(paths),
            "heldout_episodes": [q.name for q in paths[-args.heldout:]],
            "extra": list(args.extra), "fit": fit["log"], "best_step": fit["best_step"],
            "heldout": sampled_shares(prior, held, names.index("grass"))}
    if args.checkpoint:
        attach_side_file(args.checkpoint, "land_prior", DEFAULT_NAME, lambda f: prior.save(f, info))
    if args.out:
        prior.save(args.out, info)
    print(json.dumps(info["heldout"]))
    return info


if __name__ == "__main__":
    run_cli(main)
