"""Crafter's geometry (`../shared/CRAFTER.md`): a 64x64 frame is a 9x9 grid of 7-px tiles, the
top 9x7 the world view with the player always at (col 4, row 3), the two rows below the status and
inventory. The camera is a whole-tile scroll of a top-down map: one step moves it by one of
`SCROLLS`, and `estimate_scroll` reads that move from the pixels alone (real or imagined frames),
the pose the semantic evaluation, the view memory and training need without the game.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TILE = 7
VIEW_COLS, VIEW_ROWS = 9, 7
PLAYER_TILE = (3, 4)  # (row, col) of the player in the world view
TILE_DIM = TILE * TILE * 3
DAY_LENGTH = 300  # steps; Crafter's daylight cycle
# The five whole-tile camera moves one step can make: (dx, dy) of the player's cell.
SCROLLS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
MOVE_DIRS = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}


def daylight(step: np.ndarray | int) -> np.ndarray:
    """Crafter's daylight at an episode step: 1 - |cos(pi * ((step / 300) % 1 + 0.3))|^3."""
    progress = (np.asarray(step, np.float64) / DAY_LENGTH) % 1 + 0.3
    return 1 - np.abs(np.cos(np.pi * progress)) ** 3


def view_tiles(frames: np.ndarray) -> np.ndarray:
    """uint8 frames (..., H, W, 3) -> the world view's tiles (..., VIEW_ROWS, VIEW_COLS, 147)."""
    frames = np.asarray(frames)
    lead = frames.shape[:-3]
    v = frames[..., :VIEW_ROWS * TILE, :VIEW_COLS * TILE, :]
    v = v.reshape(*lead, VIEW_ROWS, TILE, VIEW_COLS, TILE, 3)
    v = np.moveaxis(v, -4, -3)  # (..., rows, cols, 7, 7, 3)
    return v.reshape(*lead, VIEW_ROWS, VIEW_COLS, TILE_DIM)


# ---- camera pose from pixels --------------------------------------------------------------------

def _view(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, np.float32)[..., :VIEW_ROWS * TILE, :VIEW_COLS * TILE, :]


def intended_moves(actions: np.ndarray, action_names: Sequence[str]) -> np.ndarray:
    """(...,) action ids -> (..., 2) the move each would make if free ((0, 0) for non-moves)."""
    table = np.zeros((len(action_names), 2), np.int64)
    for i, name in enumerate(action_names):
        table[i] = MOVE_DIRS.get(name, (0, 0))
    return table[np.asarray(actions)]


def estimate_scroll(prev: np.ndarray, cur: np.ndarray,
                    intended: np.ndarray | None = None) -> np.ndarray:
    """The camera's whole-tile move from `prev` to `cur` (..., H, W, 3) uint8 -> (..., 2) int
    (dx, dy) of the player's cell, one of SCROLLS: the move under which the world view's tiles
    that both frames show differ least (mean absolute difference; the player's tile left out,
    since the sprite stays put and turns), ties going to no move.

    With `intended` (..., 2), the move each step's action asked for (`intended_moves`), a move
    action is read as made or blocked: the view can only scroll the way the player tried to go,
    and where both read alike (a plain of grass, which is walkable) the move was made; any other
    action leaves the view in place (a creature that walks is not the camera). Both work on
    imagined frames as on real ones."""
    a, b = _view(prev), _view(cur)
    costs = []
    mask = np.ones((VIEW_ROWS, VIEW_COLS), bool)
    mask[PLAYER_TILE] = False
    for dx, dy in SCROLLS:
        # The player moved (dx, dy): the cell at tile (c, r) of prev is at (c - dx, r - dy) now.
        r0, r1 = max(0, dy), VIEW_ROWS + min(0, dy)
        c0, c1 = max(0, dx), VIEW_COLS + min(0, dx)
        pa = a[..., r0 * TILE:r1 * TILE, c0 * TILE:c1 * TILE, :]
        pb = b[..., (r0 - dy) * TILE:(r1 - dy) * TILE, (c0 - dx) * TILE:(c1 - dx) * TILE, :]
        m = mask[r0:r1, c0:c1] & mask[r0 - dy:r1 - dy, c0 - dx:c1 - dx]
        m = np.repeat(np.repeat(m, TILE, 0), TILE, 1)[..., None]
        d = (np.abs(pa - pb) * m).sum((-3, -2, -1)) / (m.sum() * 3)
        costs.append(d)
    costs = np.stack(costs, -1)
    free = costs.copy()
    free[..., 0] -= 0.5  # a tie (or a near one) is no move
    out = np.asarray(SCROLLS)[free.argmin(-1)]
    if intended is not None:
        intended = np.broadcast_to(np.asarray(intended), out.shape)
        which = np.zeros(out.shape[:-1], np.int64)
        for k, s in enumerate(SCROLLS[1:], 1):
            which[(intended == s).all(-1)] = k
        move = which > 0
        made = np.take_along_axis(costs, which[..., None], -1)[..., 0] <= costs[..., 0]
        out = np.where((move & made)[..., None], intended, 0)
    return out


def track_poses(frames: np.ndarray, start: Sequence[int] = (0, 0),
                intended: np.ndarray | None = None) -> np.ndarray:
    """Poses (T, 2) of a frame sequence (T, H, W, 3) from its own pixels: `start`, then the sum
    of the estimated scrolls (`intended` (T - 1, 2): the moves the actions asked for)."""
    steps = (estimate_scroll(frames[:-1], frames[1:], intended) if len(frames) > 1
             else np.zeros((0, 2), int))
    return np.concatenate([np.asarray([start]), np.asarray(start) + np.cumsum(steps, 0)])


def window_moves(frames: np.ndarray, actions: np.ndarray, space) -> np.ndarray:
    """The real camera move into each frame of training windows, read from the frames' pixels
    (estimate_scroll, told the move each action asked for; exact on real Crafter frames):
    uint8 (b, n, h, w, 3) and actions (b, n) -> (b, n) SCROLLS indices (row 0: no move)."""
    intended = intended_moves(actions[:, 1:], space.actions)
    est = estimate_scroll(frames[:, :-1], frames[:, 1:], intended)  # (b, n - 1, 2)
    cls = np.zeros(actions.shape, np.int64)
    for k, s in enumerate(SCROLLS):
        cls[:, 1:][(est == s).all(-1)] = k
    return cls
