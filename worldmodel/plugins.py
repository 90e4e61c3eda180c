"""Games as plugins: the `neural_game_sim.games` entry-point group (pyproject.toml) maps a game's
name to the object its package exports, so the core loads a game by name without naming it."""

from __future__ import annotations

from importlib import metadata
from typing import Any

ENTRY_POINTS = "neural_game_sim.games"


def entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINTS)}


def load(name: str) -> Any | None:
    """The object the game `name` exports (importing its package registers its parts), or None
    where no installed game has that name."""
    ep = entry_points().get(name)
    return None if ep is None else ep.load()
