"""The play window, driven headless: SDL's dummy driver, posted key events, `app.tick()` per frame."""

from __future__ import annotations

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

from games.crafter.game import KEYS as CRAFTER_KEYS  # noqa: E402
from simulator.keymap import CONTROLS, HeldKeys, keymap_for  # noqa: E402
from simulator.recorder import Start  # noqa: E402
from simulator.session import WorldSession  # noqa: E402
from simulator.play import PlayApp  # noqa: E402
from simulator.window import Window  # noqa: E402
from games.crafter.actions import CRAFTER_ACTIONS  # noqa: E402
from worldmodel.game import GameError  # noqa: E402
from worldmodel.data.episode import EpisodeWriter  # noqa: E402
from conftest import tiny_perturbed

torch.set_num_threads(1)
SIZE = 16
SCALE = 4


def tiny_session(size: int = SIZE) -> WorldSession:
    """configs/tiny.yaml with perturbed weights, so imagined frames change from step to step."""
    return WorldSession(*tiny_perturbed(size), checkpoint="tiny")


def start_episode(path: Path, seed: int = 0, steps: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (steps + 1, SIZE, SIZE, 3), dtype=np.uint8)
    with EpisodeWriter(path, {"game": "crafter", "action_space": "crafter", "seed": seed}) as w:
        w.add_frame(frames[0])
        for t in range(steps):
            w.add_step(int(rng.integers(17)), frames[t + 1])
    return path


def key(name: str, down: bool = True) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP,
                                         key=pygame.key.key_code(name)))


def shown(app, pane: int = 0) -> np.ndarray:
    """The frame in pane `pane` as the screen shows it, scaled back down."""
    h, w = app.frame.shape[:2]
    pix = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
    x0 = pane * (w * SCALE + 4)
    return pix[: h * SCALE: SCALE, x0: x0 + w * SCALE: SCALE]


def make_app(tmp_path: Path, session: WorldSession | None = None, start: Start | None = None,
             **kw) -> PlayApp:
    session = session or tiny_session()
    if start is None:
        start = Start(episodes=[start_episode(tmp_path / "ep0", 0), start_episode(tmp_path / "ep1", 1)])
    app = PlayApp(session, start, Window(), fps=0, scale=SCALE, recordings=tmp_path / "rec",
                  screenshots=tmp_path / "shots", **kw)
    pygame.event.clear()
    return app


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.close()


def spy_actions(app) -> list[int]:
    """Record the actions the session receives."""
    seen: list[int] = []
    step = app.session.step

    def spy(a):
        seen.append(int(a))
        return step(a)

    app.session.step = spy
    return seen


def test_held_keys_tap_wins_hold_repeats_noop_otherwise():
    held = HeldKeys({"a": "move_left", "d": "move_right"})
    assert held.action() == "noop"
    held.down("a")
    assert held.action() == "move_left"
    assert held.action() == "move_left"  # held: repeats every frame
    held.down("d")
    assert held.action() == "move_right"  # the most recent held key
    held.up("d")
    assert held.action() == "move_left"
    held.up("a")
    held.down("d")
    held.up("d")  # a tap within one frame still counts once
    assert held.action() == "move_right"
    assert held.action() == "noop"
    assert held.down("h") is False


def test_minetest_keymap_takes_the_mouse_buttons_and_avoids_controls():
    keys = keymap_for("minetest")
    assert {keys[k] for k in "wasd"} == {"forward", "left", "back", "right"}
    assert keys["mouse left"] == "dig" and keys["mouse right"] == "place"
    assert not set(keys) & {k for ks in CONTROLS.values() for k in ks}


def test_mouse_buttons_reach_the_key_map_as_keys(app):
    import pygame

    for kind, button in ((pygame.MOUSEBUTTONDOWN, 1), (pygame.MOUSEBUTTONUP, 1),
                         (pygame.MOUSEBUTTONDOWN, 2), (pygame.MOUSEBUTTONDOWN, 3)):
        pygame.event.post(pygame.event.Event(kind, button=button, pos=(5, 5)))
    events = [(e.kind, e.key) for e in app.window.poll() if e.kind in ("down", "up")]
    assert events == [("down", "mouse left"), ("up", "mouse left"), ("down", "mouse right")]


