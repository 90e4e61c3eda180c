"""The revisit benchmark's scores (`memory.revisit`): frame against frame (PSNR, SSIM, a fixed
random-feature similarity, tile agreement), revisits paired by the rollout's own pose, the view
memory's pose against the game's, and one episode's rollouts scored on its revisit frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from memory.config import MemoryConfig
from memory.episodic import EpisodicMemory
from memory.revisit_trips import generated_revisits, real_prefix, roll
from worldmodel.evaluation import metrics
from worldmodel.config import Config
from worldmodel.data import Episode
from worldmodel.data.dataset import to_float
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.prediction import player_positions
from worldmodel.game import get_game


def mean_or_none(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def own_poses(frames: np.ndarray, actions: np.ndarray, nav: Any) -> np.ndarray:
    """(T+1, d) the player's pose at every frame of a rollout, relative to the first, read from
    the frames' own pixels by the game's navigation (`nav.track`, told the moves the actions
    asked for) and never from the game's state: where the model's imagined player went, not where
    the real one did. `actions` (T,): the action that made each frame after the first (an
    episode's actions)."""
    if len(actions) != len(frames) - 1:
        raise ValueError(f"pose tracking needs one action per frame after the first: "
                         f"{len(frames)} frames, {len(actions)} actions")
    return nav.track(frames, actions)


def non_grass(labels: np.ndarray, grass: int) -> np.ndarray:
    """Tile labels (n, rows, cols) -> (n,) the share of each frame's world-view tiles that are
    not grass (rejected tiles count as not grass): how much a frame shows beyond the open plain."""
    return (np.asarray(labels) != grass).mean((-2, -1))


class RandomFeatures(nn.Module):
    """A fixed, seeded random conv net; features for a perceptual-ish frame similarity."""

    def __init__(self, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList([nn.Conv2d(3, 32, 4, 2, 1), nn.Conv2d(32, 64, 4, 2, 1),
                                    nn.Conv2d(64, 64, 3, 1, 1)])
        with torch.no_grad():
            for c in self.convs:
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) / (c.weight[0].numel() ** 0.5))
                c.bias.zero_()

    @torch.no_grad()
    def forward(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (n, h, w, 3) -> unit-norm features (n, d)."""
        x = to_float(torch.from_numpy(np.ascontiguousarray(frames)))
        for i, c in enumerate(self.convs):
            x = c(x)
            x = torch.relu(x) if i + 1 < len(self.convs) else x
        return nn.functional.normalize(x.flatten(1), dim=1)


def feature_similarity(a: np.ndarray, b: np.ndarray, net: RandomFeatures) -> np.ndarray:
    if len(a) == 0:
        return np.zeros(0)
    return (net(a) * net(b)).sum(1).cpu().numpy()


def _at(labels: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if labels is None else labels[idx]


def frame_scores(gen: np.ndarray, ref: np.ndarray, net: RandomFeatures,
                 gen_labels: np.ndarray | None = None,
                 ref_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per frame: PSNR, MSE, SSIM, feature similarity and, with tile labels of both sides, the
    share of world-view tiles with the same label ("tiles")."""
    out = {"psnr": metrics.psnr(gen, ref), "mse": metrics.mse(gen, ref),
           "ssim": metrics.ssim(gen, ref), "feat": feature_similarity(gen, ref, net)}
    if gen_labels is not None and ref_labels is not None:
        out["tiles"] = (gen_labels == ref_labels).mean((-2, -1))
    return out


def view_pose_accuracy(poses: list, real_rel: np.ndarray, context: int,
                       prefix: int) -> tuple[float, float, float | None]:
    """The share of frames where the view memory's pose (`roll`'s `poses`: None before frame
    context - 1) equals the game's relative position: over all of them, over the real frames
    given (< prefix; the scroll reads them exactly) and over the generated ones (None if none)."""
    got = np.asarray([p for p in poses if p is not None])
    idx = np.arange(context - 1, context - 1 + len(got))
    hit = (got == real_rel[idx]).all(1)
    return float(hit.mean()), mean_or_none(hit[idx < prefix]), mean_or_none(hit[idx >= prefix])


def own_pose_scores(gen: np.ndarray, actions: np.ndarray, nav: Any, real_rel: np.ndarray,
                    context: int, prefix: int, net: RandomFeatures,
                    labels: np.ndarray | None, grass: int | None) -> dict[str, Any] | None:
    """A rollout's revisits by its own pose (`own_poses`; generated frames only), each scored
    against the rollout's frame at the first visit, with the revisit frames' non-grass share
    (`labels`: the tile classifier's of every frame, or None to skip it) and the share of
    generated frames where the own pose is the real one. None where the frames show no world
    view to track."""
    if not nav.shows_view(gen):
        return None
    own = own_poses(gen, actions, nav)
    rv = generated_revisits(own, context, prefix)
    j, e = rv.frames, rv.first
    share = None if labels is None else non_grass(labels, grass)
    return {"revisit_frames": j.tolist(), "first_visit": e.tolist(),
            "vs_own_first_visit": {k: v.tolist() for k, v in frame_scores(
                gen[j], gen[e], net, _at(labels, j), _at(labels, e)).items()},
            "non_grass": None if share is None else share[j].tolist(),
            "pose_vs_real": mean_or_none((own[prefix:] == real_rel[prefix:]).all(1))}


def evaluate_episode(model: Denoiser, cfg: Config, ep: Episode, context: int,
                     variants: dict[str, MemoryConfig], seed: int,
                     net: RandomFeatures, warmup: str = "context",
                     tiles: Any = None) -> dict[str, Any]:
    """Both rollouts of one revisit episode (memory off, and each memory variant on), scored on
    its revisit frames (see `memory.revisit`). `tiles`: the game's cell labeller, or None."""
    game = get_game(cfg.model.game_name)
    nav = game.navigation()
    pos = player_positions(ep)
    prefix = real_prefix(ep, context, warmup, nav.moves)
    rv = generated_revisits(pos, context, prefix)  # only generated frames are scored
    gens = {"off": roll(model, cfg, ep, context, seed, prefix=prefix)}
    pose_acc: dict[str, float] = {}
    pose_acc_real: dict[str, float | None] = {}
    pose_acc_gen: dict[str, float | None] = {}
    real_rel = pos - pos[0]
    for name, mcfg in variants.items():
        use_view, use_lora = mcfg.uses(model.memory_stem is not None)
        mem = EpisodicMemory(model, cfg, mcfg, threaded=False) if use_lora else None
        view = None
        if use_view:
            view = game.view_memory(1, next(model.parameters()).device)
        poses: list = []
        gens[name] = roll(model, cfg, ep, context, seed, mem, prefix=prefix, view=view,
                          poses=poses)
        if view is not None:  # the pose the memory read from the frames, against the game's
            pose_acc[name], pose_acc_real[name], pose_acc_gen[name] = view_pose_accuracy(
                poses, real_rel, context, prefix)
    res: dict[str, Any] = {"episode": ep.path.name if ep.path else "?", "frames": len(ep.frames),
                           "context": context, "real_prefix": prefix,
                           "revisit_frames": rv.frames.tolist(), "first_visit": rv.first.tolist(),
                           "at_start": rv.at_start.tolist(), "modes": {},
                           "pose_accuracy": pose_acc, "pose_accuracy_real": pose_acc_real,
                           "pose_accuracy_generated": pose_acc_gen}
    j, e = rv.frames, rv.first
    real = ep.frames
    labels = ep.labels if tiles is not None else None  # the real game's own tile labels
    res["real_consistency"] = {k: v.tolist() for k, v in frame_scores(
        real[j], real[e], net, _at(labels, j), _at(labels, e)).items()}
    legible = tiles is not None and nav.shows_view(real)  # the classifier can read the frames
    grass = tiles.grass if legible else None
    # The richness reference: the real frames' non-grass share where the modes generate, read by
    # the same classifier as theirs.
    res["real_non_grass"] = (mean_or_none(non_grass(tiles.classify(real[prefix:]), grass)) if legible
                             else None)
    for name, (gen, upd) in gens.items():
        seen = tiles.classify(gen) if legible else None  # every frame's tiles, as the model drew
        drawn = seen if labels is not None else None
        res["modes"][name] = {
            "psnr_curve": metrics.psnr(gen, real).tolist(),  # every frame (context: capped)
            "vs_real": {k: v.tolist() for k, v in frame_scores(
                gen[j], real[j], net, _at(drawn, j), _at(labels, j)).items()},
            "vs_first_visit": {k: v.tolist() for k, v in frame_scores(
                gen[j], gen[e], net, _at(drawn, j), _at(drawn, e)).items()},
            "update_s": upd,
            "non_grass_generated": None if seen is None else mean_or_none(non_grass(seen[prefix:], grass)),
            "own_pose": own_pose_scores(gen, ep.actions, nav, real_rel, context, prefix,
                                        net, seen, grass),
        }
    res["_gens"] = gens
    return res
