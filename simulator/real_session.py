"""The real game behind the session interface the window plays: `run_sim.py --real`.

`RealSession` answers what `simulator.play.PlayApp` asks of a `WorldSession` (reset, step, the
action space, the step count, the last step's time) from the real game itself, so a user sees the
ground truth (Minetest's first-person world, Crafter's) in the project's window before any model
of it exists. It has no model, so no memory, saved worlds or minimap (the window says so).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from worldmodel.data.episode import EpisodeError
from worldmodel.game import get_game


class RealSession:
    batch = 1
    context_len = 1
    cfg = None  # no model config
    checkpoint = None
    device = "real game"

    def __init__(self, game: str, size: int | None = None, **options: Any):
        spec = get_game(game)
        self.game = spec.name
        self.space = spec.action_space
        self.frame_size = int(size or spec.frame_size)
        self.env = spec.make_env(size=self.frame_size, **options)
        self.steps = 0
        self.last_step_ms = 0.0
        self.frame: np.ndarray | None = None

    def reset(self, seed: int | None = None, context: Any = None, actions: Any = None) -> np.ndarray:
        if context is not None or seed is None:
            raise EpisodeError("the real game starts from a seed, not from an episode's frames "
                               "(--real takes --seed, not --start)")
        self.frame = self.env.reset(int(seed))
        self.steps = 0
        return self.frame

    def action_index(self, action: Any) -> int:
        return self.space.index(action)

    def step(self, action: Any) -> np.ndarray:
        t = time.perf_counter()
        res = self.env.step(action)
        self.last_step_ms = (time.perf_counter() - t) * 1000
        self.frame = res.obs
        self.steps += 1
        return self.frame

    def status(self) -> str:
        """The HUD's line about the game: its pose."""
        pose = " ".join(f"{v:.1f}" for v in np.asarray(self.env.pose()).ravel())
        return f"real {self.game}   pose {pose}"

    def close(self) -> None:
        self.env.close()
