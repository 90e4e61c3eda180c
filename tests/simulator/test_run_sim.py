"""The command line: headless record, a record killed mid-way, replay, no display, help."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["SDL_VIDEODRIVER"] = "dummy"
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "memory"))  # saved_variants

import pygame  # noqa: E402

import run_sim  # noqa: E402
from simulator.replay import ReplayApp  # noqa: E402
from simulator.window import Window  # noqa: E402
from games.crafter.actions import CRAFTER_ACTIONS  # noqa: E402
from worldmodel.checkpoint import save_checkpoint  # noqa: E402
from worldmodel.data.episode import EpisodeError, EpisodeWriter, load_episode  # noqa: E402
from worldmodel.data.video import video_frames  # noqa: E402
from conftest import full_disk_after, random_episode_arrays, tiny_perturbed, write_episode

torch.set_num_threads(1)
SIZE = 16
ACTIONS = ["move_left", "move_left", "do", "noop", "move_up"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint, a synthetic start episode and an actions file."""
    root = tmp_path_factory.mktemp("cli")
    model, cfg = tiny_perturbed(SIZE)
    save_checkpoint(root / "ckpt", model, cfg)
    frames = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    with EpisodeWriter(root / "start", {"game": "crafter", "action_space": "crafter", "seed": 0}) as w:
        w.add_frame(frames[0])
        for f in frames[1:]:
            w.add_step(3, f)
    (root / "actions.txt").write_text("\n".join(ACTIONS) + "\n")
    return {"ckpt": root / "ckpt", "start": root / "start", "actions": root / "actions.txt",
            "root": root}