def test_crafter_keymap_follows_run_gui_and_avoids_controls():
    keys = keymap_for("crafter")
    assert {keys[k] for k in "wasd"} == {"move_up", "move_left", "move_down", "move_right"}
    assert keys["space"] == "do" and keys["tab"] == "sleep"
    assert [keys[k] for k in "rtfp"] == ["place_stone", "place_table", "place_furnace", "place_plant"]
    assert set(CRAFTER_KEYS.values()) == set(CRAFTER_ACTIONS) - {"noop"}  # every action has a key
    assert not set(keys) & {k for ks in CONTROLS.values() for k in ks}
    with pytest.raises(GameError, match="unknown game 'nosuchgame'"):
        keymap_for("nosuchgame")


def test_key_produces_mapped_action_and_frame_is_shown(app):
    seen = spy_actions(app)
    key("a")
    app.tick()
    assert seen == [CRAFTER_ACTIONS.index("move_left")] and app.last_action == "move_left"
    np.testing.assert_array_equal(shown(app), app.frame)  # displayed in the same tick
    app.tick()  # still held
    key("a", down=False)
    key("space")
    app.tick()
    key("space", down=False)
    app.tick()
    assert [CRAFTER_ACTIONS[a] for a in seen] == ["move_left", "move_left", "do", "noop"]
    assert app.session.steps == 4
    np.testing.assert_array_equal(shown(app), app.frame)
    assert app.stats.window_ms and app.stats.model_ms and max(app.stats.window_ms) < 1000


def test_pause_single_step_and_reset(app, tmp_path):
    key("return")
    app.tick()
    assert app.paused and app.session.steps == 0
    frame = app.frame.copy()
    for _ in range(3):
        app.tick()
    assert app.session.steps == 0 and np.array_equal(app.frame, frame)
    key("d")
    key("n")
    app.tick()
    assert app.session.steps == 1 and app.last_action == "move_right"
    key(".")
    app.tick()
    assert app.session.steps == 2
    key("return")
    app.tick()
    assert not app.paused and app.session.steps == 3
    key("backspace")  # a new start: the next episode of --start
    app.tick()
    assert app.start.index == 1 and app.session.steps == 1
    key("backspace")
    key("return")
    app.tick()
    assert app.start.index == 0 and app.session.steps == 0
    from worldmodel.data.episode import load_episode

    context = load_episode(tmp_path / "ep0").frames[: app.session.context_len]
    np.testing.assert_array_equal(app.frame, context[-1])  # back on real frames


def hud_text(app) -> str:
    return " ".join(text for line in app.hud() for text, _ in line)


def test_help_screenshot_and_quit(app, tmp_path):
    key("h")
    app.tick()
    assert app.show_help
    key("o")
    app.tick()
    shots = list((tmp_path / "shots").glob("*.png"))
    size = pygame.display.get_surface().get_size()
    assert len(shots) == 1 and pygame.image.load(str(shots[0])).get_size() == size
    hud = hud_text(app)
    assert "fps" in hud and "model" in hud and "window" in hud and "step 2" in hud
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert app.tick() is False and not app.running


def test_hud_says_why_memory_switched_itself_off(app, monkeypatch):
    monkeypatch.setattr(type(app.session), "memory_error", property(
        lambda s: "the memory worker failed: RuntimeError: boom"), raising=False)
    hud = hud_text(app)
    assert "memory off" in hud and "(failed)" in hud and "RuntimeError: boom" in hud


def test_memory_key_toggles_the_session_memory(app, monkeypatch):
    state = {"on": False}  # the session's (optional) memory API, faked
    monkeypatch.setattr(type(app.session), "memory_enabled", property(lambda s: state["on"]),
                        raising=False)
    monkeypatch.setattr(app.session, "set_memory", lambda on: state.update(on=on), raising=False)
    key("m")
    app.tick()
    assert state["on"] and "memory on" in hud_text(app)
    key("m")
    app.tick()
    assert not state["on"] and "memory off" in hud_text(app)



