"""The Game seam: everything that differs between games sits behind `Game`, found by name.

The core (network, diffusion, rollout, training, checkpoints, generic metrics) names no game. A
checkpoint's config names its game (`model.game`; empty: the game named like the action space).
A game is a package of its own (`games/crafter`) that imports only the core; it registers itself
with `register_game` when imported, and the package declares it in the `neural_game_sim.games`
entry-point group (pyproject.toml) so that `get_game(name)` finds it without the core naming it
(as Gymnasium's registry finds environments).

What a game provides:

- the real environment (`make_env`): reset(seed) / step(action), the pose and the ground-truth
  labels of the current frame, close();
- its action space and key map (window key names -> actions), its frame size and HUD regions;
- label names (and, for the semantic evaluation, a labeller of generated frames);
- exploration policies for collecting data (`policies`);
- optional model parts: per-frame stages of the frame pipeline, pose tracking and the view
  memory (see `worldmodel.pipeline`).

Only the first group is required of every game; the rest have defaults (`GameBase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from worldmodel import plugins
from worldmodel.actions import ActionError, ActionSpace


class GameError(ValueError):
    """An unknown game, or a game that cannot run here (its system packages are missing: the
    message names the script that installs them)."""


class GameCrash(RuntimeError):
    """The real game died or stopped answering mid-episode (what was written stays; the next
    reset starts it afresh)."""


class MemoryFileError(ValueError):
    """A memory's saved file (a game's view memory, the temporal LoRA) that cannot be read here:
    missing, corrupt, another version, or made for other weights."""


@dataclass
class StepResult:
    obs: np.ndarray  # (H, W, 3) uint8
    reward: float
    done: bool
    info: dict = field(default_factory=dict)


@runtime_checkable
class RealEnv(Protocol):
    """One running instance of the real game: a source of training data and ground truth."""

    name: str
    fps: int
    action_space: ActionSpace

    def reset(self, seed: int) -> np.ndarray:
        """A deterministic world per seed; returns the first frame (H, W, 3) uint8."""

    def step(self, action: Any) -> StepResult:
        """One tick under `action` (an index or name for discrete spaces, a vector otherwise)."""

    def pose(self) -> np.ndarray:
        """The player's pose, float64, game-defined (Crafter: (x, y) cell; Minetest:
        (x, y, z, yaw, pitch))."""

    def labels(self) -> np.ndarray | None:
        """The current frame's ground-truth label map (uint8 ids into `Game.label_names`:
        Crafter per tile, Minetest per pixel), or None where this frame carries none."""

    def episode_meta(self) -> dict:
        """What an episode's meta.json should also say of the world just reset (Minetest: the
        spawn found, the label resolution); {} for most games."""

    def close(self) -> None:
        """End every process and file the environment holds. Safe to call twice."""


Policy = Callable[..., Iterator[Any]]  # policy(seed, length, **options) -> actions


@runtime_checkable
class Game(Protocol):
    name: str
    frame_size: int  # the default square frame size in pixels
    fps: int
    action_space: ActionSpace
    label_names: tuple[str, ...]
    keys: dict[str, Any]  # window key name (pygame.key.name) -> action
    hud: dict[str, tuple[int, int, int, int]]  # region name -> (y0, y1, x0, x1) at frame_size

    def make_env(self, size: int | None = None, **options: Any) -> RealEnv:
        """Start the real game (GameError, one line, when it cannot run here)."""

    def policies(self) -> dict[str, Policy]:
        """Exploration policies by name, for `simulator.collect`."""


class GameBase:
    """Defaults for the optional parts; a game subclasses it and fills in the required ones."""

    name = "game"
    frame_size = 64
    fps = 10
    keys: dict[str, Any] = {}
    hud: dict[str, tuple[int, int, int, int]] = {}
    label_names: tuple[str, ...] = ()
    # The keys of a model config's `game:` section this game reads, with their defaults (the
    # type of each default is the key's type); worldmodel.config checks the section against it.
    config_defaults: dict[str, Any] = {}
    # The shipped model `run_sim.py --game NAME` plays without --checkpoint (a folder relative to
    # the repository root), or "" where none ships.
    default_checkpoint = ""

    def policies(self) -> dict[str, Policy]:
        return {}

    def anchor_head(self, cfg: Any, action_dim: int) -> Any:
        """The network part this game adds to the denoiser for a model config (an nn.Module
        with `cond_channels`, `forward(anchor, act, drop) -> logits` and `transform(anchor,
        choice, canvas) -> (anchor, conditioning channels or None)`), or None."""
        return None

    def view_memory(self, batch: int, device: Any) -> Any:
        """A view memory of `batch` worlds for a model with a memory stem: what each world's view
        showed at each pose, re-projected around the next frame's pose (`reset`, `track`,
        `advance`, `write`, `read`, `set_on`, `minimap`, and a saved state), or None."""
        return None

    def pose_geometry(self) -> Any:
        """This game's poses for a recall model (`model.recall`, worldmodel.recall): `pose_dim`,
        `start_pose()`, `advance(pose, action)` (the committed action's own motion), `track(start,
        actions)`, `overlap(query, poses)` (field-of-view overlap), `overlap_matrix(poses)`,
        `relative(query, keys, overlap, age)` (the features a remembered frame is given with),
        `footprint(pose)` and `grid` (the minimap); for known pixels (worldmodel.known), optional:
        `reproject(query, keys, size)`, `same_eye(query, keys)`, `changes_world(action)` (views
        seen from there are forgotten) and `unsure_steps(action)`; or None."""
        return None

    def stages(self, cfg: Any, path: Any, device: Any) -> list:
        """This game's stages of the frame pipeline (`worldmodel.pipeline.Stage`) for a
        checkpoint's config, loaded from the side files in its folder `path`."""
        return []

    # Training a model with a memory stem: the anchor head's real decision into each frame,
    # each frame's pose, and the memory canvas each target sees. Games without one need none.
    def window_choices(self, frames: Any, actions: Any, space: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no anchor head to supervise")

    def episode_poses(self, ep: Any, actions: Any, space: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no poses for a view memory")

    def history_canvases(self, frames: Any, pos: Any, anchors: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no view-memory canvases")

    def fill_init(self, frames: Any, rng: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no view-memory fill")

    def navigation(self) -> Any:
        """This game's player on a grid of cells, for the revisit benchmark (`memory.revisit`)
        and the planner (`simulator.planner`): `moves` (the actions that walk one cell),
        `shows_view(frames)` (whether frames show the view tracking reads), `track(frames,
        actions)` (poses read from the frames' pixels), `labeller(path)` (a cell labeller with `classify(frames)` and `grass`),
        `tile_note`, `features(frames)` (the planner's goal features), `snapshot(env)` and
        `position(env)` (a copy of a running real game, the player's cell in it)."""
        raise GameError(f"game {self.name} has no grid navigation (Game.navigation): the "
                        "revisit benchmark and the planner need one")

    def evaluation(self) -> Any:
        """This game's part of `python -m worldmodel.evaluation.evaluate` (options, levers, a semantic
        evaluation against the real game's labels), or None: PSNR and drift alone."""
        return None

    def __repr__(self) -> str:
        return f"<game {self.name}>"


_REGISTRY: dict[str, Game] = {}


def register_game(game: Game) -> Game:
    """Make `game` known by its name (a game's package calls this on import; tests may too)."""
    _REGISTRY[game.name] = game
    return game


def unregister_game(name: str) -> None:
    _REGISTRY.pop(name, None)


def known_games() -> list[str]:
    return sorted(set(_REGISTRY) | set(plugins.entry_points()))


def find_game(name: str) -> Game | None:
    """The game called `name`, or None where no game has that name."""
    try:
        return get_game(name)
    except GameError:
        return None


def get_game(name: str) -> Game:
    """The game registered as `name`, loading its package through its entry point if need be."""
    if name not in _REGISTRY:
        game = plugins.load(name)
        if game is None:
            raise GameError(f"unknown game {name!r}; known: {known_games()}")
        _REGISTRY.setdefault(name, game)
    return _REGISTRY[name]


__all__ = ["ActionError", "Game", "GameBase", "GameCrash", "GameError", "MemoryFileError", "Policy", "RealEnv", "StepResult",
           "find_game", "get_game", "known_games", "register_game", "unregister_game"]
