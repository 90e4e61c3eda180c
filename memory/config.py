"""`MemoryConfig`: the temporal LoRA and its fast learner, as a typed dataclass.

It lives in the `memory:` section of a YAML config (or takes its defaults), beside the world
model's sections: `worldmodel.config.load_config` validates it and leaves it here, `load_configs`
splits a file into the world model's `Config` and the `MemoryConfig`; `memory.key=value`
overrides work like the world model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldmodel.config import (Config, ConfigError, apply_overrides, from_dict, read_yaml,
                               split_sections)

LOSS_FORMS = ("trajectory", "next_frame")
LEVEL_MODES = ("sampler", "train")


@dataclass
class MemoryConfig:
    """Episodic memory: a LoRA on the denoiser's temporal layers, fast-learned while playing."""

    enabled: bool = False  # a session starts with memory on
    # The adapter. Patterns are peft `target_modules` suffixes ("temporal.qkv" matches
    # "down.1.0.temporal.qkv"); alpha / rank scales the update.
    target_modules: list[str] = field(default_factory=lambda: ["temporal.qkv", "temporal.out"])
    rank: int = 32
    alpha: float = 32.0
    merge: bool = True  # inference runs the adapter merged into the weights (no per-frame cost)
    # The fast learner (SlowFast-VGen: Adam, one step per chunk, rank 32). Measured on the
    # revisit benchmark with an early (step-100) model: lr 1e-3 beat the paper's 1e-4 (+3.1 vs
    # +1.3 dB), next_frame beat trajectory (+3.1 vs +1.8 dB), and an update every 4 frames kept
    # most of it (+2.8 dB). On the shipped model lr 1e-3 and 3e-4 gain ~0 dB against the game and
    # +0.69 / +0.23 dB against the model's own first visit (assets/crafter/MODEL_CARD.md).
    lr: float = 1e-3
    steps_per_update: int = 1
    window: int = 8  # frames per update: the previous context plus the newest frames
    loss: str = "next_frame"  # "next_frame": each frame from the clean ones before it + action;
    #                           "trajectory": the whole window one noised chunk, no actions
    levels: str = "sampler"  # noise levels trained: the sampler's own ("sampler") or training's
    # Also learn the window played backwards (what a return trip sees), with this probability.
    # Off by default: on the shipped model, reversed windows (moves swapped, but the player sprite
    # still facing the way out) raised the loss on the real way back (0.0039 -> 0.0197, 8 steps
    # per update) where forward windows did not, and 0.5 scored 0.15 dB below 0 on the revisit
    # benchmark (+0.04 vs +0.19 dB) and 0.67 dB below with the real trip out (-0.56 vs +0.11).
    reverse_prob: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    # Off the frame loop: a worker thread, fed through a fixed ring of recent frames.
    update_every: int = 4  # frames between updates (K): on 2 CPU cores an update costs ~4 frames;
    #                       the worker skips ahead when behind
    buffer_frames: int = 16  # ring capacity; the oldest frame is dropped
    worker_threads: int = 1  # torch threads the worker may use (0: leave as is)
    # The worker thread's niceness (Linux; 0: leave as is): it should take spare CPU, not the
    # frame loop's. Measured on a loaded 2-core box (memory-on / memory-off fps, updates/s):
    # nice 0: 0.47, 2.4/s; nice 5: 0.75, 1.2/s; nice 10: 0.90, 0.4/s; nice 19: 0.95, ~0/s.
    worker_nice: int = 10
    # The share of wall time the worker may spend training (0 < duty <= 1): after an update of
    # t seconds it rests t * (1 / duty - 1). On 2 cores two busy threads slow each other (shared
    # caches and memory bandwidth) even at a low priority; a duty below 1 bounds that cost.
    worker_duty: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSS_FORMS:
            raise ConfigError(f"memory.loss must be one of {LOSS_FORMS}, got {self.loss!r}")
        if self.levels not in LEVEL_MODES:
            raise ConfigError(f"memory.levels must be one of {LEVEL_MODES}, got {self.levels!r}")
        if self.rank < 1 or self.window < 2 or self.update_every < 1 or self.steps_per_update < 1:
            raise ConfigError("memory.rank, steps_per_update, update_every must be >= 1 and "
                              "memory.window >= 2")
        if self.buffer_frames < self.window:
            raise ConfigError(f"memory.buffer_frames ({self.buffer_frames}) must hold a window "
                              f"({self.window})")
        if not 0 < self.worker_duty <= 1:
            raise ConfigError(f"memory.worker_duty must be in (0, 1], got {self.worker_duty}")
        if not self.target_modules:
            raise ConfigError("memory.target_modules is empty")


def memory_config_from_dict(data: dict[str, Any] | None) -> MemoryConfig:
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"memory must be a mapping, got {data!r}")
    return from_dict(MemoryConfig, data or {}, "memory")


def load_configs(path: str | Path | None = None,
                 overrides: list[str] | None = None) -> tuple[Config, MemoryConfig]:
    """A YAML file (and `a.b=value` overrides) -> (world model Config, MemoryConfig)."""
    own, other = split_sections(apply_overrides(read_yaml(path), overrides or []))
    return from_dict(Config, own), other.get("memory") or MemoryConfig()


def load_memory_config(path: str | Path | None = None,
                       overrides: list[str] | None = None) -> MemoryConfig:
    """The `memory:` section of a YAML file (defaults when absent); overrides `memory.k=v` or `k=v`."""
    data = {"memory": read_yaml(path).get("memory") or {}}
    ovr = [o if o.startswith("memory.") else f"memory.{o}" for o in overrides or []]
    return memory_config_from_dict(apply_overrides(data, ovr)["memory"])