class NoMemory:
    """A session without the memory API."""

    def __init__(self, session: WorldSession):
        self._session = session

    def __getattr__(self, name: str):
        if name in ("set_memory", "memory_enabled"):
            raise AttributeError(name)
        return getattr(self._session, name)


def test_memory_na_without_the_memory_api(tmp_path):
    app = make_app(tmp_path, NoMemory(tiny_session()))
    try:
        key("m")
        app.tick()  # the key says there is no memory; the game goes on
        assert "memory n/a" in hud_text(app) and app.session.steps == 1
    finally:
        app.close()


@pytest.mark.skipif(not hasattr(WorldSession, "set_memory"), reason="no episodic memory yet")
def test_memory_key_with_the_real_memory(app):
    try:
        key("m")
        app.tick()
        assert app.session.memory_enabled and "memory on" in hud_text(app)
        app.tick()
        key("m")
        app.tick()
        assert not app.session.memory_enabled and app.session.steps == 3
    finally:
        app.session.close()


def view_session() -> WorldSession:
    """A tiny 64x64 model with a view memory (no LoRA store: nothing runs in the background)."""
    from conftest import TINY_YAML, perturb_
    from memory.config import MemoryConfig
    from worldmodel.config import load_config
    from worldmodel.dynamics import Denoiser

    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.shift_kernel=17",
                                  "model.committed_move=7", "model.view_memory=true"])
    torch.manual_seed(0)
    return WorldSession(perturb_(Denoiser(cfg.model)).eval(), cfg, checkpoint="tiny-view",
                        memory=MemoryConfig(stores="view"))


@pytest.fixture
def view_app(tmp_path):
    app = make_app(tmp_path, view_session(), Start(seed=0))  # the real game at 64x64
    yield app
    app.close()


