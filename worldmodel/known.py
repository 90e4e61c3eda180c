"""Known pixels: what the view memory already knows of a frame about to be drawn, kept by the sampler.

A pose-keyed view memory (`worldmodel.recall.RecallMemory`) remembers frames with the poses they
were seen from (poses dead-reckoned from the committed actions: the model's own motion, never the
real game's). Before a frame is drawn at a pose from which remembered frames were seen (the same
eye, any turn and tilt), the game's geometry (`PoseGeometry.reproject`) maps every pixel of the
new view into each of them; where one showed it, the pixel is known. The sampler draws the frame
conditioned on the known pixels, RePaint-style for flow matching: before each network call the
known pixels of the noisy frame are set to the remembered ones noised to that call's level (with
the call's own noise), and the drawn frame keeps them, blended over `FEATHER` pixels at the seams
so the network's strokes meet the remembered ones. A static world looks the same from the same
place, so a view turned away from and back to, or walked away from and back to, comes back as it
was first seen; the network draws only what was never seen from there.

    known = known_pixels(memory, targets, size)      # Known(image, mask) or None
    frames = denoise_chunk(..., Conditioning(known=known))

A chunk whose every pixel is known (standing still, a view seen whole from here before) skips
the network: the frames are the remembered ones, exactly what the sampler would have kept.

What a frame is painted from: every remembered frame of a world whose view memory is on, the
cached ones too (a turn or tilt in place is a rotation, which reprojects exactly whatever the
depth, so the part of a turned view the last frame showed is that frame's, not a new drawing),
each covering at least MIN_KNOWN of the target; every pixel from the oldest frame that showed it
(at most SOURCES of them, the oldest), so a pixel is resampled once from where it was first
drawn, never again and again along a turn. A view seen from elsewhere needs depth to be
reprojected and is not used: the frames of a walk are drawn by the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MIN_KNOWN = 0.05  # the least share of a target's pixels a remembered frame must show
SOURCES = 16  # remembered frames composited per target at most, the oldest on top
FEATHER = 3  # pixels over which the known region fades into the drawn one at its seams


@dataclass
class Known:
    """The known pixels of a chunk's frames."""

    image: Tensor  # (b, n, 3, h, w) in [-1, 1]: the remembered pixels (anything where mask is 0)
    mask: Tensor  # (b, n, 1, h, w) in [0, 1]: 1 known, 0 to be drawn, between at the seams
    full: bool = False  # every pixel of every frame known (decided on the host): nothing to draw

    def keep(self, x: Tensor, level: float, noise: Tensor) -> Tensor:
        """The noisy frames `x` at `level` with their known pixels set to the remembered ones at
        that level under `noise` (the flow-matching path (1 - t) x0 + t eps)."""
        m = self.mask.to(x.dtype)
        at_level = (1 - level) * self.image.to(x.dtype) + level * noise.to(x.dtype)
        return x * (1 - m) + at_level * m

    def paste(self, x0: Tensor) -> Tensor:
        """The drawn frames with the known pixels put back (blended at the seams)."""
        m = self.mask.to(x0.dtype)
        return x0 * (1 - m) + self.image.to(x0.dtype) * m


def feather(ok: np.ndarray, width: int = FEATHER) -> np.ndarray:
    """(h, w) float32 weights of a known region `ok` (h, w) bool: 1 deep inside, falling to
    1 / (width + 1) at its seams with the unknown region (the frame's own edges are no seam)."""
    import cv2

    if ok.all() or not ok.any() or width <= 0:
        return ok.astype(np.float32)
    pad = width + 1
    padded = np.pad(ok, pad, mode="edge").astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[pad:-pad, pad:-pad]
    return np.clip(dist / (width + 1), 0, 1).astype(np.float32) * ok


def known_share(geometry: Any, pose: np.ndarray, poses: np.ndarray, size: int = 16) -> float:
    """The largest share of the view of `pose` that one of the views `poses` (m, 5) gives known
    pixels of (0 for a game without reprojection): the view memory writes a frame only where
    none covers it, for recall and for known pixels alike."""
    if not hasattr(geometry, "reproject") or len(poses) == 0:
        return 0.0
    return float(geometry.reproject(pose, poses, size)[1].mean((1, 2)).max())


def known_pixels(memory: Any, targets: np.ndarray, size: int) -> Known | None:
    """The known pixels of frames about to be drawn at poses `targets` (b, n, 5) (the memory's
    clock already advanced to the last of them), or None where nothing is known (the call is
    then the sampler without them, exactly)."""
    geometry = memory.geometry
    if not hasattr(geometry, "reproject"):
        return None
    b, n = targets.shape[:2]
    image = np.zeros((b, n, size, size, 3), np.float32)
    mask = np.zeros((b, n, size, size), np.float32)
    found = False
    for w in range(b):
        usable = memory.paintable(w, n)
        if not len(usable):
            continue
        poses = np.stack([memory.poses[w][j] for j in usable])
        for i in range(n):
            grid, ok = geometry.reproject(targets[w, i], poses, size)
            share = ok.mean((1, 2))
            pick = np.flatnonzero(share >= MIN_KNOWN)
            if not len(pick):
                continue
            pick = pick[::-1][-SOURCES:]  # the newest first, the oldest last (on top)
            src = np.stack([memory.frames[w][usable[j]] for j in pick])  # (k, h', w', 3) uint8
            src = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 127.5 - 1
            warped = F.grid_sample(src, torch.from_numpy(grid[pick]), mode="bilinear",
                                   padding_mode="border", align_corners=False)
            warped = warped.permute(0, 2, 3, 1).cpu().numpy()  # (built on the host)
            any_ok = np.zeros((size, size), bool)
            for j in range(len(pick)):
                image[w, i][ok[pick[j]]] = warped[j][ok[pick[j]]]
                any_ok |= ok[pick[j]]
            mask[w, i] = feather(any_ok)
            found = True
    if not found:
        return None
    device = memory.device
    return Known(torch.from_numpy(image).permute(0, 1, 4, 2, 3).contiguous().to(device),
                 torch.from_numpy(mask)[:, :, None].to(device), full=bool((mask == 1).all()))
