"""The model's own rollouts along real trips, so training can build memories from them.

    python -m memory.imagined --checkpoint assets/crafter_memory \\
        --data data/crafter_revisit_train data/crafter_loop_train

In live play the view memory holds what the model drew, not what the game would have: tiles
snapped a little off, objects that faded, land it invented. A model trained only on memories of
real frames learns to trust a perfect memory. This writes, beside each episode's real frames, an
*imagined* copy (`imagined.npy`, uint8 like the frames, with `imagined.json` saying how it was
made): the model rolls the episode one frame per step with its view memory on, as in live play,
restarted from the real frames every `--segment` steps (the whole real prefix into the memory,
the last frames into the KV cache). So each imagined frame carries up to `segment` steps of the
model's own errors. The camera moves are the real ones (read from the real frames' pixels, as
training reads them), so imagined frame i shows the place real frame i shows: a training window
whose memory is built from the imagined copy (`data.imagined_memory`) asks the model to draw the
real target from an imperfect memory of the right place.

The copies are the model's at the time they were made; `imagined.json` names the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.actions import get_action_space
from worldmodel.checkpoint import load_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.game import get_game
from worldmodel.config import Config
from worldmodel.data import Episode, list_episodes, load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.device import pick_device
from worldmodel.data.episode import EpisodeError, write_json_atomic
from worldmodel.dynamics import Denoiser
from worldmodel.training.imagined import FRAMES, INFO, ImaginedError
from worldmodel.evaluation.reports import command_line
from worldmodel.rollout import Rollout


@torch.inference_mode()
def imagine(model: Denoiser, cfg: Config, frames: np.ndarray, actions: np.ndarray,
            segment: int = 16, context: int | None = None, seed: int = 0) -> np.ndarray:
    """frames uint8 (B, T, h, w, 3) of B real episodes of one length, actions (B, T) with
    actions[:, i] the action that produced frame i -> (B, T, h, w, 3) uint8: the first `context`
    frames real, every later one drawn by the model (see the module docstring)."""
    if model.memory_stem is None:
        raise ImaginedError("imagined copies need a model with a view memory (model.view_memory)")
    space = get_action_space(cfg.model.action_space)
    b, t = frames.shape[:2]
    context = context or cfg.data.window - 1
    dev = next(model.parameters()).device
    game = get_game(cfg.model.game_name)
    moves = torch.from_numpy(game.window_choices(frames, actions, space)).to(dev)
    real = to_float(torch.from_numpy(frames)).to(dev)
    acts = torch.from_numpy(np.asarray(actions, np.int64))
    ro = Rollout(model, cfg, context=context, seed=seed)
    ro.view = game.view_memory(b, dev)
    ro.view.set_on(True, list(range(b)))
    out = frames.copy()
    for start in range(context, t, segment):
        ro.reset(real[:, :start], acts[:, :start])
        for j in range(start, min(start + segment, t)):
            out[:, j] = to_uint8(ro.chunk(acts[:, j:j + 1], moves=moves[:, j:j + 1])[:, 0]).cpu().numpy()
    return out


def write_copies(model: Denoiser, cfg: Config, paths: list[Path], segment: int, batch: int,
                 seed: int, info: dict[str, Any]) -> int:
    """Imagine every episode under `paths` (grouped by length, `batch` at a time); returns the
    frames written."""
    eps = [load_episode(p) for p in paths]
    space = get_action_space(cfg.model.action_space)
    by_len: dict[int, list[Episode]] = {}
    for ep in eps:
        by_len.setdefault(len(ep.frames), []).append(ep)
    done = 0
    for length, group in sorted(by_len.items()):
        for i in range(0, len(group), batch):
            part = group[i:i + batch]
            frames = np.stack([ep.frames for ep in part])
            acts = np.stack([np.concatenate([[0], space.validate(ep.actions)]) for ep in part])
            img = imagine(model, cfg, frames, acts, segment, seed=seed + i)
            for ep, copy in zip(part, img):
                tmp = ep.path / f".{FRAMES}.tmp.npy"  # whole or absent: a reader never sees half
                np.save(tmp, copy)
                tmp.replace(ep.path / FRAMES)
                write_json_atomic(ep.path / INFO, dict(info, segment=segment))
            done += img.shape[0] * img.shape[1]
            print(f"imagined {len(part)} episodes of {length} frames ({done} frames so far)",
                  flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    shared = common_flags(checkpoint={"required": True, "help": "a model with a view memory"},
                          seed=True, device={"help": "default: cuda if present, else cpu"})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="folders of episodes")
    p.add_argument("--segment", type=int, default=16, help="steps imagined between restarts "
                   "from the real frames")
    p.add_argument("--batch", type=int, default=25, help="episodes rolled together")
    args = p.parse_args(argv)
    if args.segment < 1:
        p.error("--segment must be at least 1")
    device = pick_device(args.device)
    model, cfg = load_checkpoint(args.checkpoint, device)
    paths = []
    for folder in args.data:
        found = list_episodes(folder)
        if not found:
            raise EpisodeError(f"no episodes under {folder}")
        paths.extend(found)
    info = {"checkpoint": str(args.checkpoint), "seed": args.seed,
            "command": command_line("memory.imagined", argv)}
    n = write_copies(model, cfg, paths, args.segment, args.batch, args.seed, info)
    print(json.dumps({"episodes": len(paths), "frames": n}))
    return 0


if __name__ == "__main__":
    run_cli(main)
