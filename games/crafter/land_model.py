"""The land prior's model (`games.crafter.land`): the revealed line's geometry (`canonical`,
`revealed_line`), the network (`LandPrior`: two passes, the line's even cells then its odd ones,
sampled among the game's labels), its file, and `fill_canvas`, which draws the sampled cells into
the view memory's canvas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from games.crafter.geometry import SCROLLS, TILE, VIEW_COLS, VIEW_ROWS
from worldmodel import tensorfile
from worldmodel.game import GameError

VERSION = 1
DEFAULT_NAME = "land.safetensors"
GRID_ROWS, GRID_COLS = max(VIEW_ROWS, VIEW_COLS), max(VIEW_ROWS, VIEW_COLS) + 1  # 9 x 10
LINE = GRID_ROWS  # cells in the longest revealed line
LAND_AGE = 0.1  # the age the canvas gives a sampled cell (seen a while ago, as memory cells are)


class LandError(GameError):
    """A land prior file that cannot be read or used."""


def _line_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per move class (SCROLLS), the canvas cells (row, col; games.crafter.viewmap's one-tile
    margin) of the line the move reveals, in canonical order, and which of the LINE are real.
    Unused entries point at the canvas corner, which no line holds."""
    rows = np.zeros((len(SCROLLS), LINE), np.int64)
    cols = np.zeros((len(SCROLLS), LINE), np.int64)
    valid = np.zeros((len(SCROLLS), LINE), bool)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx:
            n = VIEW_ROWS
            rows[k, :n] = np.arange(n) + 1
            cols[k, :n] = 0 if dx < 0 else VIEW_COLS + 1
        elif dy:
            n = VIEW_COLS
            rows[k, :n] = 0 if dy < 0 else VIEW_ROWS + 1
            cols[k, :n] = np.arange(n) + 1
        else:
            continue
        valid[k, :n] = True
    return rows, cols, valid


LINE_ROWS, LINE_COLS, LINE_VALID = _line_cells()
_TABLES: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}


def _tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """LINE_ROWS, LINE_COLS and LINE_VALID on `device`, copied there once (not every frame)."""
    if device not in _TABLES:
        _TABLES[device] = tuple(torch.as_tensor(a, device=device)
                                for a in (LINE_ROWS, LINE_COLS, LINE_VALID))
    return _TABLES[device]


def _turned(labels: Tensor, dx: int, dy: int) -> Tensor:
    """The view (n, rows, cols) turned so a (dx, dy) move reveals a column on its right."""
    g = labels.transpose(1, 2) if dy else labels  # for up/down, rows are x and columns y
    return g.flip(2) if dx < 0 or dy < 0 else g


def canonical(labels: Tensor, moves: Tensor) -> tuple[Tensor, Tensor]:
    """labels (n, VIEW_ROWS, VIEW_COLS) long, moves (n,) SCROLLS indices -> the view turned so
    the move reveals a column on its right, in a (n, GRID_ROWS, GRID_COLS - 1) grid right-aligned
    (-1 where the view is not), and (n, LINE) which line cells exist. A stay gives an empty grid.
    Every orientation is built and each world picks its own (no host sync)."""
    n = labels.shape[0]
    grids = torch.full((n, len(SCROLLS), GRID_ROWS, GRID_COLS - 1), -1, dtype=torch.long,
                       device=labels.device)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx or dy:
            g = _turned(labels.long(), dx, dy)
            r, c = g.shape[1:]
            grids[:, k, :r, GRID_COLS - 1 - c:] = g
    pick = grids[torch.arange(n, device=labels.device), moves]
    return pick, _tables(labels.device)[2][moves]


def revealed_line(next_labels: Tensor, moves: Tensor) -> Tensor:
    """The labels (n, LINE) of the cells the moves revealed, in canonical order, read from the
    next frames' labels (n, VIEW_ROWS, VIEW_COLS); -1 where a line has no cell."""
    n = next_labels.shape[0]
    lines = torch.full((n, len(SCROLLS), LINE), -1, dtype=torch.long, device=next_labels.device)
    for k, (dx, dy) in enumerate(SCROLLS):
        if dx or dy:  # the new view's edge the move brought in: its last column once turned
            g = _turned(next_labels.long(), dx, dy)
            lines[:, k, :g.shape[1]] = g[:, :, -1]
    return lines[torch.arange(n, device=next_labels.device), moves]


