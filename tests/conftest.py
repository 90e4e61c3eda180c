"""Shared fixtures: tiny seeded CPU configs, models with non-trivial weights, tiny episodes.

Everything here is sized to run in seconds on one core: the model is configs/tiny.yaml (~44k
parameters) at 16x16 for unit tests and 32x32 where frames come from the real Crafter game.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` run without an installed package
    sys.path.insert(0, str(ROOT))

from worldmodel.config import Config, load_config  # noqa: E402
from worldmodel.data.episode import EpisodeWriter  # noqa: E402
from worldmodel.dynamics import Denoiser  # noqa: E402

TINY_YAML = ROOT / "configs" / "tiny.yaml"
UNIT_SIZE = 16  # synthetic frames for model unit tests
CRAFTER_SIZE = 32  # the smallest size Crafter renders its inventory at

# Tests share the machine with long training runs: one thread each.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The devices an entry point's device test runs on: the CPU always (CI), CUDA where present
# (every entry point picks it by default there).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device"))]


@pytest.fixture
def tiny_config() -> Callable[..., Config]:
    """`tiny_config("train.lr=1e-3", ...)`: a fresh configs/tiny.yaml Config with overrides."""

    def make(*overrides: str, size: int = UNIT_SIZE) -> Config:
        return load_config(TINY_YAML, [f"model.frame_size={size}", *overrides])

    return make


@pytest.fixture
def tiny_cfg(tiny_config) -> Config:
    return tiny_config()


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter, so zero-initialised residual, attention-output and
    modulation layers are live and the network is no longer a copy of its anchor."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def tiny_perturbed(size: int) -> tuple[Denoiser, Config]:
    """configs/tiny.yaml at `size` px with perturbed weights: imagined frames change every step."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"model.frame_size={size}"])
    torch.manual_seed(0)
    return perturb_(Denoiser(cfg.model)), cfg


@pytest.fixture
def perturbed_model() -> Callable[..., Denoiser]:
    """`perturbed_model(cfg, seed=0)`: a Denoiser with seeded init plus seeded weight noise."""

    def make(cfg: Config, seed: int = 0, scale: float = 0.05) -> Denoiser:
        torch.manual_seed(seed)
        return perturb_(Denoiser(cfg.model), seed, scale).eval()

    return make


