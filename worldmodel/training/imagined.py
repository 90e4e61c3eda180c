"""Imagined copies of episodes: the model's own frames of a real trip, beside its real ones.

`python -m memory.imagined` writes them (it rolls the model with its view memory on, which the
world model's package does not import); this module is their file format and reader, which
training uses (`WindowDataset(imagined=True)`, `data.imagined_memory`): `imagined.npy` in the
episode's folder, uint8 frame for frame like its real frames, and `imagined.json` saying how it
was made (checkpoint, segment, command).
"""

from __future__ import annotations

import numpy as np

from worldmodel.data.episode import Episode

FRAMES = "imagined.npy"
INFO = "imagined.json"


class ImaginedError(ValueError):
    """An imagined copy that cannot be used with its episode."""


def load_imagined(ep: Episode) -> np.ndarray | None:
    """The imagined copy beside an episode's frames, or None if it has none."""
    if ep.path is None or not (ep.path / FRAMES).is_file():
        return None
    try:
        img = np.load(ep.path / FRAMES)
    except (OSError, ValueError) as e:
        raise ImaginedError(f"{ep.path / FRAMES} cannot be read ({e}); rerun memory.imagined") from e
    if img.shape != ep.frames.shape or img.dtype != np.uint8:
        raise ImaginedError(f"{ep.path / FRAMES} holds {img.shape} {img.dtype}, its episode "
                            f"{ep.frames.shape} uint8; rerun memory.imagined")
    return img
