"""Crafter (Hafner 2021) behind a small reset(seed)/step(action) interface."""

from __future__ import annotations

import crafter
import numpy as np

from games.crafter.actions import ACTION_SPACE
from games.crafter.geometry import VIEW_COLS, VIEW_ROWS
from worldmodel.game import StepResult

# Crafter 1.8's semantic ids: engine.World numbers [None] + data.yaml's materials, then
# env.SemanticView appends the object types (Player, Cow, Zombie, Skeleton, Arrow, Plant).
LABEL_NAMES = ("void", "water", "grass", "stone", "path", "sand", "tree", "lava", "coal", "iron",
               "diamond", "table", "furnace", "player", "cow", "zombie", "skeleton", "arrow",
               "plant")


def semantic_view(semantic: np.ndarray, pos: tuple[int, int] | np.ndarray) -> np.ndarray:
    """The world view's labels (VIEW_ROWS, VIEW_COLS) uint8 from the whole world's semantic map
    (indexed [x, y]) and the player's cell; cells outside the world are 0 ("void")."""
    x0, y0 = int(pos[0]) - VIEW_COLS // 2, int(pos[1]) - VIEW_ROWS // 2
    out = np.zeros((VIEW_ROWS, VIEW_COLS), np.uint8)
    w, h = semantic.shape
    xs, ys = np.arange(x0, x0 + VIEW_COLS), np.arange(y0, y0 + VIEW_ROWS)
    okx, oky = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    out[np.ix_(oky, okx)] = semantic[np.ix_(xs[okx], ys[oky])].T
    return out


class CrafterEnv:
    """The real game. `reset(seed)` gives a deterministic world per seed; `step(action)` one tick."""

    name = "crafter"
    fps = 10

    def __init__(self, size: int = 64, length: int = 10000):
        self.size = size
        self.length = length
        self.action_space = ACTION_SPACE
        self._env = None
        self.seed: int | None = None

    def reset(self, seed: int) -> np.ndarray:
        self.seed = int(seed)
        self._env = crafter.Env(area=(64, 64), view=(9, 9), size=(self.size, self.size),
                                      reward=True, length=self.length, seed=self.seed)
        return self._env.reset()

    def step(self, action: int | str) -> StepResult:
        if self._env is None:
            raise RuntimeError("call reset(seed) before step()")
        a = self.action_space.index(action)
        obs, reward, done, info = self._env.step(a)
        return StepResult(obs, float(reward), bool(done), info)

    @property
    def player_pos(self) -> tuple[int, int]:
        return tuple(int(v) for v in self._env._player.pos)

    # The semantic id of every label the world view can show, in the order of the game's own
    # `info['semantic']` (materials, then objects; 0 is outside the world, drawn plain grey).
    label_names = LABEL_NAMES

    def view_labels(self) -> np.ndarray:
        """(7, 9) uint8 semantic ids of the world-view tiles of the current frame, [row, col]:
        tile (col x, row y) shows cell player_pos + (x - 4, y - 3) (`../shared/CRAFTER.md`),
        read from the game's own semantic map, never from pixels."""
        if self._env is None:
            raise RuntimeError("call reset(seed) before view_labels()")
        return semantic_view(self._env._sem_view(), self.player_pos)

    # The core's RealEnv protocol (worldmodel.game): the pose is the player's cell, the labels the
    # world view's per-tile semantic ids.
    def pose(self) -> np.ndarray:
        return np.asarray(self.player_pos, np.int64)

    def labels(self) -> np.ndarray:
        return self.view_labels()

    def episode_meta(self) -> dict:
        return {}

    def close(self) -> None:
        self._env = None
