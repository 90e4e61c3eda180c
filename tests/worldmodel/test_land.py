"""The land prior (games.crafter.land): revealed cells sampled among the game's labels, drawn
through the view memory's canvas; and the labelled codebook it draws them with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from games.crafter import codebook, land
from worldmodel.actions import get_action_space
from worldmodel.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from games.crafter.codebook import TileCodebook
from worldmodel.data import load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.dynamics import Denoiser
from games.crafter.land import LINE, LandError, LandPrior, canonical, fill_canvas, revealed_line
from worldmodel.rollout import Rollout
from games.crafter.geometry import SCROLLS, TILE, VIEW_COLS, VIEW_ROWS, view_tiles
from games.crafter.geometry import window_moves
from games.crafter.viewmap import canvas_shape

SPACE = get_action_space("crafter")


def _episodes(root, split="train"):
    return [load_episode(p) for p in sorted(root.glob(f"{split}_*"))]


@pytest.fixture(scope="module")
def book(labelled_crafter):
    return codebook.build(_episodes(labelled_crafter.root), size=4096)


@pytest.fixture(scope="module")
def steps(labelled_crafter):
    """(before, moves, after) of every scroll in the fixture's training episodes, and the frames."""
    eps = _episodes(labelled_crafter.root)
    return land.examples(eps, SPACE), eps


def test_the_codebook_knows_each_tiles_label(labelled_crafter, book, tmp_path):
    ep = _episodes(labelled_crafter.root)[0]
    frames = to_float(torch.from_numpy(ep.frames[::5]))
    snapped, labels, level = book.snap(frames, return_labels=True)
    assert torch.equal(snapped, book.snap(frames))  # the labels change nothing drawn
    assert labels.shape == (len(frames), VIEW_ROWS, VIEW_COLS) and level.shape == (len(frames),)
    # Real frames built into the book: their cells come back with the game's own labels.
    assert (labels.numpy() == ep.labels[::5]).mean() > 0.98
    book.save(tmp_path / "b.safetensors")
    again = TileCodebook.load(tmp_path / "b.safetensors")
    assert torch.equal(again.labels, book.labels)
    tex = book.textures()
    assert tex.shape == (book.levels, int(book.labels.max()) + 1, 3 * TILE * TILE)
    # Every label the book holds has a tile at every light level.
    for lab in torch.unique(book.labels):
        assert (tex[:, lab].float().sum(-1) > 0).all()
    unlabelled = TileCodebook(book.tiles.numpy(), book.light.numpy())
    with pytest.raises(codebook.CodebookError, match="without labels"):
        unlabelled.snap(frames, return_labels=True)


def test_the_revealed_line_lands_where_the_next_frame_shows_it(tiny_config, book, steps):
    """Geometry, end to end: the true next labels, drawn into a canvas with fill_canvas and
    cropped by the move as MoveHead.compose crops it, sit at the cells the real next frame
    shows them (every move class the fixture has)."""
    (before, moves, after), _ = steps
    model = Denoiser(tiny_config("model.shift_kernel=17", "model.committed_move=7",
                                 "model.view_memory=true", size=64).model)
    seen = set()
    for k in range(1, len(SCROLLS)):
        idx = np.flatnonzero(moves == k)[:4]
        if not len(idx):
            continue
        seen.add(k)
        mv = torch.from_numpy(moves[idx])
        line = revealed_line(torch.from_numpy(after[idx]).long(), mv)
        level = torch.full((len(idx),), book.levels - 1)
        canvas = fill_canvas(torch.zeros(len(idx), *canvas_shape()), mv, line, level,
                             book.textures())
        view = model.move._view_after(canvas, mv)  # (n, 5, rows, cols): the moved view's cells
        known = view[:, 3, ::TILE, ::TILE] > 0.5  # (n, rows, cols) cells the canvas filled
        assert known.sum(dim=(1, 2)).tolist() == [int((line[i] >= 0).sum()) for i in range(len(idx))]
        rgb = to_uint8(view[:, :3]).numpy()  # (n, 49, 63, 3)
        cells = torch.from_numpy(view_tiles(np.pad(rgb, ((0, 0), (0, 15), (0, 1), (0, 0)))))
        real = torch.from_numpy(after[idx]).long()
        # Each filled cell holds the tile of the label the real next frame shows there.
        want = book.textures()[level[:, None, None].expand_as(real), real]
        assert torch.equal(cells[known], want[known])
    assert len(seen) >= 3


