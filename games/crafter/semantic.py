"""Semantic measures of imagined Crafter worlds against the real game, on per-tile labels
(`games.crafter.tiles`): what a player sees, where PSNR sees the mean.

Arrays are per world: `labels` (W, T, VIEW_ROWS, VIEW_COLS) uint8 (tiles.REJECT for a tile that
looks like no real tile), `pos` (W, T, 2) the player's cell per frame (the real game's poses: the
camera the model was asked to follow). Frame 0 of the real arrays is the last context frame.

- *object permanence* at horizon h: of the world cells shown in the last context frame and in
  view again at frame h, the share the model draws with their true label at h (all such cells,
  and those whose true label is not grass);
- *smears*: the share of tiles in the reject class;
- *richness*: the share of tiles with a real label other than grass; the label histogram of
  newly revealed cells (first time in view, context included) against the real game's
  (total-variation distance); how many distinct labels are drawn;
- *scroll agreement*: on move actions, whether the view scrolls as the real one did, with free
  and blocked moves apart (a blocked move must leave the view in place).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from games.crafter.geometry import PLAYER_TILE, VIEW_COLS, VIEW_ROWS, estimate_scroll, intended_moves
from games.crafter.tiles import REJECT

# Open-loop buckets (frames after the context, inclusive) and the long rollout's.
OPEN_BUCKETS = ((1, 4), (5, 16), (17, 64), (65, 128))
LONG_BUCKETS = ((1, 16), (17, 64), (65, 128), (129, 256), (257, 512), (513, 1000), (1001, 2000))
_OFFSETS = np.stack(np.meshgrid(np.arange(VIEW_COLS) - PLAYER_TILE[1],
                                np.arange(VIEW_ROWS) - PLAYER_TILE[0]), -1)  # (rows, cols, 2)


def view_cells(pos: np.ndarray) -> np.ndarray:
    """(..., 2) player cells -> (..., VIEW_ROWS, VIEW_COLS, 2) the world cell each tile shows."""
    return np.asarray(pos)[..., None, None, :] + _OFFSETS


def in_view(cells: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Whether `cells` (..., 2) lie in the world view centred on `pos` (broadcast (..., 2))."""
    d = np.asarray(cells) - np.asarray(pos)
    return ((d[..., 0] >= -PLAYER_TILE[1]) & (d[..., 0] < VIEW_COLS - PLAYER_TILE[1])
            & (d[..., 1] >= -PLAYER_TILE[0]) & (d[..., 1] < VIEW_ROWS - PLAYER_TILE[0]))


def permanence(drawn: np.ndarray, real: np.ndarray, pos: np.ndarray, horizons: Sequence[int],
               grass: int) -> dict[str, dict[str, Any]]:
    """drawn (W, H, r, c): labels of the frames after the context (frame h at index h - 1);
    real (W, H + 1, r, c) and pos (W, H + 1, 2) from the last context frame on. Per horizon:
    the share of carried cells drawn right, over all and over non-grass ones, with counts."""
    out = {}
    for h in horizons:
        if h > drawn.shape[1]:
            continue
        carried = in_view(view_cells(pos[:, h]), pos[:, 0, None, None])  # (W, r, c)
        truth = real[:, h][carried]
        hit = drawn[:, h - 1][carried] == truth
        ng = truth != grass
        out[str(h)] = {"all": _share(hit), "non_grass": _share(hit[ng]),
                       "n_all": int(carried.sum()), "n_non_grass": int(ng.sum())}
    return out


def repeat_last_permanence(last: np.ndarray, real: np.ndarray, pos: np.ndarray,
                           horizons: Sequence[int], grass: int) -> dict[str, dict[str, Any]]:
    """The same for repeating the last context frame: its labels `last` (W, r, c) stay put."""
    frames = np.repeat(last[:, None], max(horizons), 1)
    return permanence(frames, real, pos, horizons, grass)


