"""Typed configs: dataclasses loaded from YAML, unknown keys rejected, `a.b=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, get_type_hints

import yaml

from worldmodel.game import find_game


class ConfigError(ValueError):
    """A config file or override that does not match the config's fields."""


@dataclass
class ModelConfig:
    """The denoiser: a per-frame 2D UNet with causal temporal attention (see dynamics.py)."""

    frame_size: int = 64
    channels: list[int] = field(default_factory=lambda: [48, 96, 128])  # per resolution level
    blocks_per_level: int = 1
    stem_patch: int = 2  # pixel-unshuffle factor before the first level: 64x64 -> 32x32
    temporal_levels: list[int] = field(default_factory=lambda: [1, 2])  # levels with temporal attention
    attn_heads: int = 4
    max_frames: int = 16  # longest window (context + targets) the temporal attention sees
    action_space: str = "crafter"
    game: str = ""  # the game whose network parts the model has ("" = the one named like the action space)
    emb_dim: int = 128
    shift_kernel: int = 0  # odd size of the learned per-frame shift kernel applied to the anchor
    # (0 = off): the network moves what is on screen with one predicted kernel and paints the rest
    committed_move: int = 0  # tile size in px (Crafter: 7), 0 = off: instead of a soft kernel, a
    # move head decides once per frame, from the anchor around the player and the action, among
    # no move and the four one-tile scrolls, and the anchor is moved by exactly that (the game's
    # anchor head: games.crafter.move.MoveHead)
    view_memory: bool = False  # with committed_move: the cells a move reveals (and the one the
    # player leaves) come from a view memory's canvas where it knows them, else from a learned
    # tile, and the network sees that composed anchor (the game's view memory: Crafter's in
    # games.crafter.viewmap and games.crafter.view_memory)
    recall: int = 0  # remembered frames each target attends to beyond its context (0 = off):
    # frames seen before, found by field-of-view overlap with the pose the target will have
    # (the game's pose geometry, `Game.pose_geometry`) and given with their relative pose
    # (worldmodel.recall)
    recall_pose_dim: int = 10  # the game's relative-pose features (PoseGeometry.pose_dim)

    @property
    def game_name(self) -> str:
        """The model's game: `game`, else the one named like the action space."""
        return self.game or self.action_space

    def __post_init__(self) -> None:
        if self.frame_size < 1:
            raise ConfigError(f"model.frame_size must be a positive number of pixels, got "
                              f"{self.frame_size}")
        if self.shift_kernel < 0 or (self.shift_kernel and self.shift_kernel % 2 == 0):
            raise ConfigError(f"model.shift_kernel must be 0 (off) or odd, got {self.shift_kernel}")
        if self.committed_move < 0 or (self.committed_move
                                       and self.shift_kernel < 2 * self.committed_move + 1):
            raise ConfigError(f"model.committed_move must be 0 (off) or a tile size whose one-tile "
                              f"move fits model.shift_kernel ({self.shift_kernel}), got "
                              f"{self.committed_move}")
        if self.view_memory and not self.committed_move:
            raise ConfigError("model.view_memory needs model.committed_move (the memory is placed "
                              "by the committed move)")


@dataclass
class DiffusionConfig:
    """Rectified flow, x_t = (1 - t) x_0 + t eps, with an x_0-predicting denoiser."""

    sample_steps: int = 2
    # "steps": each frame from pure noise in `sample_steps` passes (the live window's sampler);
    # "progressive" (PA-VDM): `Rollout.stream` keeps `progressive_window` frames in flight at
    # noise rising from the oldest, each call lowers every one by a level and emits the oldest.
    sampler: str = "steps"
    progressive_window: int = 4
    progressive_prob: float = 0.0  # fraction of windows trained as the progressive sampler sees
    # them: chunks of progressive_window targets at levels rising (j + u) / window along the chunk
    context_noise: float = 0.03  # noise level of context frames at inference (trained to expect it)
    train_context_noise_max: float = 0.15  # context frames get t ~ U(0, max) while training
    logit_mean: float = 0.0
    logit_std: float = 1.0
    action_dropout: float = 0.1  # fraction of frames whose action is replaced by the null action
    chunk_prob: float = 0.3  # fraction of windows with several target frames at one noise level
    independent_prob: float = 0.1  # fraction of windows with independent per-target noise levels
    guidance: float = 1.0  # classifier-free guidance on the action (1 = off)
    anchor_noise_max: float = 0.0  # context/anchor frames get N(0, s^2) with s ~ U(0, max), and
    anchor_color_shift: float = 0.0  # a per-channel offset N(0, shift^2), targets stay clean: the
    # model learns to remove errors carried in by its last frame instead of compounding them
    self_forcing_prob: float = 0.0  # fraction of batches whose context frames are the model's own
    # one-step predictions (no grad), so it learns to correct its errors instead of compounding them
    self_forcing_depth: int = 1  # rounds of it: round k predicts every frame from round k-1's
    # frames, so its errors have compounded k times, as in a k-frame rollout
    move_loss_weight: float = 0.1  # cross-entropy of the move head (model.committed_move)
    # model.view_memory: each window's memory canvases are built from its episode's real frames;
    # the whole memory is dropped in this share of windows (the model without memory stays good),
    memory_drop: float = 0.25
    # and in this share some of its cells are forgotten and its pixels get a rollout's errors
    # (speckle, colour drift), so the model learns that a memory can be imperfect.
    memory_corrupt: float = 0.3

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"diffusion.sampler must be one of {', '.join(SAMPLERS)}, got "
                              f"{self.sampler!r}")
        if self.sample_steps < 1 or self.progressive_window < 1:
            raise ConfigError("diffusion.sample_steps and diffusion.progressive_window must be >= 1")


SAMPLERS = ("steps", "progressive")