class LandPrior(nn.Module):
    """p(cell | the view, the line's cells before it) for the revealed line (module docstring)."""

    def __init__(self, num_labels: int, width: int = 32, names: list[str] | None = None):
        super().__init__()
        self.num_labels = num_labels
        self.width = width
        self.names = list(names or [])
        cin = num_labels + 2  # one-hot label, "no cell here", "this line cell is drawn"
        self.inp = nn.Conv2d(cin, width, 3, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(width, width, 3, padding=d, dilation=d)
                                   for d in (1, 2, 4, 1, 2)])
        self.row_embed = nn.Parameter(torch.zeros(1, width, GRID_ROWS, 1))
        self.out = nn.Conv2d(width, num_labels, 1)
        self.temperature = 1.0  # chosen by `walk_tv` on training worlds (saved with the file)
        # Per-label logit offsets fitted so that long walks of the prior alone draw the game's
        # share of each label (`land_train.calibrate_bias`; saved with the file; zeros: none).
        self.label_bias = torch.zeros(num_labels)

    def grid(self, view: Tensor, line: Tensor, line_valid: Tensor) -> Tensor:
        """The network's input (n, L + 2, GRID_ROWS, GRID_COLS): the canonical view (n, 9, 9)
        and the line (n, LINE) with the cells drawn so far (-1: not yet)."""
        full = torch.cat([view, line[:, :, None]], 2)  # (n, 9, 10)
        x = F.one_hot(full.clamp(min=0), self.num_labels).permute(0, 3, 1, 2).float()
        x = x * (full >= 0)[:, None].float()
        pad = torch.ones_like(full, dtype=torch.float)
        pad[:, :, :-1] = (view < 0).float()
        pad[:, :, -1] = (~line_valid).float()
        drawn = torch.zeros_like(pad)
        drawn[:, :, -1] = (line >= 0).float()
        return torch.cat([x, pad[:, None], drawn[:, None]], 1)

    def forward(self, view: Tensor, line: Tensor, line_valid: Tensor) -> Tensor:
        """-> (n, LINE, num_labels) logits for every line cell."""
        h = F.gelu(self.inp(self.grid(view, line, line_valid))) + self.row_embed
        for conv in self.body:
            h = h + F.gelu(conv(h))
        return self.out(h)[:, :, :, -1].transpose(1, 2)

    @torch.no_grad()
    def sample(self, labels: Tensor, moves: Tensor, uniforms: Tensor,
               temperature: float | None = None) -> Tensor:
        """labels (n, VIEW_ROWS, VIEW_COLS) of the anchors, moves (n,), uniforms (n, LINE) in
        [0, 1) (each world's own draws) -> (n, LINE) sampled labels of the revealed lines in
        canonical order (-1 where a line has no cell). Two passes: the line's even cells, each
        given the view, then its odd cells, each given the view and both its drawn neighbours.
        `temperature` defaults to the prior's own."""
        temperature = self.temperature if temperature is None else temperature
        view, valid = canonical(labels.long(), moves)
        line = torch.full(valid.shape, -1, dtype=torch.long, device=labels.device)
        for parity in (0, 1):
            logits = self(view, line, valid).float() / temperature  # (n, LINE, L)
            logits = logits + self.label_bias.to(logits.device)
            cdf = logits.softmax(-1).cumsum(-1)
            pick = (cdf < uniforms[..., None] * cdf[..., -1:]).sum(-1).clamp(max=self.num_labels - 1)
            take = valid & (torch.arange(LINE, device=line.device) % 2 == parity)[None]
            line = torch.where(take, pick, line)
        return line

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | Path, info: dict | None = None) -> Path:
        return tensorfile.write(path, dict(self.state_dict()), {
            "format": "land-prior", "version": VERSION, "labels": self.num_labels,
            "width": self.width, "names": json.dumps(self.names), "temperature": self.temperature,
            "label_bias": json.dumps([round(float(v), 5) for v in self.label_bias]),
            "info": json.dumps(info or {})})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "LandPrior":
        state, meta = tensorfile.read(path, LandError, "land prior", "train one: python -m "
                                      "games.crafter.land --data DIR --checkpoint DIR")
        if meta.get("format") != "land-prior" or meta.get("version") != str(VERSION):
            raise LandError(f"{path} is not a version-{VERSION} land prior")
        for k, v in state.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise LandError(f"{path}: {k} holds NaN or infinite values")
        try:
            prior = cls(int(meta["labels"]), int(meta["width"]), json.loads(meta.get("names", "[]")))
            prior.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as e:
            raise LandError(f"{path}: its weights do not fit a land prior ({e})") from None
        prior.info = json.loads(meta.get("info", "{}"))
        prior.temperature = float(meta.get("temperature", 1.0))
        try:  # absent in priors from before the calibration: no offsets
            bias = json.loads(meta.get("label_bias", "[]")) or [0.0] * prior.num_labels
            prior.label_bias = torch.tensor([float(v) for v in bias])
        except (ValueError, TypeError):
            raise LandError(f"{path}: its label_bias is not a list of numbers") from None
        if prior.label_bias.shape != (prior.num_labels,) or not torch.isfinite(prior.label_bias).all():
            raise LandError(f"{path}: its label_bias must be {prior.num_labels} finite numbers")
        return prior.to(device).eval()


def fill_canvas(canvas: Tensor, moves: Tensor, line: Tensor, level: Tensor,
                textures: Tensor) -> Tensor:
    """Write sampled line labels (n, LINE) into view-memory canvases (n, 5, CH, CW) where they do
    not know the cell: each label's tile at the anchor's light level (n,) from the codebook's
    `textures()` (levels, labels, 147), known, age LAND_AGE. Returns a new canvas."""
    n = canvas.shape[0]
    dev = canvas.device
    ch, cw = canvas.shape[-2] // TILE, canvas.shape[-1] // TILE
    out = canvas.clone()
    cells = out.view(n, 5, ch, TILE, cw, TILE).permute(0, 2, 4, 1, 3, 5)  # (n, ch, cw, 5, T, T)
    line_rows, line_cols, _ = _tables(dev)
    rows, cols = line_rows[moves], line_cols[moves]
    bi = torch.arange(n, device=dev)[:, None].expand(-1, LINE)
    old = cells[bi, rows, cols]  # (n, LINE, 5, T, T)
    write = (line >= 0) & (old[:, :, 3, 0, 0] < 0.5)
    tex = textures[level[:, None].expand(-1, LINE), line.clamp(min=0)]  # (n, LINE, 147)
    rgb = tex.view(n, LINE, TILE, TILE, 3).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    new = torch.cat([rgb, torch.ones_like(rgb[:, :, :1]),
                     torch.full_like(rgb[:, :, :1], LAND_AGE)], 2)
    cells[bi, rows, cols] = torch.where(write[:, :, None, None, None], new, old)
    return out
