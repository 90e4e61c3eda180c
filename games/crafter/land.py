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
them; live, the anchor's labels come from the codebook's snap. `game.land_prior` names the
file in a checkpoint folder (needs a codebook with labels and model.view_memory).

The land prior's parts: games.crafter.land_model (the geometry, the network, its file, the
canvas) and games.crafter.land_train (the training and its figures); here the command.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from games.crafter.land_model import (DEFAULT_NAME, LINE, VERSION, LandError, LandPrior, canonical,
                                      fill_canvas, revealed_line)
from games.crafter.land_train import (calibrate_bias, examples, long_walk_shares, revealed_shares,
                                     sampled_shares, train_prior, walk_tv)
from worldmodel.actions import get_action_space
from worldmodel.checkpoint import attach_side_file
from worldmodel.cli import common_flags, run_cli, side_file_flags
from worldmodel.data import list_episodes, load_episode
from worldmodel.evaluation.reports import command_line

__all__ = ["DEFAULT_NAME", "LINE", "VERSION", "LandError", "LandPrior", "canonical", "fill_canvas",
           "main", "revealed_line"]


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
    p.add_argument("--calibration-rounds", type=int, default=5, help="rounds of fitting the "
                   "label offsets so that long walks draw the game's label shares (0: none)")
    p.add_argument("--calibration-steps", type=int, default=400, help="moves per calibration walk")
    p.add_argument("--calibrate", action="store_true", help="only calibrate the prior already in "
                   "--checkpoint (its label offsets refitted, the network kept) and write it back")
    args = p.parse_args(argv)
    if not args.out and not args.checkpoint:
        p.error("give --out FILE or --checkpoint DIR")
    if args.calibrate:
        return recalibrate(args, argv)
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
    calibration = (calibrate_bias(prior, eps + more, space, args.calibration_steps,
                                  args.calibration_rounds) if args.calibration_rounds else None)
    info = {"command": command_line("games.crafter.land", argv), "train_steps": int(len(train[0])),
            "walk_tv": walks, "temperature": prior.temperature,
            "heldout_steps": int(len(held[0])), "episodes": len(paths),
            "heldout_episodes": [q.name for q in paths[-args.heldout:]],
            "extra": list(args.extra), "fit": fit["log"], "best_step": fit["best_step"],
            "heldout": sampled_shares(prior, held, names.index("grass")),
            "calibration": calibration}
    if args.checkpoint:
        attach_side_file(args.checkpoint, "land_prior", DEFAULT_NAME, lambda f: prior.save(f, info))
    if args.out:
        prior.save(args.out, info)
    print(json.dumps(info["heldout"]))
    return info


def recalibrate(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """`--calibrate`: the label offsets of the checkpoint's prior refitted on the training
    episodes (`calibrate_bias`), the network and its temperature kept, written back."""
    from pathlib import Path

    from worldmodel.checkpoint import load_config_from_checkpoint

    if not args.checkpoint:
        raise LandError("--calibrate refits the prior of a checkpoint: give --checkpoint DIR")
    name = load_config_from_checkpoint(args.checkpoint).game.get("land_prior") or ""
    if not name:
        raise LandError(f"{args.checkpoint} has no land prior to calibrate (game.land_prior)")
    path = Path(args.checkpoint) / name
    prior = LandPrior.load(path)
    paths = [q for q in list_episodes(args.data) if q.name.startswith(args.prefix)]
    eps = [load_episode(q) for q in paths]
    eps += [load_episode(q) for folder in args.extra for q in list_episodes(folder)]
    if not eps:
        raise LandError(f"no episodes {args.prefix}* under {args.data}")
    space = get_action_space(eps[0].meta.get("action_space", "crafter"))
    prior.label_bias = prior.label_bias * 0
    calibration = calibrate_bias(prior, eps, space, args.calibration_steps,
                                 max(1, args.calibration_rounds))
    calibration["command"] = command_line("games.crafter.land", argv)
    info = dict(prior.info, calibration=calibration)
    prior.save(path, info)
    print(json.dumps(calibration["rounds"]))
    return info


if __name__ == "__main__":
    run_cli(main)