def cli_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_headless_record_writes_a_loadable_episode_of_n_frames(files, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_sim.main(["record", "--checkpoint", str(files["ckpt"]), "--actions",
                       str(files["actions"]), "--out", str(out), "--frames", "12",
                       "--start", str(files["start"]), "--chunk", "2"])
    assert rc == 0
    assert "record" in capsys.readouterr().err  # the progress bar
    ep = load_episode(out)
    assert len(ep) == 12 and len(ep.frames) == 13
    cycled = [CRAFTER_ACTIONS.index(a) for a in ACTIONS] * 3
    assert ep.actions.tolist() == cycled[:12]
    context_len = 3  # configs/tiny.yaml: data.window 4 -> 3 context frames
    np.testing.assert_array_equal(ep.frames[0], load_episode(files["start"]).frames[context_len - 1])
    assert ep.meta["complete"] and ep.meta["source"] == "model"
    assert ep.meta["settings"]["chunk"] == 2 and ep.meta["checkpoint"] == str(files["ckpt"])
    assert (out / "video.mp4").stat().st_size > 0


def test_record_with_memory_takes_the_memory_section_of_a_yaml(files, tmp_path, capsys):
    (tmp_path / "mem.yaml").write_text("memory:\n  rank: 4\n  update_every: 2\n")
    args = ["record", "--checkpoint", str(files["ckpt"]), "--actions", str(files["actions"]),
            "--frames", "6", "--start", str(files["start"]), "--memory", "--no-progress"]
    rc = run_sim.main([*args, "--out", str(tmp_path / "out"), "--memory-config",
                       str(tmp_path / "mem.yaml")])
    assert rc == 0
    settings = load_episode(tmp_path / "out").meta["settings"]
    assert settings["memory"] is True
    assert settings["memory_config"]["rank"] == 4 and settings["memory_config"]["update_every"] == 2
    (tmp_path / "bad.yaml").write_text("memory:\n  rnak: 4\n")
    rc = run_sim.main([*args, "--out", str(tmp_path / "out2"), "--memory-config",
                       str(tmp_path / "bad.yaml")])
    assert rc != 0 and "memory.rnak" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_threads_sets_the_frame_loops_torch_threads(files, tmp_path, capsys):
    args = ["record", "--checkpoint", str(files["ckpt"]), "--actions", str(files["actions"]),
            "--frames", "2", "--start", str(files["start"]), "--no-progress"]
    before = torch.get_num_threads()
    try:
        assert run_sim.main([*args, "--out", str(tmp_path / "a"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert run_sim.main([*args, "--out", str(tmp_path / "b"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_unknown_action_name_lists_valid_names(files, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('["move_left", "jump"]')
    rc = run_sim.main(["record", "--checkpoint", str(files["ckpt"]), "--actions",
                       str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown action 'jump'" in err and "make_iron_sword" in err


def test_missing_default_checkpoint_is_a_clear_error(monkeypatch, tmp_path, capsys):
    import simulator.session

    monkeypatch.setattr(simulator.session, "DEFAULT_CHECKPOINT", tmp_path / "nothing")
    assert run_sim.main([]) == 2
    err = capsys.readouterr().err
    assert "no model checkpoint" in err and "--checkpoint" in err


def test_killed_recording_loads_back_and_replays(files, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "run_sim.py", "record", "--checkpoint", str(files["ckpt"]), "--actions",
         str(files["actions"]), "--out", str(out), "--frames", "100000", "--start",
         str(files["start"]), "--no-progress"],
        cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        n = 0
        while n < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                n = len(load_episode(out).frames)
            except (EpisodeError, FileNotFoundError):
                pass
        assert n >= 8, proc.stderr.read().decode() if proc.poll() is not None else "too slow"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    ep = load_episode(out)
    assert len(ep.frames) >= 8 and not ep.meta["complete"]
    cycled = np.resize([CRAFTER_ACTIONS.index(a) for a in ACTIONS], len(ep))
    assert ep.actions.tolist() == cycled.tolist()

    # replay reads it: play, pause, scrub, jump
    app = ReplayApp(ep, Window(), fps=0, scale=2)
    pygame.event.clear()

    def shown() -> np.ndarray:
        pix = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
        return pix[: SIZE * 2: 2, : SIZE * 2: 2]

    def key(name: str, down: bool = True) -> None:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP,
                                             key=pygame.key.key_code(name)))

    try:
        app.tick()
        app.tick()
        assert app.t == 2 and app.playing
        np.testing.assert_array_equal(shown(), ep.frames[2])
        assert app.action_name(2) == f"{ACTIONS[1]} ({CRAFTER_ACTIONS.index(ACTIONS[1])})"
        key("space")
        app.tick()
        app.tick()
        assert app.t == 2 and not app.playing
        key("right")
        key("right", down=False)
        app.tick()
        assert app.t == 3
        key("left")
        key("left", down=False)
        key("left")
        key("left", down=False)
        app.tick()
        assert app.t == 1
        key("end")
        app.tick()
        assert app.t == app.last == len(ep.frames) - 1
        np.testing.assert_array_equal(shown(), ep.frames[-1])
        key("home")
        key("n")
        app.tick()
        assert app.t == 1
        hud = " ".join(t for line in app.hud() for t, _ in line)
        assert "frame 1/" in hud and ACTIONS[0] in hud and "incomplete" in hud
        key("escape")
        assert app.tick() is False
    finally:
        app.window.close()
    assert video_frames(out / "video.mp4") == 0  # the kill left it without an index
    assert run_sim.main(["replay", str(out), "--max-frames", "3", "--fps", "0"]) == 0
    assert video_frames(out / "video.mp4") == len(ep.frames)  # replay rebuilt it


def record_args(files, out, *extra: str) -> list[str]:
    return ["record", "--checkpoint", str(files["ckpt"]), "--actions", str(files["actions"]),
            "--out", str(out), "--start", str(files["start"]), "--no-progress", *extra]


def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the folder was checked")


def refuse_writes_under(monkeypatch, root: Path, err: int) -> None:
    """os.open fails with `err` for paths under `root` (root ignores chmod: fake the filesystem)."""
    real = os.open

    def fake(path, *args, **kwargs):
        if str(path).startswith(str(root)):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


@pytest.mark.parametrize("case,fragment", [("under_a_file", "is a file, not a folder"),
                                           ("permission", "Permission denied"),
                                           ("read_only", "Read-only file system"),
                                           ("taken", "exists and is not empty")])
def test_record_into_an_unwritable_folder_is_one_line_before_the_model_loads(
        files, tmp_path, monkeypatch, capsys, case, fragment):
    out = tmp_path / "ro" / "rec"
    if case == "under_a_file":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "sub"
    elif case == "taken":
        out.mkdir(parents=True)
        (out / "x").touch()
    else:
        (tmp_path / "ro").mkdir()
        refuse_writes_under(monkeypatch, tmp_path / "ro",
                            errno.EACCES if case == "permission" else errno.EROFS)
    monkeypatch.setattr(run_sim, "load_session", no_model)
    assert run_sim.main(record_args(files, out, "--frames", "3")) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() or case == "taken"


def test_record_on_a_full_disk_keeps_the_frames_and_says_why(files, tmp_path, capsys):
    out = tmp_path / "full"
    with pytest.MonkeyPatch.context() as mp:
        full_disk_after(mp, 4)
        assert run_sim.main(record_args(files, out, "--frames", "10")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"recording to {out} stopped after 4 frames (kept): disk full" in err
    ep = load_episode(out)
    assert len(ep.frames) == 4 and not ep.meta["complete"]
    assert ep.meta["stopped"].startswith("disk full: OSError: [Errno 28]")
    assert sorted(p.name for p in out.iterdir()) == ["actions.jsonl", "frames.u8", "meta.json",
                                                     "video.mp4"]  # no stray tmp file
    assert video_frames(out / "video.mp4") == 4  # closed properly: it plays


def test_export_writes_a_playable_video_from_the_frames(tmp_path, capsys):
    frames, actions = random_episode_arrays(steps=5, size=SIZE)
    path = write_episode(tmp_path / "ep", frames, actions)  # no video.mp4
    assert run_sim.main(["export", str(path)]) == 0
    assert "6 frames" in capsys.readouterr().out
    assert video_frames(path / "video.mp4") == 6
    assert run_sim.main(["export", str(tmp_path / "nothing")]) == 2
    assert "not an episode" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["abc", [0, 0]])
def test_replay_of_a_bad_frame_size_is_one_line(tmp_path, capsys, size):
    frames, actions = random_episode_arrays(steps=2, size=SIZE)
    path = write_episode(tmp_path / "ep", frames, actions)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps(dict(meta, frame_size=size)))
    assert run_sim.main(["replay", str(path), "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "meta.json: frame_size must be" in err and err.count("\n") == 1


def test_a_start_episode_of_another_frame_size_is_one_line(files, tmp_path, capsys):
    frames, actions = random_episode_arrays(steps=3, size=8)
    start = write_episode(tmp_path / "small", frames, actions)
    args = record_args(files, tmp_path / "out", "--frames", "2")
    args[args.index("--start") + 1] = str(start)
    assert run_sim.main(args) == 2
    assert "holds 8x8 frames; the model takes 16x16" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(files, tmp_path, monkeypatch):
    import simulator.recorder

    def buggy(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(simulator.recorder, "record_rollout", buggy)
    with pytest.raises(ValueError, match="a bug"):
        run_sim.main(record_args(files, tmp_path / "out", "--frames", "2"))


def test_no_display_prints_a_message_and_exits_2(files):
    env = cli_env()
    for var in ("DISPLAY", "SDL_VIDEODRIVER", "WAYLAND_DISPLAY"):
        env.pop(var, None)
    res = subprocess.run([sys.executable, "run_sim.py", "--checkpoint", str(files["ckpt"])],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "no display" in res.stderr and "run_sim.py record" in res.stderr
    assert "Traceback" not in res.stderr


def test_help_documents_play_record_and_replay(capsys):
    with pytest.raises(SystemExit) as e:
        run_sim.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--checkpoint", "--start", "--side-by-side", "--record", "--scale", "--fps",
                "--seed", "--steps", "--device", "--stats", "run_sim.py record", "--actions",
                "--chunk", "run_sim.py replay", "--resume-memory", "--memory-dir", "F5", "F9"):
        assert opt in out, opt


@pytest.fixture(scope="module")
def saved_world(tmp_path_factory) -> dict[str, Path]:
    """A tiny 64x64 view-memory checkpoint and a world saved from it after a few steps."""
    from conftest import TINY_YAML, perturb_
    from simulator.session import WorldSession
    from worldmodel.config import load_config
    from worldmodel.dynamics import Denoiser

    root = tmp_path_factory.mktemp("world")
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.shift_kernel=17",
                                  "model.committed_move=7", "model.view_memory=true"])
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", perturb_(Denoiser(cfg.model)).eval(), cfg)
    with WorldSession.load(root / "ckpt", device="cpu") as sess:
        sess.reset(seed=0)
        for a in ["move_right", "move_right", "move_down"]:
            sess.step(a)
        sess.save_memory(root / "world")
        frame = sess.frame[0].copy()
    np.save(root / "frame.npy", frame)
    return {"ckpt": root / "ckpt", "world": root / "world", "frame": root / "frame.npy"}


def test_resume_memory_starts_play_in_the_saved_world_with_memory_on(saved_world, tmp_path,
                                                                     monkeypatch, capsys):
    from simulator.play import PlayApp

    seen = {}
    real_run = PlayApp.run

    def run(self, max_frames=None):
        seen.update(memory=self.session.memory_enabled, steps=self.session.steps,
                    frame=self.frame.copy(), memory_dir=self.memory_dir)
        real_run(self, max_frames)

    monkeypatch.setattr(PlayApp, "run", run)
    rc = run_sim.main(["--checkpoint", str(saved_world["ckpt"]), "--device", "cpu",
                       "--resume-memory", str(saved_world["world"]), "--max-frames", "2",
                       "--fps", "0", "--scale", "1", "--recordings", str(tmp_path / "rec"),
                       "--memory-dir", str(tmp_path / "saves")])
    assert rc == 0, capsys.readouterr().err
    assert seen["memory"] is True and seen["steps"] == 3
    np.testing.assert_array_equal(seen["frame"], np.load(saved_world["frame"]))
    assert seen["memory_dir"] == tmp_path / "saves"
    assert "resuming the world saved in" in capsys.readouterr().out


@pytest.mark.parametrize("case,fragment", [("missing", "not found"), ("corrupt", "corrupt"),
                                           ("other_model", "another model")])
def test_resume_memory_of_a_bad_folder_is_one_line_and_exit_2(files, saved_world, tmp_path,
                                                              capsys, case, fragment):
    folder = tmp_path / "world"
    if case == "corrupt":
        folder.mkdir()
        (folder / "memory.json").write_text("{not json")
    elif case == "other_model":
        folder = saved_world["world"]  # saved with the 64x64 view-memory model
    rc = run_sim.main(["--checkpoint", str(files["ckpt"]), "--device", "cpu", "--resume-memory",
                       str(folder), "--max-frames", "1", "--fps", "0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: --resume-memory") and fragment in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("variant", sorted(__import__("saved_variants").VARIANTS))
def test_resume_memory_of_a_corrupt_save_is_one_line_and_exit_2(saved_world, tmp_path, capsys,
                                                                variant):
    from saved_variants import corrupt_copy

    folder = corrupt_copy(saved_world["world"], tmp_path / "world", variant)
    rc = run_sim.main(["--checkpoint", str(saved_world["ckpt"]), "--device", "cpu",
                       "--resume-memory", str(folder), "--max-frames", "1", "--fps", "0",
                       "--recordings", str(tmp_path / "rec")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: --resume-memory") and err.count("\n") == 1
    assert "Traceback" not in err


def test_record_when_the_whole_disk_fills_still_says_stopped_in_meta_json(files, tmp_path,
                                                                           capsys):
    from conftest import whole_disk_full_after

    out = tmp_path / "full"
    with pytest.MonkeyPatch.context() as mp:
        whole_disk_full_after(mp, 4)
        assert run_sim.main(record_args(files, out, "--frames", "10")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk full" in err and "Traceback" not in err
    ep = load_episode(out)
    assert len(ep.frames) == 4 and not ep.meta["complete"]
    assert ep.meta["stopped"].startswith("disk full: OSError: [Errno 28]")


@pytest.mark.parametrize("flags, on", [([], True), (["--no-memory"], False), (["--memory"], True)])
def test_play_starts_with_the_memory_of_a_model_that_has_one(saved_world, tmp_path,
                                                             monkeypatch, flags, on):
    """The world that holds is what a new user gets: a view-memory model plays with it on,
    `--no-memory` (or m) turns it off; a model without one starts with it off."""
    from simulator.play import PlayApp

    seen = []
    real_run = PlayApp.run

    def run(self, max_frames=None):
        seen.append(self.session.memory_enabled)
        real_run(self, max_frames)

    monkeypatch.setattr(PlayApp, "run", run)
    common = ["--device", "cpu", "--max-frames", "1", "--fps", "0", "--scale", "1", "--seed", "0",
              "--recordings", str(tmp_path / "rec")]
    assert run_sim.main(["--checkpoint", str(saved_world["ckpt"]), *common, *flags]) == 0
    assert seen == [on]
    if not flags:  # a model without a view memory: off unless asked for
        from conftest import TINY_YAML, perturb_
        from worldmodel.config import load_config
        from worldmodel.dynamics import Denoiser

        cfg = load_config(TINY_YAML, ["model.frame_size=64"])
        plain = save_checkpoint(tmp_path / "plain", perturb_(Denoiser(cfg.model)).eval(), cfg)
        assert run_sim.main(["--checkpoint", str(plain), *common]) == 0
        assert seen == [on, False]
