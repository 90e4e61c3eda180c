"""The pygame frontend: the only module that imports pygame.

- `Window`: opens the window (or says clearly that there is no display), turns pygame events into
  key *names* (see keymap.py), draws scaled frames side by side, the HUD and the help overlay.
- `Pacer` / `run_paced`: ticks at a target fps; `FrameStats`: what the HUD and --stats report.

The app a person plays, `PlayApp`, is in simulator/play.py.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402


WHITE, GREY, RED, YELLOW = (235, 235, 235), (150, 150, 150), (255, 80, 80), (255, 220, 90)
GAP = 4  # pixels between side-by-side panes
LINE = 18  # HUD line height

NO_DISPLAY = ("cannot open a window: no display ({why}).\n"
              "To make a recording without a window use:\n"
              "  python run_sim.py record --actions ACTIONS_FILE --out DIR [--frames N]\n"
              "or run under a virtual display (xvfb-run python run_sim.py ...).")


MOUSE_KEYS = {1: "mouse left", 3: "mouse right"}  # pygame button -> key name in a game's key map
Line = list[tuple[str, tuple]]  # a HUD line: (text, color) segments


class NoDisplayError(RuntimeError):
    """pygame cannot open a real window here."""


@dataclass
class KeyEvent:
    kind: str  # "down", "up", "quit" (window closed), "blur" (focus lost)
    key: str = ""


class Window:
    """See module docstring. `frames` are (h, w, 3) uint8 panes, drawn left to right."""

    def __init__(self, title: str = "neural game simulator"):
        try:
            pygame.display.init()
        except pygame.error as e:
            raise NoDisplayError(NO_DISPLAY.format(why=e)) from None
        driver = pygame.display.get_driver()
        # pygame falls back to an invisible driver when no display is reachable; only accept
        # one that was asked for by name (tests and scripts set SDL_VIDEODRIVER=dummy).
        if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
            pygame.display.quit()
            why = "DISPLAY is not set" if not os.environ.get("DISPLAY") else f"SDL chose {driver!r}"
            raise NoDisplayError(NO_DISPLAY.format(why=why))
        pygame.font.init()
        self.font = pygame.font.Font(None, 20)  # pygame's bundled font: no system fonts needed
        self.title = title
        self.screen: pygame.Surface | None = None
        self._text_cache: dict[tuple[str, tuple], pygame.Surface] = {}

    def open(self, frame_hw: tuple[int, int], panes: int, scale: int, hud_lines: int) -> None:
        self.scale = scale
        self.pane = (frame_hw[1] * scale, frame_hw[0] * scale)
        self.panes = panes
        self.hud_lines = hud_lines
        self.side = 0  # width of the side panel right of the panes (the minimap); 0: none
        self._set_mode()
        pygame.display.set_caption(self.title)

    def _set_mode(self) -> None:
        width = self.panes * self.pane[0] + (self.panes - 1) * GAP
        if self.side:
            width += GAP + self.side
        height = self.pane[1] + 6 + self.hud_lines * LINE
        try:
            self.screen = pygame.display.set_mode((width, height))
        except pygame.error as e:
            raise NoDisplayError(NO_DISPLAY.format(why=e)) from None

    def side_width(self, image_hw: tuple[int, int]) -> int:
        """How wide a side panel showing an image of `image_hw` at the panes' height is."""
        return max(1, round(image_hw[1] * self.pane[1] / image_hw[0]))

    def set_side(self, width: int) -> None:
        """Widen the window by a side panel `width` px wide right of the panes (0: back to the
        panes alone); `draw(side=...)` fills it."""
        if width != self.side:
            self.side = width
            self._set_mode()

    def poll(self) -> list[KeyEvent]:
        out = []
        for e in pygame.event.get():
            if e.type == pygame.QUIT:
                out.append(KeyEvent("quit"))
            elif e.type in (pygame.KEYDOWN, pygame.KEYUP):
                out.append(KeyEvent("down" if e.type == pygame.KEYDOWN else "up",
                                    pygame.key.name(e.key)))
            elif e.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP) and e.button in MOUSE_KEYS:
                # mouse buttons are keys too ("mouse left", "mouse right"), for a game's key map
                out.append(KeyEvent("down" if e.type == pygame.MOUSEBUTTONDOWN else "up",
                                    MOUSE_KEYS[e.button]))
            elif e.type == pygame.WINDOWFOCUSLOST:
                out.append(KeyEvent("blur"))
        return out

    def _text(self, text: str, color: tuple) -> pygame.Surface:
        key = (text, color)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 256:
                self._text_cache.clear()
            surf = self._text_cache[key] = self.font.render(text, True, color)
        return surf

    def _blit_scaled(self, image: np.ndarray, rect: tuple[int, int, int, int]) -> None:
        h, w = image.shape[:2]
        src = pygame.image.frombuffer(np.ascontiguousarray(image).tobytes(), (w, h), "RGB")
        pygame.transform.scale(src.convert(self.screen), rect[2:], self.screen.subsurface(rect))

    def draw(self, frames: list[np.ndarray | None], hud: list[Line],
             overlay: list[tuple[str, str]] | None = None, labels: list[str] | None = None,
             side: np.ndarray | None = None) -> None:
        """Panes left to right, `side` (an image) in the side panel (see `set_side`), then a
        row of `labels` under the panes (if any), then the HUD."""
        screen = self.screen
        screen.fill((20, 20, 20))
        for i, frame in enumerate(frames):
            if frame is not None:
                self._blit_scaled(frame, (i * (self.pane[0] + GAP), 0, *self.pane))
        if side is not None and self.side:
            x = self.panes * (self.pane[0] + GAP)
            self._blit_scaled(side, (x, 0, self.side, self.pane[1]))
        y = self.pane[1] + 4
        if labels:
            for i, label in enumerate(labels):
                screen.blit(self._text(label, GREY), (6 + i * (self.pane[0] + GAP), y))
            y += LINE
        for line in hud:
            x = 6
            for text, color in line:
                surf = self._text(text, color)
                screen.blit(surf, (x, y))
                x += surf.get_width()
            y += LINE
        if overlay:
            self._overlay(overlay)
        pygame.display.flip()

    def _overlay(self, rows: list[tuple[str, str]]) -> None:
        w, h = self.screen.get_width(), self.pane[1]
        shade = pygame.Surface((w, h), pygame.SRCALPHA)
        shade.fill((0, 0, 0, 200))
        self.screen.blit(shade, (0, 0))
        per_col = max(1, (h - 16) // 16)
        col_w = w // ((len(rows) + per_col - 1) // per_col)
        key_w = max(self.font.size(keys)[0] for keys, _ in rows) + 12
        for i, (keys, what) in enumerate(rows):
            x, y = 8 + (i // per_col) * col_w, 8 + (i % per_col) * 16
            self.screen.blit(self._text(keys, YELLOW), (x, y))
            self.screen.blit(self._text(what, WHITE), (x + min(key_w, col_w // 2), y))

    def screenshot(self, path: str | Path) -> Path:
        """Save what the window shows; any failure is an OSError (pygame's own error too), so
        callers need not import pygame to go on after one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pygame.image.save(self.screen, str(path))
        except pygame.error as e:
            raise OSError(f"cannot save {path}: {e}") from e
        return path

    def close(self) -> None:
        pygame.display.quit()


def one_line(e: Exception) -> str:
    """An error's message on one line (for the HUD and stderr)."""
    return " ".join(str(e).split()) or type(e).__name__


class Pacer:
    """Sleeps so ticks start `1/fps` apart; never tries to catch up after a slow frame."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next: float | None = None

    def wait(self) -> None:
        if not self.period:
            return
        now = time.perf_counter()
        self.next = (self.next or now) + self.period
        if self.next < now:
            self.next = now
        else:
            time.sleep(self.next - now)


def run_paced(tick, running, fps: float, max_frames: int | None, frames) -> None:
    """Call `tick()` at `fps` while `running()` and fewer than `max_frames` ticks (`frames()`)."""
    pacer = Pacer(fps)
    while running() and (max_frames is None or frames() < max_frames):
        tick()
        pacer.wait()


class FrameStats:
    """Per-frame timings: measured fps (over the last second or so) and the window's own cost."""

    def __init__(self, last: int = 20):
        self.starts: deque[float] = deque(maxlen=last)  # the fps shown: over the last frames
        self.model_ms: list[float] = []
        self.window_ms: list[float] = []  # events + draw: what the window adds to each frame
        self.record_ms: list[float] = []
        self.intervals: list[float] = []

    def add(self, start: float, model_ms: float | None, window_ms: float, record_ms: float) -> None:
        if self.starts:
            self.intervals.append(start - self.starts[-1])
        self.starts.append(start)
        if model_ms is not None:
            self.model_ms.append(model_ms)
        self.window_ms.append(window_ms)
        self.record_ms.append(record_ms)

    @property
    def fps(self) -> float:
        if len(self.starts) < 2:
            return 0.0
        return (len(self.starts) - 1) / max(self.starts[-1] - self.starts[0], 1e-9)

    @staticmethod
    def recent(xs: list[float], n: int = 20) -> float:
        return float(np.mean(xs[-n:])) if xs else 0.0

    def summary(self) -> dict[str, Any]:
        def stats(xs: list[float]) -> dict[str, float]:
            return {"mean": float(np.mean(xs)), "p50": float(np.median(xs)),
                    "p95": float(np.percentile(xs, 95))} if xs else {}
        fps = 1.0 / float(np.mean(self.intervals)) if self.intervals else 0.0
        return {"frames": len(self.window_ms), "fps": fps, "model_ms": stats(self.model_ms),
                "window_ms": stats(self.window_ms), "record_ms": stats(self.record_ms)}


def format_summary(s: dict[str, Any]) -> str:
    def one(name: str) -> str:
        d = s[name]
        return f"{name} mean {d['mean']:.2f} p50 {d['p50']:.2f} p95 {d['p95']:.2f}" if d else f"{name} -"
    model_fps = 1000 / s["model_ms"]["mean"] if s["model_ms"] else 0.0
    return (f"{s['frames']} frames, measured {s['fps']:.1f} fps (model alone: {model_fps:.1f} fps)\n"
            f"  {one('model_ms')}\n  {one('window_ms')}  (events + draw)\n  {one('record_ms')}")
