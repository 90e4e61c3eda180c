"""The tile classifier (worldmodel/tiles.py) and the semantic measures (worldmodel/semantic.py), on
real Crafter frames with the game's own labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from games.crafter import semantic, tiles
from games.crafter import geometry
from worldmodel.actions import get_action_space
from worldmodel.data import load_episode
from games.crafter.tiles import REJECT, TileClassifier, TileError


def _episodes(root, split):
    return [load_episode(p) for p in sorted(root.glob(f"{split}_*"))]


def _arrays(ep, s: int, h: int):
    """Real labels and poses from frame s (the 'last context frame') to s + h."""
    from worldmodel.evaluation.evaluate import player_positions

    return ep.labels[s:s + h + 1][None], player_positions(ep)[s:s + h + 1][None]


def test_episodes_store_the_games_labels_and_poses(labelled_crafter):
    ep = _episodes(labelled_crafter.root, "heldout")[0]
    assert ep.labels.shape == (len(ep.frames), geometry.VIEW_ROWS, geometry.VIEW_COLS)
    names = ep.meta["label_names"]
    assert names[ep.labels[0][geometry.PLAYER_TILE]] == "player"  # the player is always there
    # Tiles with the same label by full daylight are the same texture, pixel for pixel.
    t = geometry.view_tiles(ep.frames[0])
    grass = ep.labels[0] == names.index("grass")
    assert grass.sum() > 3 and (t[grass] == t[grass][0]).all()


def test_classifier_labels_heldout_real_frames_and_rejects_few(labelled_crafter):
    rep = labelled_crafter.report
    assert rep["accuracy"] >= 0.97
    assert rep["rejected"] < 0.01


def test_classifier_rejects_damaged_frames(labelled_crafter):
    clf = TileClassifier.load(labelled_crafter.bank)
    ep = _episodes(labelled_crafter.root, "heldout")[0]
    frames = ep.frames[::10]
    t = geometry.view_tiles(frames)
    textured = t.std(-1) > 10  # a blur leaves a near-flat tile (water, sand) a plausible tile
    blurred = np.stack([cv2.blur(f, (3, 3)) for f in frames])
    assert (clf.classify(blurred)[textured] == REJECT).mean() > 0.9
    assert (clf.classify(frames) == REJECT).mean() < 0.01
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    assert (clf.classify(noise) == REJECT).mean() > 0.99


def test_shipped_bank_labels_unseen_real_worlds(labelled_crafter):
    """The shipped bank (assets/tiles) on held-out worlds it never saw: >= 97% right, smears < 1%."""
    clf = TileClassifier.load()
    for ep in _episodes(labelled_crafter.root, "heldout"):
        lab = clf.classify(ep.frames)
        assert (lab == ep.labels).mean() >= 0.97
        assert (lab == REJECT).mean() < 0.01


def test_bank_round_trips_and_bad_files_are_clear_errors(labelled_crafter, tmp_path):
    clf = TileClassifier.load(labelled_crafter.bank)
    clf.save(tmp_path / "b.npz")
    again = TileClassifier.load(tmp_path / "b.npz")
    assert np.array_equal(again.tiles, clf.tiles) and again.names == clf.names
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(TileError, match="not a readable tile bank"):
        TileClassifier.load(tmp_path / "bad.npz")
    with pytest.raises(TileError, match="no tile bank"):
        TileClassifier.load(tmp_path / "missing.npz")


def test_permanence_of_real_frames_is_one_and_of_grass_is_zero(labelled_crafter):
    ep = _episodes(labelled_crafter.root, "heldout")[0]
    grass = ep.meta["label_names"].index("grass")
    real, pos = _arrays(ep, 20, 40)
    res = semantic.permanence(real[:, 1:], real, pos, [1, 4, 16], grass)
    for h in ("1", "4", "16"):
        assert res[h]["all"] == 1.0 and res[h]["non_grass"] == 1.0 and res[h]["n_non_grass"] > 0
    plain = np.full_like(real[:, 1:], grass)
    res = semantic.permanence(plain, real, pos, [1, 4, 16], grass)
    assert all(res[h]["non_grass"] == 0.0 for h in ("1", "4", "16"))
    assert all(0 < res[h]["all"] < 1 for h in ("1", "4", "16"))


def test_carried_cells_follow_the_poses():
    # One world, the player steps right: of the first view's 63 cells, 56 are still in view.
    pos = np.array([[[10, 10], [11, 10]]])
    real = np.zeros((1, 2, 7, 9), np.uint8)
    res = semantic.permanence(real[:, 1:], real, pos, [1], grass=2)
    assert res["1"]["n_all"] == 7 * 8


def test_revealed_histogram_of_the_real_game_against_itself_is_zero_tv(labelled_crafter):
    ep = _episodes(labelled_crafter.root, "heldout")[1]
    real, pos = _arrays(ep, 20, 40)
    from worldmodel.evaluation.evaluate import player_positions

    seen = player_positions(ep)[18:21][None]
    res = semantic.revealed(real[:, 1:], real, pos, seen, len(ep.meta["label_names"]))
    assert res["n"] > 0 and res["tv"] == 0.0
    grass = ep.meta["label_names"].index("grass")
    res = semantic.revealed(np.full_like(real[:, 1:], grass), real, pos, seen, len(ep.meta["label_names"]))
    assert res["tv"] == pytest.approx(1 - res["real"][grass])


def test_bucket_shares_count_smears_and_non_grass():
    lab = np.full((1, 8, 7, 9), 2, np.uint8)
    lab[0, :4, 0, 0] = REJECT
    lab[0, 4:, 0, :3] = 3
    out = semantic.bucket_shares(lab, ((1, 4), (5, 8)), grass=2)
    assert out["1-4"] == {"non_grass": 0.0, "smear": pytest.approx(1 / 63)}
    assert out["5-8"] == {"non_grass": pytest.approx(3 / 63), "smear": 0.0}


def test_scroll_estimate_of_real_frames_matches_the_games_positions(labelled_crafter):
    from worldmodel.evaluation.evaluate import player_positions

    names = get_action_space("crafter").actions
    for ep in _episodes(labelled_crafter.root, "revisit") + _episodes(labelled_crafter.root, "heldout"):
        pos = player_positions(ep)
        intended = geometry.intended_moves(ep.actions, names)
        assert (geometry.track_poses(ep.frames, pos[0], intended) == pos).all()
        steps = geometry.estimate_scroll(ep.frames[:-1], ep.frames[1:], intended)
        assert (steps == np.diff(pos, axis=0)).all()


def test_scroll_agreement_separates_free_and_blocked_moves():
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (7 * 12, 7 * 14, 3), dtype=np.uint8)

    def view(x, y):
        f = np.zeros((64, 64, 3), np.uint8)
        f[:49, :63] = world[7 * y:7 * y + 49, 7 * x:7 * x + 63]
        return f

    # right (free), right (blocked: stays), down (free), noop
    pos = np.array([[[2, 2], [3, 2], [3, 2], [3, 3], [3, 3]]])
    frames = np.stack([view(*p) for p in pos[0]])[None]
    acts = np.array([[2, 2, 4, 0]])
    names = get_action_space("crafter").actions
    res = semantic.scroll_agreement(frames[:, 1:], frames[:, 0], pos, acts, names)
    assert res["free_moves"] == {"n": 2, "agree": 1.0}
    assert res["blocked_moves"] == {"n": 1, "agree": 1.0}
    # A model that scrolls on the blocked move gets it wrong.
    bad = frames.copy()
    bad[0, 2] = view(4, 2)
    res = semantic.scroll_agreement(bad[:, 1:], bad[:, 0], pos, acts, names)
    assert res["blocked_moves"]["agree"] == 0.0


def test_daylight_follows_crafters_formula():
    assert geometry.daylight(0) == pytest.approx(1 - abs(np.cos(np.pi * 0.3)) ** 3)
    assert geometry.daylight(210) == pytest.approx(0.0, abs=1e-9)  # darkest around step 210
