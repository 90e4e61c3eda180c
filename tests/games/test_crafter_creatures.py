"""Creatures that move in imagination (games/crafter/creatures.py): cows wander and zombies
approach by the game's odds, painted with the codebook's tiles."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from conftest import TINY_YAML, perturb_, smooth_frames
from games.crafter import creatures
from games.crafter.codebook import TileCodebook
from games.crafter.env import LABEL_NAMES
from worldmodel.config import load_config
from worldmodel.dynamics import Denoiser
from worldmodel.pipeline import Frame
from worldmodel.rollout import Rollout

LAB = {n: i for i, n in enumerate(LABEL_NAMES)}


def solid_book() -> TileCodebook:
    """One solid-colour tile per label, all at one light level."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (len(LABEL_NAMES), 3), dtype=np.uint8)
    tiles = np.repeat(colours[:, None], 49, 1).reshape(len(LABEL_NAMES), 147)
    return TileCodebook(tiles, np.zeros(len(tiles), np.int64), labels=np.arange(len(tiles)))


def view(**cells: str) -> np.ndarray:
    lab = np.full((7, 9), LAB["grass"], np.uint8)
    lab[creatures.PLAYER] = LAB["player"]
    for key, name in cells.items():
        lab[int(key[1]), int(key[3])] = LAB[name]
    return lab


def test_cows_wander_half_the_time_onto_grass_and_zombies_approach():
    rng = np.random.default_rng(1)
    cow = view(r1c1="cow")
    moved = [len(creatures.plan_moves(cow, rng)) for _ in range(2000)]
    assert 0.45 < np.mean(moved) < 0.55  # half the time, any direction free
    boxed = view(r1c1="cow", r0c1="stone", r2c1="water", r1c0="tree", r1c2="table")
    assert not any(creatures.plan_moves(boxed, rng) for _ in range(200))  # only onto grass
    zombie = view(r0c8="zombie")
    steps = [creatures.plan_moves(zombie, rng) for _ in range(2000)]
    closer = [m for m in steps if m and abs(m[0][3] - 3) + abs(m[0][4] - 4) < 3 + 4]
    assert len(closer) / len(steps) > 0.85  # towards the player nine times in ten


def test_a_cow_in_view_walks_off_within_a_few_frames_and_is_drawn_with_the_books_tiles():
    book = solid_book()
    stage = creatures.CreatureStage(book)
    tex = book.textures()[0].float() / 127.5 - 1  # (labels, 147)
    frame_px = torch.empty(1, 1, 3, 64, 64)
    lab0 = view(r5c6="cow")
    for r in range(7):
        for c in range(9):
            frame_px[0, 0, :, r * 7:(r + 1) * 7, c * 7:(c + 1) * 7] = \
                tex[int(lab0[r, c])].view(7, 7, 3).permute(2, 0, 1)
    ro = SimpleNamespace(seed=0, clock=[10], stage_state={})
    where = [(5, 6)]
    for t in range(12):
        frame = Frame(torch.zeros(1, 1, dtype=torch.long), None, None, frames=frame_px)
        frame.frames, lab, level = book.snap(frame.frames, return_labels=True)
        frame.state = {"frame_labels": lab, "frame_levels": level}
        stage.after(ro, frame)
        frame_px = frame.frames
        _, lab, _ = book.snap(frame_px, return_labels=True)
        cows = torch.nonzero(lab[0, 0] == LAB["cow"]).tolist()
        assert len(cows) == 1 and torch.equal(frame.state["frame_labels"], lab)
        where.append(tuple(cows[0]))
        ro.clock = [ro.clock[0] + 1]
    assert sum(a != b for a, b in zip(where, where[1:])) >= 3  # it wandered, a cell at a time
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) <= 1 for a, b in zip(where, where[1:]))


def test_a_rollout_with_creatures_replays_the_same_world():
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "data.window=4"])
    torch.manual_seed(0)
    model = perturb_(Denoiser(cfg.model), 0, 0.05).eval()
    book = solid_book()
    ctx = smooth_frames((1, 3, 3, 64, 64), seed=2)

    def run(stages):
        model.stages = stages
        ro = Rollout(model, cfg, context=3, seed=0)
        ro.reset(ctx)
        return torch.stack([ro.step(torch.tensor([0])) for _ in range(6)])

    from games.crafter.game import SnapStage

    a = run([SnapStage(book, False), creatures.CreatureStage(book)])
    b = run([SnapStage(book, False), creatures.CreatureStage(book)])
    assert torch.equal(a, b)
    model.stages = []
