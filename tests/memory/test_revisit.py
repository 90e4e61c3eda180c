"""The revisit benchmark (memory/revisit.py) and slow-fast training (memory/train_slowfast.py),
end to end on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import CRAFTER_SIZE, DEVICES
from memory.config import MemoryConfig
from memory.revisit import (RandomFeatures, find_revisits, format_summary, generated_revisits,
                            load_revisit_episodes, own_pose_scores, own_poses, real_prefix,
                            run_benchmark, summarize_own_pose, view_pose_accuracy)
from memory.train_slowfast import train
from worldmodel.checkpoint import load_checkpoint
from worldmodel.data.episode import EpisodeWriter
from worldmodel.game import get_game


def test_revisit_frames_are_returns_out_of_context():
    # start at 0, stay, walk out to 5, pause, walk back to 0, stay
    xs = [0, 0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0, 0]
    pos = np.stack([xs, np.zeros_like(xs)], 1)
    rv = find_revisits(pos, context=3)
    # frame 9 is at x=3, first left at frame 4: 9 - 4 = 5 > 3 -> a revisit; frame 8 (x=4, first
    # stay ended at 5) is 3 frames later: still in context.
    assert rv.frames.tolist() == [9, 10, 11, 12, 13]
    assert rv.first.tolist() == [4, 3, 2, 1, 1]
    assert rv.at_start.tolist() == [False, False, False, True, True]


# The summary keys other code and the model card read, as they were before the own-pose pairing.
REVISIT_ROW_KEYS = {f"{ref}_{m}" for ref in ("vs_real", "vs_first_visit")
                    for m in ("psnr", "ssim", "feat", "psnr_mean_mse")}
GAIN_KEYS = {"gain_vs_real_psnr_db", "gain_per_episode_db", "gain_interval90_db"}
OWN_POSE_KEYS = {"n", "vs_own_first_visit_tiles", "vs_own_first_visit_psnr", "non_grass",
                 "non_grass_generated", "real_non_grass", "pose_vs_real"}


def crafter_frame(world: np.ndarray, x: int, y: int, pad: int = 8) -> np.ndarray:
    """A 64x64 frame laid out as Crafter's: the 9x7-tile world view of a tiled `world` around
    cell (x, y) (the player's tile at row 3, column 4), a blank inventory strip below."""
    t = 7
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:7 * t, :9 * t] = world[(y - 3 + pad) * t:(y + 4 + pad) * t,
                                  (x - 4 + pad) * t:(x + 5 + pad) * t]
    return frame


def test_own_pose_pairs_the_imagined_walk_where_the_real_player_was_blocked():
    """The real player is blocked (a tree) while the actions walk right 6, pause, left 6; the
    imagined frames walk on and come back. The game's positions find no revisit; the model's own
    pose, read from its frames, pairs the way back with the way out."""
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8).repeat(7, 0).repeat(7, 1)
    acts = np.asarray([0] + [2] * 6 + [0, 0] + [1] * 6 + [0, 0])
    xs = [0, 0, 1, 2, 3, 4, 5, 6, 6, 6, 5, 4, 3, 2, 1, 0, 0, 0]  # the imagined player's cell
    gen = np.stack([crafter_frame(world, x, 0) for x in xs])
    real_rel = np.zeros((len(xs), 2), np.int64)  # the real player never left the start
    nav = get_game("crafter").navigation()
    own = own_poses(gen, acts, nav)
    assert own.tolist() == [[x, 0] for x in xs]  # one pose per frame
    assert len(generated_revisits(real_rel, 3, 3).frames) == 0
    labels = np.zeros((len(xs), 7, 9), np.uint8)
    labels[:, 0] = 5  # the top row is not grass (id 0)
    res = own_pose_scores(gen, acts, nav, real_rel, context=3, prefix=3, net=RandomFeatures(0),
                          labels=labels, grass=0)
    assert res["revisit_frames"] == list(range(10, 18))
    assert res["first_visit"] == [6, 5, 4, 3, 2, 1, 1, 1]
    assert res["vs_own_first_visit"]["psnr"] == [100.0] * 8  # the imagined world kept its places
    assert res["vs_own_first_visit"]["tiles"] == [1.0] * 8
    assert res["non_grass"] == pytest.approx([1 / 7] * 8)
    assert res["pose_vs_real"] == pytest.approx(3 / 15)  # frames 15-17 of the generated 3-17
    with pytest.raises(ValueError, match="one action per frame"):
        own_poses(gen, acts[:-1], nav)
    tiny = own_pose_scores(gen[:, :16, :16], acts, nav, real_rel, 3, 3, RandomFeatures(0),
                           None, None)
    assert tiny is None  # no world view to track: skipped, not guessed


