"""`ViewMemory`: what each world's view showed, cell by cell, so a place looks the same on return.

    view = ViewMemory(batch=B, action_names=space.actions)
    view.reset(worlds); view.track(frames, actions, worlds)   # real frames: pose from pixels
    canvas = view.read()            # (B, 5, CH, CW): what it knows around each world's pose
    view.advance(moves); view.write(frames)                    # a generated frame, at its move
    view.minimap(world)             # the remembered map around the player, as an image
    view.save(dir, world); view.load(dir, world)

Crafter's camera is a whole-tile scroll (`games.crafter.viewmap`), so the memory is a map of cells:
for every cell a world's view showed (all but the player's own tile), the tile last seen there
and when. A *pose* is the player's cell in the memory's own frame (it starts at the map's centre:
nothing here reads the game's state). Poses come from the frames themselves:

- real frames (a `reset` context, frames appended): the whole-tile scroll that best aligns
  consecutive frames, told the move each action asked for (`geometry.estimate_scroll`);
- generated frames: the move the move head committed to, which is how the frame was drawn.

Re-projection reads the canvas around the pose: the view plus a one-tile margin, with the cells
it knows and how long ago it saw them; the denoiser takes it (`model.view_memory`). The pose
(`track`, `advance`) and the re-projection (`reproject`) are the two seams a first-person game
would replace (its own pose, its own field-of-view overlap); this module implements Crafter's.

Every world's frames are recorded (a few MB per world, on the model's device, no host sync in
the frame loop); only worlds switched on (`set_on`) are conditioned on what was recorded, so a
world with memory off draws the base model's frames bit for bit, and switching memory on later
finds everything since the episode began.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.dataset import to_uint8
from worldmodel.game import MemoryFileError
from games.crafter.geometry import (PLAYER_TILE, SCROLLS, TILE, VIEW_COLS, VIEW_ROWS,
                                     estimate_scroll, intended_moves)
from games.crafter.viewmap import (AGE_SCALE, CANVAS_COLS, canvas_cells, scroll_index,
                                   tiles_to_canvas, view_cells)

VERSION = 1
GRID = 144  # cells per side: a 64x64 Crafter world seen from anywhere in it, plus the canvas
FILE = "view_memory.safetensors"


class ViewMemoryError(MemoryFileError):
    """A saved view memory that cannot be read here (missing, corrupt, another version)."""


class ViewMemory:
    """The view memory of B worlds (see module docstring)."""

    def __init__(self, batch: int, action_names: Sequence[str] = (), grid: int = GRID,
                 device: torch.device | str = "cpu"):
        self.batch = batch
        self.grid = grid
        self.device = torch.device(device)
        self.action_names = list(action_names)
        cells = grid * grid
        self.tiles = torch.zeros(batch, cells, TILE * TILE * 3, dtype=torch.uint8,
                                 device=self.device)
        self.seen = torch.full((batch, cells), -1, dtype=torch.long, device=self.device)
        self.pose = torch.full((batch, 2), grid // 2, dtype=torch.long, device=self.device)
        self.clock = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.on = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.worlds_on = [False] * batch  # the same switches on the host (no device sync to read)
        self._last: list[np.ndarray | None] = [None] * batch  # last real frame (uint8) per world
        view = view_cells()
        keep = ~((view[:, 0] == 0) & (view[:, 1] == 0))  # the player's tile is never written
        self._view_keep = torch.as_tensor(np.flatnonzero(keep), device=self.device)
        self._view_off = torch.as_tensor(view[keep], device=self.device)
        self._canvas_off = torch.as_tensor(canvas_cells(), device=self.device)
        self._scrolls = torch.as_tensor(SCROLLS, device=self.device)

    # -- switches and lifecycle ----------------------------------------------------------------
    def set_on(self, on: bool, worlds: Sequence[int]) -> None:
        """Condition these worlds on their memory (on) or not (off: the canvas reads as empty)."""
        worlds = list(worlds)
        self.on[worlds] = bool(on)
        for w in worlds:
            self.worlds_on[w] = bool(on)

    def reset(self, worlds: Sequence[int] | None = None) -> None:
        """Forget everything these worlds (default all) saw; their poses go back to the centre."""
        idx = list(range(self.batch)) if worlds is None else list(worlds)
        self.tiles[idx] = 0
        self.seen[idx] = -1
        self.pose[idx] = self.grid // 2
        self.clock[idx] = 0
        for i in idx:
            self._last[i] = None

    # -- writing -------------------------------------------------------------------------------
    def _ids(self, offsets: Tensor, worlds: Tensor | slice) -> Tensor:
        pose = self.pose[worlds]
        xy = pose[:, None, :] + offsets[None]
        xy = xy.clamp(0, self.grid - 1)
        return xy[..., 1] * self.grid + xy[..., 0]

    def write(self, frames: Tensor, worlds: Sequence[int] | None = None) -> None:
        """Record frames (k, 3, H, W) in [-1, 1] (k = len(worlds), default every world) at the
        worlds' current poses."""
        rows = torch.arange(self.batch, device=self.device) if worlds is None else \
            torch.as_tensor(list(worlds), device=self.device)
        u8 = to_uint8(frames.to(self.device))  # (k, H, W, 3): what the player is shown
        v = u8[:, :VIEW_ROWS * TILE, :VIEW_COLS * TILE]
        v = v.reshape(len(rows), VIEW_ROWS, TILE, VIEW_COLS, TILE, 3).permute(0, 1, 3, 2, 4, 5)
        v = v.reshape(len(rows), VIEW_ROWS * VIEW_COLS, -1)[:, self._view_keep]
        ids = self._ids(self._view_off, rows)
        self.clock[rows] += 1
        r = rows[:, None].expand_as(ids)
        self.tiles[r, ids] = v
        self.seen[r, ids] = self.clock[rows][:, None].expand_as(ids)

    def advance(self, moves: Tensor, worlds: Sequence[int] | None = None) -> None:
        """Move the worlds' poses by (k,) geometry.SCROLLS indices (the committed moves)."""
        rows = slice(None) if worlds is None else list(worlds)
        self.pose[rows] = (self.pose[rows] + self._scrolls[moves.to(self.device)]).clamp(
            CANVAS_COLS, self.grid - 1 - CANVAS_COLS)

    def track(self, frames: Tensor, actions: Tensor | np.ndarray | None,
              worlds: Sequence[int] | None = None) -> None:
        """Record real frames (k, n, 3, H, W) with the actions that produced them (k, n; < 0 for
        none): each frame's pose is read from its pixels against the frame before it (the
        world's last recorded real frame, if any), then the frame is written there. Off the frame
        loop (it reads the pixels on the host)."""
        rows = list(range(self.batch)) if worlds is None else list(worlds)
        k, n = frames.shape[:2]
        u8 = to_uint8(frames).cpu().numpy()
        acts = (np.full((k, n), -1, np.int64) if actions is None
                else np.asarray(torch.as_tensor(actions).cpu(), np.int64).reshape(k, n))
        for i in range(n):
            prev = [self._last[w] for w in rows]
            has = [p is not None for p in prev]
            if any(has):
                sel = [j for j, h in enumerate(has) if h]
                moves = self._moves(np.stack([prev[j] for j in sel]), u8[sel, i], acts[sel, i])
                self.advance(torch.as_tensor(moves), [rows[j] for j in sel])
            self.write(frames[:, i], rows)
            for j, w in enumerate(rows):
                self._last[w] = u8[j, i]

    def _moves(self, prev: np.ndarray, cur: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """Scroll classes between real frames, told each step's intended move where known."""
        free = estimate_scroll(prev, cur)
        if self.action_names:
            intended = intended_moves(np.clip(acts, 0, None), self.action_names)
            told = estimate_scroll(prev, cur, intended)
            free = np.where((acts >= 0)[:, None], told, free)
        return scroll_index(free).clip(min=0)

    def set_previous(self, frames: np.ndarray, worlds: Sequence[int] | None = None) -> None:
        """The frames (k, H, W, 3) uint8 the next tracked real frames follow (the worlds' last
        shown frames, generated or real): their poses are read against these."""
        for j, w in enumerate(range(self.batch) if worlds is None else worlds):
            self._last[w] = frames[j]

    # -- reading -------------------------------------------------------------------------------
    def reproject(self, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The cells at `offsets` (m, 2) from every world's pose: tiles (B, m, 147) uint8, known
        (B, m) bool (memory switched on and the cell seen), age (B, m) in [0, 1]."""
        ids = self._ids(offsets, slice(None))
        tiles = torch.gather(self.tiles, 1, ids[..., None].expand(-1, -1, self.tiles.shape[-1]))
        seen = torch.gather(self.seen, 1, ids)
        known = (seen >= 0) & self.on[:, None]
        age = ((self.clock[:, None] - seen).float() / AGE_SCALE).clamp(0, 1)
        return tiles, known, age

    def read(self) -> Tensor:
        """(B, 5, CH, CW) float canvases around each world's pose (games.crafter.viewmap): RGB in
        [-1, 1], known, age; empty for worlds switched off."""
        return tiles_to_canvas(*self.reproject(self._canvas_off))

    def known_cells(self, world: int) -> int:
        return int((self.seen[world] >= 0).sum())

    def minimap(self, world: int = 0, radius: int = 12, scale: int = 1) -> np.ndarray:
        """The remembered map around world `world`'s player: (2r+1) x (2r+1) cells of 7 px
        (times `scale`), uint8 (H, W, 3). Cells it knows are drawn as last seen (dimmed with
        age); cells it never saw are dark, checkered; the current view is framed white and the
        player's cell red. Works whether memory is on or off (it shows what was recorded)."""
        r = radius
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        off = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], -1), device=self.device)
        ids = self._ids(off, [world])[0]
        tiles = self.tiles[world, ids].cpu().numpy().astype(np.float32)
        seen = self.seen[world, ids].cpu().numpy()
        clock = int(self.clock[world])
        age = np.clip((clock - seen) / AGE_SCALE, 0, 1)
        side = 2 * r + 1
        img = tiles.reshape(side, side, TILE, TILE, 3) * (1 - 0.5 * age)[:, None, None, None] \
            .reshape(side, side, 1, 1, 1)
        unknown = (seen < 0).reshape(side, side)
        checker = np.where((np.add.outer(np.arange(TILE), np.arange(TILE)) // 2) % 2, 34, 22)
        img[unknown] = checker[..., None]
        img = img.transpose(0, 2, 1, 3, 4).reshape(side * TILE, side * TILE, 3)
        y0, x0 = (r - PLAYER_TILE[0]) * TILE, (r - PLAYER_TILE[1]) * TILE
        y1, x1 = y0 + VIEW_ROWS * TILE - 1, x0 + VIEW_COLS * TILE - 1
        img[y0, x0:x1 + 1] = img[y1, x0:x1 + 1] = 255
        img[y0:y1 + 1, x0] = img[y0:y1 + 1, x1] = 255
        p0 = r * TILE
        img[p0, p0:p0 + TILE] = img[p0 + TILE - 1, p0:p0 + TILE] = (230, 40, 40)
        img[p0:p0 + TILE, p0] = img[p0:p0 + TILE, p0 + TILE - 1] = (230, 40, 40)
        img = img.clip(0, 255).astype(np.uint8)
        if scale > 1:
            img = img.repeat(scale, 0).repeat(scale, 1)
        return img

    # -- save and load -------------------------------------------------------------------------
    def state(self, world: int) -> dict[str, Tensor]:
        """One world's memory as CPU tensors (the map is stored sparse: the cells it saw)."""
        ids = torch.nonzero(self.seen[world] >= 0).flatten()
        return {"cells": ids.cpu(), "tiles": self.tiles[world, ids].cpu(),
                "seen": self.seen[world, ids].cpu(), "pose": self.pose[world].cpu(),
                "clock": self.clock[world].reshape(1).cpu()}

    def check_state(self, state: dict[str, Tensor], where: str = "the saved view memory") -> None:
        """ViewMemoryError unless `state` is a `state()` of this map: n integer cell indices in
        range and distinct, n tiles of TILE*TILE*3 bytes, n integer seen clocks in 0..clock, a
        pose of two integer cells on the map, a one-number clock >= 0. Changes nothing."""
        def bad(what: str) -> ViewMemoryError:
            return ViewMemoryError(f"{where}: {what}")

        missing = {"cells", "tiles", "seen", "pose", "clock"} - set(state)
        if missing:
            raise bad(f"lacks {', '.join(sorted(missing))}")
        extra = set(state) - {"cells", "tiles", "seen", "pose", "clock"}
        if extra:
            raise bad(f"holds unexpected tensors {sorted(extra)[:4]}")
        def integer(name: str) -> Tensor:
            t = state[name]
            if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise bad(f"{name} must be integers, got {t.dtype}")
            return t.long()

        cells, seen, pose, clock = (integer(k) for k in ("cells", "seen", "pose", "clock"))
        n = cells.numel()
        if cells.shape != (n,):
            raise bad(f"cells must be a vector of cell indices, got {tuple(cells.shape)}")
        if n and (cells.min() < 0 or cells.max() >= self.grid * self.grid):
            raise bad("cell index out of range for this map")
        if n and torch.unique(cells).numel() != n:
            raise bad("a cell is listed twice")
        tiles = state["tiles"]
        if tiles.dtype != torch.uint8 or tiles.shape != (n, TILE * TILE * 3):
            raise bad(f"tiles must be ({n}, {TILE * TILE * 3}) uint8 for {n} cells, got "
                      f"{tiles.dtype} {tuple(tiles.shape)}")
        if clock.shape != (1,) or clock[0] < 0:
            raise bad(f"clock must be one number >= 0, got {tuple(clock.shape)}")
        if seen.shape != (n,) or (n and (seen.min() < 0 or seen.max() > clock[0])):
            raise bad(f"seen must be {n} clocks in 0..{int(clock[0])} (one per cell)")
        if pose.shape != (2,) or pose.min() < 0 or pose.max() >= self.grid:
            raise bad(f"pose must be two cells in 0..{self.grid - 1}, got {tuple(pose.shape)}")

    def load_state(self, world: int, state: dict[str, Tensor]) -> None:
        """Put `state` (a `state()`) in world `world`: checked whole first (`check_state`), so
        a bad one changes nothing."""
        self.check_state(state)
        cells = state["cells"].long().to(self.device)
        self.reset([world])
        self.tiles[world, cells] = state["tiles"].to(self.device, torch.uint8)
        self.seen[world, cells] = state["seen"].long().to(self.device)
        self.pose[world] = state["pose"].long().to(self.device)
        self.clock[world] = int(state["clock"][0])

    def save(self, folder: str | Path, world: int = 0) -> Path:
        from worldmodel import tensorfile

        return tensorfile.write(Path(folder) / FILE, self.state(world), {
            "format": "view-memory", "version": VERSION, "grid": self.grid, "tile": TILE})

    def load(self, folder: str | Path, world: int = 0) -> dict[str, str]:
        """Read a world's memory saved by `save` into world `world`; a missing, corrupt or
        foreign file is a ViewMemoryError naming it, and changes nothing."""
        state, meta = self.read_saved(folder)
        self.load_state(world, state)
        return meta

    def read_saved(self, folder: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
        """(state, metadata) of a view memory saved by `save`, checked against this map
        (`check_state`) but not applied; a missing, corrupt or foreign file is a
        ViewMemoryError naming it."""
        from worldmodel import tensorfile

        path = Path(folder) / FILE
        state, meta = tensorfile.read(path, ViewMemoryError, "view memory",
                                      "not a saved view memory")
        if meta.get("format") != "view-memory":
            raise ViewMemoryError(f"{path} is not a view memory (format {meta.get('format')!r})")
        if meta.get("version") != str(VERSION):
            raise ViewMemoryError(f"{path} is view-memory version {meta.get('version')}, this "
                                  f"build reads version {VERSION}")
        if meta.get("grid") != str(self.grid) or meta.get("tile") != str(TILE):
            raise ViewMemoryError(f"{path} holds a {meta.get('grid')}-cell map of "
                                  f"{meta.get('tile')}-px tiles; this memory is {self.grid} of "
                                  f"{TILE}")
        self.check_state(state, str(path))
        return state, meta

