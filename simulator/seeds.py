"""The real-game seed ranges, in one table: which worlds each use of the game may draw.

A model must never be scored on a world it trained on, so every piece of code that picks real
game seeds for a purpose takes them from its own range here, and the ranges are disjoint
(tests/simulator/test_seeds.py). A new use gets a new row, after the last one.

    train          collect --split train: the world model's training episodes
    heldout        collect --split heldout: its evaluation episodes (worldmodel.evaluation.evaluate)
    revisit        collect --revisit: the memory benchmark's out-and-back trips (memory.revisit)
    revisit_train  collect --revisit --split train: trips to train on (memory.train_slowfast)
    plan           the planner's episodes (run_sim.py plan). Until these ranges were one table it
                   used revisit_train's seeds, 3,000,000 on: the planner figures in the model card
                   were measured there (worlds the shipped model never trained on, but a
                   slow-fast model trained on revisit_train trips would be planned on its own
                   training worlds).

Interactive play and recording (`run_sim.py --seed`, `WorldSession.reset(seed)`) take whatever
seed they are given: they score nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRange:
    """Seeds first, first + 1, ..., first + size - 1."""

    first: int
    size: int

    @property
    def stop(self) -> int:
        return self.first + self.size

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int) and self.first <= seed < self.stop

    def seed(self, index: int) -> int:
        """The range's `index`-th seed; an index past its end is an error, not a neighbour's seed."""
        if not 0 <= index < self.size:
            raise ValueError(f"seed index {index} is outside this range's {self.size} seeds")
        return self.first + index


SEED_RANGES: dict[str, SeedRange] = {
    "train": SeedRange(0, 1_000_000),
    "heldout": SeedRange(1_000_000, 1_000_000),
    "revisit": SeedRange(2_000_000, 1_000_000),
    "revisit_train": SeedRange(3_000_000, 1_000_000),
    "plan": SeedRange(4_000_000, 1_000_000),
}

# simulator.collect's splits -> their first seed (episode i of a split is seed first + i).
COLLECT_SPLITS = ("train", "heldout", "revisit", "revisit_train")
SPLIT_SEED_BASE = {split: SEED_RANGES[split].first for split in COLLECT_SPLITS}
