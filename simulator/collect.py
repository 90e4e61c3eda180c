"""Collect real-game episodes with an exploration policy: `python -m simulator.collect`.

Policy: sticky random actions biased to movement, plus scripted out-and-back trips (walk one way,
then retrace the same steps) so revisits appear in the data. Deterministic per seed. Train and
held-out seeds are disjoint ranges (`--split train|heldout`). `--revisit` records only trips
long enough to push the start out of the model's context window: for the memory benchmark
(held-out seeds, the default), or with `--split train` for slow-fast training
(`python -m memory.train_slowfast`) on trips of their own seeds.

A revisit episode is a short look around (4 noops), one trip of `--trip` moves out, a pause of 2
noops (where `memory.revisit.move_runs` splits the way out from the way back), the way back, then
noops up to `--length`. `--shape` picks the trip (meta "policy" records it):

    back  (policy "revisit")       one or two legs out, then the same steps reversed (the default)
    loop  (policy "revisit_loop")  a rectangle: a moves one way, b moves at a right angle
                                   (a + b = --trip, each at least --trip // 4), then a moves and
                                   b moves reversed: back at the start by the other two sides
    long  (policy "revisit_long")  three legs out (each turning a right angle), then the same
                                   steps reversed; meant for longer trips, e.g.
                                   `--trip 40 --length 120`

Episodes are named `{split}_{seed:07d}` whatever the shape, so a set of another shape takes other
worlds by its `--first` index (e.g. `--shape loop --first 100`), not other seeds.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from tqdm import tqdm

from games.crafter.policies import SHAPES, TRIPS, check_trip
from simulator.seeds import SPLIT_SEED_BASE  # split -> first seed, from the one table of ranges
from worldmodel.data.episode import EpisodeWriter
from worldmodel.game import get_game

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
    acts = itertools.islice(policies[policy](seed, length, trip=trip), length)
    # Collected data is re-creatable, so sync to disk only at close (recordings sync often).
    with EpisodeWriter(out, meta, video=video, overwrite=True, fsync_every=10**9) as writer:
        writer.add_frame(obs, first)
        for a in acts:
            res = env.step(a)
            writer.add_step(a, res.obs, res.reward, res.done, env.labels(),
                            pos=env.pose().tolist())
            if res.done:
                break
        return writer.num_steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write episodes into")
    p.add_argument("--game", default="crafter")
    p.add_argument("--split", choices=("train", "heldout"), default=None,
                   help="seed range (default: train; with --revisit, the benchmark's own seeds)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--first", type=int, default=0, help="index of the first episode (to extend a set)")
    p.add_argument("--length", type=int, default=400, help="steps per episode")
    p.add_argument("--revisit", action="store_true", help="record revisit trips (see --shape)")
    p.add_argument("--trip", type=int, default=24, help="moves out (and back) in a revisit trip")
    p.add_argument("--shape", choices=SHAPES, default=None,
                   help="the revisit trip's shape: back (out and back the same way, the default), "
                        "loop (a rectangle back by another path), long (three legs out, "
                        "retraced; use e.g. --trip 40 --length 120)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--video", action="store_true", help="also write a viewable video.mp4 per episode")
    args = p.parse_args(argv)
    if args.shape is not None and not args.revisit:
        p.error("--shape shapes revisit trips: add --revisit")
    shape = args.shape or "back"
    if args.revisit:
        try:
            check_trip(shape, args.trip)
        except ValueError as e:
            p.error(str(e))
    policy = TRIPS[shape][1] if args.revisit else "explore"

    from simulator.games import make_game

    game = make_game(args.game, size=args.size)
    if args.revisit:  # the benchmark's (held-out) trips, or trips of training seeds
        split = "revisit_train" if args.split == "train" else "revisit"
    else:
        split = args.split or "train"
    out = Path(args.out)
    total = 0
    bar = tqdm(range(args.first, args.first + args.episodes), desc=f"collect {split}", unit="ep")
    for i in bar:
        seed = SPLIT_SEED_BASE[split] + i
        total += collect_episode(game, out / f"{split}_{seed:07d}", seed, args.length, policy,
                                 args.trip, args.video)
        bar.set_postfix(steps=total)
    print(f"wrote {args.episodes} episodes, {total} steps, to {out}")


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)