def test_view_pose_accuracy_splits_real_frames_from_generated():
    poses = [None, None, [0, 0], [0, 0], [1, 0], [0, 0]]  # from frame context - 1 = 2
    real_rel = np.asarray([[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [1, 0]])
    pooled, real, generated = view_pose_accuracy(poses, real_rel, context=3, prefix=4)
    assert (pooled, real, generated) == (0.5, 1.0, 0.0)


def test_own_pose_summary_pools_frames_and_weighs_episodes_by_generated_frames():
    def episode(frames, prefix, own, non_grass_generated, real_non_grass):
        return {"frames": frames, "real_prefix": prefix, "real_non_grass": real_non_grass,
                "modes": {"off": {"own_pose": own, "non_grass_generated": non_grass_generated}}}

    a = {"revisit_frames": [5, 6], "first_visit": [1, 1], "non_grass": [0.5, 0.3],
         "vs_own_first_visit": {"psnr": [20.0, 30.0], "tiles": [1.0, 0.5]}, "pose_vs_real": 1.0}
    b = {"revisit_frames": [7], "first_visit": [2], "non_grass": [0.1],
         "vs_own_first_visit": {"psnr": [10.0], "tiles": [0.0]}, "pose_vs_real": 0.0}
    s = summarize_own_pose([episode(13, 3, a, 0.4, 0.6), episode(33, 3, b, 0.1, 0.3)], ["off"])
    row = s["off"]
    assert set(row) == OWN_POSE_KEYS and row["n"] == 3
    assert row["vs_own_first_visit_psnr"] == pytest.approx(20.0)
    assert row["vs_own_first_visit_tiles"] == pytest.approx(0.5)
    assert row["non_grass"] == pytest.approx(0.3)
    assert row["non_grass_generated"] == pytest.approx((0.4 * 10 + 0.1 * 30) / 40)
    assert row["real_non_grass"] == pytest.approx((0.6 * 10 + 0.3 * 30) / 40)
    assert row["pose_vs_real"] == pytest.approx(10 / 40)
    untracked = summarize_own_pose([episode(13, 3, None, None, None)], ["off"])["off"]
    assert untracked["n"] == 0 and all(untracked[k] is None for k in OWN_POSE_KEYS - {"n"})


def write_trip(path, size: int = 16) -> None:
    """A scrolling world: the view is a window of a fixed wide image at the player's x."""
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (size // 4, 6 + size // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    moves = [0, 2, 2, 2, 2, 2, 0, 1, 1, 1, 1, 1, 0, 0]  # noop, right x5, noop, left x5, noops
    x = 0
    with EpisodeWriter(path, {"game": "synthetic", "action_space": "crafter", "seed": 0, "fps": 10,
                              "start_pos": [0, 0]}) as w:
        w.add_frame(world[:, 4 * x:4 * x + size])
        for a in moves:
            x += {2: 1, 1: -1}.get(a, 0)
            w.add_step(a, world[:, 4 * x:4 * x + size], pos=[x, 0])


def test_benchmark_end_to_end(tiny_cfg, perturbed_model, tmp_path):
    for i in range(2):
        write_trip(tmp_path / "data" / f"revisit_{i}")
    model = perturbed_model(tiny_cfg)
    context = tiny_cfg.data.window - 1
    episodes = load_revisit_episodes(tmp_path / "data", samples=1, context=context)
    variants = {"on": MemoryConfig(rank=4, window=4, buffer_frames=8)}
    report = run_benchmark(model, tiny_cfg, episodes, variants, out=tmp_path / "out", log=lambda s: None)
    summary = report["summary"]["revisit"]
    assert summary["n"] > 0 and set(summary) >= {"off", "on", "n", "real_consistency_psnr"}
    assert summary["real_consistency_psnr"] == 100.0  # a static synthetic world: exact revisits
    keys = {"vs_real_psnr", "vs_first_visit_ssim", "vs_real_feat", "gain_vs_real_psnr_db"}
    assert keys <= set(summary["on"])
    assert set(summary["on"]) == REVISIT_ROW_KEYS | GAIN_KEYS | {"gain_over_control_db"}
    assert set(summary["off"]) == REVISIT_ROW_KEYS
    # 16 px frames hold no Crafter world view: the own-pose pairing is skipped, its keys kept
    assert {"revisit", "at_start", "control", "pose_accuracy", "pose_accuracy_real",
            "pose_accuracy_generated", "own_pose"} == set(report["summary"])
    own = report["summary"]["own_pose"]
    assert set(own) == {"off", "on"} and all(own[m]["n"] == 0 for m in own)
    assert all(r["modes"][m]["own_pose"] is None for r in report["per_episode"] for m in own)
    assert "own-pose revisits" in format_summary(report["summary"])
    saved = json.loads((tmp_path / "out" / "revisit.json").read_text())
    assert saved["episodes"] == 1
    assert (tmp_path / "out" / "revisit_psnr.png").stat().st_size > 0
    assert (tmp_path / "out" / "revisit_strip.png").stat().st_size > 0


@pytest.mark.parametrize("device", DEVICES)
def test_trip_warmup_gives_the_real_trip_out_and_scores_only_the_way_back(tiny_cfg, perturbed_model,
                                                                         tmp_path, device):
    write_trip(tmp_path / "data" / "revisit_0")
    model = perturbed_model(tiny_cfg).to(device)
    context = tiny_cfg.data.window - 1
    ep = load_revisit_episodes(tmp_path / "data", samples=1, context=context)[0]
    # moves made frames 2..6 (out) and 8..12 (back): the first frame of the way back is 8
    moves = get_game("crafter").navigation().moves
    assert real_prefix(ep, context, "trip", moves) == 8
    assert real_prefix(ep, context, "context", moves) == context
    variants = {"on": MemoryConfig(rank=4, window=4, buffer_frames=8)}
    report = run_benchmark(model, tiny_cfg, [ep], variants, log=lambda s: None, warmup="trip")
    res = report["per_episode"][0]
    assert report["warmup"] == "trip" and res["real_prefix"] == 8
    assert res["revisit_frames"] and min(res["revisit_frames"]) >= 8
    for mode in ("off", "on"):
        curve = res["modes"][mode]["psnr_curve"]
        assert all(v == 100.0 for v in curve[:8])  # the trip out is the real game
        assert min(curve[8:]) < 100.0  # the way back is generated
    with pytest.raises(ValueError, match="warmup"):
        real_prefix(ep, context, "all", moves)


@pytest.mark.parametrize("device", DEVICES)
def test_probe_measures_the_way_back_before_and_after_learning_the_trip_out(tiny_cfg,
                                                                           perturbed_model, tmp_path,
                                                                           device):
    from memory.probe import probe_episode

    write_trip(tmp_path / "data" / "revisit_0")
    context = tiny_cfg.data.window - 1
    ep = load_revisit_episodes(tmp_path / "data", samples=1, context=context)[0]
    mcfg = MemoryConfig(rank=4, lr=1e-2, window=4, buffer_frames=8, update_every=1)
    row = probe_episode(perturbed_model(tiny_cfg).to(device), tiny_cfg, mcfg, ep, reps=2)
    assert row["real_prefix"] == 8 and row["updates"] == 8 - context
    assert row["way_back_before"] > 0 and np.isfinite(row["way_back_after"])
    assert row["way_back_after"] != row["way_back_before"]  # the adapter learned something
    again = probe_episode(perturbed_model(tiny_cfg).to(device), tiny_cfg, mcfg, ep, reps=2)
    assert again["way_back_after"] == row["way_back_after"]  # seeded: settings compare exactly


def test_probe_ceiling_trains_the_trip_out_for_each_step_count(tiny_cfg, perturbed_model, tmp_path,
                                                               capsys):
    from memory.probe import ceiling_episode, main

    write_trip(tmp_path / "data" / "revisit_0")
    context = tiny_cfg.data.window - 1
    ep = load_revisit_episodes(tmp_path / "data", samples=1, context=context)[0]
    mcfg = MemoryConfig(rank=4, lr=1e-2, window=4, buffer_frames=8)
    row = ceiling_episode(perturbed_model(tiny_cfg), tiny_cfg, mcfg, ep, [0, 3], reps=2)
    assert row["steps"] == [0, 3] and len(row["change"]) == 2
    assert row["change"][0] == 0.0  # no step: the base's own loss, the same noise
    assert row["change"][1] != 0.0
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(tmp_path / "none"), "--ceiling", "ten"])
    assert exit_.value.code == 2 and "--ceiling takes step counts" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_slowfast_training_writes_a_plain_checkpoint(tiny_config, crafter_episodes, tmp_path,
                                                     device):
    cfg = tiny_config(f"data.train={crafter_episodes}", size=CRAFTER_SIZE)
    torch.manual_seed(0)
    from worldmodel.checkpoint import save_checkpoint
    from worldmodel.dynamics import Denoiser

    save_checkpoint(tmp_path / "init", Denoiser(cfg.model), cfg)
    mcfg = MemoryConfig(rank=2, window=4, buffer_frames=8)
    for plain, objective in ((False, "chunk"), (True, "chunk"), (False, "train")):
        out = tmp_path / f"{plain}_{objective}"
        info = train(cfg, mcfg, out, str(tmp_path / "init"), minutes=5, max_episodes=3,
                     segment=10, chunk=3, accum=1, plain=plain, device=torch.device(device),
                     log_every=1, max_steps=2, objective=objective)
        assert info["objective"] == objective
        assert info["slowfast_episodes"] == 2 and info["slowfast_chunks"] == 4
        model, _ = load_checkpoint(out)  # no adapter keys: a normal checkpoint
        init, _ = load_checkpoint(tmp_path / "init")
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
        assert changed, "the base did not learn"
        rows = [json.loads(line) for line in (out / "slowfast_log.jsonl").read_text().splitlines()]
        assert rows and ("memory_gain" in rows[0]) == (not plain)
    with pytest.raises(ValueError, match="objective"):
        train(cfg, mcfg, tmp_path / "bad", None, minutes=1, max_episodes=1, segment=10, chunk=3,
              accum=1, plain=True, device=torch.device("cpu"), objective="next")