def test_canonical_views_put_the_line_on_the_right():
    labels = torch.arange(VIEW_ROWS * VIEW_COLS).view(1, VIEW_ROWS, VIEW_COLS).repeat(5, 1, 1)
    grid, valid = canonical(labels, torch.arange(5))
    assert (grid[0] == -1).all() and not valid[0].any()  # a stay reveals nothing
    # Right: the view as it is, its last column next to the line.
    assert torch.equal(grid[2, :VIEW_ROWS, -VIEW_COLS:], labels[0])
    assert torch.equal(grid[1, :VIEW_ROWS, -1], labels[0, :, 0])  # left: the first column
    assert torch.equal(grid[4, :, -1], labels[0, -1, :])  # down: the bottom row
    assert torch.equal(grid[3, :, -1], labels[0, 0, :])  # up: the top row
    assert valid.sum(1).tolist() == [0, VIEW_ROWS, VIEW_ROWS, VIEW_COLS, VIEW_COLS]


def test_training_fits_the_revealed_land_and_sampling_matches_it(steps, tmp_path):
    (before, moves, after), eps = steps
    names = list(eps[0].meta["label_names"])
    n = len(before)
    split = int(n * 0.8)
    train = tuple(a[:split] for a in (before, moves, after))
    held = tuple(a[split:] for a in (before, moves, after))
    prior, fit = land.train_prior(train, train, len(names), names, steps=150, batch=64,
                                  log_every=50)
    first, last = fit["log"][0]["heldout_loss"], fit["best_heldout_loss"]
    assert last < first  # it learns the fixture's land
    shares = land.sampled_shares(prior, held, names.index("grass"))
    assert 0.0 <= shares["non_grass_sampled"] <= 1.0 and shares["tv"] < 0.6
    # A world draws the same line alone as in a batch (its own uniforms).
    u = torch.rand(len(held[0]), LINE, generator=torch.Generator().manual_seed(0))
    b, m = torch.from_numpy(held[0]).long(), torch.from_numpy(held[1])
    batched = prior.sample(b, m, u)
    alone = torch.cat([prior.sample(b[i:i + 1], m[i:i + 1], u[i:i + 1]) for i in range(3)])
    assert torch.equal(batched[:3], alone)
    assert ((batched >= 0) == canonical(b, m)[1]).all()
    # The prior walked as a world of its own: a drift score in [0, 1], the same for the same seeds.
    tv = land.walk_tv(prior, eps, SPACE, 1.0, seeds=1, start=5, steps=20)
    assert 0.0 <= tv <= 1.0 and tv == land.walk_tv(prior, eps, SPACE, 1.0, seeds=1, start=5, steps=20)
    prior.temperature = 0.9
    prior.save(tmp_path / "land.safetensors", {"x": 1})
    again = LandPrior.load(tmp_path / "land.safetensors")
    assert again.temperature == 0.9 and again.info == {"x": 1}
    assert torch.equal(again.sample(b, m, u), prior.sample(b, m, u))
    (tmp_path / "bad.safetensors").write_bytes(b"not a land prior")
    with pytest.raises(LandError, match="not a readable land prior"):
        LandPrior.load(tmp_path / "bad.safetensors")
    with pytest.raises(LandError, match="not found"):
        LandPrior.load(tmp_path / "missing.safetensors")


