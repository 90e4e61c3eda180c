"""Checkpoints and side files that cannot be used are one line at load (issue 24), never a
traceback mid-run: a config.json of random bytes, a negative frame size, a codebook and land
prior that disagree on their labels, land-prior weights that are not finite."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import run_sim  # noqa: E402
from conftest import TINY_YAML, perturb_, tiny_perturbed  # noqa: E402
from worldmodel.checkpoint import (CheckpointError, load_checkpoint, name_side_file,  # noqa: E402
                                   save_checkpoint)
from games.crafter.codebook import TileCodebook  # noqa: E402
from worldmodel.config import load_config  # noqa: E402
from worldmodel.dynamics import Denoiser  # noqa: E402
from games.crafter.land import LandPrior  # noqa: E402
from games.crafter.geometry import TILE_DIM  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    model, cfg = tiny_perturbed(16)
    return save_checkpoint(root / "ckpt", model, cfg)


def record(ckpt: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    (tmp_path / "acts.txt").write_text("noop\n")
    rc = run_sim.main(["record", "--checkpoint", str(ckpt), "--actions",
                       str(tmp_path / "acts.txt"), "--out", str(tmp_path / "out"), "--no-progress"])
    return rc, capsys.readouterr().err


def copy_of(ckpt: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(ckpt, tmp_path / "c"))


@pytest.mark.parametrize("config,fragment", [
    (np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(), "not a valid model config"),
    (b"[1, 2, 3]", "a config is a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "not a valid model config"),
    (None, "model.frame_size must be a positive number of pixels, got -64"),
])
def test_a_bad_config_json_is_one_line(ckpt, tmp_path, capsys, config, fragment):
    c = copy_of(ckpt, tmp_path)
    if config is None:
        data = json.loads((c / "config.json").read_text())
        data["model"]["frame_size"] = -64
        config = json.dumps(data).encode()
    (c / "config.json").write_bytes(config)
    with pytest.raises(CheckpointError, match="not a valid model config"):
        load_checkpoint(c)
    rc, err = record(c, tmp_path, capsys)
    assert rc == 2 and fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def land_checkpoint(tmp_path: Path, book_labels: int, prior_labels: int,
                    nan: bool = False) -> Path:
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.shift_kernel=17",
                                  "model.committed_move=7", "model.view_memory=true"])
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "land_ckpt", perturb_(Denoiser(cfg.model)).eval(), cfg)
    rng = np.random.default_rng(0)
    k = 40
    TileCodebook(rng.integers(0, 256, (k, TILE_DIM), np.uint8), np.zeros(k, np.int64),
                 labels=np.arange(k) % book_labels).save(path / "codebook.safetensors")
    prior = LandPrior(prior_labels, width=8)
    if nan:
        with torch.no_grad():
            prior.out.weight[0, 0] = float("nan")
    prior.save(path / "land.safetensors")
    name_side_file(path, "tile_codebook", "codebook.safetensors")
    name_side_file(path, "land_prior", "land.safetensors")
    return path


def test_matching_codebook_and_land_prior_load(tmp_path):
    model, _ = load_checkpoint(land_checkpoint(tmp_path, 5, 5))
    land, snap = model.stages  # the pipeline's Crafter stages, in order
    assert land.prior.num_labels == 5 and len(snap.book) == 40


def test_a_codebook_with_labels_the_land_prior_does_not_know_is_refused_at_load(tmp_path):
    with pytest.raises(CheckpointError, match="codebook holds 19 labels and the land prior "
                                              "knows 5"):
        load_checkpoint(land_checkpoint(tmp_path, 19, 5))


def test_a_land_prior_with_labels_the_codebook_lacks_rolls_out(tmp_path):
    """The prior samples all its 19 labels; the codebook has tiles for 5 (was an IndexError
    mid-rollout): the others draw as no tile, as a label missing at a light level does."""
    from simulator.session import WorldSession

    model, cfg = load_checkpoint(land_checkpoint(tmp_path, 5, 19))
    assert model.stages[1].book.textures().shape[1] == 19
    sess = WorldSession(model, cfg)
    sess.reset(context=np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8))
    for a in ["move_left", "move_up", "move_right", "move_down"] * 3:
        assert sess.step(a).shape == (64, 64, 3)


def test_land_prior_weights_that_are_not_finite_are_refused_at_load(tmp_path, capsys):
    path = land_checkpoint(tmp_path, 5, 5, nan=True)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)
    rc, err = record(path, tmp_path, capsys)
    assert rc == 2 and "NaN or infinite" in err and err.count("\n") == 1