def test_minimap_key_draws_the_remembered_map_beside_the_game(view_app):
    app = view_app
    pane = 64 * SCALE
    assert pygame.display.get_surface().get_width() == pane
    key("d")
    app.tick()
    key("d", down=False)
    key("v")
    app.tick()
    surface = pygame.display.get_surface()
    assert app.show_minimap and surface.get_width() == pane + 4 + pane  # square, at view height
    pix = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
    panel = pix[:pane, pane + 4:]
    want = app.session.minimap()
    assert (panel != 20).any(axis=-1).mean() > 0.9  # drawn, not the background
    np.testing.assert_array_equal(panel[pane // 2], want[len(want) // 2][
        (np.arange(pane) * len(want)) // pane])  # the map, scaled to the pane's height
    np.testing.assert_array_equal(shown(app), app.frame)  # the game view as before
    assert (panel == 255).all(axis=-1).any()  # the current view's white frame
    assert "remembered map on / off" in dict((w, k) for k, w in app.help)
    key("v")
    app.tick()
    assert not app.show_minimap and pygame.display.get_surface().get_width() == pane
    assert app.session.steps == 3


def test_minimap_key_without_a_view_memory_says_so(app):
    key("v")
    app.tick()
    assert not app.show_minimap and "no minimap" in hud_text(app)
    assert pygame.display.get_surface().get_width() == SIZE * SCALE and app.session.steps == 1


def test_f5_saves_the_world_and_f9_loads_it_back(view_app, capsys):
    app = view_app
    key("m")  # memory on: F9 keeps it on
    key("d")
    app.tick()
    app.tick()
    key("d", down=False)
    key("return")  # paused: the ticks below only save and load
    key("f5")
    app.tick()
    folder = app.memory_dir
    assert folder == app.recordings / "memory_saves" / "world"
    assert (folder / "memory.json").is_file() and "world saved" in hud_text(app)
    frame, steps, minimap = app.frame.copy(), app.session.steps, app.session.minimap()
    assert steps == 2
    nxt = app.session.step("move_left")  # what the saved world draws next
    key("return")
    key("s")
    for _ in range(3):
        app.tick()
    key("s", down=False)
    assert app.session.steps == steps + 4 and not np.array_equal(app.frame, frame)
    key("return")
    key("f9")
    app.tick()
    assert "world loaded" in hud_text(app) and app.session.memory_enabled
    assert app.session.steps == steps and app.loaded_from == folder
    np.testing.assert_array_equal(app.frame, frame)
    np.testing.assert_array_equal(shown(app), frame)
    np.testing.assert_array_equal(app.session.minimap(), minimap)
    np.testing.assert_array_equal(app.session.step("move_left"), nxt)  # same noise, same memory
    assert "Traceback" not in capsys.readouterr().err


def test_f9_of_a_bad_folder_and_f5_into_a_file_are_hud_messages(tmp_path, capsys):
    app = make_app(tmp_path, memory_dir=tmp_path / "nothing")
    try:
        key("f9")
        app.tick()
        assert "loading the world failed" in hud_text(app) and "not found" in hud_text(app)
        err = capsys.readouterr().err
        assert err.startswith("error: loading the world failed") and err.count("\n") == 1
        key("f5")  # a model without a view memory still saves where it stands
        app.tick()
        assert (tmp_path / "nothing" / "memory.json").is_file()
        (tmp_path / "nothing" / "memory.json").write_text("{not json")
        key("f9")
        app.tick()
        assert "corrupt" in hud_text(app)
        (tmp_path / "file").write_text("x")
        app.memory_dir = tmp_path / "file" / "world"
        key("f5")
        app.tick()
        assert "saving the world failed" in hud_text(app)
        err = capsys.readouterr().err
        assert err.count("error: ") == 2 and "Traceback" not in err
        assert app.running and app.session.steps == 4  # the game went on
    finally:
        app.close()


def test_run_max_frames_closes(tmp_path):
    app = make_app(tmp_path)
    app.run(max_frames=5)
    assert app.frames == 5 and app.session.steps == 5 and not app.running
    assert app.stats.summary()["window_ms"]["mean"] > 0


def test_side_by_side_runs_the_real_game_with_the_same_actions(tmp_path):
    session = tiny_session(size=32)  # the smallest size Crafter renders at
    app = make_app(tmp_path, session, Start(seed=4), side_by_side=True)
    try:
        np.testing.assert_array_equal(app.real_frame, app.frame)  # same real start
        key("s")
        app.tick()
        app.tick()
        assert app.real._env._step == session.context_len - 1 + 2
        np.testing.assert_array_equal(shown(app, 1), app.real_frame)
        np.testing.assert_array_equal(shown(app, 0), app.frame)
    finally:
        app.close()


def test_a_screenshot_pygame_cannot_save_is_an_oserror(tmp_path, monkeypatch):
    """Callers (the replay window too) catch OSError alone, not every exception."""
    window = Window()
    window.open((8, 8), 1, 2, hud_lines=1)

    def broken(*args):
        raise pygame.error("no encoder")

    monkeypatch.setattr(pygame.image, "save", broken)
    try:
        with pytest.raises(OSError, match="no encoder"):
            window.screenshot(tmp_path / "shot.png")
    finally:
        window.close()


@pytest.mark.parametrize("variant", ["no_last", "no_noise_state", "steps_infinity",
                                     "stores_an_int", "last_cache_layer_wrong_shape"])
def test_f9_of_a_tampered_save_is_a_hud_message_and_changes_nothing(tmp_path, capsys, variant):
    """Tampered but well-formed saves (issue 24): one line, the game goes on where it was."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))
    from saved_variants import VARIANTS, assert_same, snapshot

    app = make_app(tmp_path, memory_dir=tmp_path / "saves" / "world")
    try:
        key("f5")
        app.tick()
        VARIANTS[variant](app.memory_dir)
        key("return")  # paused: the ticks below only load
        app.tick()
        before = snapshot(app.session)
        key("f9")
        app.tick()
        assert "loading the world failed" in hud_text(app)
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and "Traceback" not in err
        assert app.running
        assert_same(before, snapshot(app.session))
    finally:
        app.close()


def test_f5_into_a_symlink_is_refused_and_writes_nothing_through_it(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    app = make_app(tmp_path, memory_dir=tmp_path / "link")
    try:
        key("f5")
        app.tick()
        assert "saving the world failed" in hud_text(app) and "symlink" in hud_text(app)
        assert list(outside.iterdir()) == []
    finally:
        app.close()
