"""The view memory (issue 13): what was seen where, re-projected into the view, saved and resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memory.lora import MemoryFileError
from games.crafter.view_memory import ViewMemory, ViewMemoryError
from simulator.session import WorldSession
from worldmodel.actions import get_action_space
from worldmodel.data import load_episode
from worldmodel.data.dataset import to_float
from worldmodel.diffusion import TrainBatch, training_loss
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.evaluate import frame_actions, player_positions
from games.crafter.geometry import PLAYER_TILE, SCROLLS, TILE, VIEW_COLS, VIEW_ROWS
from games.crafter.viewmap import (CANVAS_COLS, CANVAS_ROWS, MARGIN, history_canvases,
                                scroll_index)

SPACE = get_action_space("crafter")


def _cfg(tiny_config, *extra):
    return tiny_config("model.shift_kernel=17", "model.committed_move=7", "model.view_memory=true",
                       *extra, size=64)


def _episodes(root, split):
    return [load_episode(p) for p in sorted(root.glob(f"{split}_*"))]


def _floats(frames):
    return to_float(torch.from_numpy(np.asarray(frames)))


def _tracked(ep, n=None):
    """A one-world view memory that tracked the first n real frames of an episode."""
    n = n or len(ep.frames)
    view = ViewMemory(1, SPACE.actions)
    view.track(_floats(ep.frames[:n])[None], torch.from_numpy(frame_actions(ep, 0, n))[None])
    return view


def test_a_place_written_at_a_pose_is_read_back_there_and_not_elsewhere():
    view = ViewMemory(1)
    view.set_on(True, [0])
    frame = torch.rand(1, 3, 64, 64) * 2 - 1
    view.write(frame)
    canvas = view.read()[0]
    known = canvas[3]
    inner = (slice(MARGIN * TILE, (MARGIN + VIEW_ROWS) * TILE),
             slice(MARGIN * TILE, (MARGIN + VIEW_COLS) * TILE))
    u8 = ((frame[0] + 1) * 127.5).round() / 127.5 - 1
    mask = known[inner].bool()
    assert torch.allclose(canvas[:3][(slice(None), *inner)][:, mask],
                          u8[:, :VIEW_ROWS * TILE, :VIEW_COLS * TILE][:, mask], atol=1e-6)
    assert mask.sum() == (VIEW_ROWS * VIEW_COLS - 1) * TILE * TILE  # all but the player's tile
    assert known.sum() == mask.sum()  # the margin was never seen
    # Walk 20 tiles away: nothing there is known.
    view.advance(torch.full((20,), 2)[:1])
    for _ in range(19):
        view.advance(torch.tensor([2]))
    assert view.read()[0, 3].sum() == 0
    for _ in range(20):  # and back: the same cells again
        view.advance(torch.tensor([1]))
    assert torch.equal(view.read()[0], canvas)
    view.set_on(False, [0])  # off: it reads as empty (what it recorded is kept)
    assert view.read()[0].abs().sum() == 0 and view.known_cells(0) == VIEW_ROWS * VIEW_COLS - 1


def test_poses_read_from_real_frames_match_the_game(labelled_crafter):
    for ep in _episodes(labelled_crafter.root, "revisit") + _episodes(labelled_crafter.root,
                                                                       "heldout")[:1]:
        pos = player_positions(ep)
        view = ViewMemory(1, SPACE.actions)
        acts = frame_actions(ep, 0, len(ep.frames))
        for i in range(len(ep.frames)):
            view.track(_floats(ep.frames[i:i + 1])[None], torch.tensor([[acts[i]]]))
            got = (view.pose[0] - view.grid // 2).tolist()
            assert got == (pos[i] - pos[0]).tolist(), (ep.path.name, i)


def test_a_one_tile_scroll_reprojects_onto_the_real_next_frame(labelled_crafter):
    """The canvas around frame t's pose, cropped by the real move, shows what the real frame
    t+1 shows on the cells both know (creatures aside: compared by the game's labels)."""
    ep = _episodes(labelled_crafter.root, "heldout")[0]
    pos = player_positions(ep)
    agree, total = 0, 0
    for t in range(10, len(ep.frames) - 1):
        move = int(scroll_index(pos[t + 1] - pos[t]))
        if move <= 0:
            continue
        view = _tracked(ep, t + 1)
        view.set_on(True, [0])
        canvas = view.read()[0]
        dx, dy = SCROLLS[move]
        crop = canvas[:, (MARGIN + dy) * TILE:(MARGIN + dy + VIEW_ROWS) * TILE,
                      (MARGIN + dx) * TILE:(MARGIN + dx + VIEW_COLS) * TILE]
        real = _floats(ep.frames[t + 1])[:, :VIEW_ROWS * TILE, :VIEW_COLS * TILE]
        known = crop[3].reshape(VIEW_ROWS, TILE, VIEW_COLS, TILE)[:, 0, :, 0].bool()
        known[PLAYER_TILE] = False
        err = (crop[:3] - real).abs().reshape(3, VIEW_ROWS, TILE, VIEW_COLS, TILE).mean((0, 2, 4))
        agree += int(((err < 0.02) & known).sum())
        total += int(known.sum())
    assert total > 200
    assert agree / total > 0.95  # the rest: creatures that moved, the daylight


def test_training_canvases_equal_the_live_memorys(labelled_crafter):
    """What training conditions on (history_canvases, from the game's positions) is what a
    session reads (ViewMemory, from poses read off the pixels)."""
    ep = _episodes(labelled_crafter.root, "revisit")[0]
    pos = player_positions(ep)
    anchors = np.array([5, 20, len(ep.frames) - 2])
    want = history_canvases(ep.frames, pos, anchors)
    for k, a in enumerate(anchors):
        view = _tracked(ep, a + 1)
        view.set_on(True, [0])
        got = view.read()[0].numpy()
        np.testing.assert_allclose(got[:4], want[k, :4], atol=1e-6)
        np.testing.assert_allclose(got[4], want[k, 4], atol=1.5 / 300)  # age: clock vs index


def test_compose_fills_what_the_move_reveals_from_memory(tiny_config):
    model = Denoiser(_cfg(tiny_config).model)
    torch.nn.init.constant_(model.move.fill, 0.25)
    anchor = torch.rand(5, 3, 64, 64) * 2 - 1
    canvas = torch.zeros(5, 5, CANVAS_ROWS * TILE, CANVAS_COLS * TILE)
    canvas[:, :3] = 0.5
    canvas[:, 3] = 1.0
    composed, cond = model.move.compose(anchor, torch.arange(5), canvas)
    assert torch.equal(composed[0], anchor[0])  # no move: the anchor as it is
    assert not cond[0].any() or torch.equal(cond[0, :3], anchor[0])
    pr, pc = PLAYER_TILE[0] * TILE, PLAYER_TILE[1] * TILE
    for k, (dx, dy) in enumerate(SCROLLS[1:], 1):
        # The player's sprite stays at the centre; the cell it left comes from memory.
        assert torch.equal(composed[k][:, pr:pr + TILE, pc:pc + TILE],
                           anchor[k][:, pr:pr + TILE, pc:pc + TILE])
        vr, vc = pr - dy * TILE, pc - dx * TILE
        assert torch.all(composed[k][:, vr:vr + TILE, vc:vc + TILE] == 0.5)
        # The revealed strip is the memory's; the inventory stays.
        strip = composed[k][:, :49, :63]
        if dx == 1:
            assert torch.all(strip[:, :, -TILE:] == 0.5)
        if dy == -1:
            assert torch.all(strip[:, :TILE] == 0.5)
        assert torch.equal(composed[k][:, 49:], anchor[k][:, 49:])
    # Without memory the learned tile fills the same cells.
    empty, cond0 = model.move.compose(anchor, torch.arange(5), None)
    assert torch.all(empty[2][:, :49, 56:63] == 0.25) and cond0[2, 3, 0, 60] == -1


def test_memory_off_draws_the_base_models_frames_bit_for_bit(tiny_config, perturbed_model,
                                                             labelled_crafter):
    cfg = _cfg(tiny_config)
    model = perturbed_model(cfg)
    ep = _episodes(labelled_crafter.root, "revisit")[0]
    ctx, acts = ep.frames[:cfg.data.window - 1], frame_actions(ep, 0, cfg.data.window - 1)
    runs = []
    for view in (True, False):
        sess = WorldSession(model, cfg, memory=False)
        if not view:
            sess.rollout_state.view = None  # the model alone, no memory at all
        sess.reset(context=ctx, actions=acts, noise_seed=0)
        runs.append(np.stack([sess.step(a) for a in ep.actions[6:30]]))
    np.testing.assert_array_equal(runs[0], runs[1])
    sess = WorldSession(model, cfg, memory=False)
    sess.reset(context=ctx, actions=acts, noise_seed=0)
    sess.set_memory(True)  # on after reset: everything since the reset is in it
    assert sess.view.known_cells(0) > 0
    on = np.stack([sess.step(a) for a in ep.actions[6:30]])
    assert not np.array_equal(on, runs[0])


def test_a_long_reset_context_lands_in_the_memory(tiny_config, perturbed_model, labelled_crafter):
    cfg = _cfg(tiny_config)
    ep = _episodes(labelled_crafter.root, "heldout")[0]
    n = len(ep.frames)
    sess = WorldSession(perturbed_model(cfg), cfg)
    sess.reset(context=ep.frames, actions=frame_actions(ep, 0, n))
    pos = player_positions(ep)
    assert (sess.view.pose[0] - sess.view.grid // 2).tolist() == (pos[-1] - pos[0]).tolist()
    seen = {tuple(p + d) for p in pos for d in np.stack(np.mgrid[-4:5, -3:4], -1).reshape(-1, 2)
            if tuple(d) != (0, 0)}
    assert sess.view.known_cells(0) == len(seen)  # every cell the whole context showed
    assert sess.rollout_state.cache.positions.numel() == sess.context_len  # the cache its window


def test_save_then_load_in_a_fresh_session_resumes_the_world(tiny_config, perturbed_model,
                                                            labelled_crafter, tmp_path):
    cfg = _cfg(tiny_config)
    model = perturbed_model(cfg)
    ep = _episodes(labelled_crafter.root, "revisit")[0]
    mcfg = {"stores": "view"}
    from memory.config import MemoryConfig

    sess = WorldSession(model, cfg, memory=MemoryConfig(**mcfg))
    sess.reset(context=ep.frames[:20], actions=frame_actions(ep, 0, 20), noise_seed=3)
    sess.set_memory(True)
    for a in ep.actions[19:30]:
        sess.step(int(a))
    sess.save_memory(tmp_path / "world")
    minimap = sess.minimap()
    nxt = [sess.step(int(a)) for a in ep.actions[30:34]]

    fresh = WorldSession(model, cfg, memory=MemoryConfig(**mcfg))
    info = fresh.load_memory(tmp_path / "world")
    assert info["stores"] == ["view"] and fresh.steps == 11
    fresh.set_memory(True)
    np.testing.assert_array_equal(fresh.minimap(), minimap)
    for a, want in zip(ep.actions[30:34], nxt):
        np.testing.assert_array_equal(fresh.step(int(a)), want)


def test_a_bad_memory_folder_is_a_clear_error(tiny_config, perturbed_model, labelled_crafter,
                                              tmp_path):
    cfg = _cfg(tiny_config)
    model = perturbed_model(cfg)
    ep = _episodes(labelled_crafter.root, "revisit")[0]
    sess = WorldSession(model, cfg)
    sess.reset(context=ep.frames[:10], actions=frame_actions(ep, 0, 10))
    folder = sess.save_memory(tmp_path / "w")
    with pytest.raises(MemoryFileError, match="not found"):
        sess.load_memory(tmp_path / "nothing")
    manifest = json.loads((folder / "memory.json").read_text())
    (folder / "memory.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(MemoryFileError, match="version 99"):
        sess.load_memory(folder)
    (folder / "memory.json").write_text(json.dumps(manifest))
    (folder / "view_memory.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ViewMemoryError, match="corrupt"):
        sess.load_memory(folder)
    (folder / "memory.json").write_text("{not json")
    with pytest.raises(MemoryFileError, match="corrupt"):
        sess.load_memory(folder)
    other = _cfg(tiny_config, "model.emb_dim=16")
    sess2 = WorldSession(perturbed_model(other), other)
    (folder / "memory.json").write_text(json.dumps(manifest))
    with pytest.raises(MemoryFileError, match="another model"):
        sess2.load_memory(folder)


def test_view_memory_training_lowers_its_loss(tiny_config, perturbed_model, labelled_crafter):
    """The new objective on real windows with their memory canvases: a few steps of Adam on
    one batch lower the loss (the memory stem and the learned tile get gradients)."""
    from worldmodel.data.dataset import WindowDataset
    from games.crafter.geometry import window_moves

    cfg = _cfg(tiny_config, "diffusion.self_forcing_prob=0", "diffusion.memory_drop=0")
    model = perturbed_model(cfg)
    data = WindowDataset(labelled_crafter.root, cfg.data.window, SPACE, "train_",
                         frame_size=64, poses=True)
    rng = np.random.default_rng(0)
    frames, acts, canvases = data.sample(8, rng, canvases=True)
    assert canvases[:, 1:, 3].any()  # the windows do remember something
    batch = TrainBatch(_floats(frames), SPACE.encode(torch.from_numpy(acts)),
                       torch.from_numpy(window_moves(frames, acts, SPACE)),
                       torch.from_numpy(canvases))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for i in range(12):
        loss, _ = training_loss(model, batch, cfg.diffusion, np.random.default_rng(0),
                                torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        if i == 0:
            assert model.memory_stem.weight.grad.abs().sum() > 0
            assert model.move.fill.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_revisit_compares_the_stores_and_reads_the_pose(tiny_config, perturbed_model,
                                                        labelled_crafter, tmp_path):
    """memory.revisit --compare-stores: off, view, lora and both on the same trips; with the
    whole trip out given real, the view memory's pose matches the game's there exactly."""
    from memory import revisit
    from worldmodel.checkpoint import save_checkpoint

    cfg = _cfg(tiny_config)
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg)
    report = revisit.main(["--checkpoint", str(ckpt), "--data", str(labelled_crafter.root),
                           "--samples", "1", "--warmup", "trip", "--compare-stores",
                           "--tiles", str(labelled_crafter.bank), "rank=2", "window=4",
                           "buffer_frames=8"])
    s = report["summary"]
    assert {"off", "view", "lora", "both"} <= set(s["revisit"])
    assert set(s["pose_accuracy"]) == {"view", "both"}
    for r in report["per_episode"]:
        assert r["real_prefix"] > r["context"]  # the trip out was given real
    assert report["command"].startswith("python -m memory.revisit")


def test_evaluate_rolls_with_the_view_memory_on(tiny_config, perturbed_model, labelled_crafter,
                                                 tmp_path):
    from memory import evaluate as memory_evaluate
    from worldmodel.evaluation import evaluate
    from worldmodel.checkpoint import save_checkpoint

    cfg = _cfg(tiny_config)
    ckpt = save_checkpoint(tmp_path / "ckpt", perturbed_model(cfg), cfg)
    args = ["--checkpoint", str(ckpt), "--data", str(labelled_crafter.root), "--samples", "2",
            "--horizons", "1", "4", "--batch", "2", "--long", "8", "--long-worlds", "2",
            "--semantic-worlds", "2", "--semantic-horizon", "8", "--wander", "4",
            "--tiles", str(labelled_crafter.bank)]
    on = memory_evaluate.main(args + ["--out", str(tmp_path / "on")])
    off = evaluate.main(args + ["--out", str(tmp_path / "off")])
    assert on["view_memory"] and not off["view_memory"]
    assert on["command"].startswith("python -m memory.evaluate")
    assert "permanence" in on["semantic"]
    plain = tiny_config(size=64)
    ckpt2 = save_checkpoint(tmp_path / "plain", perturbed_model(plain), plain)
    with pytest.raises(ValueError, match="no view memory"):
        memory_evaluate.main(["--checkpoint", str(ckpt2), *args[2:], "--out", str(tmp_path / "x")])


def test_live_fps_measures_the_view_store_alone(tiny_config, perturbed_model, labelled_crafter):
    from memory.config import MemoryConfig
    from memory.fps import measure

    cfg = _cfg(tiny_config)
    ep = _episodes(labelled_crafter.root, "revisit")[0]
    ctx = _floats(ep.frames[:cfg.data.window - 1])[None]
    res = measure(perturbed_model(cfg), cfg, MemoryConfig(stores="view"), ctx, 3, 2)
    assert res["stores"] == ["view"] and res["fps_on"] > 0 and res["fps_off"] > 0
