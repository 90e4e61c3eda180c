"""Keys -> actions, as data. No pygame here: keys are pygame's key *names* (`pygame.key.name`),
which window.py reads off each event, so the mapping and the held-key logic test without a display.

Each game brings its own key map (`Game.keys`; Crafter's follows crafter's own `run_gui.py`).
The simulator's own controls sit on keys no game uses (CONTROLS).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from worldmodel.actions import ActionError, DiscreteActionSpace
from worldmodel.game import get_game, known_games

# Simulator controls while playing: command -> keys. None of these is a game key.
CONTROLS: dict[str, tuple[str, ...]] = {
    "quit": ("escape",),
    "help": ("h",),
    "pause": ("return", "break"),  # pygame names the Pause key "break"
    "step": ("n", "."),  # one frame while paused
    "reset": ("backspace",),  # a new start: the next seed, or the next episode of --start
    "screenshot": ("f12", "o"),
    "record": ("c",),
    "memory": ("m",),
    "minimap": ("v",),  # "n" is step: the map of the view memory
    "save_world": ("f5",),
    "load_world": ("f9",),
}

# Controls in replay, where no key drives the game.
REPLAY_CONTROLS: dict[str, tuple[str, ...]] = {
    "quit": ("escape", "q"),
    "help": ("h",),
    "pause": ("space", "p", "return", "break"),
    "step": ("n", "."),
    "back": ("left", ","),  # held: scrubs one frame per tick
    "forward": ("right",),
    "first": ("home",),
    "last": ("end",),
    "screenshot": ("f12", "o"),
}

CONTROL_HELP = {
    "quit": "quit", "help": "this help", "pause": "pause / resume",
    "step": "one frame (while paused)", "reset": "new start (next seed / episode)",
    "screenshot": "screenshot (PNG)", "record": "start / stop recording",
    "memory": "episodic memory on / off", "minimap": "remembered map on / off",
    "save_world": "save the world (memory)", "load_world": "load the saved world",
    "back": "scrub back (hold)",
    "forward": "scrub forward (hold)", "first": "first frame", "last": "last frame",
}
KEY_LABELS = {"return": "enter", "break": "pause", "escape": "esc", ".": "period", ",": "comma",
              "f5": "F5", "f9": "F9", "f12": "F12"}


def keymap_for(game_name: str) -> dict[str, Any]:
    """The key-name -> action map of a game (`Game.keys`); errors name the games that have one."""
    game = get_game(game_name)
    keys = dict(game.keys)
    if not keys:
        raise ActionError(f"game {game_name!r} has no key map; the window can play "
                          f"{[g for g in known_games() if get_game(g).keys]}")
    space = game.action_space
    for action in keys.values():
        if isinstance(space, DiscreteActionSpace):
            space.index(action)  # a typo in a keymap is an error at once, not a dead key
        else:
            space.validate(np.asarray(action, np.float32))
    overlap = set(keys) & {k for ks in CONTROLS.values() for k in ks}
    assert not overlap, f"keys both game and control: {overlap}"
    return keys


def control_lookup(controls: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """key name -> command."""
    return {key: cmd for cmd, keys in controls.items() for key in keys}


def help_lines(keys: dict[str, str], controls: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """The help overlay as (keys, what) rows: one per action, a blank row, one per control."""
    def label(ks: list[str] | tuple[str, ...]) -> str:
        return " / ".join(KEY_LABELS.get(k, k) for k in ks)

    by_action: dict[str, list[str]] = {}
    for key, action in keys.items():
        name = action if isinstance(action, str) else " ".join(f"{v:g}" for v in action)
        by_action.setdefault(name, []).append(key)
    rows = [(label(ks), action) for action, ks in by_action.items()]
    if rows:
        rows.append(("", ""))
    return rows + [(label(ks), CONTROL_HELP.get(cmd, cmd)) for cmd, ks in controls.items()]


class HeldKeys:
    """Which action to apply this frame, from key-down/up events.

    A key pressed during the frame wins (so a tap shorter than a frame is not lost); otherwise the
    most recently pressed key still held; otherwise noop. Held keys repeat once per frame.

    For a continuous action space (buttons plus camera deltas) each key is a vector, and every key
    held this frame counts at once (walk and turn together): their sum, made an action by
    `combine` (the space's `snap`: buttons pressed, camera moves clipped); no key is all zeros.
    """

    def __init__(self, keys: dict[str, Any], noop: str = "noop",
                 combine: Callable[[np.ndarray], np.ndarray] | None = None):
        self.keys = keys
        self.noop = noop
        self.combine = combine
        self.held: list[str] = []  # in press order
        self.tapped: str | None = None

    def down(self, key: str) -> bool:
        """Returns whether the key is a game key."""
        if key not in self.keys:
            return False
        if key in self.held:
            self.held.remove(key)
        self.held.append(key)
        self.tapped = key
        return True

    def up(self, key: str) -> None:
        if key in self.held:
            self.held.remove(key)

    def clear(self) -> None:
        """Forget everything held (the window lost focus, so key-ups may never come)."""
        self.held.clear()
        self.tapped = None

    def action(self) -> str | np.ndarray:
        """The action for this frame; consumes the tap."""
        if self.combine is not None:
            pressed = set(self.held) | ({self.tapped} if self.tapped else set())
            self.tapped = None
            dim = len(next(iter(self.keys.values())))
            total = sum((np.asarray(self.keys[k], np.float32) for k in pressed),
                        np.zeros(dim, np.float32))
            return self.combine(total)
        key = self.tapped or (self.held[-1] if self.held else None)
        self.tapped = None
        return self.keys[key] if key else self.noop
