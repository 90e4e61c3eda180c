"""Recording from the window and from files: what was pressed and shown is what loads back;
a failing disk stops the recording, never the game."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["SDL_VIDEODRIVER"] = "dummy"
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pygame  # noqa: E402

from simulator.recorder import Recorder, Start, fresh_path, load_actions  # noqa: E402
from simulator.session import WorldSession  # noqa: E402
from simulator.play import PlayApp  # noqa: E402
from simulator.window import Window  # noqa: E402
from games.crafter.actions import CRAFTER_ACTIONS  # noqa: E402
from worldmodel.actions import ActionError, get_action_space  # noqa: E402
from worldmodel.data.episode import EpisodeWriter, load_episode  # noqa: E402
from conftest import tiny_perturbed, whole_disk_full_after

torch.set_num_threads(1)
SIZE = 16
SPACE = get_action_space("crafter")


def tiny_session() -> WorldSession:
    return WorldSession(*tiny_perturbed(SIZE), checkpoint="tiny")


def start_episode(path: Path) -> Path:
    frames = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    with EpisodeWriter(path, {"game": "crafter", "action_space": "crafter", "seed": 0}) as w:
        w.add_frame(frames[0])
        for f in frames[1:]:
            w.add_step(0, f)
    return path


def key(name: str, down: bool = True) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP,
                                         key=pygame.key.key_code(name)))


def make_app(tmp_path: Path, **kw) -> PlayApp:
    start = Start(episodes=[start_episode(tmp_path / "start")])
    app = PlayApp(tiny_session(), start, Window(), fps=10, scale=2, recordings=tmp_path / "rec",
                  screenshots=tmp_path / "shots", **kw)
    pygame.event.clear()
    return app


def shown(app) -> np.ndarray:
    pix = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
    return pix[: SIZE * 2: 2, : SIZE * 2: 2].copy()


def test_recording_holds_the_keys_pressed_and_the_frames_shown(tmp_path):
    app = make_app(tmp_path)
    try:
        displayed = [app.frame.copy()]  # on screen when recording starts
        key("c")
        pressed = []
        for name in ["a", "a", None, "space", "2", "p", None, "right"]:
            if name:
                key(name)
            app.tick()
            if name:
                key(name, down=False)
            displayed.append(shown(app))
            pressed.append(CRAFTER_ACTIONS.index(app.keys[name]) if name else 0)
        assert app.recorder.active
        key("c")  # stop
        app.tick()
        assert not app.recorder.active
    finally:
        app.close()
    (path,) = (tmp_path / "rec").iterdir()
    ep = load_episode(path)
    assert ep.actions.tolist() == pressed
    np.testing.assert_array_equal(ep.frames, np.stack(displayed))
    assert ep.meta["complete"] and ep.meta["source"] == "model" and ep.meta["checkpoint"] == "tiny"
    assert ep.meta["fps"] == 10 and ep.meta["settings"]["scale"] == 2
    assert (path / "video.mp4").stat().st_size > 0


def test_record_flag_records_from_the_start_and_reset_continues_in_a_new_episode(tmp_path):
    app = make_app(tmp_path, record=tmp_path / "mine")
    try:
        for _ in range(3):
            app.tick()
        key("backspace")
        app.tick()
        app.tick()
        assert app.recorder.path == tmp_path / "mine-2"
    finally:
        app.close()  # closing finalizes
    first, second = load_episode(tmp_path / "mine"), load_episode(tmp_path / "mine-2")
    assert len(first) == 3 and first.meta["complete"]
    assert len(second) == 2 and second.meta["complete"]  # the reset's tick steps too


def test_unwritable_folder_is_reported_and_the_game_goes_on(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    app = make_app(tmp_path, record=tmp_path / "file" / "rec")
    try:
        assert not app.recorder.active and "cannot record" in app.recorder.error
        app.tick()
        app.tick()
        assert app.session.steps == 2
        hud = " ".join(t for line in app.hud() for t, _ in line)
        assert "not recording" in hud or "cannot record" in hud
    finally:
        app.close()


def test_full_disk_mid_recording_stops_recording_not_playing(tmp_path, capsys):
    app = make_app(tmp_path)
    try:
        key("c")
        app.tick()
        app.tick()
        writer = app.recorder.writer
        writer._frames.close()
        writer._frames = open("/dev/full", "wb", buffering=0)  # every write: ENOSPC
        app.tick()
        assert not app.recorder.active and "No space left" in app.recorder.error
        app.tick()
        assert app.session.steps == 4
    finally:
        app.close()
    assert "still playing" in capsys.readouterr().err
    (path,) = (tmp_path / "rec").iterdir()
    ep = load_episode(path)
    assert len(ep) == 2  # what was written before the failure loads
    assert not ep.meta["complete"] and "No space left" in ep.meta["stopped"]


def test_fresh_path(tmp_path):
    assert fresh_path(tmp_path / "a") == tmp_path / "a"
    (tmp_path / "a").mkdir()
    assert fresh_path(tmp_path / "a") == tmp_path / "a"  # empty folder: reuse
    (tmp_path / "a" / "x").touch()
    assert fresh_path(tmp_path / "a") == tmp_path / "a-2"


def test_recorder_start_stop_outside_the_window(tmp_path):
    rec = Recorder(fps=5, video=False, log=lambda m: None)
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    assert rec.start(tmp_path / "r", frame, {"seed": 1})
    assert rec.add_step(3, frame + 1)
    assert rec.stop() == tmp_path / "r"
    ep = load_episode(tmp_path / "r")
    assert ep.actions.tolist() == [3] and ep.meta["fps"] == 5 and ep.meta["source"] == "model"
    assert not rec.add_step(1, frame)  # not recording: a no-op


@pytest.mark.parametrize("text,expected", [
    ('[1, "move_right", 0]', [1, 2, 0]),
    ("move_left\n# a comment\n\n5  # do\nnoop\n", [1, 5, 0]),
    ("3\n4\n", [3, 4]),
])
def test_load_actions_formats(tmp_path, text, expected):
    (tmp_path / "acts").write_text(text)
    assert load_actions(tmp_path / "acts", SPACE) == expected


@pytest.mark.parametrize("text,match", [
    ("move_left\njump\n", "line 2: unknown action 'jump'; valid names: noop, move_left"),
    ('["fly"]', "unknown action 'fly'"),
    ("17\n", "out of range"),
    ("# nothing\n", "holds no actions"),
    ('[1.5]', "not an action name or index"),
])
def test_load_actions_errors(tmp_path, text, match):
    (tmp_path / "acts").write_text(text)
    with pytest.raises(ActionError, match=match):
        load_actions(tmp_path / "acts", SPACE)


@pytest.mark.parametrize("data,match", [
    (b"\x89PNG\r\n\x1a\n\x00\xff", "acts is not a text file of actions"),
    ("noop\n\u00b2\n".encode(), "acts line 2: unknown action '\u00b2'"),
    ("noop\n\u0663\n".encode(), "acts line 2: unknown action '\u0663'"),  # Arabic-Indic 3
    ("noop\n\u0663\u0663\n".encode(), "acts line 2: unknown action"),
    (b"noop\n" + b"9" * 5000 + b"\n", "acts line 2: unknown action"),
    (b"[1, " + b"9" * 5000 + b"]", "acts is not a valid JSON list"),
    (b"[" * 100_000, "acts is not a valid JSON list"),
    ("[\"\u0663\"]".encode(), "acts item 0: unknown action"),
    (b"noop\x0bnoop\nfly\n", "acts line 1: unknown action"),  # lines as editors count them
])
def test_load_actions_accepts_ascii_indices_and_names_only_and_names_file_and_line(
        tmp_path, data, match):
    (tmp_path / "acts").write_bytes(data)
    with pytest.raises(ActionError, match=match) as e:
        load_actions(tmp_path / "acts", SPACE)
    assert str(tmp_path / "acts") in str(e.value)



def test_a_full_disk_during_record_writes_stopped_into_meta_json(tmp_path, monkeypatch):
    """The whole disk fills (meta.json cannot be replaced through a new file): meta.json is
    rewritten in place and says why the recording stopped."""
    from worldmodel.data.episode import EpisodeWriter, load_episode

    whole_disk_full_after(monkeypatch, 4)
    frames = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), np.uint8)
    with pytest.raises(OSError):
        with EpisodeWriter(tmp_path / "ep", {"game": "synthetic", "action_space": "crafter"}) as w:
            w.add_frame(frames[0])
            for f in frames[1:]:
                w.add_step(0, f)
    monkeypatch.undo()
    ep = load_episode(tmp_path / "ep")
    assert len(ep.frames) == 4 and ep.meta["complete"] is False
    assert ep.meta["stopped"].startswith("disk full: OSError: [Errno 28]")
    assert [p.name for p in (tmp_path / "ep").iterdir() if p.name.startswith(".")] == []


def test_a_disk_that_fails_while_closing_says_why_in_meta_json(tmp_path, monkeypatch):
    import worldmodel.data.episode as episode_module
    from worldmodel.data.episode import EpisodeWriter, load_episode

    w = EpisodeWriter(tmp_path / "ep", {"game": "synthetic", "action_space": "crafter"})
    w.add_frame(np.zeros((8, 8, 3), np.uint8))
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "frames.u8":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(episode_module.os, "fsync", fsync)
    with pytest.raises(OSError):
        w.close()
    monkeypatch.undo()
    meta = load_episode(tmp_path / "ep").meta
    assert meta["complete"] is False and meta["stopped"].startswith("disk full")
