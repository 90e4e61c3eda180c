"""The status and inventory rows in imagination (games/crafter/status.py): drawn from the game's
own cells, kept by the game's rules, saved with the world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_YAML, perturb_
from games.crafter import status
from games.crafter.env import LABEL_NAMES, CrafterEnv
from worldmodel.config import load_config
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.dynamics import Denoiser
from worldmodel.rollout import Rollout

NAMES = status.game_tables()[0]
LAB = {n: i for i, n in enumerate(LABEL_NAMES)}


def inventory(**values: int) -> np.ndarray:
    return np.asarray([values.get(n, status.game_tables()[1][n]["initial"]) for n in NAMES])


def grass_view(**cells: str) -> np.ndarray:
    """(7, 9) labels: grass with the player at its cell, and `cells` ("r3c5"="tree") set."""
    lab = np.full((7, 9), LAB["grass"], np.uint8)
    lab[status.PLAYER] = LAB["player"]
    for key, name in cells.items():
        r, c = int(key[1]), int(key[3])
        lab[r, c] = LAB[name]
    return lab


def test_the_rows_are_the_games_own_drawing_and_read_back_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.integers(0, 10, len(NAMES))
        rows = status.draw_rows(values)
        assert np.array_equal(rows, status.item_view(dict(zip(NAMES, values.tolist()))))
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[49:63, 0:63] = rows
        assert np.array_equal(status.read_values(frame), values)
        assert status.cell_report(frame).all()
    env = CrafterEnv()
    obs = env.reset(3)
    for a in [5, 5, 1, 5, 4, 4, 5, 0, 0] * 6:  # the real game's frames read as its inventory says
        r = env.step(a)
        assert np.array_equal(status.read_values(r.obs), [r.info["inventory"][n] for n in NAMES])
        assert status.cell_report(r.obs).all()
    smeared = obs.copy()
    smeared[50:55, 8:13] = (160, 60, 200)  # a purple smear over the food icon
    ok = status.cell_report(smeared)
    assert not ok[1] and ok[0] and ok[2:].all()


def test_the_rules_follow_the_real_game_over_a_long_idle():
    """Standing still for 300 steps from the start: food, drink and energy fall as the game
    says, step for step (the game's own frames' labels as what the player acts on)."""
    env = CrafterEnv()
    obs = env.reset(11)
    s = status.initial_state(obs, 0)
    before = env.view_labels()
    for t in range(300):
        r = env.step(0)
        after = env.view_labels()
        s = status.update(s, "noop", before, after, 0.5)
        before = after
        assert np.array_equal(s[:16], [r.info["inventory"][n] for n in NAMES]), t
    assert s[1] < 9 and s[2] < 9 and s[3] < 9  # food, drink and energy fell


def test_collecting_wood_raises_the_count_and_placing_a_table_spends_it():
    s = status.initial_state(np.zeros((64, 64, 3), np.uint8), 0)
    s[:16] = inventory()
    s[status.FX], s[status.FY] = 1, 0  # facing right: the cell right of the player
    tree, grass = grass_view(r3c5="tree"), grass_view()
    for k in range(1, 4):
        s = status.update(s, "do", tree, tree, 0.5)
        assert s[NAMES.index("wood")] == k
    uses = status.game_tables()[3]["table"]["uses"]["wood"]
    s = status.update(s, "place_table", tree, tree, 0.5)  # a tree there: nothing placed
    assert s[NAMES.index("wood")] == 3
    s = status.update(s, "place_table", grass, grass, 0.5)
    assert s[NAMES.index("wood")] == 3 - uses
    table = grass_view(r3c5="table")
    s[NAMES.index("wood")] = 1
    s = status.update(s, "make_wood_pickaxe", table, table, 0.5)
    assert s[NAMES.index("wood")] == 0 and s[NAMES.index("wood_pickaxe")] == 1
    stone = grass_view(r3c5="stone")
    s = status.update(s, "do", stone, stone, 0.5)  # the pickaxe mines stone
    assert s[NAMES.index("stone")] == 1
    s = status.update(s, "move_up", grass, grass, 0.5)  # a move turns the player
    assert (s[status.FX], s[status.FY]) == (0, -1)
    water = grass_view(r2c4="water")
    s[2] = 5
    s = status.update(s, "do", water, water, 0.5)
    assert s[2] == 6
    zombie = grass_view(r3c3="zombie")
    health = s[0]
    s = status.update(s, "noop", grass, zombie, 0.5)
    assert s[0] == health - 2  # a zombie next to the player hits, then cools down
    s = status.update(s, "noop", zombie, zombie, 0.5)
    assert s[0] == health - 2


class ScriptedBook:
    """A codebook stand-in whose snap leaves the frames and reads fixed labels."""

    def __init__(self, labels: np.ndarray):
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def snap(self, frames, return_labels=False):
        lead = frames.shape[:-3]
        lab = self.labels.expand(*lead, 7, 9)
        return frames, lab, torch.zeros(lead, dtype=torch.long)


def real_context(seed: int, n: int = 3) -> torch.Tensor:
    env = CrafterEnv()
    frames = [env.reset(seed)] + [env.step(0).obs for _ in range(n - 1)]
    return to_float(torch.from_numpy(np.stack(frames)))[None]


def test_a_rollout_draws_the_rows_from_the_state_and_saves_it_with_the_world():
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "data.window=4"])
    torch.manual_seed(0)
    model = perturb_(Denoiser(cfg.model), 0, 0.05).eval()
    # the real game's first frame faces down: a tree below the player
    model.stages = [status.StatusStage(ScriptedBook(grass_view(r4c4="tree")))]
    ro = Rollout(model, cfg, context=3, seed=0)
    ro.reset(real_context(4))
    wood = NAMES.index("wood")
    for k in range(1, 3):
        shown = to_uint8(ro.step(torch.tensor([5]))).cpu().numpy()  # do: collect the tree
        assert status.cell_report(shown[0]).all()  # only cells the game draws
        assert status.read_values(shown[0])[wood] == k
    kept = to_uint8(ro.last_clean[0, 0]).cpu().numpy()
    assert status.read_values(kept)[wood] == 2  # the context holds the rows too
    saved = ro.world_state(0)
    assert saved["stage.status"][wood] == 2
    ro.reset_worlds([0], real_context(5))
    assert status.read_values(to_uint8(ro.step(torch.tensor([0]))).cpu().numpy()[0])[wood] == 0
    ro.load_world_state(0, saved)
    assert status.read_values(to_uint8(ro.step(torch.tensor([5]))).cpu().numpy()[0])[wood] == 3
    bad = dict(saved, **{"stage.status": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="status state"):
        ro.check_world_state(bad)
    with pytest.raises(ValueError, match="no stage"):
        ro.check_world_state(dict(saved, **{"stage.weather": torch.zeros(1, dtype=torch.float64)}))
    model.stages = []


def test_the_status_switch_needs_a_labelled_codebook(tmp_path):
    from games.crafter.game import GAME
    from worldmodel.checkpoint import CheckpointError

    cfg = load_config(TINY_YAML, ["model.frame_size=64", "game.status=true"])
    with pytest.raises(CheckpointError, match="game.status needs a tile codebook"):
        GAME.stages(cfg, tmp_path, "cpu")
