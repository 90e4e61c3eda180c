"""Minetest's view geometry in Python, the same as the driver mod's (`mod/ngs_driver/init.lua`):
the look basis of a yaw and pitch, each pixel centre's ray, and the discrete step of a move.

Minetest's axes: x east, y up, z north; yaw 0 looks along +z and grows turning left; pitch grows
looking down. The eye is at the feet plus the player's eye height (1.47 in minetest_game).
"""

from __future__ import annotations

import numpy as np

STEP = 0.5  # nodes per move
TURN = 15.0  # degrees per turn or tilt
MAX_PITCH = 90.0
FOV_SETTING = 72  # the client's fov setting (MinetestEnv's default)


def render_fov(fov_setting: float = FOV_SETTING, aspect: float = 1.0) -> float:
    """The vertical field of view (degrees) the client draws at an fov setting: Minetest's camera
    widens it for windows narrower than 16:10 by sqrt(1.6 / aspect), at most 1.4 times
    (src/client/camera.cpp; the driver mod's label rays use the same rule). A square frame at
    fov 72 shows 91.07 degrees both ways."""
    return float(fov_setting * min(1.4, max(1.0, np.sqrt(1.6 / aspect))))


FOV = render_fov()  # what a square frame shows, across and up


def look_basis(yaw_deg: float, pitch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, right, up) unit vectors of a view."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    fwd = np.array([-np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.array([np.cos(yaw), 0.0, np.sin(yaw)])
    up = np.array([-np.sin(yaw) * np.sin(pitch), np.cos(pitch), np.cos(yaw) * np.sin(pitch)])
    return fwd, right, up


def pixel_rays(yaw_deg: float, pitch_deg: float, size: int, fov_deg: float = FOV) -> np.ndarray:
    """(size, size, 3) unit ray directions through the pixel centres of a square view, row 0 at
    the top (the rays the mod casts for the label map)."""
    fwd, right, up = look_basis(yaw_deg, pitch_deg)
    t = np.tan(np.radians(fov_deg) / 2)
    c = (2 * np.arange(size) + 1) / size - 1  # -1..1 at pixel centres
    u, v = np.meshgrid(c, -c)  # u to the right, v up
    d = fwd + t * (u[..., None] * right + v[..., None] * up)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def walk_direction(yaw_deg: float, action: str) -> np.ndarray:
    """The (dx, dz) unit direction of a move action at `yaw_deg` (zero for non-moves)."""
    yaw = np.radians(yaw_deg)
    fwd, right = np.array([-np.sin(yaw), np.cos(yaw)]), np.array([np.cos(yaw), np.sin(yaw)])
    return {"forward": fwd, "back": -fwd, "left": -right, "right": right}.get(action, np.zeros(2))


def step_view(action: str, x: float, z: float, yaw: float, pitch: float
              ) -> tuple[float, float, float, float]:
    """(x, z, yaw, pitch) after one action on open flat ground: a turn or tilt of TURN degrees
    (tilt within +-MAX_PITCH), a move of STEP nodes (nothing blocks it; no climbing, no falling)."""
    if action == "turn_left":
        yaw = (yaw + TURN) % 360
    elif action == "turn_right":
        yaw = (yaw - TURN) % 360
    elif action == "look_up":
        pitch = max(-MAX_PITCH, pitch - TURN)
    elif action == "look_down":
        pitch = min(MAX_PITCH, pitch + TURN)
    dx, dz = STEP * walk_direction(yaw, action)
    return x + dx, z + dz, yaw, pitch


def dead_reckon(actions: list[str], yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """(len + 1, 4) (x, z, yaw, pitch) after each action on open flat ground, from the origin:
    where the player goes when nothing blocks it (no climbing, no falling)."""
    out = [(0.0, 0.0, float(yaw_deg), float(pitch_deg))]
    for a in actions:
        out.append(step_view(a, *out[-1]))
    return np.asarray(out)
