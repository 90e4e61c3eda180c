"""Real games behind one reset(seed)/step(action) interface: sources of data and ground truth."""

from simulator.games.crafter_game import CrafterGame

GAMES = {"crafter": CrafterGame}


def make_game(name: str, **kwargs):
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; known: {sorted(GAMES)}")
    return GAMES[name](**kwargs)
