"""Crafter (Hafner 2021) behind a small reset(seed)/step(action) interface."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.actions import get_action_space


@dataclass
class StepResult:
    obs: np.ndarray  # (H, W, 3) uint8
    reward: float
    done: bool
    info: dict


class CrafterGame:
    """The real game. `reset(seed)` gives a deterministic world per seed; `step(action)` one tick."""

    name = "crafter"
    fps = 10

    def __init__(self, size: int = 64, length: int = 10000):
        import crafter

        self.size = size
        self.length = length
        self.action_space = get_action_space("crafter")
        self._crafter = crafter
        self._env = None
        self.seed: int | None = None

    def reset(self, seed: int) -> np.ndarray:
        self.seed = int(seed)
        self._env = self._crafter.Env(area=(64, 64), view=(9, 9), size=(self.size, self.size),
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
