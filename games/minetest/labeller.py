"""A per-pixel labeller of Minetest frames, trained on the real game's own label maps:
`python -m games.minetest.labeller --data data/minetest --out assets/minetest/labeller.safetensors`.

The first-person semantic evaluation reads imagined frames with it and compares them with the
real game's labels under the same actions; its accuracy on held-out real frames is that
evaluation's ceiling. A small fully convolutional net: 64x64 RGB in, one label score per pixel of
the episodes' label maps (32x32 by default) out. Trained on the train split's labelled frames
(frames the game did not label, NO_LABEL, are skipped) and scored on the held-out split's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from games.minetest.labels import LABEL_NAMES
from worldmodel import tensorfile
from worldmodel.cli import common_flags
from worldmodel.data.episode import NO_LABEL, list_episodes, load_episode
from worldmodel.evaluation.reports import command_line

FORMAT = "minetest-labeller"
VERSION = 1


class LabellerError(ValueError):
    """A labeller file that cannot be read here."""


class Labeller(nn.Module):
    """(B, 64, 64, 3) uint8 frames -> (B, labels, out, out) scores, out = 64 / 2**downs."""

    def __init__(self, labels: int = len(LABEL_NAMES), width: int = 32, downs: int = 1):
        super().__init__()
        self.labels, self.width, self.downs = labels, width, downs
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.GELU()]
        for _ in range(downs):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU()]
        layers += [nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
                   nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.GELU(),
                   nn.Conv2d(width, labels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
        return self.net(x)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N, 64, 64, 3) uint8 -> (N, out, out) uint8 label ids."""
        self.eval()
        out = [self(torch.from_numpy(np.ascontiguousarray(frames[i:i + batch]))).argmax(1).to(torch.uint8)
               for i in range(0, len(frames), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0,), np.uint8)

    def save(self, path: str | Path, info: dict) -> Path:
        return tensorfile.write(path, self.state_dict(), {
            "format": FORMAT, "version": VERSION, "labels": self.labels, "width": self.width,
            "downs": self.downs, "label_names": json.dumps(list(LABEL_NAMES)), "info": json.dumps(info)})

    @classmethod
    def load(cls, path: str | Path) -> "Labeller":
        tensors, meta = tensorfile.read(path, LabellerError, "labeller",
                                        "make one with python -m games.minetest.labeller")
        if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
            raise LabellerError(f"{path} is not a version-{VERSION} Minetest labeller")
        try:
            model = cls(int(meta["labels"]), int(meta["width"]), int(meta["downs"]))
            model.load_state_dict(tensors)
        except (KeyError, ValueError, RuntimeError) as e:
            raise LabellerError(f"{path}: its weights do not fit a labeller: {str(e)[:200]}") from None
        return model.eval()


def labelled_frames(root: str | Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames (N, H, W, 3), labels (N, L, L)) of every labelled frame of the episodes under
    `root` whose names start with `prefix`."""
    frames, labels = [], []
    for path in list_episodes(root):
        if not path.name.startswith(prefix):
            continue
        ep = load_episode(path)
        if ep.labels is None:
            continue
        keep = ~(ep.labels == NO_LABEL).all(axis=(1, 2))
        frames.append(ep.frames[keep])
        labels.append(ep.labels[keep])
    if not frames:
        raise ValueError(f"no labelled frames in {root} ({prefix}*): collect with "
                         "python -m simulator.collect --game minetest")
    return np.concatenate(frames), np.concatenate(labels)


def accuracy(model: Labeller, frames: np.ndarray, labels: np.ndarray) -> dict:
    pred = model.predict(frames)
    per = {}
    for i, name in enumerate(LABEL_NAMES):
        m = labels == i
        if m.any():
            per[name] = round(float((pred[m] == i).mean()), 4)
    return {"pixel_accuracy": round(float((pred == labels).mean()), 4), "per_label_recall": per,
            "frames": int(len(frames))}


def train(frames: np.ndarray, labels: np.ndarray, steps: int = 1500, batch: int = 32,
          lr: float = 2e-3, seed: int = 0) -> Labeller:
    downs = int(np.log2(frames.shape[1] // labels.shape[1]))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Labeller(downs=downs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    lab = torch.from_numpy(labels.astype(np.int64))
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(frames), batch)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(frames[idx])), lab[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(out={"default": "assets/minetest/labeller.safetensors"},
                                                      seed=True)])
    p.add_argument("--data", required=True, help="Minetest episodes (train_* and heldout_*)")
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args(argv)
    t = time.time()
    frames, labels = labelled_frames(args.data, "train_")
    held = labelled_frames(args.data, "heldout_")
    model = train(frames, labels, args.steps, seed=args.seed)
    report = {"command": command_line("games.minetest.labeller", argv),
              "train_frames": int(len(frames)), "steps": args.steps,
              "train": accuracy(model, frames[:2000], labels[:2000]),
              "heldout": accuracy(model, *held), "seconds": round(time.time() - t, 1)}
    out = Path(args.out)
    model.save(out, report)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main, extra=(LabellerError, ValueError))