def _share(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if np.size(x) else None


def _non_grass(labels: np.ndarray, grass: int) -> np.ndarray:
    return (labels != grass) & (labels != REJECT)


def bucket_shares(labels: np.ndarray, buckets: Sequence[tuple[int, int]], grass: int,
                  steps: np.ndarray | None = None) -> dict[str, dict[str, float | None]]:
    """labels (W, T, r, c) of the frames at `steps` (T,) after the context (default 1..T): per
    bucket "a-b" of steps the non-grass share (tiles with a real label other than grass) and the
    smear share (REJECT); buckets no frame falls in are left out."""
    steps = np.arange(1, labels.shape[1] + 1) if steps is None else np.asarray(steps)
    out = {}
    for a, b in buckets:
        sl = labels[:, (steps >= a) & (steps <= b)]
        if not sl.size:
            continue
        out[f"{a}-{b}"] = {"non_grass": _share(_non_grass(sl, grass)),
                           "smear": _share(sl == REJECT)}
    return out


def series(labels: np.ndarray, grass: int) -> dict[str, list[float]]:
    """labels (W, T, r, c) -> per frame (mean over worlds and tiles) non-grass and smear shares."""
    return {"non_grass": _non_grass(labels, grass).mean((0, 2, 3)).tolist(),
            "smear": (labels == REJECT).mean((0, 2, 3)).tolist()}


def revealed(drawn: np.ndarray, real: np.ndarray, pos: np.ndarray, seen_pos: np.ndarray,
             n_labels: int) -> dict[str, Any]:
    """Label histograms of newly revealed cells: cells in view at frame t >= 1 that no earlier
    frame showed (the context frames at `seen_pos` (W, C, 2) included), drawn by the model
    (`drawn` (W, H, r, c), frame t at t - 1) vs the real game's labels there (`real` (W, H+1, ...)).
    The last bin is REJECT. Returns both histograms (shares), the total-variation distance and n."""
    bins = n_labels + 1
    hist_m, hist_r = np.zeros(bins), np.zeros(bins)
    for w in range(drawn.shape[0]):
        seen = set(map(tuple, view_cells(seen_pos[w]).reshape(-1, 2)))
        for t in range(1, drawn.shape[1] + 1):
            cells = view_cells(pos[w, t])
            for r in range(VIEW_ROWS):
                for c in range(VIEW_COLS):
                    key = (int(cells[r, c, 0]), int(cells[r, c, 1]))
                    if key in seen:
                        continue
                    seen.add(key)
                    m = drawn[w, t - 1, r, c]
                    hist_m[n_labels if m == REJECT else m] += 1
                    hist_r[real[w, t, r, c]] += 1
    n = int(hist_r.sum())
    if n == 0:
        return {"n": 0, "tv": None, "model": None, "real": None}
    pm, pr = hist_m / n, hist_r / n
    return {"n": n, "tv": float(0.5 * np.abs(pm - pr).sum()), "model": pm.tolist(),
            "real": pr.tolist()}


def distinct_labels(labels: np.ndarray, exclude: Sequence[int] = (0,)) -> dict[str, float]:
    """Distinct real labels drawn (REJECT and `exclude`, e.g. void, left out): pooled over the
    worlds, and the mean per world."""
    skip = set(exclude) | {REJECT}
    per_world = [len(set(np.unique(w).tolist()) - skip) for w in labels]
    return {"pooled": len(set(np.unique(labels).tolist()) - skip),
            "per_world_mean": float(np.mean(per_world)) if per_world else 0.0}


def scroll_agreement(frames: np.ndarray, last: np.ndarray, pos: np.ndarray, actions: np.ndarray,
                     action_names: Sequence[str]) -> dict[str, Any]:
    """Whether the view scrolls as the real game's did. frames (W, H, h, w, 3) after the context,
    last (W, h, w, 3) the last context frame, pos (W, H + 1, 2) real poses, actions (W, H) those
    that made frames 1..H. Shares of steps whose estimated scroll (geometry.estimate_scroll, told
    the move each action asked for) equals the real one: free moves (the real view scrolled),
    blocked moves (a move action, the real view stayed), other actions (the view must stay)."""
    prev = np.concatenate([last[:, None], frames[:, :-1]], 1)
    intended = intended_moves(actions, action_names)
    move = (intended != 0).any(-1)
    # Moves read as made or blocked; other actions among every scroll (the model may move wrongly).
    est = np.where(move[..., None], estimate_scroll(prev, frames, intended),
                   estimate_scroll(prev, frames))  # (W, H, 2)
    real = np.diff(pos, axis=1)
    same = (est == real).all(-1)
    scrolled = (real != 0).any(-1)
    groups = {"free_moves": move & scrolled, "blocked_moves": move & ~scrolled, "other": ~move}
    return {k: {"n": int(m.sum()), "agree": _share(same[m])} for k, m in groups.items()}