def test_a_checkpoint_with_a_land_prior_samples_what_moves_reveal(
        tiny_config, perturbed_model, labelled_crafter, book, steps, tmp_path):
    (before, moves, after), eps = steps
    names = list(eps[0].meta["label_names"])
    cfg = tiny_config("model.shift_kernel=17", "model.committed_move=7", "model.view_memory=true",
                      size=64)
    model = perturbed_model(cfg)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, model, cfg)
    # A land prior without a labelled codebook is refused, in one line.
    cfg.game["land_prior"] = land.DEFAULT_NAME
    prior, _ = land.train_prior((before, moves, after), (before, moves, after), len(names), names,
                                steps=20, batch=32, log_every=10)
    prior.save(ckpt / land.DEFAULT_NAME)
    save_checkpoint(ckpt, model, cfg)
    with pytest.raises(CheckpointError, match="land_prior needs"):
        load_checkpoint(ckpt, torch.device("cpu"))
    book.save(ckpt / codebook.DEFAULT_NAME)
    cfg.game["tile_codebook"] = codebook.DEFAULT_NAME
    save_checkpoint(ckpt, model, cfg)
    loaded, lcfg = load_checkpoint(ckpt, torch.device("cpu"))
    assert [st.name for st in loaded.stages] == ["land prior", "codebook snap"]
    assert "land" not in dict(loaded.named_children())
    assert not any(k.startswith("land") for k in loaded.state_dict())

    ep = _episodes(labelled_crafter.root)[0]
    ctx = to_float(torch.from_numpy(ep.frames[:cfg.data.window - 1]))[None]
    acts = torch.full((1, ctx.shape[1]), -1)
    mv = window_moves(ep.frames[None], np.concatenate([[0], ep.actions])[None], SPACE)[0]
    j = int(np.flatnonzero(mv[cfg.data.window:] > 0)[0]) + cfg.data.window
    with_land, without = [], []
    for use in (True, False):
        if not use:
            loaded.stages = [st for st in loaded.stages if st.name != "land prior"]
        ro = Rollout(loaded, lcfg, seed=0)
        ro.reset(ctx, acts)
        frame = ro.chunk(torch.tensor([[int(ep.actions[j - 1])]]),
                         moves=torch.tensor([[int(mv[j])]]))
        (with_land if use else without).append(frame)
    # The same draw with and without the prior but for the revealed line: it changed the frame,
    # and every cell of it is one of the codebook's tiles (snapped).
    assert not torch.equal(with_land[0], without[0])
    out = to_uint8(with_land[0][0]).numpy()
    codes = {bytes(t) for t in book.tiles.numpy()}
    assert all(bytes(t) in codes for t in view_tiles(out).reshape(-1, 3 * TILE * TILE))


def test_calibration_brings_long_walks_to_the_games_label_shares(steps, tmp_path):
    """A prior fitted only briefly drifts over long walks; the label offsets fitted on the same
    episodes bring the walked shares closer to the revealed shares, and are kept by its file."""
    (before, moves, after), eps = steps
    names = list(eps[0].meta["label_names"])
    data = (before, moves, after)
    prior, _ = land.train_prior(data, data, len(names), names, steps=40, batch=64, log_every=20)
    real = land.revealed_shares(eps, SPACE, len(names))
    assert abs(float(real.sum()) - 1) < 1e-5
    before_tv = float(0.5 * (land.long_walk_shares(prior, eps, SPACE, 60, seed=9, start=5)
                             - real).abs().sum())
    report = land.calibrate_bias(prior, eps, SPACE, steps=60, rounds=3)
    after_tv = float(0.5 * (land.long_walk_shares(prior, eps, SPACE, 60, seed=9, start=5)
                            - real).abs().sum())
    assert after_tv < before_tv, (before_tv, after_tv, report["rounds"])
    assert (prior.label_bias[real == 0] == 0).all()  # what the game never reveals: no offset
    prior.save(tmp_path / "land.safetensors")
    again = LandPrior.load(tmp_path / "land.safetensors")
    assert torch.allclose(again.label_bias, prior.label_bias, atol=1e-4)


def test_a_prior_file_with_bad_label_offsets_is_refused(steps, tmp_path):
    from worldmodel import tensorfile

    (before, moves, after), eps = steps
    names = list(eps[0].meta["label_names"])
    prior = LandPrior(len(names), 8, names)
    prior.save(tmp_path / "ok.safetensors")
    assert torch.equal(LandPrior.load(tmp_path / "ok.safetensors").label_bias,
                       torch.zeros(len(names)))
    state, meta = tensorfile.read(tmp_path / "ok.safetensors", LandError, "land prior", "")
    tensorfile.write(tmp_path / "bad.safetensors", state, dict(meta, label_bias="[1, 2]"))
    with pytest.raises(LandError, match="label_bias"):
        LandPrior.load(tmp_path / "bad.safetensors")
