"""`MemoryConfig`: the temporal LoRA and its fast learner, as a typed dataclass.

It lives in the `memory:` section of a YAML config (or takes its defaults), beside the world
model's sections. This module registers the section with `worldmodel.config` when it is
imported, so from then on `worldmodel.config.load_config` validates it and leaves it here;
`load_configs` splits a file into the world model's `Config` and the `MemoryConfig`;
`memory.key=value` overrides work like the world model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldmodel.config import (Config, ConfigError, apply_overrides, config_from_mapping, from_dict,
                               migrate, read_yaml, register_section, split_sections)

LOSS_FORMS = ("trajectory", "next_frame")
LEVEL_MODES = ("sampler", "train")
STORES = ("auto", "view", "lora", "both")


@dataclass
class MemoryConfig:
    """Episodic memory: a LoRA on the denoiser's temporal layers, fast-learned while playing."""

    enabled: bool = False  # a session starts with memory on
    # The stores `set_memory` switches: "view" (the game's view memory, `Game.view_memory`: what
    # was seen where, re-projected into the view; models trained with model.view_memory), "lora" (the temporal LoRA below),
    # "both", or "auto": the view memory alone where the model has one (on the shipped model the
    # LoRA added nothing measurable on top of it and costs the frame loop a core: its model card
    # compares the three), else the LoRA.
    stores: str = "auto"
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
    # Off by default. Plain reversal (moves swapped, every pixel scored) raised the loss on the
    # real way back (0.0039 -> 0.0197, 8 steps per update) and scored 0.67 dB below forward-only
    # on the revisit benchmark with the real trip out (-0.56 vs +0.11 dB): in Crafter the player
    # sprite still faces the way out, and a blocked move reversed teaches that the opposite move
    # does not scroll. With both fixed (reverse_ignore, reverse_still) it no longer hurts but
    # does not help either: +0.117 dB, as forward-only (real trip out); +0.10 vs +0.19 (context).
    reverse_prob: float = 0.0
    # Pixel boxes [y0, y1, x0, x1] (at the model's frame size) a reversed window is not scored
    # on: what time reversal gets wrong (in Crafter the player sprite, which faces the way out,
    # and the status bars, which would refill). The rest of a reversed frame is what a return
    # trip shows.
    reverse_ignore: list[list[int]] = field(default_factory=list)
    # A reversed step whose frames barely change (mean absolute change, [-1, 1] pixels, below
    # this; 0: off) was a blocked move on the way out: it undoes nothing, so it is learned as a
    # noop rather than as the opposite move (which would teach that the move does not scroll).
    reverse_still: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    # Off the frame loop: a worker thread, fed through a fixed ring of recent frames.
    update_every: int = 4  # frames between updates (K): on 2 CPU cores an update costs ~4 frames;
    #                       the worker skips ahead when behind
    buffer_frames: int = 16  # ring capacity; the oldest frame is dropped
    # The share of updates that learn a window drawn from anywhere in the ring instead of the
    # newest one (a larger buffer_frames then reaches further back).
    replay: float = 0.0
    worker_threads: int = 1  # torch threads the worker may use (0: leave as is)
    # The worker thread's niceness (Linux; 0: leave as is): it should take spare CPU, not the
    # frame loop's. Measured on a loaded 2-core box (memory-on / memory-off fps, updates/s):
    # nice 0: 0.47, 2.4/s; nice 5: 0.75, 1.2/s; nice 10: 0.90, 0.4/s; nice 19: 0.95, ~0/s.
    worker_nice: int = 10
    # The share of wall time the worker may spend training (0 < duty <= 1): after an update of
    # t seconds it rests t * (1 / duty - 1). On 2 cores two busy threads slow each other (shared
    # caches and memory bandwidth) even at a low priority; a duty below 1 bounds that cost.
    worker_duty: float = 1.0

    def uses(self, view_model: bool) -> tuple[bool, bool]:
        """(view memory, LoRA): the stores in use for a model with (`view_model`) or without a
        view memory."""
        if self.stores == "auto":
            return (True, False) if view_model else (False, True)
        return (self.stores in ("view", "both") and view_model, self.stores in ("lora", "both"))

    def __post_init__(self) -> None:
        if self.stores not in STORES:
            raise ConfigError(f"memory.stores must be one of {STORES}, got {self.stores!r}")
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
        if not 0 <= self.replay <= 1:
            raise ConfigError(f"memory.replay must be in [0, 1], got {self.replay}")
        if self.reverse_still < 0:
            raise ConfigError(f"memory.reverse_still must be >= 0, got {self.reverse_still}")
        for box in self.reverse_ignore:
            if (not isinstance(box, (list, tuple)) or len(box) != 4
                    or not all(isinstance(v, int) and v >= 0 for v in box)
                    or box[0] >= box[1] or box[2] >= box[3]):
                raise ConfigError(f"memory.reverse_ignore: each box must be [y0, y1, x0, x1] "
                                  f"pixels with y0 < y1, x0 < x1, got {box!r}")
        if not self.target_modules:
            raise ConfigError("memory.target_modules is empty")


def memory_config_from_dict(data: dict[str, Any] | None) -> MemoryConfig:
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"memory must be a mapping, got {data!r}")
    return from_dict(MemoryConfig, data or {}, "memory")


# Importing this module (everything that uses memory does) makes any config load check the
# `memory:` section.
register_section("memory", memory_config_from_dict)


def load_configs(path: str | Path | None = None,
                 overrides: list[str] | None = None) -> tuple[Config, MemoryConfig]:
    """A YAML file (and `a.b=value` overrides) -> (world model Config, MemoryConfig)."""
    own, other = split_sections(apply_overrides(migrate(read_yaml(path)), overrides or []))
    return config_from_mapping(own), other.get("memory") or MemoryConfig()


def load_memory_config(path: str | Path | None = None,
                       overrides: list[str] | None = None) -> MemoryConfig:
    """The `memory:` section of a YAML file (defaults when absent); overrides `memory.k=v` or `k=v`."""
    data = {"memory": read_yaml(path).get("memory") or {}}
    ovr = [o if o.startswith("memory.") else f"memory.{o}" for o in overrides or []]
    return memory_config_from_dict(apply_overrides(data, ovr)["memory"])
