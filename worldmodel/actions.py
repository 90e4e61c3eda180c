"""Action spaces as data, each with an encoder to the vector the network consumes.

The network sees every action as a float vector of `space.dim` (one-hot for discrete spaces), plus
a per-frame "dropped" flag that swaps it for a learned null action (classifier-free guidance and
the action-agnostic mode used by episodic memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from worldmodel import plugins


class ActionError(ValueError):
    """An action that is not in the action space."""


@dataclass(frozen=True)
class DiscreteActionSpace:
    name: str
    actions: tuple[str, ...]

    kind = "discrete"

    @property
    def n(self) -> int:
        return len(self.actions)

    @property
    def dim(self) -> int:
        return self.n

    def index(self, action: int | str) -> int:
        if isinstance(action, str):
            if action not in self.actions:
                raise ActionError(f"unknown action {action!r} for {self.name}; known: {self.actions}")
            return self.actions.index(action)
        a = int(action)
        if a != action or not 0 <= a < self.n:
            raise ActionError(f"action {action!r} out of range for {self.name} (0..{self.n - 1})")
        return a

    def validate(self, actions: np.ndarray | Sequence[int]) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= self.n):
            bad = arr[(arr < 0) | (arr >= self.n)] if np.issubdtype(arr.dtype, np.number) else arr
            raise ActionError(f"actions out of range for {self.name} (0..{self.n - 1}): "
                              f"{np.unique(bad)[:8].tolist()}")
        return arr.astype(np.int64)

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """(...,) int64 -> (..., dim) float one-hot."""
        return torch.nn.functional.one_hot(actions.long(), self.n).float()


@dataclass(frozen=True)
class MinecraftActionSpace:
    """Movement/jump/attack/use keys as binary buttons, camera yaw/pitch in degrees per step."""

    name: str = "minecraft"
    buttons: tuple[str, ...] = ("forward", "back", "left", "right", "jump", "sneak", "sprint",
                                "attack", "use")
    camera_max_deg: float = 30.0

    kind = "continuous"

    @property
    def dim(self) -> int:
        return len(self.buttons) + 2

    def validate(self, actions: np.ndarray) -> np.ndarray:
        arr = np.asarray(actions, dtype=np.float32)
        if arr.shape[-1:] != (self.dim,):
            raise ActionError(f"{self.name} actions need last dim {self.dim} "
                              f"({', '.join(self.buttons)}, yaw, pitch); got shape {arr.shape}")
        keys = arr[..., : len(self.buttons)]
        if not np.isin(keys, (0.0, 1.0)).all():
            raise ActionError(f"{self.name} buttons must be 0 or 1")
        if np.abs(arr[..., -2:]).max(initial=0) > self.camera_max_deg:
            raise ActionError(f"{self.name} camera moves must be within ±{self.camera_max_deg} deg")
        return arr

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of each entry: buttons 0..1, camera moves within ±camera_max_deg."""
        n = len(self.buttons)
        m = self.camera_max_deg
        return (np.array([0.0] * n + [-m, -m], np.float32), np.array([1.0] * n + [m, m], np.float32))

    def snap(self, vector: np.ndarray) -> np.ndarray:
        """Any vector within `bounds` (a Box sample, several keys held at once) as an action:
        a button is pressed from 0.5, the camera move clipped to its range."""
        low, high = self.bounds()
        v = np.clip(np.asarray(vector, np.float32), low, high)
        n = len(self.buttons)
        v[..., :n] = (v[..., :n] >= 0.5).astype(np.float32)
        return v

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        out = actions.float().clone()
        out[..., -2:] = out[..., -2:] / self.camera_max_deg
        return out


ActionSpace = DiscreteActionSpace | MinecraftActionSpace

# Action spaces by name: the core's own, and each game's (registered when its package loads).
ACTION_SPACES: dict[str, ActionSpace] = {"minecraft": MinecraftActionSpace()}


def register_action_space(space: ActionSpace) -> ActionSpace:
    """Make `space` known by its name (a game's package calls this on import)."""
    ACTION_SPACES[space.name] = space
    return space


def get_action_space(name: str) -> ActionSpace:
    """The action space `name`; a game's is found by loading that game (`worldmodel.plugins`)."""
    if name not in ACTION_SPACES:
        plugins.load(name)
    if name not in ACTION_SPACES:
        raise ActionError(f"unknown action space {name!r}; known: {sorted(ACTION_SPACES)}")
    return ACTION_SPACES[name]
