"""Crafter behind the core's `Game` seam: what the core asks of a game, answered for Crafter.

The real environment (`env.CrafterEnv`), the action space and key map, the HUD rows, the labels,
and the model parts only Crafter has: the committed one-tile camera move (`move.MoveHead`, the
denoiser's anchor head), the view memory's cell canvas (`viewmap`), and the frame pipeline's
Crafter stages: the land prior (before the denoiser: what a move reveals, sampled), the tile
codebook snap (after it: every world-view cell one real tile), the creatures' steps and the status
rows (after the snap, by the game's rules: `creatures`, `status`) and the daylight (on what is
shown: `night`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import games.crafter.model_card as model_card
import games.crafter.policies as policies
from games.crafter.actions import ACTION_SPACE
from games.crafter.codebook import CodebookError, TileCodebook
from games.crafter.env import LABEL_NAMES, CrafterEnv
from games.crafter.evaluation import CrafterEvaluation
from games.crafter.geometry import TILE, intended_moves, track_poses, view_tiles, window_moves
from games.crafter.land_model import LINE, LandError, LandPrior, fill_canvas
from games.crafter.move import MoveHead
from games.crafter.navigation import CrafterNavigation
from games.crafter.creatures import CreatureStage
from games.crafter.night import NightStage
from games.crafter.status import StatusStage
from games.crafter.view_memory import ViewMemory
from games.crafter.viewmap import canvas_shape, history_canvases
from worldmodel.checkpoint import CheckpointError
from worldmodel.config import ConfigError
from worldmodel.data.dataset import to_float
from worldmodel.game import GameBase, register_game
from worldmodel.pipeline import Stage

# Crafter's own human play (crafter's run_gui.py): WASD moves, space is "do", tab sleeps, R/T/F/P
# place stone/table/furnace/plant, 1-6 make pickaxes and swords; the arrows move too.
KEYS: dict[str, str] = {
    "a": "move_left", "left": "move_left",
    "d": "move_right", "right": "move_right",
    "w": "move_up", "up": "move_up",
    "s": "move_down", "down": "move_down",
    "space": "do",
    "tab": "sleep",
    "r": "place_stone", "t": "place_table", "f": "place_furnace", "p": "place_plant",
    "1": "make_wood_pickaxe", "2": "make_stone_pickaxe", "3": "make_iron_pickaxe",
    "4": "make_wood_sword", "5": "make_stone_sword", "6": "make_iron_sword",
}


class LandStage(Stage):
    """Before the denoiser: the cells the chunk's first move reveals that the memory does not
    know, sampled by the land prior (one draw stream per world: its noise generator) and written
    into the memory canvas as known cells, each label's real tile at the anchor's light."""

    name = "land prior"
    needs_canvas = True

    def __init__(self, prior: LandPrior, book: TileCodebook):
        self.prior, self.book = prior, book

    def before(self, ro: Any, frame: Any) -> None:
        labels = ro.stage_state.get("labels")
        if labels is None:  # the anchor's cell labels and light level, read by its snap
            _, lab, level = self.book.snap(ro.last_clean[:, 0], return_labels=True)
            labels = (lab, level)
        lab, level = labels
        u = torch.stack([torch.rand(LINE, generator=g, device=ro.device) for g in ro.gens])
        line = self.prior.sample(lab, frame.choice[:, 0], u)
        frame.memory = fill_canvas(frame.memory, frame.choice[:, 0], line, level,
                                   self.book.textures())


class SnapStage(Stage):
    """After the denoiser: every world-view cell snapped to its nearest real tile (the tile
    codebook). With a labelled codebook, every frame's cell labels kept for the stages after it
    (`frame_labels`: the status rows); with a land prior, the last frame's labels and light
    kept for the next move."""

    name = "codebook snap"

    def __init__(self, book: TileCodebook, keep_labels: bool):
        self.book, self.keep_labels = book, keep_labels

    def after(self, ro: Any, frame: Any) -> None:
        if self.book.labels is None:
            frame.frames = self.book.snap(frame.frames)
            return
        frame.frames, lab, level = self.book.snap(frame.frames, return_labels=True)
        frame.state["frame_labels"], frame.state["frame_levels"] = lab, level
        if self.keep_labels:
            frame.state["labels"] = (lab[:, -1], level[:, -1])


class CrafterGame(GameBase):
    """Crafter (Hafner 2021): top-down 2D, 64x64 frames of 9x9 tiles, 17 discrete actions."""

    name = "crafter"
    frame_size = 64
    fps = 10
    action_space = ACTION_SPACE
    label_names = LABEL_NAMES
    keys = KEYS
    # The world view (9x7 tiles) and, below it, the status (health, food, drink, energy) and
    # inventory rows, in 64x64 frame pixels (y0, y1, x0, x1).
    hud = {"world": (0, 49, 0, 63), "status": (49, 56, 0, 63), "inventory": (56, 63, 0, 63)}
    memory_cell = TILE  # the view memory's canvases are made of 7-px cells
    # The config's game section: side files in the checkpoint folder. A tile codebook
    # (games.crafter.codebook; "" = none): every generated frame's world-view tiles are replaced by
    # their nearest codebook tiles. A land prior (games.crafter.land; "" = none): the cells a move
    # reveals that the view memory does not know are sampled from it (needs a labelled codebook).
    # Night (games.crafter.night): what is shown lit by the game's daylight at each step.
    # Status (games.crafter.status): the status and inventory rows drawn from each world's player
    # state, kept by the game's rules (needs a labelled codebook). Creatures
    # (games.crafter.creatures): cows and zombies in view step by the game's odds (the same).
    config_defaults = {"tile_codebook": "", "land_prior": "", "night": False, "status": False,
                       "creatures": False}
    default_checkpoint = "assets/crafter_memory"

    def make_env(self, size: int | None = None, **options: Any) -> CrafterEnv:
        return CrafterEnv(size=size or self.frame_size, **options)

    def policies(self) -> dict[str, Any]:
        return policies.POLICIES

    def model_card(self, argv: list[str] | None = None) -> str:
        return model_card.main(argv)

    def evaluation(self) -> CrafterEvaluation:
        return CrafterEvaluation()

    def navigation(self) -> CrafterNavigation:
        return CrafterNavigation()

    # ---- the model's Crafter parts ---------------------------------------------------------

    def anchor_head(self, cfg: Any, action_dim: int) -> MoveHead | None:
        if not cfg.committed_move:
            return None
        if cfg.committed_move != TILE:
            raise ConfigError(f"model.committed_move is Crafter's tile size, {TILE} px (0 = off); "
                              f"got {cfg.committed_move}")
        head = MoveHead(cfg.committed_move, action_dim, cfg.shift_kernel)
        if cfg.view_memory:
            head.enable_memory()
        return head

    def view_memory(self, batch: int, device: Any) -> ViewMemory:
        return ViewMemory(batch, ACTION_SPACE.actions, device=device)

    def canvas_shape(self) -> tuple[int, int, int]:
        return canvas_shape()

    def stages(self, cfg: Any, path: Path, device: torch.device | str) -> list[Stage]:
        """The checkpoint's Crafter stages: the land prior and the codebook snap, from the side
        files its config names (game.land_prior, game.tile_codebook), then the creatures' steps
        (game.creatures), the status rows (game.status) and the daylight (game.night)."""
        book = prior = None
        if cfg.game.get("tile_codebook", ""):
            try:
                book = TileCodebook.load(path / cfg.game.get("tile_codebook", ""), device)
            except CodebookError as e:
                raise CheckpointError(f"{path}: game.tile_codebook: {e}") from None
        if cfg.game.get("land_prior", ""):
            if not cfg.model.view_memory or book is None or book.labels is None:
                raise CheckpointError(f"{path}: game.land_prior needs model.view_memory and "
                                      "a tile codebook with labels (game.tile_codebook)")
            try:
                prior = LandPrior.load(path / cfg.game.get("land_prior", ""), device)
            except LandError as e:
                raise CheckpointError(f"{path}: game.land_prior: {e}") from None
            book_labels = int(book.labels.max()) + 1  # the prior reads these labels
            if book_labels > prior.num_labels:
                raise CheckpointError(f"{path}: the tile codebook holds {book_labels} labels and "
                                      f"the land prior knows {prior.num_labels}: they were not "
                                      "built for each other")
            book.label_count = prior.num_labels  # ... and samples these
        out: list[Stage] = []
        if prior is not None:
            out.append(LandStage(prior, book))
        if book is not None:
            out.append(SnapStage(book, keep_labels=prior is not None))
        for key, stage in (("creatures", CreatureStage), ("status", StatusStage)):
            if not cfg.game.get(key, False):
                continue
            if book is None or book.labels is None:
                raise CheckpointError(f"{path}: game.{key} needs a tile codebook with labels "
                                      "(game.tile_codebook): it reads the frame's cells")
            out.append(stage(book))
        if cfg.game.get("night", False):
            out.append(NightStage())
        return out

    # ---- training data ---------------------------------------------------------------------

    def window_choices(self, frames: np.ndarray, actions: np.ndarray, space: Any) -> np.ndarray:
        return window_moves(frames, actions, space)

    def episode_poses(self, ep: Any, actions: np.ndarray, space: Any) -> np.ndarray:
        """(T+1, 2) the player's cell at every frame: the recorded positions where the episode
        has them, else read from its pixels (track_poses, told the moves its actions asked for)."""
        start = ep.meta.get("start_pos")
        if start is not None and ep.steps and all("pos" in st for st in ep.steps):
            pos = np.asarray([start] + [st["pos"] for st in ep.steps], np.int64)
            if len(pos) >= len(ep.frames):
                return pos[:len(ep.frames)]
        return track_poses(ep.frames, (0, 0), intended_moves(actions[1:], space.actions))

    def history_canvases(self, frames: np.ndarray, pos: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        return history_canvases(frames, pos, anchors)

    def fill_init(self, frames: np.ndarray, rng: np.random.Generator, count: int = 4096) -> Tensor:
        """The per-pixel median of random world-view tiles of training frames (uint8 (N, H, W,
        3)) as a (3, TILE, TILE) float in [-1, 1]: a plain's grass, the learned tile a view
        memory model starts from for revealed cells nobody saw."""
        idx = rng.integers(0, len(frames), count)
        tiles = view_tiles(frames[idx]).reshape(-1, TILE, TILE, 3)
        pick = tiles[rng.integers(0, len(tiles), count)]
        med = np.median(pick.astype(np.float32), axis=0)
        return to_float(torch.from_numpy(med))



GAME = register_game(CrafterGame())
