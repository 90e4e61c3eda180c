"""Play a recorded episode back in the window: `python run_sim.py replay DIR`.

Shows frame t of T with the action that produced it (actions[t - 1]). Space/p pauses, n or . steps
one frame, left/right scrub (held: keep scrubbing), home/end jump. Reading and drawing go through
window.Window, so pygame stays in window.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from simulator.keymap import REPLAY_CONTROLS, control_lookup, help_lines
from simulator.window import GREY, RED, WHITE, YELLOW, KeyEvent, Line, Window, run_paced
from worldmodel.actions import ActionError, get_action_space
from worldmodel.data.episode import Episode

SCRUB_DELAY = 3  # ticks a scrub key is held before it repeats every tick


class ReplayApp:
    """Frame-by-frame player of an `Episode`; `tick()` advances one display frame."""

    def __init__(self, episode: Episode, window: Window, fps: float | None = None, scale: int = 8):
        self.episode = episode
        self.window = window
        self.fps = fps if fps is not None else float(episode.meta.get("fps", 10))
        self.t = 0
        self.playing = True
        self.running = True
        self.show_help = False
        self.controls = control_lookup(REPLAY_CONTROLS)
        self.help = help_lines({}, REPLAY_CONTROLS)
        self.scrub = 0  # -1 / +1 while a scrub key is held
        self.scrub_ticks = 0
        self.step_once = False
        self.frames = 0
        self.names: tuple[str, ...] | None = None
        space = episode.meta.get("action_space")
        if space:
            try:
                self.names = getattr(get_action_space(space), "actions", None)
            except ActionError:  # an action space this build does not know: show indices
                pass
        window.open(episode.frames.shape[1:3], 1, scale, hud_lines=3)

    @property
    def last(self) -> int:
        return len(self.episode.frames) - 1

    def seek(self, t: int) -> None:
        self.t = int(np.clip(t, 0, self.last))

    def action_name(self, t: int) -> str:
        """The action that produced frame t (none for the first frame)."""
        if t == 0:
            return "- (start)"
        a = self.episode.actions[t - 1]
        if self.names is not None and np.ndim(a) == 0:
            return f"{self.names[int(a)]} ({int(a)})"
        return str(np.asarray(a).tolist())

    def handle(self, ev: KeyEvent) -> None:
        if ev.kind == "quit":
            self.running = False
            return
        if ev.kind == "blur":  # key-ups may never come
            self.scrub = 0
            return
        cmd = self.controls.get(ev.key)
        if ev.kind == "up":
            if cmd in ("back", "forward"):
                self.scrub = 0
            return
        if ev.kind != "down":
            return
        if cmd == "quit":
            self.running = False
        elif cmd == "help":
            self.show_help = not self.show_help
        elif cmd == "pause":
            if self.t >= self.last and not self.playing:
                self.t = 0  # play again from the start
            self.playing = not self.playing
        elif cmd == "step":
            self.playing = False
            self.step_once = True
        elif cmd in ("back", "forward"):
            self.scrub = -1 if cmd == "back" else 1
            self.scrub_ticks = 0
            self.seek(self.t + self.scrub)
        elif cmd == "first":
            self.seek(0)
        elif cmd == "last":
            self.seek(self.last)
        elif cmd == "screenshot":
            path = Path("screenshots") / f"replay-{time.strftime('%Y%m%d-%H%M%S')}-t{self.t}.png"
            try:
                print(f"screenshot saved to {self.window.screenshot(path)}")
            except OSError as e:  # replay goes on
                print(f"error: screenshot failed: {e}", file=sys.stderr)

    def tick(self) -> bool:
        for ev in self.window.poll():
            self.handle(ev)
        if not self.running:
            return False
        if self.scrub:
            self.scrub_ticks += 1
            if self.scrub_ticks > SCRUB_DELAY:
                self.seek(self.t + self.scrub)
        elif self.step_once:
            self.step_once = False
            self.seek(self.t + 1)
        elif self.playing:
            if self.t >= self.last:
                self.playing = False
            else:
                self.seek(self.t + 1)
        self.window.draw([self.episode.frames[self.t]], self.hud(),
                         self.help if self.show_help else None)
        self.frames += 1
        return True

    def hud(self) -> list[Line]:
        state = ("playing", WHITE) if self.playing else ("paused", YELLOW)
        src = self.episode.meta.get("source", "game")
        complete = "" if self.episode.meta.get("complete", True) else "  (incomplete: cut short)"
        return [
            [(f"frame {self.t}/{self.last}   action {self.action_name(self.t)}", WHITE)],
            [(f"{state[0]}   {self.fps:g} fps   source {src}", state[1]),
             (complete, RED)],
            [(f"{self.episode.path}   h: help", GREY)],
        ]

    def run(self, max_frames: int | None = None) -> None:
        try:
            run_paced(self.tick, lambda: self.running, self.fps, max_frames, lambda: self.frames)
        finally:
            self.window.close()
