"""Minetest's per-pixel label set: every node name the driver's raycast can hit, in a few classes.

The driver mod (`mod/ngs_driver`) casts a ray from the eye through each pixel centre and names the
first node it hits ("air" past the viewing range: the sky). `label_of` sorts node names into the
classes below by the first rule that matches (module, then name); anything else is "other".
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

LABEL_NAMES = ("sky", "grass", "dirt", "stone", "sand", "water", "trunk", "leaves", "snow",
               "plant", "planks", "lava", "other")

# (label, pattern on the full node name), first match wins.
RULES: tuple[tuple[str, str], ...] = (
    ("sky", r"^(air|ignore)$"),
    ("water", r"water_(source|flowing)$"),
    ("lava", r"lava_(source|flowing)$"),
    ("snow", r"(snow|ice)"),
    ("grass", r"^default:dirt_with_(grass|dry_grass|grass_footsteps)$"),
    ("dirt", r"^default:(dirt|dry_dirt|dirt_with_.*|permafrost.*|clay)$"),
    ("sand", r"^default:(sand|desert_sand|silver_sand|sandstone.*|desert_sandstone.*|silver_sandstone.*)$"),
    ("stone", r"^default:(stone|cobble|mossycobble|desert_stone|desert_cobble|gravel|obsidian|stone_with_.*|.*_block|.*brick)$"),
    ("trunk", r"^default:(tree|jungletree|pine_tree|acacia_tree|aspen_tree|bush_stem|acacia_bush_stem|pine_bush_stem)$"),
    ("leaves", r"(leaves|needles)$"),
    ("planks", r"^default:(wood|junglewood|pine_wood|acacia_wood|aspen_wood)$"),
    ("plant", r"^(default:(grass_\d|dry_grass_\d|junglegrass|fern_\d|marram_grass_\d|dry_shrub|cactus|papyrus|large_cactus_seedling|sapling|.*_sapling|blueberry_bush.*|kelp.*|coral.*|sand_with_kelp)|flowers:.*|farming:.*)$"),
)


@lru_cache(maxsize=4096)
def label_of(node: str) -> int:
    """The label id of a node name."""
    for label, pattern in RULES:
        if re.search(pattern, node):
            return LABEL_NAMES.index(label)
    return LABEL_NAMES.index("other")


def label_ids(names: list[str], ids: str, size: int | float) -> np.ndarray:
    """(size, size) uint8 label map from the driver's answer: node names and one character per
    pixel (33 + the name's index), row by row from the top."""
    size = int(size)
    idx = np.frombuffer(ids.encode("latin-1"), np.uint8).astype(np.int64) - 33
    if idx.size != size * size or idx.min(initial=0) < 0 or idx.max(initial=0) >= len(names):
        raise ValueError(f"label map of {idx.size} pixels for size {size} and {len(names)} names")
    table = np.asarray([label_of(n) for n in names], np.uint8)
    return table[idx].reshape(size, size)


def upsample(labels: np.ndarray, size: int) -> np.ndarray:
    """A label map at `size` x `size` (nearest: each label pixel covers size // L frame pixels)."""
    k = size // labels.shape[0]
    if k * labels.shape[0] != size:
        raise ValueError(f"labels at {labels.shape[0]} do not tile frames of {size}")
    return np.repeat(np.repeat(labels, k, 0), k, 1)


# Label colours for strips and the window's label view (RGB).
PALETTE = np.asarray([
    (135, 190, 235), (80, 160, 60), (120, 85, 55), (125, 125, 125), (220, 205, 140),
    (40, 80, 200), (95, 65, 30), (30, 100, 30), (240, 240, 250), (170, 210, 90),
    (180, 140, 80), (230, 90, 20), (200, 0, 200)], np.uint8)
