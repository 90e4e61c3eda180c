"""Minetest behind the core's `Game` seam: the real first-person voxel game, its actions, keys,
per-pixel labels and its part of the evaluation (per-pixel labels of imagined frames against the
game's), and its pose geometry for a recall model (worldmodel.recall: frames remembered by the
3D pose they were seen from, found again by field-of-view overlap)."""

from __future__ import annotations

from typing import Any

import games.minetest.model_card as model_card
import games.minetest.policies as policies
from games.minetest.actions import ACTION_SPACE, KEYS
from games.minetest.env import MinetestEnv
from games.minetest.evaluation import MinetestEvaluation
from games.minetest.labels import LABEL_NAMES
from games.minetest.pose_memory import PoseGeometry
from worldmodel.game import GameBase, register_game


class MinetestGame(GameBase):
    """Minetest 5.6 with minetest_game: first person, 64x64 frames, 12 discrete actions; the pose
    is (x, y, z, yaw, pitch); labels are per pixel (at the env's label_size)."""

    name = "minetest"
    frame_size = 64
    fps = 10
    action_space = ACTION_SPACE
    label_names = LABEL_NAMES
    keys = KEYS
    hud: dict[str, tuple[int, int, int, int]] = {"world": (0, 64, 0, 64)}  # the whole frame is the view
    default_checkpoint = "assets/minetest"  # an early model (its MODEL_CARD.md): training goes on

    def make_env(self, size: int | None = None, **options: Any) -> MinetestEnv:
        """The real game (GameError naming scripts/install_system.sh where it is not installed)."""
        return MinetestEnv(size=size or self.frame_size, **options)

    def policies(self) -> dict[str, Any]:
        return policies.POLICIES

    def pose_geometry(self) -> PoseGeometry:
        return PoseGeometry(ACTION_SPACE.actions)

    def evaluation(self) -> MinetestEvaluation:
        return MinetestEvaluation()

    def model_card(self, argv: list[str] | None = None) -> str:
        return model_card.main(argv)


GAME = register_game(MinetestGame())
