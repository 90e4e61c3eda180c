"""Crafter's committed camera move: the network part the Crafter game adds to the core denoiser
(`Game.anchor_head`), and how a view-memory canvas composes the moved anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from games.crafter.geometry import PLAYER_TILE, SCROLLS, VIEW_COLS, VIEW_ROWS
from games.crafter.viewmap import canvas_shape
from worldmodel.dynamics import shift_image


class MoveHead(nn.Module):
    """A committed camera move per frame (model.committed_move): whether a Crafter step scrolls
    the view, and which way, depends on the action and on the cell beside the player, always
    at the centre of the view (../shared/CRAFTER.md). So the head reads the clean anchor's 3x3
    tiles around the player and the action, and scores the five outcomes of geometry.SCROLLS (no
    move, one tile left/right/up/down). Training supervises it with the real move (cross-entropy)
    and shifts the anchor by the real move, so the residual learns on exact, committed moves; at
    inference the argmax is the move, decided once per frame from the anchor (the same at every
    sampler pass), and the anchor is moved by exactly one tile or not at all: no blur to
    re-sharpen, frame after frame. What moves is the world view alone (the top VIEW_ROWS x
    VIEW_COLS tiles, edges replicated into the revealed strip); the inventory below stays. A
    learned soft mask (ShiftHead's) would blend moved and still views, and repeated moves turn
    such blends into stripes (measured: a fine-tune with it striped within ~30 frames)."""

    cond_channels = 0  # 5 (the composed anchor, where its fresh cells came from, their age)
    # once `enable_memory` has run

    def __init__(self, tile: int, action_dim: int, kernel: int, width: int = 32):
        super().__init__()
        self.tile = self.cell = tile  # the canvas's cell size (augment_memory)
        self.view = (VIEW_ROWS * tile, VIEW_COLS * tile)
        self.kernel = kernel
        r0, c0 = (PLAYER_TILE[0] - 1) * tile, (PLAYER_TILE[1] - 1) * tile
        self.crop = (r0, r0 + 3 * tile, c0, c0 + 3 * tile)
        # (dx, dy) per move class; not in the state dict, so checkpoints stay as they are.
        self.register_buffer("scrolls", torch.tensor(SCROLLS), persistent=False)
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(width, width, tile, stride=tile), nn.SiLU())
        self.mlp = nn.Sequential(nn.Linear(9 * width + action_dim, 128), nn.SiLU(),
                                 nn.Linear(128, len(SCROLLS)))

    def forward(self, anchor: Tensor, act: Tensor, act_drop: Tensor) -> Tensor:
        """anchor (n, 3, H, W), actions (n, A), drop (n,) -> logits (n, 5) over SCROLLS."""
        r0, r1, c0, c1 = self.crop
        f = self.features(anchor[:, :, r0:r1, c0:c1].float()).flatten(1)
        a = torch.where(act_drop[:, None], torch.zeros_like(act), act).float()
        return self.mlp(torch.cat([f, a], 1))

    def apply(self, anchor: Tensor, kernels: Tensor) -> Tensor:
        """anchor (n, 3, H, W) with its world view moved by `kernels` (from `kernels`)."""
        rows, cols = self.view
        out = anchor.float().clone()
        out[:, :, :rows, :cols] = shift_image(anchor[:, :, :rows, :cols], kernels)
        return out

    def enable_memory(self) -> None:
        """model.view_memory: `compose` fills what a move reveals from a view-memory canvas."""
        self.cond_channels = 5
        t = self.tile
        # A learned tile for revealed cells the memory does not know (a plain's grass to begin
        # with: train.py starts it from the real tiles' per-pixel median when it is fresh).
        self.fill = nn.Parameter(torch.zeros(3, t, t))
        fresh = torch.zeros(len(SCROLLS), VIEW_ROWS, VIEW_COLS, dtype=torch.bool)
        for k, (dx, dy) in enumerate(SCROLLS[1:], 1):
            r, c = torch.meshgrid(torch.arange(VIEW_ROWS), torch.arange(VIEW_COLS), indexing="ij")
            src_r, src_c = r + dy, c + dx  # where the tile was in the anchor
            fresh[k] = (src_r < 0) | (src_r >= VIEW_ROWS) | (src_c < 0) | (src_c >= VIEW_COLS)
            fresh[k, PLAYER_TILE[0] - dy, PLAYER_TILE[1] - dx] = True  # the cell the player left
        up = fresh.repeat_interleave(t, 1).repeat_interleave(t, 2)
        self.register_buffer("fresh", up, persistent=False)  # (5, rows, cols) per move class

    def _view_after(self, framed: Tensor, moves: Tensor) -> Tensor:
        """(n, c, rows + 2 tiles, cols + 2 tiles) images of the view with a one-tile margin ->
        (n, c, rows, cols): the view each world shows after its move (SCROLLS indices (n,))."""
        rows, cols = self.view
        t = self.tile
        crops = torch.stack([framed[:, :, t + t * dy:t + t * dy + rows, t + t * dx:t + t * dx + cols]
                             for dx, dy in SCROLLS], 1)
        return crops[torch.arange(len(moves), device=moves.device), moves]

    def compose(self, anchor: Tensor, moves: Tensor, canvas: Tensor | None
                ) -> tuple[Tensor, Tensor]:
        """The anchor a committed move makes, with a view memory (model.view_memory).

        anchor (n, 3, H, W), moves (n,) SCROLLS indices, canvas (n, 5, CH, CW) from
        games.crafter.viewmap (None: the memory knows nothing) -> (the composed anchor (n, 3, H, W):
        the world view moved by one tile, the player's tile kept where it is (the sprite stays
        at the centre), the cells the move revealed and the one the player left taken from the
        canvas where it knows them and from the learned tile elsewhere; the conditioning
        (n, 5, H, W): that anchor, where its fresh cells came from (+1 memory, -1 the learned
        tile, 0 carried) and the memory's age there)."""
        rows, cols = self.view
        t = self.tile
        n = anchor.shape[0]
        # The one-tile move as a crop of the edge-padded view (what apply's one-hot kernel
        # computes, without a 17x17 convolution): the player moving (dx, dy) shows the view
        # moved by (-dx, -dy) tiles.
        out = anchor.float().clone()
        padded = F.pad(out[:, :, :rows, :cols], (t, t, t, t), mode="replicate")
        out[:, :, :rows, :cols] = self._view_after(padded, moves)
        pr, pc = PLAYER_TILE[0] * t, PLAYER_TILE[1] * t
        out[:, :, pr:pr + t, pc:pc + t] = anchor[:, :, pr:pr + t, pc:pc + t].float()
        fresh = self.fresh[moves][:, None].float()  # (n, 1, rows, cols)
        if canvas is None:
            mem = torch.zeros(n, 5, rows, cols, device=anchor.device)
        else:  # the canvas has the same one-tile margin around the view
            mem = self._view_after(canvas, moves).float()
        use = fresh * mem[:, 3:4]
        fill = self.fill.float().repeat(1, rows // t, cols // t)[None]
        view = out[:, :, :rows, :cols]
        out[:, :, :rows, :cols] = (view * (1 - fresh) + fresh * fill) * (1 - use) + use * mem[:, :3]
        cond = torch.zeros(n, 5, *anchor.shape[-2:], device=anchor.device)
        cond[:, :3] = out
        cond[:, 3:4, :rows, :cols] = fresh * (2 * mem[:, 3:4] - 1)
        cond[:, 4:5, :rows, :cols] = use * mem[:, 4:5]
        return out, cond

    def canvas_shape(self) -> tuple[int, int, int]:
        """The view memory's canvas (games.crafter.viewmap) this head composes from."""
        return canvas_shape(self.tile)

    def transform(self, anchor: Tensor, moves: Tensor, canvas: Tensor | None
                  ) -> tuple[Tensor, Tensor | None]:
        """The Denoiser's anchor-head step: the anchor (n, 3, H, W) moved by `moves` (n,) and,
        with a view memory, composed from `canvas` (`compose`); else the plain one-tile move and
        no conditioning channels."""
        if self.cond_channels:
            return self.compose(anchor, moves, canvas)
        return self.apply(anchor, self.kernels(moves)), None

    def kernels(self, moves: Tensor) -> Tensor:
        """(n,) move classes -> (n, k, k) one-hot kernels for shift_image: the player moving by
        (dx, dy) tiles shows the anchor moved by (-dx, -dy) tiles."""
        r = self.kernel // 2
        dx, dy = self.scrolls[moves, 0], self.scrolls[moves, 1]
        k = torch.zeros(len(moves), self.kernel, self.kernel, device=moves.device)
        k[torch.arange(len(moves), device=moves.device), r + self.tile * dy, r + self.tile * dx] = 1
        return k
