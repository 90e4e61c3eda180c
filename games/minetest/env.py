"""The real Minetest, driven one discrete step per action from Python: frames, poses, labels.

Debian's `minetest` (5.6.1 with minetest_game) runs on a private Xvfb display with software GL at
`size` x `size` pixels. The world mod `mod/ngs_driver` zeroes the player's own physics and moves
the player from the server, one step per command, so a seed and an action list give the same
poses and nodes every run (the client's physics depends on frame timing; key presses would not
replay). Commands and answers go through two small files in the world folder, each written to a
temporary name and renamed.

A seed is a world: the map seed, the kind of start point (grassland, forest, desert, water, cave,
in turn) and where the search for one starts, all derived from it (`spawn_for`). Every reset
starts a fresh game on that map (no map is saved: the `dummy` backend), so nothing of one
episode leaks into the next. The client redraws a new pose a frame or two after the server has
set it: a step's frame is the first screen grab that differs from the last frame (when the view
should change) and then stays the same for `stable_s`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from games.minetest.actions import ACTION_SPACE
from games.minetest.labels import LABEL_NAMES, label_ids
from games.minetest.processes import (INSTALL_SCRIPT, Display, _free_port, _stop, available,
                                      client_settings, find_programs)
from games.minetest.xdisplay import XDisplay
from worldmodel.game import GameCrash, StepResult

MOD = Path(__file__).resolve().parent / "mod" / "ngs_driver"
KINDS = ("grassland", "forest", "desert", "water", "cave")


class MinetestCrash(GameCrash):
    """Minetest died or stopped answering mid-episode."""


@dataclass(frozen=True)
class Spawn:
    map_seed: int
    kind: str
    x: int
    z: int
    yaw: int  # in 15-degree steps


def spawn_for(seed: int) -> Spawn:
    """The world of `seed`: its own map seed, a start-point kind (the five in turn) and where the
    search for one begins. Seeds of disjoint ranges are disjoint worlds."""
    rng = np.random.default_rng([int(seed), 0x4D54])
    x, z = (int(v) for v in rng.integers(-2000, 2000, 2))
    return Spawn(map_seed=int(seed) * 7919 + 1, kind=KINDS[int(seed) % len(KINDS)], x=x, z=z,
                 yaw=int(rng.integers(0, 24)))


class MinetestEnv:
    """The real game (`worldmodel.game.RealEnv`). `reset(seed)` starts the world of `seed`;
    `step(action)` plays one discrete step. `labels()` is the current frame's per-pixel block
    label map at `label_size` (every `label_every`-th frame; None on the others)."""

    name = "minetest"
    fps = 10

    def __init__(self, size: int = 64, label_size: int = 32, label_every: int = 4, fov: int = 72,
                 viewing_range: int = 48, stable_s: float = 0.012, timeout: float = 20.0,
                 workdir: str | Path | None = None, settings: dict[str, Any] | None = None):
        self.minetest, self.xvfb = find_programs()
        self.settings = dict(settings or {})  # overrides of client_settings
        self.size, self.label_size, self.label_every = int(size), int(label_size), max(1, int(label_every))
        self.fov, self.viewing_range = int(fov), int(viewing_range)
        self.stable_s, self.timeout = float(stable_s), float(timeout)
        self.action_space = ACTION_SPACE
        self._own_dir = workdir is None
        self.root = Path(tempfile.mkdtemp(prefix="ngs-minetest-") if workdir is None else workdir)
        self.display: Display | None = None
        self.grabber: XDisplay | None = None
        self.proc: subprocess.Popen | None = None
        self.seed: int | None = None
        self.spawn: Spawn | None = None
        self.frame: np.ndarray | None = None
        self.state: dict[str, Any] = {}
        self._labels: np.ndarray | None = None
        self._seq = 0
        self.steps = 0

    # ---- processes ---------------------------------------------------------------------------

    def _start(self, spawn: Spawn) -> None:
        """A fresh game on `spawn`'s map (the display is kept from one reset to the next)."""
        self._stop_game()
        if self.display is None:
            self.display = Display(self.size, self.xvfb)
            self.grabber = XDisplay(self.display.name, self.size, self.size)
        world = self.root / "world"
        shutil.rmtree(world, ignore_errors=True)
        (world / "worldmods").mkdir(parents=True)
        shutil.copytree(MOD, world / "worldmods" / MOD.name)
        (world / "world.mt").write_text("gameid = minetest_game\nbackend = dummy\n"
                                        "player_backend = dummy\nauth_backend = sqlite3\n"
                                        "creative_mode = true\nenable_damage = false\n")
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        conf = client_settings(self.size, spawn.map_seed, _free_port(), self.fov, self.viewing_range)
        conf.update(self.settings)
        (self.root / "minetest.conf").write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        self._ack = world / "ngs" / "ack"
        self._cmd = world / "ngs" / "cmd"
        self._seq = 0
        env = dict(os.environ, HOME=str(home), DISPLAY=self.display.name, LP_NUM_THREADS=os.environ.get("LP_NUM_THREADS", "1"))
        self.log = self.root / "minetest.log"
        self.proc = subprocess.Popen(
            [self.minetest, "--go", "--world", str(world), "--config", str(self.root / "minetest.conf"),
             "--name", "ngs", "--port", str(conf["port"]), "--logfile", str(self.log)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait(self._ack, lambda a: a.get("ready"), "start")

    def _stop_game(self) -> None:
        _stop(self.proc)
        self.proc = None

    def close(self) -> None:
        """End the game and its display and remove the working folder. Safe to call twice."""
        self._stop_game()
        if self.grabber is not None:
            self.grabber.close()
            self.grabber = None
        if self.display is not None:
            self.display.close()
            self.display = None
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "MinetestEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---- the command channel -----------------------------------------------------------------

    def _wait(self, path: Path, done, what: str) -> dict:
        """The JSON object in the mod's answer file `path` once `done(it)` holds (MinetestCrash
        when the game exits or stops answering first)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                got = json.loads(path.read_text())
            except (OSError, ValueError):  # not there yet (files are renamed into place whole)
                got = None
            if got is not None and done(got):
                return got
            if self.proc is None or self.proc.poll() is not None:
                raise MinetestCrash(f"minetest exited during {what} ({self._log_tail()})")
            if time.monotonic() > deadline:
                raise MinetestCrash(f"minetest did not answer {what} within {self.timeout:.0f} s")
            time.sleep(0.001)

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if "ERROR" in ln]
        except OSError:
            lines = []
        return lines[-1].strip()[:200] if lines else "no error in its log"

    def command(self, line: str) -> dict:
        """Send one command line to the mod; its answer (MinetestCrash if none comes)."""
        if self.proc is None:
            raise RuntimeError("call reset(seed) before step()")
        self._seq += 1
        seq = self._seq
        tmp = self._cmd.with_name("cmd.tmp")
        tmp.write_text(f"{seq} {line}\n")
        os.replace(tmp, self._cmd)
        ack = self._wait(self._ack, lambda a: a.get("seq") == seq, line.split()[0])
        if "error" in ack:
            raise MinetestCrash(f"the driver mod failed on {line!r}: {ack['error']}")
        return ack

    # ---- frames --------------------------------------------------------------------------------

    def _capture(self, expect_change: bool, wait_change_s: float = 0.15, limit_s: float = 1.0) -> np.ndarray:
        """The screen once the client has drawn the new state: (when the view should change)
        different from the last frame, then the same for `stable_s`."""
        prev = self.frame
        t0 = time.monotonic()
        last = self.grabber.grab()
        since = t0
        while True:
            time.sleep(0.002)
            now = time.monotonic()
            cur = self.grabber.grab()
            if not np.array_equal(cur, last):
                last, since = cur, now
                continue
            waiting = (expect_change and prev is not None and np.array_equal(cur, prev)
                       and now - t0 < wait_change_s)
            if not waiting and now - since >= self.stable_s:
                return cur
            if now - t0 > limit_s:
                return cur

    def _settle(self, turns: int = 24) -> None:
        """Let the client load and draw the blocks around the start: a slow full turn in place."""
        for _ in range(turns):
            self.command("act turn_left 0")
            time.sleep(0.03)
        time.sleep(0.3)

    def _update(self, ack: dict) -> None:
        self.state = {"pos": ack["pos"], "yaw": ack["yaw"], "pitch": ack["pitch"],
                      "changed": bool(ack.get("changed")), "hash": ack.get("hash")}
        self._labels = None

    def _read_labels(self, seq: int) -> np.ndarray:
        """The label map the mod casts after answering command `seq` (while the frame is grabbed)."""
        lab = self._wait(self._ack.with_name("labels"), lambda a: a.get("seq") == seq, "labels")
        return label_ids(lab["names"], lab["ids"], lab["size"])

    def _want_labels(self) -> int:
        return self.label_size if self.label_size > 0 and self.steps % self.label_every == 0 else 0

    def reset(self, seed: int) -> np.ndarray:
        self.seed = int(seed)
        self.spawn = spawn_for(self.seed)
        self.frame = None
        self.steps = 0
        self._start(self.spawn)
        sp = self.spawn
        ack = self.command(f"spawn {sp.kind} {sp.x} {sp.z} {sp.yaw} 0")
        self.biome = ack.get("biome")
        self.spawn_info = {k: ack.get(k) for k in ("kind", "biome", "found", "ground", "cave")}
        self._settle()
        want = self._want_labels()
        self._update(self.command(f"act noop {want}"))
        self.frame = self._capture(expect_change=False)
        if want:
            self._labels = self._read_labels(self._seq)
        return self.frame

    def step(self, action: int | str) -> StepResult:
        a = self.action_space.index(action)
        name = self.action_space.actions[a]
        self.steps += 1
        want = self._want_labels()
        self._update(self.command(f"act {name} {want}"))
        self.frame = self._capture(expect_change=self.state["changed"])
        if want:
            self._labels = self._read_labels(self._seq)
        info = {"changed": self.state["changed"], "node_hash": self.state["hash"]}
        return StepResult(self.frame, 0.0, False, info)

    # ---- the core's RealEnv protocol ---------------------------------------------------------

    def pose(self) -> np.ndarray:
        """(x, y, z, yaw, pitch): feet position in nodes, yaw and pitch in degrees."""
        s = self.state
        return np.asarray([*s["pos"], s["yaw"], s["pitch"]], np.float64)

    def labels(self) -> np.ndarray | None:
        return self._labels

    def episode_meta(self) -> dict:
        sp = self.spawn
        return {"map_seed": sp.map_seed, "spawn": {"kind": sp.kind, "search_from": [sp.x, sp.z],
                                                   **self.spawn_info},
                "label_size": self.label_size, "label_every": self.label_every,
                "pose": "x, y, z (feet, nodes), yaw, pitch (degrees)"}

    @property
    def node_hash(self) -> str | None:
        return self.state.get("hash")


__all__ = ["INSTALL_SCRIPT", "KINDS", "LABEL_NAMES", "MinetestCrash", "MinetestEnv", "Spawn",
           "available", "find_programs", "spawn_for"]