@pytest.mark.parametrize("device", DEVICES)
def test_fps_harness_runs(tiny_cfg, perturbed_model, device):
    from memory.fps import measure
    from memory_fixtures import scroll_sequence

    frames, _ = scroll_sequence(tiny_cfg, n=3)
    res = measure(perturbed_model(tiny_cfg).to(device), tiny_cfg,
                  MemoryConfig(rank=2, window=4, buffer_frames=8, worker_nice=0,
                               reverse_prob=0.5, reverse_still=0.01),  # reversed windows too
                  frames.to(device), 3, 2)
    assert res["fps_off"] > 0 and res["fps_on"] > 0 and len(res["fps_on_rounds"]) == 2
    # the long-session trace: one RSS and mean-update figure per memory-on block
    assert len(res["rss_mb_rounds"]) == len(res["update_ms_rounds"]) == 2
    assert res["frames_on"] == 6 and all(ms >= 0 for ms in res["update_ms_rounds"])


def test_benchmark_scores_tile_agreement_on_labelled_trips(labelled_crafter, tiny_config,
                                                          perturbed_model, tmp_path):
    from games.crafter.tiles import TileClassifier

    cfg = tiny_config(size=64)
    model = perturbed_model(cfg)
    from worldmodel.data import load_episode

    episodes = [load_episode(p) for p in sorted(labelled_crafter.root.glob("revisit_*"))]
    assert len(episodes) == 2 and all(ep.labels is not None for ep in episodes)
    tiles = TileClassifier.load(labelled_crafter.bank)
    variants = {"on": MemoryConfig(rank=4, window=4, buffer_frames=8)}
    report = run_benchmark(model, cfg, episodes, variants, log=lambda s: None, tiles=tiles)
    s = report["summary"]["revisit"]
    for mode in ("off", "on"):
        assert 0 <= s[mode]["vs_real_tiles"] <= 1 and 0 <= s[mode]["vs_first_visit_tiles"] <= 1
        assert s[mode]["vs_real_psnr_mean_mse"] <= s[mode]["vs_real_psnr"] + 1e-9  # Jensen
    assert len(s["on"]["gain_per_episode_db"]) == 2
    lo, hi = s["on"]["gain_interval90_db"]
    assert lo <= hi
    # The real game agrees with itself on most tiles at the same place (animals move, light changes).
    per = report["per_episode"][0]["real_consistency"]["tiles"]
    assert np.mean(per) > 0.8
    assert set(s["on"]) == (REVISIT_ROW_KEYS | {"vs_real_tiles", "vs_first_visit_tiles"} | GAIN_KEYS
                            | {"gain_over_control_db"})
    # Paired by the model's own pose, on 64 px Crafter frames with a tile classifier: every value.
    own = report["summary"]["own_pose"]
    for mode in ("off", "on"):
        row = own[mode]
        assert set(row) == OWN_POSE_KEYS
        for key in ("non_grass_generated", "real_non_grass", "pose_vs_real"):
            assert 0 <= row[key] <= 1
        assert row["n"] == sum(len(r["modes"][mode]["own_pose"]["revisit_frames"])
                               for r in report["per_episode"])
    for r in report["per_episode"]:
        assert 0 <= r["real_non_grass"] <= 1
        for mode in ("off", "on"):
            block = r["modes"][mode]["own_pose"]
            assert len(block["non_grass"]) == len(block["first_visit"]) == len(block["revisit_frames"])
            assert all(j >= r["real_prefix"] for j in block["revisit_frames"])
    assert report["summary"]["pose_accuracy_real"] == report["summary"]["pose_accuracy"] == {}
