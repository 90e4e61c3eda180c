"""A tile codebook: every world-view cell of a generated frame is one decision among real tiles.

    python -m games.crafter.codebook --data data/crafter --first 40 --episodes 59 \\
        --out assets/crafter_memory/codebook.safetensors

Crafter draws its world as a grid of 7-px tiles, each one fixed texture (lit by the daylight,
noised at night: `../shared/CRAFTER.md`). A denoiser's frame is 49 pixel decisions per cell, and
the small errors it makes on a cell it means to copy add up frame after frame into noise and
smears. With a codebook (`game.tile_codebook` names the file, in the checkpoint folder), the
rollout replaces each world-view tile of every generated frame by its nearest codebook tile
(squared pixel distance) before the frame is shown, written into the context and remembered:
the cell becomes one decision among tiles the real game drew, and what is carried stays exact.
The inventory rows are left as drawn.

The light is one for a whole frame (the daylight, or the dark while the player sleeps), so each
codebook tile carries the light level of the frame it was drawn in (its tiles' median brightness
over their labels' brightest) and a frame's
tiles are snapped among those of the frame's median level: a slightly dim cell cannot turn into a
night tile in a day frame, nor a day drift a level at a time into dusk. The codebook is built from training episodes (by default other
episodes than the evaluation's tile bank, `games.crafter.tiles`): their distinct tiles, capped per
light level so the night's noisy tiles do not crowd out the day's, the most often drawn first,
at most `--size` in all. Note for evaluation: a snapped
frame holds only real tiles, so the tile classifier rejects none of them (no smears, by
construction); what a codebook cannot guarantee, and the semantic evaluation measures, is that
each cell is the right tile (permanence, richness, revealed land).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldmodel.game import GameError
from games.crafter.geometry import TILE, TILE_DIM, VIEW_COLS, VIEW_ROWS, view_tiles
from worldmodel import tensorfile
from worldmodel.data import list_episodes, load_episode
from worldmodel.evaluation.reports import command_line
from worldmodel.checkpoint import attach_side_file
from worldmodel.cli import common_flags, run_cli, side_file_flags

VERSION = 1
DEFAULT_NAME = "codebook.safetensors"


class CodebookError(GameError):
    """A codebook file that cannot be read or used."""


class TileCodebook:
    """Nearest-tile snapping of the world view (see module docstring)."""

    PROBE = 96  # codes per light level that decide a frame's light

    def __init__(self, tiles: np.ndarray | Tensor, light: np.ndarray | Tensor,
                 device: torch.device | str = "cpu", info: dict | None = None,
                 labels: np.ndarray | Tensor | None = None):
        t = torch.as_tensor(np.asarray(tiles, np.uint8))
        if t.ndim != 2 or t.shape[1] != TILE_DIM or len(t) == 0:
            raise CodebookError(f"a codebook holds (K, {TILE_DIM}) uint8 tiles, got "
                                f"{tuple(t.shape)}")
        lt = torch.as_tensor(np.asarray(light, np.int64))
        if lt.shape != (len(t),):
            raise CodebookError(f"a codebook holds one light level per tile, got {tuple(lt.shape)}")
        if (lt < 0).any():
            raise CodebookError("a codebook's light levels are >= 0")
        order = torch.sort(lt, stable=True).indices  # by level, each level's own order kept
        self.tiles = t[order]
        self.light = lt[order]
        # The game's label of each code (the one it was most often drawn as), if built with them:
        # what a snapped cell shows, for the land prior (games.crafter.land).
        self.labels = None
        if labels is not None:
            lab = torch.as_tensor(np.asarray(labels, np.int64))
            if lab.shape != (len(t),) or (lab < 0).any():
                raise CodebookError(f"a codebook holds one label >= 0 per tile, got {tuple(lab.shape)}")
            self.labels = lab[order]
        self.info = info or {}
        # Labels `textures()` covers at least (a land prior may sample labels no code has: those
        # draw as no tile at all, as a label missing at a light level does); set by the loader.
        self.label_count = 0
        self.device = torch.device(device)
        codes = self.tiles.float().div(127.5).sub(1)  # (K, 147) in [-1, 1]
        levels = int(self.light.max()) + 1
        counts = torch.bincount(self.light, minlength=levels)
        starts = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        # Per level, its codes padded to one width (a padded code scores -inf), for the second
        # pass; and the first PROBE codes of every level (a build puts the most drawn first), for
        # the first pass, which only decides the frame's light.
        slot = torch.arange(len(codes)) - starts[self.light]
        padded = torch.zeros(levels, width, TILE_DIM)
        padded[self.light, slot] = codes
        half = torch.full((levels, width), float("inf"))
        half[self.light, slot] = 0.5 * (codes ** 2).sum(1)
        probe = slot < self.PROBE
        self._level_codes = padded.to(self.device)
        self._level_codes_t = padded.transpose(1, 2).contiguous().to(self.device)
        self._level_half = half.to(self.device)
        self._probe_t = codes[probe].T.contiguous().to(self.device)
        self._probe_half = (0.5 * (codes[probe] ** 2).sum(1)).to(self.device)
        self._probe_light = self.light[probe].to(self.device)
        self._starts = starts.to(self.device)  # each level's first code
        self._labels = None if self.labels is None else self.labels.to(self.device)
        self._textures = None

    def __len__(self) -> int:
        return len(self.tiles)

    def to(self, device: torch.device | str) -> "TileCodebook":
        if torch.device(device) == self.device:
            return self
        moved = TileCodebook(self.tiles, self.light, device, self.info, self.labels)
        moved.label_count = self.label_count
        return moved

    def _need_labels(self) -> None:
        if self.labels is None:
            raise CodebookError("this codebook was built without labels (rebuild it: "
                                "python -m games.crafter.codebook)")

    @property
    def levels(self) -> int:
        return self._level_codes.shape[0]

    def textures(self) -> Tensor:
        """(levels, labels, 147) uint8: for every light level and label, the tile a cell of that
        label is drawn with at that light (the level's most drawn code of the label; from the
        nearest level that has one where this level has none)."""
        if self._textures is None:
            self._need_labels()
            n_lab = max(int(self.labels.max()) + 1, self.label_count)
            pick = torch.full((self.levels, n_lab), -1, dtype=torch.long)
            for i in reversed(range(len(self.tiles))):  # the first (most drawn) code wins
                pick[self.light[i], self.labels[i]] = i
            for lab in range(n_lab):
                have = torch.nonzero(pick[:, lab] >= 0).flatten()
                for lv in range(self.levels):
                    if pick[lv, lab] < 0 and len(have):
                        pick[lv, lab] = pick[have[(have - lv).abs().argmin()], lab]
            tex = torch.zeros(self.levels, n_lab, TILE_DIM, dtype=torch.uint8)
            ok = pick >= 0
            tex[ok] = self.tiles[pick[ok]]
            self._textures = tex.to(self.device)
        return self._textures

    def snap(self, frames: Tensor, return_labels: bool = False):
        """frames (..., 3, H, W) in [-1, 1] -> the same with every world-view tile replaced by
        its nearest codebook tile (on the frames' device, no host sync). With `return_labels`
        (a codebook with labels) also each cell's label (..., VIEW_ROWS, VIEW_COLS) and the light
        level each frame was snapped at (...)."""
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:])
        n = x.shape[0]
        rows, cols = VIEW_ROWS * TILE, VIEW_COLS * TILE
        v = x[:, :, :rows, :cols].float()
        t = v.reshape(n, 3, VIEW_ROWS, TILE, VIEW_COLS, TILE).permute(0, 2, 4, 3, 5, 1)
        q = t.reshape(-1, TILE_DIM)  # pixels in (y, x, channel) order, as the tiles are stored
        with torch.autocast(q.device.type, enabled=False):
            # argmin |q - c|^2 = argmax q.c - |c|^2 / 2. The light is one for the whole frame
            # (daylight, or the dark of sleep): first the frame's median light level among its
            # tiles' nearest probe codes, then every tile's nearest code of that level.
            probe = torch.addmm(-self._probe_half, q, self._probe_t)
            level = self._probe_light[probe.argmax(1)].view(n, -1).median(1).values  # (n,)
            qf = q.view(n, VIEW_ROWS * VIEW_COLS, TILE_DIM)
            score = torch.bmm(qf, self._level_codes_t[level]) - self._level_half[level][:, None]
            pick = score.argmax(2)  # (n, cells)
            best = self._level_codes[level[:, None], pick]
        best = best.reshape(n, VIEW_ROWS, VIEW_COLS, TILE, TILE, 3).permute(0, 5, 1, 3, 2, 4)
        out = x.clone()
        out[:, :, :rows, :cols] = best.reshape(n, 3, rows, cols).to(out.dtype)
        out = out.reshape(*lead, *frames.shape[-3:])
        if not return_labels:
            return out
        self._need_labels()
        code = self._starts[level][:, None] + pick  # index into the sorted codes
        labels = self._labels[code].view(*lead, VIEW_ROWS, VIEW_COLS)
        return out, labels, level.view(lead)

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        tensors = {"tiles": self.tiles, "light": self.light}
        if self.labels is not None:
            tensors["labels"] = self.labels
        return tensorfile.write(path, tensors, {"format": "tile-codebook", "version": VERSION,
                                                "tile": TILE, "info": json.dumps(self.info)})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "TileCodebook":
        state, meta = tensorfile.read(path, CodebookError, "tile codebook", "build one: python -m "
                                      "games.crafter.codebook --data DIR --out FILE")
        if meta.get("format") != "tile-codebook" or meta.get("version") != str(VERSION):
            raise CodebookError(f"{path} is not a version-{VERSION} tile codebook")
        if meta.get("tile") != str(TILE):
            raise CodebookError(f"{path} holds {meta.get('tile')}-px tiles, not {TILE}-px")
        if not {"tiles", "light"} <= set(state):
            raise CodebookError(f"{path} lacks its tiles or their light levels")
        labels = state.get("labels")
        return cls(state["tiles"].cpu().numpy(), state["light"].cpu().numpy(), device,
                   json.loads(meta.get("info", "{}")),
                   None if labels is None else labels.cpu().numpy())


def frame_light(tiles: np.ndarray, labels: np.ndarray, levels: int) -> np.ndarray:
    """A light level in 0..levels-1 per frame, from its pixels: the median over its tiles of
    each tile's brightness over the brightest of its label's tiles (grass at night, or while the
    player sleeps, is a dark grass). tiles (F, cells, 147) uint8, labels (F, cells) -> (F,)."""
    bright = tiles.astype(np.float32).mean(-1)
    top = np.ones(int(labels.max()) + 1, np.float32)
    for lab in np.unique(labels):
        top[lab] = max(1.0, float(np.percentile(bright[labels == lab], 99)))
    rel = np.median(bright / top[labels], axis=1)
    return np.minimum((rel * levels).astype(np.int64), levels - 1)


def build(episodes: list, size: int = 8192, levels: int = 10, seed: int = 0) -> TileCodebook:
    """The distinct world-view tiles of `episodes` (with the game's tile labels), each with the
    light level of the frame it was drawn in, capped at `size` in all with an equal share per
    level (of `levels`): the most often drawn tiles of each level."""
    rng = np.random.default_rng(seed)
    tiles, labels = [], []
    for ep in episodes:
        if ep.labels is None:
            raise CodebookError(f"{ep.path} has no tile labels (labels.u8): collect it with "
                                "python -m simulator.collect")
        n = min(len(ep.frames), len(ep.labels))
        tiles.append(view_tiles(ep.frames[:n]).reshape(n, -1, TILE_DIM))
        labels.append(ep.labels[:n].reshape(n, -1))
    tiles, labels = np.concatenate(tiles), np.concatenate(labels)
    light = np.repeat(frame_light(tiles, labels, levels), tiles.shape[1])
    tiles, first, inverse, seen = np.unique(tiles.reshape(-1, TILE_DIM), axis=0,
                                            return_index=True, return_inverse=True,
                                            return_counts=True)
    light = light[first]
    flat_labels = labels.reshape(-1).astype(np.int64)
    # The label a distinct tile was most often drawn as (identical pixels can be two labels
    # only where a creature's sprite matches a material's: rare).
    votes = np.zeros((len(tiles), int(flat_labels.max()) + 1), np.int64)
    np.add.at(votes, (inverse.reshape(-1), flat_labels), 1)
    tile_labels = votes.argmax(1)
    share = size // levels
    keep, counts = [], {}
    for k in range(levels):
        idx = np.flatnonzero(light == k)
        if len(idx) > share:  # the most often drawn tiles of the level (ties at random)
            order = np.lexsort((rng.random(len(idx)), -seen[idx]))
            idx = idx[order[:share]]
        keep.append(idx)
        counts[str(k)] = int(len(idx))
    keep = np.concatenate(keep)  # level by level, the most drawn first
    return TileCodebook(tiles[keep], light[keep], info={
        "tiles": int(len(keep)), "per_light_level": counts, "episodes": len(episodes)},
        labels=tile_labels[keep])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(seed=True, **side_file_flags("codebook", DEFAULT_NAME, "tile_codebook"))
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of episodes")
    p.add_argument("--prefix", default="train_", help="episode name prefix (training seeds)")
    p.add_argument("--first", type=int, default=40, help="skip this many episodes (sorted): the "
                   "evaluation's tile bank is built from the first 40")
    p.add_argument("--episodes", type=int, default=59)
    p.add_argument("--size", type=int, default=8192, help="at most this many tiles")
    args = p.parse_args(argv)
    if not args.out and not args.checkpoint:
        p.error("give --out FILE or --checkpoint DIR")
    paths = [q for q in list_episodes(args.data) if q.name.startswith(args.prefix)]
    paths = paths[args.first:args.first + args.episodes]
    if not paths:
        raise CodebookError(f"no episodes {args.prefix}* under {args.data} after the first "
                            f"{args.first}")
    book = build([load_episode(q) for q in paths], args.size, seed=args.seed)
    book.info.update(command=command_line("games.crafter.codebook", argv),
                     first_episode=paths[0].name, last_episode=paths[-1].name)
    if args.checkpoint:
        attach_side_file(args.checkpoint, "tile_codebook", DEFAULT_NAME, lambda f: book.save(f))
    if args.out:
        book.save(args.out)
    print(json.dumps(book.info))
    return book.info


if __name__ == "__main__":
    run_cli(main, (CodebookError,))
