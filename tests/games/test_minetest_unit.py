"""Minetest without the game: the label set, the view geometry, the action set and key map, the
policies, the world of a seed, the missing-install errors; and the seam: every known game passes
the same interface checks."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import games.minetest.env as mt_env  # noqa: E402
from games.minetest.actions import ACTION_SPACE, KEYS, MINETEST_ACTIONS  # noqa: E402
from games.minetest.geometry import dead_reckon, look_basis, pixel_rays, render_fov  # noqa: E402
from games.minetest.labels import LABEL_NAMES, label_ids, label_of, upsample  # noqa: E402
from games.minetest.policies import POLICIES, out_and_back  # noqa: E402
from worldmodel.actions import ActionError  # noqa: E402
from worldmodel.game import Game, GameError, get_game, known_games  # noqa: E402


# ---- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("node, label", [
    ("air", "sky"), ("ignore", "sky"), ("default:dirt_with_grass", "grass"),
    ("default:dirt", "dirt"), ("default:dirt_with_coniferous_litter", "dirt"),
    ("default:stone", "stone"), ("default:stone_with_iron", "stone"), ("default:cobble", "stone"),
    ("default:sand", "sand"), ("default:desert_sand", "sand"), ("default:water_source", "water"),
    ("default:river_water_flowing", "water"), ("default:tree", "trunk"),
    ("default:pine_tree", "trunk"), ("default:leaves", "leaves"), ("default:pine_needles", "leaves"),
    ("default:snow", "snow"), ("default:dirt_with_snow", "snow"), ("default:ice", "snow"),
    ("default:grass_3", "plant"), ("flowers:rose", "plant"), ("default:wood", "planks"),
    ("default:lava_source", "lava"), ("default:chest", "other"), ("beds:bed_bottom", "other"),
])
def test_node_names_sort_into_the_label_set(node, label):
    assert LABEL_NAMES[label_of(node)] == label


def test_label_map_decodes_the_mods_answer():
    names = ["air", "default:stone", "default:water_source"]
    ids = "".join(chr(33 + i) for i in [0, 1, 2, 1])
    lab = label_ids(names, ids, 2.0)  # JSON gives the size as a float
    assert lab.dtype == np.uint8 and lab.tolist() == [[0, 3], [5, 3]]
    with pytest.raises(ValueError, match="4 pixels for size 3"):
        label_ids(names, ids, 3)
    with pytest.raises(ValueError):
        label_ids(names[:2], ids, 2)  # an index past the names
    assert upsample(lab, 4).shape == (4, 4) and upsample(lab, 4)[3, 0] == 5
    with pytest.raises(ValueError):
        upsample(lab, 5)


# ---- geometry ----------------------------------------------------------------------------------

@pytest.mark.parametrize("yaw, pitch", [(0, 0), (15, 30), (90, -45), (225, 90), (345, -90)])
def test_look_basis_is_orthonormal_with_minetests_axes(yaw, pitch):
    fwd, right, up = look_basis(yaw, pitch)
    m = np.stack([fwd, right, up])
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert right[1] == 0  # no roll
    np.testing.assert_allclose(np.cross(up, fwd), right, atol=1e-12)  # x east, y up, z north


def test_pixel_rays_point_where_minetest_looks():
    fwd, _, _ = look_basis(0, 0)
    np.testing.assert_allclose(fwd, [0, 0, 1], atol=1e-12)  # yaw 0 looks north (+z)
    assert look_basis(90, 0)[0][0] < -0.99  # turning left (yaw up) from north faces west (-x)
    assert look_basis(0, 30)[0][1] < 0  # pitch grows looking down
    rays = pixel_rays(0, 0, 4)
    assert rays.shape == (4, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1)
    assert (rays[0, :, 1] > 0).all() and (rays[-1, :, 1] < 0).all()  # top row up, bottom down
    assert (rays[:, 0, 0] < 0).all() and (rays[:, -1, 0] > 0).all()  # left column west
    edge = np.degrees(np.arctan2(pixel_rays(0, 0, 64)[32, -1, 0], pixel_rays(0, 0, 64)[32, -1, 2]))
    assert 45 < edge < 45.6  # the outermost pixel centre, just inside half the 91.07 degrees drawn
    assert abs(render_fov(72) - 91.07) < 0.01 and render_fov(72, 16 / 9) == 72


def test_a_trip_out_and_back_ends_where_and_as_it_started():
    rng = np.random.RandomState(5)
    for moves in (4, 11, 24, 40):
        acts = [MINETEST_ACTIONS[a] for a in out_and_back(rng, moves)]
        path = dead_reckon(acts, yaw_deg=30)
        np.testing.assert_allclose(path[-1], path[0], atol=1e-9)
        far = np.abs(path[:, :2] - path[0, :2]).max()
        assert far > 0 or moves < 2
        assert sum(a == "forward" for a in acts) == 2 * sum(a == "forward" for a in acts[:moves])


# ---- actions, keys, policies -------------------------------------------------------------------

def test_action_set_and_key_map():
    assert ACTION_SPACE.name == "minetest" and ACTION_SPACE.actions == MINETEST_ACTIONS
    assert set(KEYS.values()) <= set(MINETEST_ACTIONS)
    covered = set(KEYS.values())
    assert set(MINETEST_ACTIONS) - covered == {"noop"}  # every action has a key, no key is noop
    with pytest.raises(ActionError, match="unknown action 'fly'"):
        ACTION_SPACE.index("fly")
    with pytest.raises(ActionError):
        ACTION_SPACE.index(12)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_are_deterministic_and_valid(name):
    import itertools

    def take(seed):
        return list(itertools.islice(POLICIES[name](seed, 300, trip=12), 300))

    from games.minetest.policies import CONTEXT_STEPS, PROTOCOLS

    a = take(3)
    if name in PROTOCOLS:  # a revisit protocol is one fixed trip, whatever the world
        trip = PROTOCOLS[name][0]
        assert a == take(4) and a[CONTEXT_STEPS:CONTEXT_STEPS + len(trip)] == trip
    else:
        assert a == take(3) and a != take(4)
    assert len(a) == 300 and all(0 <= x < ACTION_SPACE.n for x in a)


def test_explore_covers_what_a_first_person_model_must_see():
    import itertools

    acts = [MINETEST_ACTIONS[a] for a in itertools.islice(POLICIES["explore"](0, 4000), 4000)]
    share = {a: acts.count(a) / len(acts) for a in MINETEST_ACTIONS}
    assert share["forward"] > 0.3
    for a in ("turn_left", "turn_right", "look_up", "look_down", "dig", "place", "jump"):
        assert share[a] > 0.005, a
    turns = "".join("L" if a == "turn_left" else "." for a in acts)
    assert "L" * 24 in turns  # full turns in place


def test_a_seed_is_a_world_of_its_own():
    spawns = [mt_env.spawn_for(s) for s in range(10)]
    assert spawns == [mt_env.spawn_for(s) for s in range(10)]
    assert len({sp.map_seed for sp in spawns}) == 10
    assert [sp.kind for sp in spawns[:5]] == list(mt_env.KINDS)
    assert all(0 <= sp.yaw < 24 and abs(sp.x) <= 2000 for sp in spawns)


# ---- missing install ---------------------------------------------------------------------------

@pytest.fixture
def no_minetest(monkeypatch):
    monkeypatch.setattr(mt_env.shutil, "which", lambda name: None)
    monkeypatch.setattr(mt_env.os, "access", lambda path, mode: False)


def test_missing_minetest_names_the_install_script(no_minetest):
    with pytest.raises(GameError, match="scripts/install_system.sh"):
        get_game("minetest").make_env()
    assert not mt_env.available()


def test_run_sim_and_collect_say_one_line_when_minetest_is_missing(no_minetest, tmp_path, capsys):
    import run_sim
    from simulator import collect

    assert run_sim.main(["--game", "minetest", "--real", "--max-frames", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scripts/install_system.sh" in err[0], err
    buf = io.StringIO()
    with redirect_stderr(buf), pytest.raises(SystemExit) as e:
        from worldmodel.cli import run_cli

        run_cli(lambda: collect.main(["--game", "minetest", "--out", str(tmp_path / "d"),
                                      "--episodes", "1"]))
    assert e.value.code == 2
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1 and "scripts/install_system.sh" in lines[0]


def test_real_play_refuses_model_flags(capsys):
    import run_sim

    assert run_sim.main(["--game", "minetest", "--real", "--memory", "--max-frames", "1"]) == 2
    assert "--memory" in capsys.readouterr().err


def test_collect_refuses_an_unknown_policy_and_a_bad_env_option(tmp_path, capsys):
    from simulator import collect

    for argv, says in ((["--policy", "fly"], "no policy 'fly'"),
                       (["--env", "label_size"], "KEY=VALUE")):
        with pytest.raises(SystemExit) as e:
            collect.main(["--game", "minetest", "--out", str(tmp_path), *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert collect.env_options(["a=3", "b=0.5", "c=x"]) == {"a": 3, "b": 0.5, "c": "x"}


# ---- the seam: both games pass the same interface checks ---------------------------------------

@pytest.mark.parametrize("name", ["crafter", "minetest"])
def test_every_game_passes_the_same_interface_checks(name):
    import itertools

    assert name in known_games()
    game = get_game(name)
    assert isinstance(game, Game) and game.name == name
    space = game.action_space
    assert space.kind == "discrete" and space.n >= 5 and space.actions[0] == "noop"
    assert set(game.keys.values()) <= set(space.actions)
    assert game.label_names and len(set(game.label_names)) == len(game.label_names)
    for region, (y0, y1, x0, x1) in game.hud.items():
        assert 0 <= y0 < y1 <= game.frame_size and 0 <= x0 < x1 <= game.frame_size, region
    policies = game.policies()
    assert "explore" in policies
    acts = list(itertools.islice(policies["explore"](1, 50, trip=8), 50))
    assert len(acts) == 50 and all(0 <= space.index(a) < space.n for a in acts)
    for method in ("make_env", "policies", "anchor_head", "view_memory", "stages", "evaluation"):
        assert callable(getattr(game, method))


# ---- pose-keyed retrieval (the 3D memory's first piece) ---------------------------------------

def test_fov_overlap_finds_the_frames_that_saw_a_view_and_none_turned_away():
    from games.minetest.pose_memory import PoseMemory, overlap

    here = np.array([0.0, 10.0, 0.0, 0.0, 0.0])
    assert overlap(here, here) == 1.0
    assert overlap(here, here + [0, 0, 0, 180, 0]) == 0.0  # facing the other way
    assert 0.2 < overlap(here, here + [0, 0, 0, 30, 0]) < 1.0  # turned by two steps: partly
    assert overlap(here, here + [0, 0, 0, 30, 0]) > overlap(here, here + [0, 0, 0, 60, 0])
    assert overlap(here, here + [0, 0, -3, 0, 0]) > 0.75  # a few steps back, same way: most of it
    mem = PoseMemory()
    for yaw in range(0, 360, 15):  # a full turn in place
        mem.add(here + [0, 0, 0, yaw, 0], np.full((4, 4, 3), yaw // 15, np.uint8))
    got = mem.retrieve(here + [0, 0, 0, 90, 0], k=3)
    assert got[0] == (6, 1.0) and {mem.poses[i][3] for i, _ in got} <= {75.0, 90.0, 105.0}
    assert int(mem.frames[got[0][0]][0, 0, 0]) == 6
    far = PoseMemory()
    far.add(here + [0, 0, 0, 180, 0], np.zeros((4, 4, 3), np.uint8))
    assert far.retrieve(here) == []  # only a turned-away view: nothing comes back
    small = PoseMemory(capacity=2)
    for i in range(3):
        small.add(here, np.zeros(1))
    assert len(small) == 2


# ---- the per-pixel labeller ---------------------------------------------------------------------

def colour_coded_episodes(root, splits=(("train", 3, 3), ("heldout", 1, 0)), steps=12):
    """Episodes whose frames paint each label its palette colour (labels at 32x32); every
    `every`-th frame of a split unlabelled (0: all labelled)."""
    from games.minetest.labels import PALETTE
    from worldmodel.data.episode import NO_LABEL, EpisodeWriter

    rng = np.random.default_rng(0)
    for split, n, every in splits:
        for e in range(n):
            meta = {"game": "minetest", "action_space": "minetest", "seed": e, "fps": 10,
                    "start_pos": [0, 0, 0, 0, 0]}
            with EpisodeWriter(root / f"{split}_{e}", meta) as w:
                for t in range(steps):
                    lab = rng.integers(0, 6, (8, 8)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
                    frame = PALETTE[lab].repeat(2, 0).repeat(2, 1)
                    if every and t % every == 0 and t:
                        lab = np.full_like(lab, NO_LABEL)
                    if t == 0:
                        w.add_frame(frame, lab)
                    else:
                        w.add_step(int(rng.integers(0, 12)), frame, labels=lab, pos=[0, 0, 0, 0, 0])


def test_the_labeller_learns_labels_from_colour_and_round_trips(tmp_path):
    from games.minetest.labeller import Labeller, LabellerError, accuracy, labelled_frames, train

    colour_coded_episodes(tmp_path)
    frames, labels = labelled_frames(tmp_path, "train_")
    assert frames.shape == (27, 64, 64, 3) and labels.shape == (27, 32, 32)  # 3 of 12 unlabelled
    model = train(frames, labels, steps=120, batch=8, lr=1e-2)
    held = accuracy(model, *labelled_frames(tmp_path, "heldout_"))
    assert held["pixel_accuracy"] > 0.9, held
    model.save(tmp_path / "lab.safetensors", {"note": "test"})
    again = Labeller.load(tmp_path / "lab.safetensors")
    np.testing.assert_array_equal(again.predict(frames[:2]), model.predict(frames[:2]))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LabellerError, match="bad.safetensors"):
        Labeller.load(tmp_path / "bad.safetensors")
    with pytest.raises(LabellerError, match="not found.*games.minetest.labeller"):
        Labeller.load(tmp_path / "none.safetensors")


def test_the_per_pixel_evaluation_scores_imagined_frames_against_the_games_labels(tmp_path):
    """The Minetest part of the evaluation on colour-coded episodes and a tiny model: the
    labeller reads the real frames right (the ceiling), and every figure has its place."""
    import torch

    from conftest import TINY_YAML, perturb_
    from games.minetest.evaluation import frame_change, mean_iou, semantic_open_loop
    from games.minetest.labeller import labelled_frames, train
    from worldmodel.config import load_config
    from worldmodel.data.episode import load_episode
    from worldmodel.dynamics import Denoiser

    colour_coded_episodes(tmp_path, (("train", 2, 0), ("heldout", 2, 0)), steps=14)
    labeller = train(*labelled_frames(tmp_path, "train_"), steps=120, batch=8, lr=1e-2)
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.game=minetest",
                                  "model.action_space=minetest"])
    torch.manual_seed(0)
    model = perturb_(Denoiser(cfg.model)).eval()
    eps = [load_episode(tmp_path / f"heldout_{i}") for i in range(2)]
    sem = semantic_open_loop(model, cfg, eps, labeller, context=3, worlds=2, horizon=4, batch=2, seed=0)
    assert sem["worlds"] == 2 and set(sem["labels"]) == {"model", "repeat_last", "labeller_on_real_frames"}
    assert sem["labels"]["labeller_on_real_frames"]["4"]["accuracy"] > 0.9
    assert all(0 <= v["accuracy"] <= 1 for by_h in sem["labels"].values() for v in by_h.values())
    assert set(sem["psnr_mean_mse"]) == {"1", "4"} and sem["scene_cuts"]["threshold_mad"] > 0
    a = np.zeros((2, 4, 4), np.uint8)
    assert mean_iou(a, a) == 1.0 and mean_iou(a + 1, a) == 0.0
    assert frame_change(np.zeros((3, 2, 2, 3))).shape == (2,)
    short = semantic_open_loop(model, cfg, eps, labeller, context=3, worlds=2, horizon=40, batch=2, seed=0)
    assert "skipped" in short


def test_a_minetest_checkpoint_gets_a_model_card_from_its_reports(tmp_path):
    import json

    from conftest import TINY_YAML, perturb_
    from worldmodel.checkpoint import save_checkpoint
    from worldmodel.config import load_config
    from worldmodel.dynamics import Denoiser
    from worldmodel.evaluation import model_card

    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.game=minetest",
                                  "model.action_space=minetest"])
    ckpt = save_checkpoint(tmp_path / "ckpt", perturb_(Denoiser(cfg.model)).eval(), cfg)
    assert "Not evaluated yet" in model_card.main(["--checkpoint", str(ckpt)])
    (ckpt / "eval").mkdir()
    labels = {"model": {"4": {"accuracy": 0.5, "mean_iou": 0.2}, "1": {"accuracy": 0.9, "mean_iou": 0.6}}}
    (ckpt / "eval" / "report.json").write_text(json.dumps({
        "command": "python -m worldmodel.evaluation.evaluate ...", "samples": 8, "horizons": [1],
        "results": {"all": {"1": {"model": {"psnr": 20.5}, "baseline": {"psnr": 19.0}}}},
        "semantic": {"worlds": 2, "labels": labels, "sky_boundary_within_1": {"1": 0.8},
                     "scene_cuts": {"threshold_mad": 50.0, "model_share": 0.0, "real_share": 0.0},
                     "blocked_moves": {"n": 3, "model_still_share": 1.0},
                     "labeller": str(tmp_path / "none.safetensors")}}))
    text = model_card.main(["--checkpoint", str(ckpt)])
    assert "| 1 | 20.50 | 19.00 | - | - |" in text and "0.900 / 0.600 | 0.500 / 0.200" in text
    assert (ckpt / "MODEL_CARD.md").read_text() == text
