"""The tile codebook: generated world-view cells snapped to tiles the real game drew."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from games.crafter import codebook
from worldmodel.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from games.crafter.codebook import CodebookError, TileCodebook
from worldmodel.data import load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.rollout import Rollout
from games.crafter.geometry import TILE, TILE_DIM, VIEW_COLS, VIEW_ROWS, view_tiles


def _episodes(root, split="train"):
    return [load_episode(p) for p in sorted(root.glob(f"{split}_*"))]


@pytest.fixture(scope="module")
def book(labelled_crafter):
    return codebook.build(_episodes(labelled_crafter.root), size=4096)


def _in_book(frames: np.ndarray, book: TileCodebook) -> bool:
    codes = {bytes(t) for t in book.tiles.numpy()}
    return all(bytes(t) in codes for t in view_tiles(frames).reshape(-1, TILE_DIM))


def test_a_real_frame_built_into_the_book_snaps_to_itself(labelled_crafter, book):
    ep = _episodes(labelled_crafter.root)[0]
    frames = ep.frames[::10]
    out = to_uint8(book.snap(to_float(torch.from_numpy(frames)))).numpy()
    if _in_book(frames, book):
        np.testing.assert_array_equal(out, frames)
    same = (view_tiles(out) == view_tiles(frames)).all(-1).mean()
    assert same > 0.98  # a tile capped out of the book goes to its nearest neighbour


def test_snapped_frames_hold_only_book_tiles_and_keep_the_inventory(book):
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    out = book.snap(x)
    assert _in_book(to_uint8(out).numpy(), book)
    assert torch.equal(out[:, :, VIEW_ROWS * TILE:], x[:, :, VIEW_ROWS * TILE:])
    assert torch.equal(out[:, :, :, VIEW_COLS * TILE:], x[:, :, :, VIEW_COLS * TILE:])


def test_one_light_level_per_frame(labelled_crafter, book):
    """A dimmed cell of a day frame snaps to a tile of the frame's light, not to the night's
    darker version of it: every snapped tile is of the frame's median light level."""
    ep = _episodes(labelled_crafter.root)[0]
    frame = to_float(torch.from_numpy(ep.frames[1]))
    dim = frame.clone()
    dim[:, :TILE, :TILE] = (frame[:, :TILE, :TILE] + 1) * 0.6 - 1  # one cell 40% darker
    out = to_uint8(book.snap(dim[None])[0]).numpy()
    codes = {bytes(t): k for k, t in enumerate(book.tiles.numpy())}
    levels = np.asarray([int(book.light[codes[bytes(t)]])
                         for t in view_tiles(out).reshape(-1, TILE_DIM)])
    assert np.all(levels == np.median(levels)), levels


def test_a_codebook_round_trips_and_a_bad_file_is_a_clear_error(book, tmp_path):
    path = book.save(tmp_path / "book.safetensors")
    again = TileCodebook.load(path)
    assert torch.equal(again.tiles, book.tiles) and torch.equal(again.light, book.light)
    with pytest.raises(CodebookError, match="not found"):
        TileCodebook.load(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00not a file")
    with pytest.raises(CodebookError, match="not a readable"):
        TileCodebook.load(tmp_path / "bad.safetensors")


def test_a_checkpoint_naming_a_codebook_rolls_out_on_its_tiles(tiny_config, perturbed_model,
                                                              book, labelled_crafter, tmp_path):
    cfg = tiny_config("model.shift_kernel=17", "model.committed_move=7", size=64)
    cfg.game["tile_codebook"] = "codebook.safetensors"
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg)
    with pytest.raises(CheckpointError, match="tile_codebook"):
        load_checkpoint(ckpt)  # named but not there
    book.save(ckpt / "codebook.safetensors")
    model, cfg = load_checkpoint(ckpt)
    ep = _episodes(labelled_crafter.root)[0]
    ro = Rollout(model, cfg, seed=0)
    ro.reset(to_float(torch.from_numpy(ep.frames[:3]))[None])
    frames = to_uint8(torch.stack([ro.step(torch.tensor([a])) for a in (1, 2, 3, 0)], 1))
    assert _in_book(frames.numpy()[0], book)
    cfg_json = json.loads((ckpt / "config.json").read_text())
    assert cfg_json["game"]["tile_codebook"] == "codebook.safetensors"
