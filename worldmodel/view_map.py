"""The minimap of a pose-keyed view memory (`worldmodel.recall.RecallMemory`): where the player
has been and what it saw there, top down."""

from __future__ import annotations

from typing import Any

import numpy as np


def minimap(memory: Any, world: int = 0, radius: int = 12, scale: int = 1) -> np.ndarray:
    """Top down, north up, `radius` nodes around world `world`'s player at 4 px a node (times
    `scale`): the ground each remembered frame saw, in that frame's colours (the newest on
    top), the trail walked (grey) and the player with its heading (red). Uint8 (H, W, 3)."""
    import cv2

    px = 4
    side = (2 * radius + 1) * px
    img = np.full((side, side, 3), 24, np.uint8)
    cx, cz = memory.pose[world][0], memory.pose[world][2]
    g = memory.geometry

    def to_px(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        col = np.floor((x - cx + radius + 0.5) * px).astype(int)
        row = np.floor((cz - z + radius + 0.5) * px).astype(int)
        ok = (col >= 0) & (col < side) & (row >= 0) & (row < side)
        return row, col, ok

    for pose, frame in zip(memory.poses[world], memory.frames[world]):
        xz, cells = g.footprint(pose)
        block = cv2.resize(frame, (g.grid, g.grid), interpolation=cv2.INTER_AREA)
        row, col, ok = to_px(xz[:, 0], xz[:, 1])
        colour = block[cells[:, 0], cells[:, 1]].astype(np.uint8)
        for dy in range(2):
            for dx in range(2):
                r, c = np.clip(row + dy, 0, side - 1), np.clip(col + dx, 0, side - 1)
                img[r[ok], c[ok]] = colour[ok]
    if memory.trail[world]:
        trail = np.stack(memory.trail[world])
        row, col, ok = to_px(trail[:, 0], trail[:, 2])
        img[row[ok], col[ok]] = 160
    mid = side // 2
    yaw = np.radians(memory.pose[world][3])
    for s in range(px * 2):
        r, c = int(round(mid - np.cos(yaw) * s)), int(round(mid - np.sin(yaw) * s))
        if 0 <= r < side and 0 <= c < side:
            img[r, c] = (230, 40, 40)
    img[mid - 1:mid + 2, mid - 1:mid + 2] = (230, 40, 40)
    if scale > 1:
        img = img.repeat(scale, 0).repeat(scale, 1)
    return img

