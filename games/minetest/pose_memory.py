"""Frames remembered by where they were seen from, found again by field-of-view overlap.

The first piece of a memory that works in 3D (WorldMem's retrieval: frames whose view overlaps
the view the next frame will have, beat random retrieval 25.3 vs 18.3 dB). A `PoseMemory` keeps
frames with their poses (x, y, z of the feet, yaw, pitch in degrees). `overlap(a, b)` is the share
of points spread through view a's frustum (a grid of pixel rays at several depths up to
`depth`) that view b also sees; `retrieve(pose, k)` returns the k remembered frames that see most
of `pose`'s view, best first, leaving out those below `min_overlap` (a turned-away view shares
nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from games.minetest.geometry import look_basis, pixel_rays

EYE = 1.47  # minetest_game's eye height above the feet


def frustum_points(pose: np.ndarray, fov_deg: float = 72.0, depth: float = 24.0,
                   grid: int = 8, depths: int = 6) -> np.ndarray:
    """(grid * grid * depths, 3) points spread through the view of `pose`: pixel-centre rays of a
    `grid` x `grid` image at `depths` distances up to `depth` nodes."""
    x, y, z, yaw, pitch = np.asarray(pose, np.float64)
    rays = pixel_rays(yaw, pitch, grid, fov_deg).reshape(-1, 3)
    dist = depth * (np.arange(1, depths + 1) / depths)
    eye = np.array([x, y + EYE, z])
    return (eye + rays[None] * dist[:, None, None]).reshape(-1, 3)


def sees(pose: np.ndarray, points: np.ndarray, fov_deg: float = 72.0, depth: float = 24.0) -> np.ndarray:
    """(N,) whether each point lies inside the view of `pose` (within the square field of view
    and `depth` nodes of the eye)."""
    x, y, z, yaw, pitch = np.asarray(pose, np.float64)
    fwd, right, up = look_basis(yaw, pitch)
    rel = points - np.array([x, y + EYE, z])
    ahead = rel @ fwd
    t = np.tan(np.radians(fov_deg) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = (rel @ right) / ahead, (rel @ up) / ahead
    eps = 1e-9  # points on the frustum's own edges count as inside
    return ((ahead > 1e-6) & (np.abs(u) <= t + eps) & (np.abs(v) <= t + eps)
            & (np.linalg.norm(rel, axis=1) <= depth + eps))


def overlap(a: np.ndarray, b: np.ndarray, fov_deg: float = 72.0, depth: float = 24.0) -> float:
    """The share of view a that view b also sees (not symmetric: a near view inside a far one)."""
    return float(sees(b, frustum_points(a, fov_deg, depth), fov_deg, depth).mean())


@dataclass
class PoseMemory:
    """Frames with their poses; `retrieve` finds those that saw the view a pose will have."""

    capacity: int = 4096
    fov_deg: float = 72.0
    depth: float = 24.0
    min_overlap: float = 0.1
    poses: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)

    def add(self, pose: np.ndarray, frame: np.ndarray) -> None:
        """Remember `frame` seen from `pose` (the oldest is forgotten past `capacity`)."""
        self.poses.append(np.asarray(pose, np.float64))
        self.frames.append(np.asarray(frame))
        if len(self.poses) > self.capacity:
            del self.poses[0], self.frames[0]

    def __len__(self) -> int:
        return len(self.poses)

    def scores(self, pose: np.ndarray) -> np.ndarray:
        """(len,) the share of `pose`'s view each remembered frame saw."""
        if not self.poses:
            return np.zeros(0)
        points = frustum_points(pose, self.fov_deg, self.depth)
        return np.array([sees(p, points, self.fov_deg, self.depth).mean() for p in self.poses])

    def retrieve(self, pose: np.ndarray, k: int = 4) -> list[tuple[int, float]]:
        """Up to k (index, overlap) of the remembered frames seeing most of `pose`'s view, best
        first (the newest first among equals); none below `min_overlap`."""
        s = self.scores(pose)
        order = sorted(range(len(s)), key=lambda i: (-s[i], -i))
        return [(i, float(s[i])) for i in order[:k] if s[i] >= self.min_overlap]
