"""Collect real-game episodes with an exploration policy: `python -m simulator.collect`.

Policy: sticky random actions biased to movement, plus scripted out-and-back trips (walk one way,
then retrace the same steps) so revisits appear in the data. Deterministic per seed. Train and
held-out seeds are disjoint ranges (`--split train|heldout`). `--revisit` records only
out-and-back trips long enough to push the start out of the model's context window: for the
memory benchmark (held-out seeds, the default), or with `--split train` for slow-fast training
(`python -m memory.train_slowfast`) on trips of their own seeds.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from simulator.seeds import SPLIT_SEED_BASE  # split -> first seed, from the one table of ranges
from worldmodel.data.episode import EpisodeWriter

MOVES = (1, 2, 3, 4)  # left, right, up, down
OPPOSITE = {1: 2, 2: 1, 3: 4, 4: 3}


def exploration_policy(seed: int, length: int, trip_prob: float = 0.15) -> Iterator[int]:
    """Sticky random actions biased to movement, with occasional out-and-back trips."""
    rng = np.random.RandomState(seed)
    probs = np.full(17, 0.2 / 12)  # 12 non-movement actions share 20%
    probs[list(MOVES)] = 0.8 / 4 * 0.95
    probs[5] += 0.8 * 0.05  # "do": interact with what is in front
    probs /= probs.sum()
    t = 0
    while t < length:
        if rng.rand() < trip_prob / 10:
            for a in out_and_back(rng, rng.randint(4, 12)):
                yield a
                t += 1
            continue
        a = int(rng.choice(17, p=probs))
        for _ in range(rng.geometric(0.3)):  # sticky: mean ~3 repeats
            yield a
            t += 1


def out_and_back(rng: np.random.RandomState, length: int, pause: int = 0) -> list[int]:
    """A trip of `length` moves (one or two legs), optional pause, then the same steps reversed."""
    first, second = rng.choice(MOVES, 2, replace=False)
    split = rng.randint(length // 2, length + 1)
    out = [int(first)] * split + [int(second)] * (length - split)
    back = [OPPOSITE[a] for a in reversed(out)]
    return out + [0] * pause + back


def revisit_policy(seed: int, length: int, trip: int) -> Iterator[int]:
    """A short look around, then one long out-and-back trip, then noops until `length`."""
    rng = np.random.RandomState(seed)
    acts = [0] * 4 + out_and_back(rng, trip, pause=2)
    acts += [0] * max(0, length - len(acts))
    yield from acts[:length]


def collect_episode(game, out: Path, seed: int, length: int, policy: str = "explore",
                    trip: int = 24, video: bool = False) -> int:
    obs = game.reset(seed)
    meta = {"game": game.name, "action_space": game.action_space.name, "seed": seed,
            "fps": game.fps, "policy": policy, "length": length, "start_pos": list(game.player_pos)}
    labels = getattr(game, "view_labels", None)  # the game's per-tile ground truth, if it has one
    if labels is not None:
        meta["label_names"] = list(game.label_names)
    acts = (exploration_policy(seed, length) if policy == "explore"
            else revisit_policy(seed, length, trip))
    acts = itertools.islice(acts, length)
    # Collected data is re-creatable, so sync to disk only at close (recordings sync often).
    with EpisodeWriter(out, meta, video=video, overwrite=True, fsync_every=10**9) as writer:
        writer.add_frame(obs, labels() if labels else None)
        for a in acts:
            res = game.step(a)
            writer.add_step(a, res.obs, res.reward, res.done, labels() if labels else None,
                            pos=list(game.player_pos))
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
    p.add_argument("--revisit", action="store_true", help="record out-and-back revisit trips")
    p.add_argument("--trip", type=int, default=24, help="moves out (and back) in a revisit trip")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--video", action="store_true", help="also write a viewable video.mp4 per episode")
    args = p.parse_args(argv)

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
        total += collect_episode(game, out / f"{split}_{seed:07d}", seed, args.length,
                                 "revisit" if args.revisit else "explore", args.trip, args.video)
        bar.set_postfix(steps=total)
    print(f"wrote {args.episodes} episodes, {total} steps, to {out}")


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)