@dataclass
class DataConfig:
    train: str = "data/crafter"
    split_prefix: str = "train_"
    window: int = 8  # frames per training window
    max_episodes: int = 0  # 0 = all
    extra_train: list[str] = field(default_factory=list)  # more folders, all their episodes
    # (e.g. out-and-back trips of training seeds: simulator.collect --revisit --split train)
    imagined_memory: float = 0.0  # model.view_memory: share of the windows of episodes with an
    # imagined copy (python -m memory.imagined) whose memory canvases are built from the
    # model's own rollout of the episode instead of its real frames


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    steps: int = 20000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    ckpt_every: int = 500
    out: str = "runs/crafter"
    threads: int = 0  # torch CPU threads (0 = torch default)


@dataclass
class DistillConfig:
    """A few-step student distilled from a teacher (worldmodel.distill, worldmodel.training.distill):
    distribution matching (the teacher's x_0 minus a fake score's, on the student's frames)
    beside the flow-matching loss on real windows."""

    teacher: str = ""  # the teacher checkpoint (the student and its fake score start from it)
    dmd_weight: float = 1.0  # the mode-seeking (reverse-KL) term
    flow_weight: float = 0.25  # the mean-seeking flow-matching term on real windows
    t_min: float = 0.02  # the student's frames are noised to t ~ U(t_min, t_max) for both scores
    t_max: float = 0.98
    fake_lr_mult: float = 1.0  # the fake score's learning rate, times train.lr
    self_rollout_prob: float = 0.5  # share of batches whose context is the student's own rollout
    rollout_depth: int = 2  # rounds of it (errors compounded as over that many frames)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # The game's own section: keys only the model's game reads, checked against the game's
    # `config_defaults` (worldmodel.game.GameBase) when the config loads (Crafter: tile_codebook,
    # land_prior: side files of the checkpoint folder).
    game: dict[str, Any] = field(default_factory=dict)


# Keys that moved into the game's section: an older config's diffusion.KEY is read as game.KEY.
MOVED_TO_GAME = ("tile_codebook", "land_prior")


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """An older config mapping in today's layout (the game's keys out of `diffusion`)."""
    diff = data.get("diffusion")
    if isinstance(diff, dict) and any(k in diff for k in MOVED_TO_GAME):
        data = dict(data, diffusion=dict(diff))
        game = dict(data.get("game") or {})
        for key in MOVED_TO_GAME:
            if key in data["diffusion"]:
                game.setdefault(key, data["diffusion"].pop(key))
        data["game"] = game
    return data


def check_game_section(cfg: Config) -> Config:
    """`cfg.game` checked against its game's keys and filled with their defaults: an unknown key
    or a value of the wrong type is a ConfigError naming it. A game not installed here leaves the
    section as read (loading its checkpoint fails later, naming the game)."""
    game = find_game(cfg.model.game_name)
    if game is None:
        return cfg
    defaults = dict(getattr(game, "config_defaults", {}))
    unknown = sorted(set(cfg.game) - set(defaults))
    if unknown:
        takes = ", ".join(sorted(defaults)) or "no keys"
        raise ConfigError(f"unknown key(s) {', '.join(f'game.{k}' for k in unknown)}; the "
                          f"{game.name} game's section takes: {takes}")
    out = {}
    for key, default in defaults.items():
        value = cfg.game.get(key, default)
        out[key] = _coerce(value, type(default), f"game.{key}")
    cfg.game = out
    return cfg


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return from_dict(typ, value, where)
    origin = getattr(typ, "__origin__", None)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where} must be a mapping of names, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typ.__args__
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true/false, got {value!r}")
    if typ in (int, str) and (not isinstance(value, typ) or isinstance(value, bool)):
        raise ConfigError(f"{where} must be {typ.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"{where} takes: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.lr=1e-3 model.channels=[32,64]`: values parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """A YAML config file as a mapping ({} for no file); clear errors for anything else."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


# Top-level sections of a shared YAML file that other packages own, by name -> the validator
# the owner registered when it was imported (None until then). The world model's loader takes
# them out and leaves them to their owners: worldmodel never imports an owner (that would be an
# upward import), so an owner in use (memory/config.py registers `memory` on import) is what
# makes its section checked, and a file with a `memory:` section still trains a world model
# alone. Any other unknown top-level key is a ConfigError.
SectionValidator = Callable[[Any], Any]
_SECTIONS: dict[str, SectionValidator | None] = {"memory": None}


def register_section(name: str, validate: SectionValidator) -> None:
    """Own top-level section `name` of shared config files: `validate(raw)` checks it (raising
    ConfigError) and returns what `split_sections` hands back for it."""
    if name in {f.name for f in dataclasses.fields(Config)}:
        raise ValueError(f"{name!r} is a section of the world model's own config")
    _SECTIONS[name] = validate


def split_sections(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config mapping -> (the world model's sections, the other packages' sections: validated
    where their owner registered a validator, else as read)."""
    own = dict(data)
    other = {}
    for name, validate in _SECTIONS.items():
        if name in own:
            raw = own.pop(name)
            other[name] = raw if validate is None else validate(raw)
    return own, other


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The world model's config from a YAML file and `a.b=value` overrides; sections other
    packages own (`memory:`) are left to them (and checked once their owner is imported)."""
    own, _ = split_sections(apply_overrides(migrate(read_yaml(path)), overrides or []))
    return config_from_mapping(own)


def config_from_mapping(data: dict[str, Any]) -> Config:
    """The world model's Config from its sections (an older layout migrated, the game's section
    checked by its game)."""
    return check_game_section(from_dict(Config, migrate(data)))


def config_from_json(text: str) -> Config:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"a config is a JSON object, got {type(data).__name__}")
    return config_from_mapping(data)
