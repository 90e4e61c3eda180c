"""Crafter (top-down 2D) behind the core's Game seam; see `game.py`."""

from games.crafter.game import GAME, CrafterGame
from worldmodel.game import register_game

register_game(GAME)

__all__ = ["GAME", "CrafterGame"]
