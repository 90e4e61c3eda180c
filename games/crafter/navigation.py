"""Crafter's player on its grid (`CrafterGame.navigation()`): what the revisit benchmark
(memory.revisit) and the planner (simulator.planner) ask of a game whose player walks cells.

- `moves`: the actions that walk one cell (move_left, move_right, move_up, move_down);
- `shows_view(frames)`: whether frames are big enough to show the world view (9x7 tiles) that
  tracking and the labeller read; `track(frames, actions)`: the player's cell at every frame
  read from the frames' own pixels (`geometry.track_poses`, told the moves the actions asked
  for), never from the game's state;
- `labeller(path)`: the tile classifier (games.crafter.tiles) that labels a frame's world-view
  cells, for tile agreement and the non-grass share;
- `features(frames)`: the planner's goal features. Mean colours of the local view's cells (the
  9x7 tiles above the inventory; the player's own cell, whose sprite turns with the last move,
  left out). Crafter's view is egocentric and drawn from a tile grid, so "the same place" means
  "the same tiles in the same cells" and a cell's mean colour is a tile descriptor; averaging 7x7
  pixels also absorbs the blur and small pixel errors of imagined frames, and the inventory row
  (health, food, items) changes over time without saying anything about place. The denoiser's
  encoder features were the alternative: they are conditioned on a noise level, trained to
  reconstruct rather than to tell places apart, would cost another network pass per imagined
  frame, and would move with every checkpoint while the pixel metric stays fixed and checkable
  on real frames;
- `snapshot(env)`, `position(env)`: a copy of a running real game (a Crafter world copies in
  ~10 ms; a reset takes seconds) and the player's cell in it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import crafter
import numpy as np

from games.crafter.actions import ACTION_SPACE
from games.crafter.geometry import TILE, VIEW_COLS, VIEW_ROWS, intended_moves, track_poses
from games.crafter.tiles import DEFAULT_BANK, TileClassifier

MOVES = (1, 2, 3, 4)  # move_left, move_right, move_up, move_down


def cell_features(frames: np.ndarray, grid: tuple[int, int] = (9, 9), item_rows: int = 2) -> np.ndarray:
    """uint8 (..., h, w, 3) -> float32 (..., rows, cols, 3): mean colour of each local-view cell,
    the player's cell zeroed (see the module docstring)."""
    frames = np.asarray(frames)
    unit = frames.shape[-2] // grid[0]
    rows, cols = grid[1] - item_rows, grid[0]
    x = frames[..., : rows * unit, : cols * unit, :].astype(np.float32) / 255.0
    x = x.reshape(*x.shape[:-3], rows, unit, cols, unit, 3).mean(axis=(-4, -2))
    x[..., rows // 2, cols // 2, :] = 0.0
    return x


class CrafterNavigation:
    """Crafter's moves, pose tracking, tile labels, goal features and world copies."""

    moves = MOVES
    tile_note = ("tile agreement: share of world-view tiles with the same label "
                 "(games.crafter.tiles; real frames by the game's own labels)")

    def shows_view(self, frames: np.ndarray) -> bool:
        """Whether frames are big enough to hold the world view (VIEW_ROWS x VIEW_COLS tiles),
        which pose tracking and the tile classifier read; tiny synthetic frames are not."""
        return frames.shape[-3] >= VIEW_ROWS * TILE and frames.shape[-2] >= VIEW_COLS * TILE

    def track(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(T+1, 2) the player's cell at every frame, relative to the first, from the frames'
        pixels; `actions` (T,): the action that made each frame after the first."""
        return track_poses(frames, (0, 0),
                           intended_moves(np.asarray(actions, np.int64), ACTION_SPACE.actions))

    def labeller(self, path: str | Path | None = None) -> TileClassifier:
        """The tile classifier of the bank at `path` (default: the shipped bank)."""
        return TileClassifier.load(path or DEFAULT_BANK)

    def features(self, frames: np.ndarray) -> np.ndarray:
        return cell_features(frames)

    def snapshot(self, env: object) -> object:
        """A deep copy of a running real game. The crafter module it refers to is shared, not
        copied (modules cannot be)."""
        return copy.deepcopy(env, {id(crafter): crafter})

    def position(self, env: object) -> tuple[int, int]:
        return env.player_pos
