"""Creatures that move in imagination: cows wander and zombies approach, by the game's own rules.

    python -m games.crafter.creatures --checkpoint assets/crafter_memory --worlds 8 --steps 400 \\
        --out assets/crafter_memory/eval/creatures.json

In the real game every creature near the player updates each step (`crafter.objects`): a cow
moves one cell in a random direction half the time, a zombie steps towards the player nine times
in ten (along the longer axis of the offset four times in five, else the shorter) and at random
otherwise; each only onto a free walkable cell. A denoiser trained on one-step windows learns that
a creature mostly stays where it was (any one step, most do) and draws every creature frozen.

`CreatureStage` (the checkpoint's `game.creatures`, after the codebook snap) plays those rules on
the snapped frame's cell labels: each cow or zombie in view steps by the game's odds (drawn from
(seed, world, step), so a world replays the same) onto a grass cell next to it, repainted with
the codebook's tiles at the frame's light (the creature's tile there, grass where it stood). The
frame so changed is what is shown, written into the context and remembered, so the next frame
draws on from the creature where it went. In a chunk of several frames the creatures step in its
last frame (the frames before were drawn jointly with them where they stood). Not handled: moves
onto sand or path (no creature-on-sand tile), creatures entering from outside the view (the
model's), skeletons (they live in the dark tunnels and shoot: left as drawn).

The measurement plays the real game from held-out seeds under the exploration policy, rolls the
model from the real context under the same actions (memory on), with and without the stage, and
reports, over the steps whose action is not a move (the view stays put), the share of in-view
cells (the player's aside) whose label changes from one frame to the next (the real game's from
its semantic map, the model's read by the evaluation's tile classifier), and the share of cow
cells whose cow is on a neighbouring cell the next frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from games.crafter.env import LABEL_NAMES
from worldmodel.pipeline import Stage

LABEL = {name: i for i, name in enumerate(LABEL_NAMES)}
COW, ZOMBIE, GRASS = LABEL["cow"], LABEL["zombie"], LABEL["grass"]
PLAYER = (3, 4)  # the player's cell in the view's labels (row, col)
DIRS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # crafter's Object.all_dirs, as (dx, dy)
STREAM = 4241  # this stage's draws, apart from any other stage's


def toward(r: int, c: int, long_axis: bool) -> tuple[int, int]:
    """crafter's Object.toward the player from cell (r, c), as (dx, dy)."""
    dx, dy = PLAYER[1] - c, PLAYER[0] - r
    if (abs(dx) > abs(dy)) if long_axis else (abs(dx) <= abs(dy)):
        return int(np.sign(dx)), 0
    return 0, int(np.sign(dy))


