"""Where the view memory's pixels go: Crafter's world view re-projected around a pose.

Crafter's camera is a whole-tile scroll of a top-down map (`../shared/CRAFTER.md`): world-view
tile (col c, row r) shows cell `pose + (c - 4, r - 3)`. So what was seen at a cell can be put
back exactly where the cell shows now, and a re-projection is a translation by whole tiles.

A *canvas* is what the memory knows around a pose: the world view plus a one-tile margin
(`CANVAS_ROWS x CANVAS_COLS` tiles), so whichever one-tile move the next frame makes, the canvas
holds its whole view (the move head crops it, `MoveHead.compose`). Channels (`CANVAS_CHANNELS`):
RGB in [-1, 1] (0 where unknown), known (1/0) and age (steps since the cell was last seen, over
`AGE_SCALE`, at most 1). The player's own tile is never written: the sprite covers the cell.

`canvas_cells` is the layout; `history_canvases` builds the canvases a training window's targets
see from the real frames before them (the game's positions are exact there); `games.crafter.view_memory`
keeps the same canvases live, from the frames a session shows and poses read from its pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from games.crafter.geometry import PLAYER_TILE, SCROLLS, TILE, VIEW_COLS, VIEW_ROWS, view_tiles

MARGIN = 1
CANVAS_ROWS, CANVAS_COLS = VIEW_ROWS + 2 * MARGIN, VIEW_COLS + 2 * MARGIN
CANVAS_CHANNELS = 5  # RGB, known, age
AGE_SCALE = 300.0  # steps: one Crafter day, after which a cell's light has gone round a cycle


def canvas_shape(tile: int = TILE) -> tuple[int, int, int]:
    return CANVAS_CHANNELS, CANVAS_ROWS * tile, CANVAS_COLS * tile


def canvas_cells() -> np.ndarray:
    """(CANVAS_ROWS * CANVAS_COLS, 2) cell offsets (dx, dy) from the pose, row-major."""
    r, c = np.mgrid[0:CANVAS_ROWS, 0:CANVAS_COLS]
    return np.stack([c - MARGIN - PLAYER_TILE[1], r - MARGIN - PLAYER_TILE[0]], -1).reshape(-1, 2)


def view_cells() -> np.ndarray:
    """(VIEW_ROWS * VIEW_COLS, 2) cell offsets (dx, dy) of the world view's tiles, row-major."""
    r, c = np.mgrid[0:VIEW_ROWS, 0:VIEW_COLS]
    return np.stack([c - PLAYER_TILE[1], r - PLAYER_TILE[0]], -1).reshape(-1, 2)


def tiles_to_canvas(tiles: Tensor, known: Tensor, age: Tensor) -> Tensor:
    """(k, cells, TILE*TILE*3) uint8 tiles (pixels in (y, x, channel) order), (k, cells) known
    (bool) and age -> (k, 5, CH, CW) float32 canvases: RGB in [-1, 1] where known (0 elsewhere),
    known, age where known. The one conversion training (`history_canvases`) and a live view
    memory (`games.crafter.view_memory.ViewMemory.read`) share."""
    k = tiles.shape[0]
    t = tiles.reshape(k, CANVAS_ROWS, CANVAS_COLS, TILE, TILE, 3)
    rgb = t.permute(0, 5, 1, 3, 2, 4).reshape(k, 3, CANVAS_ROWS * TILE, CANVAS_COLS * TILE)
    kn = known.float().reshape(k, 1, CANVAS_ROWS, CANVAS_COLS)
    ag = (age.float() * kn.flatten(1)).reshape(k, 1, CANVAS_ROWS, CANVAS_COLS)
    kn, ag = (m.repeat_interleave(TILE, 2).repeat_interleave(TILE, 3) for m in (kn, ag))
    return torch.cat([(rgb.float() / 127.5 - 1) * kn, kn, ag], 1)


def history_canvases(frames: np.ndarray, pos: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """The canvas around `pos[a]` from everything frames 0..a showed, for each anchor a.

    frames (F, H, W, 3) uint8 of one episode, pos (F, 2) the player's cell at each frame (from
    the game, or read from the pixels), anchors (k,) frame indices -> (k, 5, CH, CW) float32.
    Each cell holds the latest frame that showed it (not under the player) up to the anchor.
    """
    anchors = np.asarray(anchors, np.int64)
    last = int(anchors.max()) + 1
    pos = np.asarray(pos, np.int64)[:last]
    cells = pos[anchors][:, None, :] + canvas_cells()[None]  # (k, C, 2) world cells
    rel = cells[:, None, :, :] - pos[None, :, None, :]  # (k, F, C, 2) offset from each frame's pose
    col, row = rel[..., 0] + PLAYER_TILE[1], rel[..., 1] + PLAYER_TILE[0]
    seen = ((col >= 0) & (col < VIEW_COLS) & (row >= 0) & (row < VIEW_ROWS)
            & ~((col == PLAYER_TILE[1]) & (row == PLAYER_TILE[0])))
    seen &= (np.arange(last)[None, :, None] <= anchors[:, None, None])
    known = seen.any(1)  # (k, C)
    f = last - 1 - np.argmax(seen[:, ::-1], axis=1)  # the latest frame that showed each cell
    k_idx, c_idx = np.arange(len(anchors))[:, None], np.arange(cells.shape[1])[None]
    r = np.clip(row[k_idx, f, c_idx], 0, VIEW_ROWS - 1)
    c = np.clip(col[k_idx, f, c_idx], 0, VIEW_COLS - 1)
    tiles = view_tiles(frames[:last])[f, r, c]  # (k, C, 147)
    age = np.minimum(1.0, (anchors[:, None] - f) / AGE_SCALE)
    return tiles_to_canvas(torch.from_numpy(tiles), torch.from_numpy(known),
                           torch.from_numpy(age)).cpu().numpy()


def scroll_index(dxdy: np.ndarray) -> np.ndarray:
    """(..., 2) whole-tile moves -> (...,) indices into geometry.SCROLLS (-1 for anything else)."""
    dxdy = np.asarray(dxdy)
    out = np.full(dxdy.shape[:-1], -1, np.int64)
    for k, s in enumerate(SCROLLS):
        out[(dxdy == s).all(-1)] = k
    return out
