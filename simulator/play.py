"""A person plays the model (or, with --real, the real game) in the window: `PlayApp`.

Each `tick()` polls input, applies one action (noop when no key is held) with `session.step`, and
shows the new frame at once: the action read at frame k produces frame k+1, displayed in the same
tick (one frame of latency). `run()` paces ticks to the target fps; tests call `tick()` directly,
with no clock. `v` shows the view memory's map of the world beside the game (a wider window), F5
saves the world (its whole memory and where it stands) into `memory_dir` and F9 loads it back
(WorldSession.save_memory / load_memory). The window itself (pygame) is simulator/window.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from simulator.keymap import CONTROLS, HeldKeys, control_lookup, help_lines, keymap_for
from simulator.recorder import Recorder, Start, fresh_path, timestamped
from simulator.window import GREY, RED, WHITE, YELLOW, FrameStats, KeyEvent, Line, Window, one_line, run_paced
from worldmodel.game import get_game


class PlayApp:
    """A person plays the model; see module docstring."""

    def __init__(self, session, start: Start, window: Window, fps: float = 10, scale: int = 8,
                 side_by_side: bool = False, record: str | Path | None = None,
                 recordings: str | Path = "recordings", screenshots: str | Path = "screenshots",
                 settings: dict[str, Any] | None = None, memory_dir: str | Path | None = None,
                 resumed_from: str | Path | None = None):
        """`memory_dir`: where F5 saves the world and F9 loads it (default:
        `recordings`/memory_saves/world). `resumed_from`: the session already stands in a world
        loaded from there (`session.load_memory`), so play starts there, not at `start`."""
        self.session = session
        self.start = start
        self.window = window
        self.fps = fps
        self.side_by_side = side_by_side
        self.keys = keymap_for(session.game)
        space = session.space
        self.held = HeldKeys(self.keys, combine=None if space.kind == "discrete" else space.snap)
        self.controls = control_lookup(CONTROLS)
        self.help = help_lines(self.keys, CONTROLS)
        self.recorder = Recorder(int(fps) if fps > 0 else get_game(session.game).fps)
        self.recordings = Path(recordings)
        self.screenshots = Path(screenshots)
        self.memory_dir = (Path(memory_dir) if memory_dir is not None
                           else self.recordings / "memory_saves" / "world")
        self.settings = dict(settings or {}, fps=fps, scale=scale, side_by_side=side_by_side,
                             sample_steps=(session.cfg.diffusion.sample_steps
                                           if session.cfg is not None else None),
                             device=str(session.device))
        self.stats = FrameStats()
        self.running = True
        self.paused = False
        self.show_help = False
        self.step_once = False
        self.frames = 0  # ticks so far
        self.last_action = "-"
        self.message: tuple[str, tuple, float] | None = None
        self.real = None
        self.real_frame: np.ndarray | None = None
        self.real_done = False
        self.record_base: Path | None = None
        self.show_minimap = False
        self.loaded_from: Path | None = None  # the saved world play continues, if any
        if resumed_from is not None:
            self.resumed(Path(resumed_from))
        else:
            self.reset(new=False)
        window.open(self.frame.shape[:2], 2 if side_by_side else 1, scale,
                    hud_lines=4 if side_by_side else 3)
        if record is not None:
            self.start_recording(Path(record))

    # --- state changes -------------------------------------------------------------------------

    def reset(self, new: bool = True) -> None:
        """Back to real context frames: a new start (next seed / episode) when `new`."""
        was_recording = self.recorder.active
        self.recorder.stop()
        if new:
            self.start.next()
        self.frame = self.start.apply(self.session)
        self.loaded_from = None
        if self.side_by_side:
            self.close_real()
            self.real, self.real_frame = self.start.real_game(self.session)
            self.real_done = False
        self.last_action = "-"
        if was_recording:  # a reset breaks the episode: continue in a new one
            self.start_recording(self.record_base)

    def start_recording(self, base: Path | None = None) -> bool:
        path = fresh_path(base) if base is not None else timestamped(self.recordings)
        self.record_base = base
        mem = getattr(self.session, "memory_enabled", None)
        meta = {"game": self.session.game, "action_space": self.session.space.name,
                "checkpoint": self.session.checkpoint, **self.start.describe(),
                **({"resumed_from": str(self.loaded_from)} if self.loaded_from else {}),
                "settings": dict(self.settings, memory=mem),
                "context_frames": self.session.context_len, "start_step": self.session.steps}
        return self.recorder.start(path, self.frame, meta)

    def toggle_memory(self) -> None:
        set_memory = getattr(self.session, "set_memory", None)
        if set_memory is None:
            self.say("this model has no episodic memory")
            return
        try:
            set_memory(not self.session.memory_enabled)
        except (ValueError, RuntimeError) as e:
            self.say(f"memory: {e}", RED, 6.0)
            print(f"error: memory: {e}", file=sys.stderr)

    def minimap(self) -> np.ndarray | None:
        """The session's remembered map, or None after saying why there is none."""
        minimap = getattr(self.session, "minimap", None)
        if minimap is None:
            self.say("no minimap: this session has no view memory", RED, 6.0)
            return None
        try:
            return minimap()
        except (ValueError, RuntimeError) as e:  # a model without a view memory
            self.say(f"no minimap: {one_line(e)}", RED, 6.0)
            return None

    def toggle_minimap(self) -> None:
        self.show_minimap = not self.show_minimap and self.minimap() is not None
        if not self.show_minimap:
            self.window.set_side(0)

    def memory_failed(self, what: str, e: Exception) -> None:
        msg = f"{what} failed: {one_line(e)}"
        self.say(msg, RED, 8.0)
        print(f"error: {msg}", file=sys.stderr)

    def save_world(self) -> None:
        """F5: the whole world (memory and where it stands) into `memory_dir`."""
        save = getattr(self.session, "save_memory", None)
        if save is None:
            self.say("this session cannot save its world", RED)
            return
        try:
            path = save(self.memory_dir)
        except (ValueError, RuntimeError, OSError) as e:  # MemoryFileError is a ValueError
            self.memory_failed("saving the world", e)
            return
        print(f"world saved to {path}")
        self.say(f"world saved to {path} (F9 loads it)")

    def load_world(self) -> None:
        """F9: back to the world saved in `memory_dir`; memory stays on or off as it was."""
        load = getattr(self.session, "load_memory", None)
        if load is None:
            self.say("this session cannot load a world", RED)
            return
        was_on = getattr(self.session, "memory_enabled", None)
        try:
            load(self.memory_dir)
            if was_on is not None and self.session.memory_enabled != was_on:
                self.session.set_memory(was_on)
        except (ValueError, RuntimeError, OSError) as e:  # MemoryFileError is a ValueError
            self.memory_failed("loading the world", e)
            return
        was_recording = self.recorder.active
        self.recorder.stop()
        self.resumed(self.memory_dir)
        if was_recording:  # the loaded world is another episode: continue in a new one
            self.start_recording(self.record_base)
        print(f"world loaded from {self.memory_dir}")
        self.say(f"world loaded from {self.memory_dir} (step {self.session.steps})")

    def resumed(self, path: Path) -> None:
        """The session now stands in the world loaded from `path`: show its frame. The real
        game cannot be put there, so side by side has no real frame until the next reset."""
        frame = np.asarray(self.session.frame)
        self.frame = frame[0] if frame.ndim == 4 else frame
        self.loaded_from = path
        self.close_real()
        self.real_frame, self.real_done = None, False
        self.last_action = "-"

    def screenshot(self) -> None:
        name = f"shot-{time.strftime('%Y%m%d-%H%M%S')}-step{self.session.steps}.png"
        try:
            path = self.window.screenshot(fresh_path(self.screenshots / name))
        except OSError as e:
            self.say(f"screenshot failed: {e}", RED)
            print(f"error: screenshot failed: {e}", file=sys.stderr)
            return
        print(f"screenshot saved to {path}")
        self.say(f"saved {path}")

    def say(self, text: str, color: tuple = WHITE, seconds: float = 3.0) -> None:
        self.message = (text, color, time.monotonic() + seconds)

    # --- the loop ------------------------------------------------------------------------------

    def handle(self, ev: KeyEvent) -> None:
        if ev.kind == "quit":
            self.running = False
        elif ev.kind == "blur":
            self.held.clear()
        elif ev.kind == "up":
            self.held.up(ev.key)
        elif ev.kind == "down" and not self.held.down(ev.key):
            cmd = self.controls.get(ev.key)
            if cmd == "quit":
                self.running = False
            elif cmd == "help":
                self.show_help = not self.show_help
            elif cmd == "pause":
                self.paused = not self.paused
            elif cmd == "step":
                self.step_once = self.paused
            elif cmd == "reset":
                self.reset(new=True)
            elif cmd == "screenshot":
                self.screenshot()
            elif cmd == "record":
                if self.recorder.active:
                    self.recorder.stop()
                else:
                    self.start_recording()
            elif cmd == "memory":
                self.toggle_memory()
            elif cmd == "minimap":
                self.toggle_minimap()
            elif cmd == "save_world":
                self.save_world()
            elif cmd == "load_world":
                self.load_world()

    def advance(self, action: str | np.ndarray) -> tuple[float, float]:
        """Apply one action to the model (and the real game); returns (model ms, record ms)."""
        a = self.session.action_index(action)
        self.frame = self.session.step(a)
        model_ms = self.session.last_step_ms
        if self.real is not None and not self.real_done:
            res = self.real.step(a)
            self.real_frame, self.real_done = res.obs, res.done
        t = time.perf_counter()
        if self.recorder.active and not self.recorder.add_step(a, self.frame):
            self.say(self.recorder.error or "recording stopped", RED, 10.0)
        self.last_action = (action if isinstance(action, str)
                            else " ".join(f"{v:g}" for v in np.asarray(action).ravel()))
        return model_ms, (time.perf_counter() - t) * 1000

    def tick(self) -> bool:
        """One frame: poll input, step the model once (unless paused), draw. False once closed."""
        t0 = time.perf_counter()
        for ev in self.window.poll():
            self.handle(ev)
        action = self.held.action()
        t1 = time.perf_counter()
        model_ms = record_ms = None
        if self.running and (not self.paused or self.step_once):
            self.step_once = False
            model_ms, record_ms = self.advance(action)
        t2 = time.perf_counter()
        if self.running:
            frames, labels = [self.frame], None
            if self.side_by_side:
                frames.append(self.real_frame)
                labels = ["model (imagined)",
                          "real game (over)" if self.real_done else
                          "real game (n/a: a loaded world)" if self.real is None else
                          "real game, same actions"]
            side = self.minimap() if self.show_minimap else None
            if self.show_minimap and side is None:  # it said why
                self.show_minimap = False
            self.window.set_side(0 if side is None else self.window.side_width(side.shape[:2]))
            self.window.draw(frames, self.hud(), self.help if self.show_help else None, labels,
                             side=side)
        window_ms = ((t1 - t0) + (time.perf_counter() - t2)) * 1000
        self.stats.add(t0, model_ms, window_ms, record_ms or 0.0)
        self.frames += 1
        return self.running

    def run(self, max_frames: int | None = None) -> None:
        """Tick at the target fps until the window is closed (or `max_frames`), then close."""
        try:
            run_paced(self.tick, lambda: self.running, self.fps, max_frames, lambda: self.frames)
        finally:
            self.close()

    def close(self) -> None:
        """Finalize any recording and close the window (the session belongs to the caller)."""
        self.running = False
        self.recorder.stop()
        self.close_real()
        self.window.close()

    def close_real(self) -> None:
        """End the real game shown side by side (a game with processes, Minetest, ends them)."""
        if self.real is not None:
            self.real.close()
            self.real = None

    # --- HUD -----------------------------------------------------------------------------------

    def hud(self) -> list[Line]:
        st = self.stats
        target = f"{self.fps:g}" if self.fps > 0 else "max"
        mem = getattr(self.session, "memory_enabled", None)
        mem = "n/a" if mem is None else ("on" if mem else "off")
        mem_error = getattr(self.session, "memory_error", None)  # it switched itself off
        lines: list[Line] = []
        lines.append([(f"fps {st.fps:4.1f}/{target}   model {st.recent(st.model_ms):5.1f} ms/frame"
                       f"   window {st.recent(st.window_ms):4.2f} ms/frame", WHITE)])
        status = getattr(self.session, "status", None)  # the real game's pose (--real)
        line = [(f"step {self.session.steps}   action {self.last_action}   "
                 + (status() if status is not None else f"memory {mem}"), WHITE)]
        if mem_error:
            line.append((" (failed)", RED))
        if self.paused:
            line.append(("   PAUSED (n: step)", YELLOW))
        if self.recorder.active:
            line.append((f"   REC {self.recorder.seconds:.1f} s", RED))
        lines.append(line)
        if self.message and time.monotonic() < self.message[2]:
            lines.append([self.message[:2]])
        elif mem_error:
            lines.append([(f"memory off: {mem_error} (m: on again)", RED)])
        elif self.recorder.active:
            lines.append([(f"recording to {self.recorder.path}", RED)])
        elif self.recorder.error:
            lines.append([(f"not recording: {self.recorder.error}", RED)])
        else:
            lines.append([("h: help   c: record   o: screenshot   backspace: new start   "
                           "esc: quit", GREY)])
        return lines
