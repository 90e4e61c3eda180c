"""Per-tile labels of Crafter frames: what a player sees, tile by tile.

    python -m games.crafter.tiles --data data/crafter --out assets/tiles/crafter.npz

A Crafter frame (`../shared/CRAFTER.md`) is a 9x9 grid of 7-px tiles; the top 9x7 are the world
view, the player always at (col 4, row 3), and every material or creature is one fixed texture
(lit by the daylight, plus a noise vignette at night). So a tile of a real frame looks like some
tile the real game drew before, and a tile of a model's frame that looks like none of them is a
blend, a smear or noise.

`TileClassifier` labels tiles by their nearest neighbour in a bank of real tiles from training
seeds (day and night), labelled by the game's own semantic map (`labels.u8` of collected
episodes), with a *reject* class (`REJECT`) for tiles farther from every bank tile than a
threshold set on held-out real tiles, or whose edges (pixel differences) differ from the matched
tile's by more than a second one (a blur of a low-contrast texture stays close in pixels but loses
its edges). Night tiles carry per-pixel noise and sit farther from the bank than day tiles, so the
thresholds are per daylight bucket of the matched bank tile: a blend by day is held to day's
distances. Building the bank from training episodes and calibrating it
on held-out ones writes the bank (a small .npz) and a report of its accuracy and rejection rate on
held-out frames.

`estimate_scroll` reads the camera's whole-tile move between two frames from the pixels alone
(real or imagined): the pose the semantic evaluation and the view memory need without the game.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from worldmodel.game import GameError
from games.crafter.geometry import TILE, TILE_DIM, VIEW_COLS, VIEW_ROWS, daylight, view_tiles
from worldmodel.data import list_episodes, load_episode
from worldmodel.data.episode import write_json_atomic
from worldmodel.evaluation.reports import command_line
from worldmodel.cli import common_flags, run_cli

REJECT = 255  # the label of a tile that looks like no real tile
GRASS = "grass"
DAYLIGHT_EDGES = (0.2, 0.4, 0.6, 0.8)  # daylight buckets of the per-bucket reject threshold
DEFAULT_BANK = Path(__file__).resolve().parents[2] / "assets" / "tiles" / "crafter.npz"
BANK_VERSION = 1
# By full daylight the game draws every texture exactly, so held-out real tiles sit at distance 0
# and a quantile alone would reject a model's tile for any rounding. The floor was set by looking:
# montages of the shipped model's day tiles beside their nearest bank tile read as the same tile up
# to an RMS distance of ~12 (of 255) and as visible blends beyond ~14, and it sits at the night
# buckets' own quantiles, so day and night are held to one standard of "looks like a real tile".
MIN_THRESHOLD = 12.0
# A blur keeps a low-contrast texture (grass) within the pixel threshold but flattens its edges,
# so a second test compares the tile's pixel differences with those of the bank tile it matched.
# Measured on held-out day frames: a 3x3 box blur moves them by 14-15 (RMS); the shipped model's
# tiles within 6 of a real tile by pixels move them by 3-10. Night's own noise is larger than
# either, so at night the per-bucket quantile governs and a blur there goes unseen.
MIN_GRAD_THRESHOLD = 10.0


class TileError(GameError):
    """A tile bank that cannot be read or used (missing, corrupt, another version or grid)."""


@dataclass
class TileClassifier:
    """Nearest-neighbour tile labels with a reject class (see the module docstring)."""

    tiles: np.ndarray  # (N, 147) uint8 bank
    labels: np.ndarray  # (N,) uint8 semantic ids
    buckets: np.ndarray  # (N,) uint8 daylight bucket of each bank tile
    thresholds: np.ndarray  # (len(DAYLIGHT_EDGES) + 1,) RMS distance on [0, 255], per bucket
    grad_thresholds: np.ndarray  # the same for the pixel differences (edges), per bucket
    names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    _bank: torch.Tensor | None = field(default=None, repr=False)

    @property
    def grass(self) -> int:
        return self.names.index(GRASS)

    def nearest(self, tiles: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(n, 147) uint8 -> (bank index, RMS distance) of each tile's nearest bank tile."""
        if self._bank is None:
            self._bank = torch.from_numpy(self.tiles.astype(np.float32))
            self._bank_sq = (self._bank ** 2).sum(1)
        q = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))
        idx = np.empty(len(q), np.int64)
        dist = np.empty(len(q), np.float32)
        with torch.no_grad():
            for i in range(0, len(q), chunk):
                x = q[i:i + chunk]
                d2 = (x ** 2).sum(1, keepdim=True) - 2 * x @ self._bank.T + self._bank_sq
                best, j = d2.min(1)
                idx[i:i + chunk] = j.cpu().numpy()
                dist[i:i + chunk] = (best.clamp_min(0) / TILE_DIM).sqrt().cpu().numpy()
        return idx, dist

    def classify(self, frames: np.ndarray, return_distance: bool = False):
        """uint8 frames (..., H, W, 3) -> labels (..., VIEW_ROWS, VIEW_COLS) uint8, REJECT where
        a tile is farther from the bank than its bucket's threshold (and the distances)."""
        t = view_tiles(frames)
        lead = t.shape[:-1]
        flat = t.reshape(-1, TILE_DIM)
        idx, dist = self.nearest(flat)
        lab = self.labels[idx].copy()
        lab[self.rejected(flat, idx, dist)] = REJECT
        lab, dist = lab.reshape(lead), dist.reshape(lead)
        return (lab, dist) if return_distance else lab

    def rejected(self, tiles: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Tiles farther than their bucket's threshold from their nearest bank tile, by pixels or
        by pixel differences (a blur)."""
        b = self.buckets[idx]
        return (dist > self.thresholds[b]) | (edge_distance(tiles, self.tiles[idx])
                                              > self.grad_thresholds[b])

    # ---- files --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, tiles=self.tiles, labels=self.labels, buckets=self.buckets,
                            thresholds=self.thresholds, grad_thresholds=self.grad_thresholds,
                            version=np.int64(BANK_VERSION),
                            names=np.asarray(json.dumps(list(self.names))),
                            info=np.asarray(json.dumps(self.info)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "TileClassifier":
        import json
        import zipfile

        path = Path(path or DEFAULT_BANK)
        if not path.is_file():
            raise TileError(f"no tile bank at {path} (build one: python -m games.crafter.tiles "
                            "--data DIR --out FILE)")
        try:
            with np.load(path) as z:
                version = int(z["version"])
                if version != BANK_VERSION:
                    raise TileError(f"{path} is a tile bank of version {version}, this code reads "
                                    f"version {BANK_VERSION}")
                out = cls(z["tiles"], z["labels"], z["buckets"], z["thresholds"],
                          z["grad_thresholds"], tuple(json.loads(str(z["names"]))),
                          json.loads(str(z["info"])))
        except TileError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise TileError(f"{path} is not a readable tile bank: {e}") from e
        if (out.tiles.ndim != 2 or out.tiles.shape[1] != TILE_DIM or out.tiles.dtype != np.uint8
                or len(out.labels) != len(out.tiles) or len(out.buckets) != len(out.tiles)
                or len(out.thresholds) != len(DAYLIGHT_EDGES) + 1
                or len(out.grad_thresholds) != len(DAYLIGHT_EDGES) + 1):
            raise TileError(f"{path} is not a tile bank of {TILE}x{TILE} tiles")
        return out


def edge_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS difference of two tile sets' horizontal and vertical pixel differences: (n, 147) x2 ->
    (n,). Zero for a tile that is its match moved in brightness only; large for a blurred one."""
    def edges(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float32).reshape(-1, TILE, TILE, 3)
        return np.concatenate([(t[:, :, 1:] - t[:, :, :-1]).reshape(len(t), -1),
                               (t[:, 1:] - t[:, :-1]).reshape(len(t), -1)], 1)

    return np.sqrt(((edges(a) - edges(b)) ** 2).mean(1))


# ---- building and calibrating -------------------------------------------------------------------

def labelled_tiles(episodes: Sequence, every: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every `every`-th frame's world-view tiles of labelled episodes: (n, 147) tiles, (n,)
    labels, (n,) daylight buckets (from the frame's step in its episode)."""
    tiles, labels, buckets = [], [], []
    for ep in episodes:
        if ep.labels is None:
            continue
        idx = np.arange(0, len(ep.frames), every)
        t = view_tiles(ep.frames[idx])
        tiles.append(t.reshape(-1, TILE_DIM))
        labels.append(ep.labels[idx].reshape(-1))
        b = np.digitize(daylight(idx), DAYLIGHT_EDGES).astype(np.uint8)
        buckets.append(np.repeat(b, VIEW_ROWS * VIEW_COLS))
    if not tiles:
        raise TileError("no episode carries labels (collect them with python -m simulator.collect)")
    return np.concatenate(tiles), np.concatenate(labels), np.concatenate(buckets)


def build_bank(episodes: Sequence, names: Sequence[str], per_class: int = 800,
               seed: int = 0) -> TileClassifier:
    """A bank from labelled training episodes: unique (tile, label) pairs, at most `per_class` of
    each label and daylight bucket (seeded), so rare labels and night keep their share. Its
    thresholds start at infinity; `calibrate` sets them."""
    tiles, labels, buckets = labelled_tiles(episodes)
    rng = np.random.default_rng(seed)
    keys = np.concatenate([tiles, labels[:, None], buckets[:, None]], 1)
    _, first = np.unique(keys, axis=0, return_index=True)
    keep = []
    for lab in np.unique(labels[first]):
        for b in np.unique(buckets[first]):
            group = first[(labels[first] == lab) & (buckets[first] == b)]
            if len(group) > per_class:
                group = rng.choice(group, per_class, replace=False)
            keep.append(group)
    keep = np.sort(np.concatenate(keep))
    inf = np.full(len(DAYLIGHT_EDGES) + 1, np.inf, np.float32)
    return TileClassifier(tiles[keep], labels[keep], buckets[keep], inf, inf.copy(), tuple(names),
                          {"bank_tiles": int(len(keep)), "source_tiles": int(len(tiles)),
                           "per_class": per_class, "seed": seed})


def _bucket_quantiles(dist: np.ndarray, b: np.ndarray, quantile: float, floor: float) -> np.ndarray:
    thr = np.full(len(DAYLIGHT_EDGES) + 1, np.inf, np.float32)
    for k in range(len(thr)):
        if (b == k).any():
            thr[k] = float(np.quantile(dist[b == k], quantile))
    thr[~np.isfinite(thr)] = float(np.quantile(dist, quantile))
    return np.maximum(thr, floor)


def calibrate(clf: TileClassifier, episodes: Sequence, quantile: float = 0.998,
              every: int = 1, floor: float = MIN_THRESHOLD,
              grad_floor: float = MIN_GRAD_THRESHOLD) -> dict[str, Any]:
    """Set each bucket's reject thresholds (pixels; pixel differences) to the `quantile` of
    held-out real tiles' distances to their nearest bank tile (by the bucket of the bank tile
    they match), at least the floors, then score held-out frames: accuracy (all tiles; accepted
    tiles), rejection rate, per label. Returns the report."""
    tiles, labels, _ = labelled_tiles(episodes, every)
    idx, dist = clf.nearest(tiles)
    b = clf.buckets[idx]
    clf.thresholds = thr = _bucket_quantiles(dist, b, quantile, floor)
    clf.grad_thresholds = _bucket_quantiles(edge_distance(tiles, clf.tiles[idx]), b, quantile,
                                            grad_floor)
    pred = clf.labels[idx].copy()
    pred[clf.rejected(tiles, idx, dist)] = REJECT
    ok = pred == labels
    acc = pred != REJECT
    per_label = {clf.names[lab]: {"n": int((labels == lab).sum()),
                                  "accuracy": float(ok[labels == lab].mean())}
                 for lab in np.unique(labels)}
    return {"heldout_tiles": int(len(tiles)), "quantile": quantile, "floor_rms": floor,
            "grad_floor_rms": grad_floor, "thresholds_rms": [float(v) for v in thr],
            "grad_thresholds_rms": [float(v) for v in clf.grad_thresholds],
            "accuracy": float(ok.mean()), "accuracy_of_accepted": float(ok[acc].mean()),
            "rejected": float(1 - acc.mean()), "per_label": per_label}


def blur_check(clf: TileClassifier, episodes: Sequence, every: int = 8) -> dict[str, float]:
    """How the reject class sees damage it must catch, on held-out frames: a 3x3 box blur of the
    frame, a 50/50 blend of the frame with itself moved one tile (a ghosted move), and Gaussian
    pixel noise (sigma 25). Share of tiles rejected for each."""
    import cv2

    frames = np.concatenate([ep.frames[::every] for ep in episodes if ep.labels is not None])
    moved = np.roll(frames, TILE, axis=2)
    blend = ((frames.astype(np.float32) + moved) / 2).round().astype(np.uint8)
    blur = np.stack([cv2.blur(f, (3, 3)) for f in frames])
    rng = np.random.default_rng(0)
    noise = np.clip(frames + rng.normal(0, 25, frames.shape), 0, 255).astype(np.uint8)
    out = {}
    for name, fr in (("blur3", blur), ("ghost_blend", blend), ("noise25", noise)):
        lab = clf.classify(fr)
        if name == "ghost_blend":  # tiles whose two halves are the same texture are no blend
            same = (view_tiles(frames) == view_tiles(moved)).all(-1)
            out[name] = float((lab[~same] == REJECT).mean())
        else:
            out[name] = float((lab == REJECT).mean())
    return out


# ---- entry point --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(out={"default": str(DEFAULT_BANK), "help": "the bank (.npz)"}, seed=True)
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of labelled episodes (simulator.collect)")
    p.add_argument("--train-prefix", default="train_", help="bank from these episodes")
    p.add_argument("--heldout-prefix", default="heldout_", help="threshold and report from these")
    p.add_argument("--episodes", type=int, default=40, help="episodes of each split to read")
    p.add_argument("--per-class", type=int, default=800, help="bank tiles per label and bucket")
    p.add_argument("--quantile", type=float, default=0.998,
                   help="held-out real tiles' distance quantile that sets the reject threshold")
    p.add_argument("--floor", type=float, default=MIN_THRESHOLD,
                   help="smallest reject threshold (RMS on [0, 255])")
    p.add_argument("--grad-floor", type=float, default=MIN_GRAD_THRESHOLD,
                   help="smallest reject threshold of the pixel differences (RMS)")
    p.add_argument("--report", help="JSON report (default: beside the bank, NAME.json)")
    args = p.parse_args(argv)
    if not 0.5 < args.quantile < 1:
        raise TileError(f"--quantile must be in (0.5, 1), got {args.quantile}")
    t0 = time.time()
    paths = list_episodes(args.data)
    train = [load_episode(q) for q in paths if q.name.startswith(args.train_prefix)][:args.episodes]
    held = [load_episode(q) for q in paths if q.name.startswith(args.heldout_prefix)][:args.episodes]
    if not train or not held:
        raise TileError(f"need {args.train_prefix}* and {args.heldout_prefix}* episodes under {args.data}")
    names = train[0].meta.get("label_names")
    if not names:
        raise TileError(f"{train[0].path} has no label_names in meta.json")
    clf = build_bank(train, names, args.per_class, args.seed)
    report = calibrate(clf, held, args.quantile, floor=args.floor, grad_floor=args.grad_floor)
    report["damage_rejected"] = blur_check(clf, held)
    report.update(clf.info, train_episodes=len(train), heldout_episodes=len(held),
                  command=command_line("games.crafter.tiles", argv), seconds=time.time() - t0)
    clf.info = {k: v for k, v in report.items() if k != "per_label"}
    clf.save(args.out)
    out = Path(args.report) if args.report else Path(args.out).with_suffix(".json")
    write_json_atomic(out, report)
    print(f"bank {clf.info['bank_tiles']} tiles from {len(train)} episodes; held-out "
          f"({len(held)} episodes, {report['heldout_tiles']} tiles): accuracy "
          f"{report['accuracy']:.2%}, rejected {report['rejected']:.2%}; damage rejected "
          + ", ".join(f"{k} {v:.0%}" for k, v in report["damage_rejected"].items()))
    print(f"wrote {args.out} and {out}")
    return report


if __name__ == "__main__":
    run_cli(main, (TileError,))
