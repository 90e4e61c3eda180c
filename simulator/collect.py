"""Collect real-game episodes with an exploration policy: `python -m simulator.collect`.

`--game` picks the game (crafter, the default, or minetest) and `--policy` one of its exploration
policies (`Game.policies`; default "explore"), each deterministic per seed. Train and held-out
seeds are disjoint ranges (`--split train|heldout`). `--env KEY=VALUE` passes an option to the
real game (e.g. Minetest's `--env label_size=32 --env label_every=4`).

`--revisit` records only trips long enough to push the start out of the model's context window:
for the memory benchmark (held-out seeds, the default), or with `--split train` for slow-fast
training (`python -m memory.train_slowfast`) on trips of their own seeds. It plays the game's
"revisit" policy, or "revisit_SHAPE" for `--shape SHAPE`. Crafter's shapes:

    back  (policy "revisit")       one or two legs out, then the same steps reversed (the default)
    loop  (policy "revisit_loop")  a rectangle: a moves one way, b moves at a right angle
                                   (a + b = --trip, each at least --trip // 4), then a moves and
                                   b moves reversed: back at the start by the other two sides
    long  (policy "revisit_long")  three legs out (each turning a right angle), then the same
                                   steps reversed; meant for longer trips, e.g.
                                   `--trip 40 --length 120`

Episodes are named `{split}_{seed:07d}` whatever the policy, so a set of another shape takes
other worlds by its `--first` index (e.g. `--shape loop --first 100`), not other seeds.

A game that crashes or hangs mid-episode leaves that episode closed with what was written and
marked incomplete (meta.json "complete": false, "stopped": why); collection goes on with the
next one. Frames a game labels only some of (Minetest's `label_every`) carry NO_LABEL (255)
labels between.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simulator.seeds import SPLIT_SEED_BASE  # split -> first seed, from the one table of ranges
from worldmodel.cli import common_flags
from worldmodel.data.episode import NO_LABEL, EpisodeWriter
from worldmodel.game import GameCrash, get_game

def collect_episode(env, out: Path, seed: int, length: int, policy: str = "explore",
                    trip: int = 24, video: bool = False) -> int:
    """Record one episode of the game's exploration policy `policy` (`Game.policies`) from world
    `seed` of the running real game `env` (a `worldmodel.game.RealEnv`) into `out`: frames,
    actions, poses and, where the game has them, its ground-truth labels. Returns the steps
    taken (fewer than `length` if the episode ended)."""
    policies = get_game(env.name).policies()
    if policy not in policies:
        raise ValueError(f"{env.name} has no policy {policy!r}; it has {sorted(policies)}")
    obs = env.reset(seed)
    meta = {"game": env.name, "action_space": env.action_space.name, "seed": seed,
            "fps": env.fps, "policy": policy, "length": length, "start_pos": env.pose().tolist()}
    first = env.labels()  # the game's ground truth of the frame, if it has one
    if first is not None:
        meta["label_names"] = list(get_game(env.name).label_names)
    meta.update(env.episode_meta())  # what else the game tells of this world
    blank = None if first is None else np.full_like(first, NO_LABEL)
    acts = itertools.islice(policies[policy](seed, length, trip=trip), length)
    # Collected data is re-creatable, so sync to disk only at close (recordings sync often).
    with EpisodeWriter(out, meta, video=video, overwrite=True, fsync_every=10**9) as writer:
        writer.add_frame(obs, first)
        for a in acts:
            res = env.step(a)
            labels = env.labels()
            if labels is None and blank is not None:
                labels = blank
            writer.add_step(a, res.obs, res.reward, res.done, labels, pos=env.pose().tolist())
            if res.done:
                break
        return writer.num_steps


def env_options(pairs: list[str]) -> dict:
    """`KEY=VALUE` strings as keyword options (numbers where they parse as numbers)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--env takes KEY=VALUE, got {pair!r}")
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(out={"required": True,
                                                           "help": "folder to write episodes into"})])
    p.add_argument("--game", default="crafter", help="crafter (default) or minetest")
    p.add_argument("--policy", default=None, help="the game's exploration policy (default: explore)")
    p.add_argument("--split", choices=("train", "heldout"), default=None,
                   help="seed range (default: train; with --revisit, the benchmark's own seeds)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--first", type=int, default=0, help="index of the first episode (to extend a set)")
    p.add_argument("--length", type=int, default=400, help="steps per episode")
    p.add_argument("--revisit", action="store_true", help="record revisit trips (see --shape)")
    p.add_argument("--trip", type=int, default=24, help="moves out (and back) in a revisit trip")
    p.add_argument("--shape", default=None,
                   help="the revisit trip's shape, policy revisit_SHAPE (Crafter: back, the "
                        "default; loop, a rectangle back by another path; long, three legs out, "
                        "retraced: use e.g. --trip 40 --length 120)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the real game (repeatable)")
    p.add_argument("--video", action="store_true", help="also write a viewable video.mp4 per episode")
    args = p.parse_args(argv)
    game = get_game(args.game)
    if args.shape is not None and not args.revisit:
        p.error("--shape shapes revisit trips: add --revisit")
    if args.revisit and args.policy is not None:
        p.error("--revisit plays the game's revisit policy: leave out --policy")
    if args.revisit:
        policy = "revisit" if args.shape in (None, "back") else f"revisit_{args.shape}"
    else:
        policy = args.policy or "explore"
    policies = game.policies()
    if policy not in policies:
        what = f"--shape {args.shape}" if args.shape else f"policy {policy!r}"
        p.error(f"{game.name} has no {what}; its policies: {sorted(policies)}")
    try:  # a trip the policy cannot make is told now, not at the first episode
        next(iter(policies[policy](0, args.length, trip=args.trip)), None)
        options = env_options(args.env)
    except ValueError as e:
        p.error(str(e))

    env = game.make_env(size=args.size, **options)
    if args.revisit:  # the benchmark's (held-out) trips, or trips of training seeds
        split = "revisit_train" if args.split == "train" else "revisit"
    else:
        split = args.split or "train"
    out = Path(args.out)
    total, failed = 0, []
    try:
        bar = tqdm(range(args.first, args.first + args.episodes), desc=f"collect {split}", unit="ep")
        for i in bar:
            seed = SPLIT_SEED_BASE[split] + i
            name = f"{split}_{seed:07d}"
            try:
                total += collect_episode(env, out / name, seed, args.length, policy, args.trip,
                                         args.video)
            except GameCrash as e:  # the episode is kept, marked incomplete; go on
                failed.append(name)
                print(f"error: {name}: {e}; kept what was written, marked incomplete",
                      file=sys.stderr)
            bar.set_postfix(steps=total)
    finally:
        env.close()  # every process the game started ends here, Ctrl-C included
    print(f"wrote {args.episodes} episodes, {total} steps, to {out}"
          + (f"; {len(failed)} incomplete: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)
