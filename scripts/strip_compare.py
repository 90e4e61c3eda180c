"""Side-by-side strip: the real game and checkpoints (each at its sampler) under the same actions.

    python scripts/strip_compare.py OUT.png --steps 48 --every 6 CKPT[:SAMPLE_STEPS] ...
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from games.crafter.status import imagine, real_runs  # noqa: E402
from worldmodel.checkpoint import load_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--every", type=int, default=6)
    p.add_argument("--seed", type=int, default=1_300_000)
    a = p.parse_args()
    torch.set_num_threads(1)
    real, acts, _, _ = real_runs([a.seed], a.steps)
    rows = []
    n_ctx = None
    for spec in a.checkpoints:
        path, _, steps = spec.partition(":")
        model, cfg = load_checkpoint(path)
        if steps:
            cfg.diffusion.sample_steps = int(steps)
        gen = imagine(model, cfg, real, acts, model.stages)[0]
        n_ctx = real.shape[1] - gen.shape[0]
        rows.append(gen[::a.every])
    rows.insert(0, real[0, n_ctx:][::a.every])
    grid = np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
    import cv2
    cv2.imwrite(a.out, cv2.resize(grid[..., ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    print("rows: real, " + ", ".join(a.checkpoints))


if __name__ == "__main__":
    main()
