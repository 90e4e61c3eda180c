"""The processes behind the real Minetest: the programs it needs, its client settings, a private
Xvfb display, and ending a process group."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from worldmodel.game import GameError

INSTALL_SCRIPT = "scripts/install_system.sh"
MINETEST_GAME = "/usr/share/games/minetest/games/minetest_game"


def find_programs() -> tuple[str, str]:
    """(minetest, Xvfb) executables; GameError naming the install script where either is missing."""
    minetest = shutil.which("minetest") or ("/usr/games/minetest" if os.access("/usr/games/minetest", os.X_OK) else None)
    xvfb = shutil.which("Xvfb")
    missing = [n for n, p in (("minetest", minetest), ("Xvfb", xvfb)) if p is None]
    if not missing and not Path(MINETEST_GAME).is_dir():
        missing = ["minetest_game"]
    if missing:
        raise GameError(f"the minetest game needs {' and '.join(missing)}: run `sudo {INSTALL_SCRIPT}` "
                        "(Debian packages minetest and xvfb)")
    return minetest, xvfb


def available() -> bool:
    try:
        find_programs()
        return True
    except GameError:
        return False


def client_settings(size: int, map_seed: int, port: int, fov: int, viewing_range: int) -> dict[str, Any]:
    """Client and server settings that make frames clean and stable at small sizes (see
    ../shared/MINETEST.md): no shaders, filters, clouds, particles, bobbing or sound; fixed noon;
    a fixed map seed; the server on loopback only."""
    return dict(
        screen_w=size, screen_h=size, fullscreen="false", enable_shaders="false",
        smooth_lighting="false", enable_clouds="false", enable_fog="true",
        viewing_range=viewing_range, mip_map="false", bilinear_filter="false",
        trilinear_filter="false", anisotropic_filter="false", enable_particles="false",
        enable_minimap="false", enable_dynamic_shadows="false", view_bobbing_amount=0,
        fall_bobbing_amount=0, arm_inertia="false", node_highlighting="none", enable_sound="false",
        time_speed=0, world_start_time=12000, max_block_generate_distance=0, server_side_occlusion_culling="false", block_send_optimize_distance=12, max_simultaneous_block_sends_per_client=200, static_spawnpoint="0,20000,0", fixed_map_seed=map_seed, mg_name="v7", creative_mode="true",
        enable_damage="false", fov=fov, pause_on_lost_focus="false", fps_max=100,
        fps_max_unfocused=100, enable_local_map_saving="false", hud_scaling=0.5, gui_scaling=0.5,
        dedicated_server_step=0.005, show_debug="false", recent_chat_messages=2,
        enable_build_where_you_stand="false", bind_address="127.0.0.1", port=port,
        server_announce="false", motd="", liquid_update=1e9, num_emerge_threads=1, enable_mod_channels="false", mainmenu_last_selected_world=1,
    )


def _free_display(start: int = 60) -> int:
    for n in range(start, start + 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise GameError("no free X display number between :60 and :259")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout)


class Display:
    """A private Xvfb display (the first free number from :60; a number taken meanwhile by
    another process is skipped). `close()` ends it."""

    def __init__(self, size: int, xvfb: str, timeout: float = 10.0):
        last = "no display tried"
        start = 60
        for _ in range(20):
            n = _free_display(start)
            proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", f"{size}x{size}x24", "-nolisten",
                                     "tcp"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if Path(f"/tmp/.X11-unix/X{n}").exists():
                    self.proc, self.number = proc, n
                    self.name = f":{n}"
                    return
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
            last = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["timed out"])[-1]
            _stop(proc)
            start = n + 1
        raise GameError(f"could not start Xvfb: {last}")

    def close(self) -> None:
        _stop(getattr(self, "proc", None))
