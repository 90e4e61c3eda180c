"""The frame pipeline: what `Rollout.chunk` does to a chunk of frames, as stages in one place.

    action -> choice (the anchor head's committed decision: Crafter's camera move)
           -> memory read (the view memory's canvas around the pose, or an empty one; with a
              pose-keyed memory: the remembered frames to recall and the known pixels)
           -> game stages' `before` (Crafter: the land prior samples what a move reveals)
           -> denoise (the sampler over the core network)
           -> game stages' `after` (Crafter: the tile codebook snap)
           -> memory write (each frame at the pose its choice gives)
           -> commit to the KV cache
           -> game stages' `show` (Crafter: the daylight, on what is shown only) -> frames

The choice, memory read and memory write are the core's (they use only the model's anchor head
and the memory's `read`/`advance`/`write`); the game's stages come from `Game.stages` when a
checkpoint loads, each from a side file its config names, and are listed on the model
(`Denoiser.stages`), saved and loaded with it, not looked up as loose attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class Frame:
    """One chunk on its way through the pipeline (b worlds, n frames)."""

    actions: Tensor  # (b, n) as given
    act: Tensor  # (b, n, A) encoded
    drop: Tensor  # (b, n) bool: no action
    choice: Tensor | None = None  # (b, n) the anchor head's decisions (given, or decided)
    memory: Tensor | None = None  # (b, C, H', W') the memory canvas around the anchor's pose
    recall: Any = None  # the remembered frames the denoiser attends to (worldmodel.recall)
    known: Any = None  # the pixels the view memory already knows (worldmodel.known), kept
    frames: Tensor | None = None  # (b, n, 3, h, w) once denoised
    shown: Tensor | None = None  # what is shown instead, where a stage's `show` lit it
    state: dict[str, Any] = field(default_factory=dict)  # what stages keep for the next chunk


class Stage:
    """A game's step of the frame pipeline. `before` may change the choice or the memory canvas
    the denoiser sees; `after` may change the denoised frames. `needs_canvas`: the stage works on
    a memory canvas, so the pipeline decides the choice and reads the memory even without a
    view memory switched on."""

    name = "stage"
    needs_canvas = False
    # A stage that keeps state per world (in `rollout.world_stage[w][key]`, saved with the world
    # as stage.<key>) names it here and checks a saved one in `check_saved`.
    key: str | None = None

    def before(self, rollout: Any, frame: Frame) -> None:
        pass

    def after(self, rollout: Any, frame: Frame) -> None:
        pass

    def show(self, rollout: Any, frame: Frame) -> None:
        """After the frames are committed and remembered: may set `frame.shown`, what the
        caller gets instead of `frame.frames` (the context and the memory keep the frames as
        drawn). `rollout.clock` is still each world's step before the chunk."""

    def check_saved(self, t: Tensor) -> None:
        """ValueError unless `t` is a state this stage saved (only for a stage with a `key`)."""
        raise ValueError(f"the {self.name} stage keeps no saved state")

    def __repr__(self) -> str:
        return f"<stage {self.name}>"