def plan_moves(labels: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    """The creatures' steps on one frame's labels (7, 9), by the game's odds: a list of (label,
    from row, from col, to row, to col), applied in order (a cell taken is taken)."""
    lab = labels.astype(np.int64).copy()
    rows, cols = lab.shape
    moves = []
    for r, c in zip(*np.nonzero((lab == COW) | (lab == ZOMBIE))):
        r, c = int(r), int(c)
        kind = int(lab[r, c])
        if kind == COW:
            if rng.random() >= 0.5:
                continue
            dx, dy = DIRS[int(rng.integers(4))]
        elif rng.random() < 0.9:  # in view a zombie is always within the game's 8 cells
            dx, dy = toward(r, c, rng.random() < 0.8)
        else:
            dx, dy = DIRS[int(rng.integers(4))]
        tr, tc = r + dy, c + dx
        if not (0 <= tr < rows and 0 <= tc < cols) or lab[tr, tc] != GRASS:
            continue
        lab[tr, tc], lab[r, c] = kind, GRASS
        moves.append((kind, r, c, tr, tc))
    return moves


class CreatureStage(Stage):
    """After the codebook snap: the creatures in view step by the game's rules (see module
    docstring). Needs a codebook with labels (its tiles draw them)."""

    name = "creatures"

    def __init__(self, book: Any):
        self.book = book

    def after(self, ro: Any, frame: Any) -> None:
        labels, levels = frame.state.get("frame_labels"), frame.state.get("frame_levels")
        if labels is None or levels is None:
            _, labels, levels = self.book.snap(frame.frames, return_labels=True)
        lab = labels[:, -1].cpu().numpy()
        lev = levels[:, -1].cpu().numpy()
        tex = self.book.textures()  # (levels, labels, 147) uint8
        n = frame.frames.shape[1]
        out, new = None, None
        for w in range(frame.frames.shape[0]):
            step = ro.clock[w] + n
            moves = plan_moves(lab[w], np.random.default_rng([ro.seed, w, step, STREAM]))
            if not moves:
                continue
            if out is None:
                out, new = frame.frames.clone(), labels.clone()
            for kind, r, c, tr, tc in moves:
                for cell, name in (((tr, tc), kind), ((r, c), GRASS)):
                    tile = tex[int(lev[w]), name].view(7, 7, 3).permute(2, 0, 1)
                    y, x = cell[0] * 7, cell[1] * 7
                    out[w, -1, :, y:y + 7, x:x + 7] = tile.to(out) / 127.5 - 1
                new[w, -1, tr, tc], new[w, -1, r, c] = kind, GRASS
        if out is None:
            return
        frame.frames = out
        frame.state["frame_labels"] = new
        if "labels" in frame.state:  # the land prior's: the last frame's labels and light
            frame.state["labels"] = (new[:, -1], frame.state["labels"][1])


# ---- measurement ----------------------------------------------------------------------------

def change_figures(labels: np.ndarray, acts: np.ndarray) -> dict:
    """labels (W, T, 7, 9), acts (W, T) (acts[:, t] made frame t): over the steps whose action is
    not a move, the share of view cells (the player's aside) whose label changes, and the share
    of cow cells whose cow is on a neighbouring cell the next frame."""
    from games.crafter.actions import ACTION_SPACE

    moves = [ACTION_SPACE.index(m) for m in ("move_left", "move_right", "move_up", "move_down")]
    keep = ~np.isin(acts[:, 1:], moves)  # (W, T-1) pairs (t, t+1) with the view put
    a, b = labels[:, :-1][keep], labels[:, 1:][keep]  # (P, 7, 9)
    mask = np.ones(a.shape[1:], bool)
    mask[PLAYER] = False
    changed = (a != b)[:, mask].mean() if len(a) else 0.0
    cows = moved = 0
    for pa, pb in zip(a, b):
        for r, c in zip(*np.nonzero(pa == COW)):
            cows += 1
            if pb[r, c] != COW and any(0 <= r + dy < 7 and 0 <= c + dx < 9 and pb[r + dy, c + dx] == COW
                                       and pa[r + dy, c + dx] != COW for dx, dy in DIRS):
                moved += 1
    return {"pairs": int(len(a)), "label_change_share": round(float(changed), 5),
            "cow_cells": int(cows), "cow_moved_share": round(moved / cows, 4) if cows else None}


def main(argv: list[str] | None = None) -> dict:
    from games.crafter.status import imagine, real_runs, with_and_without
    from games.crafter.tiles import TileClassifier
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.cli import common_flags
    from worldmodel.data.episode import write_json_atomic
    from worldmodel.evaluation.reports import command_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(checkpoint={"default": "assets/crafter_memory"},
                                                      out={"help": "write the JSON report here"})])
    p.add_argument("--worlds", type=int, default=8)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--first-seed", type=int, default=1_000_000, help="held-out seeds from here")
    p.add_argument("--tiles", default=None, help="the tile classifier's bank (default: the shipped one)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg = load_checkpoint(args.checkpoint, "cpu")
    stages, base = with_and_without(model.stages, CreatureStage, "games.crafter.creatures")
    clf = TileClassifier.load(args.tiles)
    seeds = list(range(args.first_seed, args.first_seed + args.worlds))
    real, acts, real_lab, _ = real_runs(seeds, args.steps)
    n_ctx = cfg.data.window - 1
    report = {"command": command_line("games.crafter.creatures", argv),
              "checkpoint": args.checkpoint, "memory": "on", "steps": args.steps, "seeds": seeds,
              "real": change_figures(real_lab[:, n_ctx - 1:], acts[:, n_ctx - 1:])}
    for key, st in (("with_creature_stage", stages), ("without", base)):
        gen = imagine(model, cfg, real, acts, st)
        lab = clf.classify(np.concatenate([real[:, n_ctx - 1:n_ctx], gen], 1))
        report[key] = change_figures(lab, acts[:, n_ctx - 1:])
    for key in ("real", "with_creature_stage", "without"):
        r = report[key]
        print(f"{key:19s} label change share {r['label_change_share']:.2%} over {r['pairs']} "
              f"still pairs; cows that moved {r['cow_moved_share']} of {r['cow_cells']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
    return report


if __name__ == "__main__":
    from games.crafter.creatures import main as creatures_main  # the module's classes
    from worldmodel.cli import run_cli

    run_cli(creatures_main)