def smooth_frames(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Float frames (..., 3, h, w) in [-1, 1] with some spatial structure (upsampled noise)."""
    gen = torch.Generator().manual_seed(seed)
    *lead, c, h, w = shape
    coarse = torch.rand((int(np.prod(lead or [1])), c, h // 4, w // 4), generator=gen) * 2 - 1
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest")
    return fine.reshape(*lead, c, h, w)


def write_episode(path: Path, frames: np.ndarray, actions: list, rewards: list | None = None,
                  meta: dict | None = None, **writer_kwargs) -> Path:
    """frames (T+1, h, w, 3) uint8, T actions -> a closed episode folder."""
    rewards = rewards if rewards is not None else [0.0] * len(actions)
    meta = {"game": "synthetic", "action_space": "crafter", "seed": 0, "fps": 10, **(meta or {})}
    with EpisodeWriter(path, meta, **writer_kwargs) as w:
        w.add_frame(frames[0])
        for t, a in enumerate(actions):
            w.add_step(a, frames[t + 1], rewards[t], t == len(actions) - 1, pos=[t, -t])
    return path


class _FullDisk:
    """A frames.u8 file whose writes fail with ENOSPC once `frames` of them went through."""

    def __init__(self, f, frames: int):
        self.f, self.left = f, frames

    def write(self, data: bytes) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= 1
        return self.f.write(data)

    def __getattr__(self, name: str):  # flush, fileno, close, closed: the real file's
        return getattr(self.f, name)


def full_disk_after(monkeypatch, frames: int) -> None:
    """Make every EpisodeWriter's disk fill up after `frames` frames (meta.json still writes)."""
    import builtins

    import worldmodel.data.episode as episode_module

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(f, frames) if Path(path).name == "frames.u8" else f

    monkeypatch.setattr(episode_module, "open", fake_open, raising=False)


class _WholeDisk:
    """A disk that fills up after `frames` frame writes: from then on no file can be created or
    grown (meta.json's temporary file included); bytes already on disk can be overwritten."""

    def __init__(self, frames: int):
        self.left = frames

    def open(self, path, mode="r", *args, **kwargs):
        import builtins

        f = builtins.open(path, mode, *args, **kwargs)
        if "r" in mode and "+" not in mode:
            return f
        disk = self

        class Guarded:
            def write(self, data):
                if Path(path).name == "frames.u8" and disk.left > 0:
                    disk.left -= 1
                elif disk.left <= 0 and "r+" not in mode:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return f.write(data)

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Guarded()


def whole_disk_full_after(monkeypatch, frames: int) -> None:
    """Every EpisodeWriter file (meta.json too) stops growing after `frames` frames."""
    import worldmodel.data.episode as episode_module

    monkeypatch.setattr(episode_module, "open", _WholeDisk(frames).open, raising=False)


def random_episode_arrays(steps: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8)
    actions = rng.integers(0, 17, steps).tolist()
    return frames, actions


@pytest.fixture(scope="session")
def crafter_episodes(tmp_path_factory) -> Path:
    """Three short real Crafter episodes at 32x32 named like collected training data."""
    from simulator.collect import collect_episode
    from simulator.games import make_game

    root = tmp_path_factory.mktemp("crafter_episodes")
    game = make_game("crafter", size=CRAFTER_SIZE)
    for seed in range(3):
        collect_episode(game, root / f"train_{seed:07d}", seed, length=24)
    return root


@dataclass
class Labelled:
    """Real Crafter episodes at 64x64 with the game's tile labels, and a tile bank built from them."""

    root: Path  # train_*, heldout_* (explore) and revisit_* (out-and-back) episodes
    bank: Path  # built from train_*, calibrated on heldout_*
    report: dict


@pytest.fixture(scope="session")
def labelled_crafter(tmp_path_factory) -> Labelled:
    """Seeded and small: 3 training, 3 held-out and 2 revisit episodes (seconds to collect)."""
    from simulator.collect import collect_episode
    from simulator.games import make_game
    from simulator.seeds import SEED_RANGES
    from games.crafter import tiles
    from worldmodel.data import load_episode

    root = tmp_path_factory.mktemp("labelled_crafter")
    game = make_game("crafter", size=64)
    for split, n, length, policy in (("train", 3, 60, "explore"), ("heldout", 3, 70, "explore"),
                                     ("revisit", 2, 40, "revisit")):
        for i in range(n):
            seed = SEED_RANGES[split].seed(900 + i)
            collect_episode(game, root / f"{split}_{seed:07d}", seed, length, policy, trip=6)
    eps = {s: [load_episode(p) for p in sorted(root.glob(f"{s}_*"))] for s in ("train", "heldout")}
    clf = tiles.build_bank(eps["train"], game.label_names)
    report = tiles.calibrate(clf, eps["heldout"])
    clf.save(root / "bank.npz")
    return Labelled(root, root / "bank.npz", report)


@pytest.fixture
def semantic_report(labelled_crafter, tiny_config, perturbed_model, tmp_path):
    """worldmodel.evaluation.evaluate with the semantic evaluation, end to end on a tiny 64x64 model:
    (checkpoint, output folder, report)."""
    from worldmodel.evaluation import evaluate
    from worldmodel.checkpoint import save_checkpoint

    cfg = tiny_config(size=64)
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg, {"train_step": 7})
    out = tmp_path / "out"
    report = evaluate.main(["--checkpoint", str(ckpt), "--data", str(labelled_crafter.root),
                            "--samples", "4", "--horizons", "1", "4", "--batch", "4",
                            "--long", "24", "--long-worlds", "2", "--semantic-worlds", "3",
                            "--semantic-horizon", "16", "--wander", "4",
                            "--tiles", str(labelled_crafter.bank), "--out", str(out)])
    return ckpt, out, report
