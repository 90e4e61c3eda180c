"""Continuous actions (buttons plus camera deltas) through every front end: a toy game whose
camera pans by its yaw delta, played by the session, its memory's frame ring, the key map,
the window (SDL dummy driver), the recorder, the Gymnasium env and the service."""

from __future__ import annotations

import http.client
import json
import os
import threading

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from conftest import TINY_YAML, perturb_  # noqa: E402
from worldmodel.actions import MinecraftActionSpace, register_action_space  # noqa: E402
from worldmodel.config import load_config  # noqa: E402
from worldmodel.dynamics import Denoiser  # noqa: E402
from worldmodel.game import GameBase, StepResult, register_game, unregister_game  # noqa: E402

SIZE, CELLS = 16, 4
SPACE = register_action_space(MinecraftActionSpace(name="toypan", buttons=("forward",),
                                                   camera_max_deg=30.0))


class PanEnv:
    """Random colour columns; the camera's yaw delta pans the view one column per 15 degrees."""

    name, fps, action_space = "toypan", 10, SPACE

    def __init__(self, size: int = SIZE):
        self.size = size

    def reset(self, seed: int) -> np.ndarray:
        self.cols = np.random.default_rng(seed).integers(0, 256, (CELLS, 3), np.uint8)
        self.yaw = 0
        return self._frame()

    def step(self, action) -> StepResult:
        a = SPACE.validate(np.asarray(action, np.float32))
        self.yaw += int(round(a[1] / 15))
        return StepResult(self._frame(), 0.0, False)

    def _frame(self) -> np.ndarray:
        row = np.roll(self.cols, -self.yaw, 0).repeat(self.size // CELLS, 0)
        return np.broadcast_to(row[None], (self.size, self.size, 3)).copy()

    def pose(self) -> np.ndarray:
        return np.array([self.yaw], np.int64)

    def labels(self) -> None:
        return None

    def episode_meta(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class PanGame(GameBase):
    name, frame_size, action_space = "toypan", SIZE, SPACE
    keys = {"w": [1.0, 0.0, 0.0], "left": [0.0, -15.0, 0.0], "right": [0.0, 15.0, 0.0]}

    def make_env(self, size=None, **options) -> PanEnv:
        return PanEnv(size or self.frame_size)


@pytest.fixture
def session():
    from simulator.session import WorldSession

    register_game(PanGame())
    cfg = load_config(TINY_YAML, ["model.action_space=toypan", f"model.frame_size={SIZE}"])
    torch.manual_seed(0)
    sess = WorldSession(perturb_(Denoiser(cfg.model)).eval(), cfg, checkpoint="toypan")
    yield sess
    sess.close()
    unregister_game("toypan")


def test_the_session_and_its_memory_ring_take_vectors(session):


    session.reset(seed=1)
    assert session.step([1.0, 15.0, 0.0]).shape == (SIZE, SIZE, 3)
    video = session.rollout(np.zeros((1, 3, 3), np.float32))
    assert video.shape == (1, 3, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="buttons must be 0 or 1"):
        session.step([0.5, 0.0, 0.0])
    session.set_memory(True)  # the temporal LoRA: its ring keeps the vectors
    for _ in range(3):
        session.step([0.0, -15.0, 0.0])
    ring = session.memory._slots[0].ring
    assert ring.actions.dtype == torch.float32 and ring.actions.shape[-1] == 3
    assert ring.actions[(ring.count - 1) % ring.capacity, 0].tolist() == [0.0, -15.0, 0.0]
    assert session.memory_error is None


def test_held_keys_add_up_and_snap():
    from simulator.keymap import HeldKeys

    held = HeldKeys(PanGame.keys, combine=SPACE.snap)
    assert held.action().tolist() == [0, 0, 0]
    held.down("w")
    held.down("left")
    assert held.action().tolist() == [1, -15, 0]  # walk and turn at once
    held.up("left")
    held.down("right")
    held.down("left")
    assert held.action().tolist() == [1, 0, 0]


def test_window_recorder_gym_and_service_play_vectors(session, tmp_path):
    import pygame

    from simulator.gym_env import WorldModelEnv
    from simulator.recorder import Start, record_rollout
    from simulator.service import make_server
    from simulator.play import PlayApp
    from simulator.window import Window
    from worldmodel.data.episode import load_episode

    app = PlayApp(session, Start(seed=1), Window(), fps=0, scale=2, recordings=tmp_path / "rec",
                  screenshots=tmp_path / "shots")
    try:
        pygame.event.clear()
        for k in ("w", "right"):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.key.key_code(k)))
        app.run(max_frames=2)
        assert app.last_action == "1 15 0" and session.steps == 2
    finally:
        app.close()

    out = record_rollout(session, Start(seed=2), [[1, 15, 0], [0, -15, 0]], tmp_path / "r",
                         frames=3, progress=False)
    assert load_episode(out).actions.tolist() == [[1, 15, 0], [0, -15, 0], [1, 15, 0]]

    env = WorldModelEnv(session, reward_head=None)
    env.reset(seed=3)
    assert env.action_space.shape == (3,)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (SIZE, SIZE, 3)

    srv = make_server(session, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        replies = []
        for body in ({"seed": 4}, {"actions": [[1, 15, 0]]}, {"actions": [[1, 99, 0]]}):
            conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=30)
            conn.request("POST", "/reset" if "seed" in body else "/step",
                         body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            replies.append((resp.status, json.loads(resp.read())))
            conn.close()
        assert [s for s, _ in replies] == [200, 200, 400]
        assert "camera" in replies[2][1]["error"]
    finally:
        srv.shutdown()
        srv.server_close()
