"""A second game behind the same seam, in a few lines: a random-colour grid world. With no change
outside this file, it collects data, trains a few dozen steps, plays in the window (SDL dummy driver),
records and serves: the core, the session, the window, the recorder and the service name no game.
"""

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

from conftest import TINY_YAML  # noqa: E402
from worldmodel.actions import DiscreteActionSpace, register_action_space  # noqa: E402
from worldmodel.config import load_config  # noqa: E402
from worldmodel.game import GameBase, RealEnv, StepResult, register_game, unregister_game  # noqa: E402

SIZE, CELLS = 16, 4
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


class GridEnv:
    """A 4x4 grid of random colours per seed; the camera scrolls one cell per move (wrapping)."""

    name, fps = "toygrid", 10

    def __init__(self, size: int = SIZE):
        self.size, self.action_space = size, TOY.action_space

    def reset(self, seed: int) -> np.ndarray:
        self.world = np.random.default_rng(seed).integers(0, 256, (CELLS, CELLS, 3), np.uint8)
        self.pos = np.zeros(2, np.int64)
        return self._frame()

    def step(self, action) -> StepResult:
        self.pos = (self.pos + MOVES.get(self.action_space.actions[self.action_space.index(action)],
                                         (0, 0))) % CELLS
        return StepResult(self._frame(), 0.0, False)

    def _frame(self) -> np.ndarray:
        grid = np.roll(self.world, (-self.pos[1], -self.pos[0]), (0, 1))
        return grid.repeat(self.size // CELLS, 0).repeat(self.size // CELLS, 1)

    def pose(self) -> np.ndarray:
        return self.pos.copy()

    def labels(self) -> None:
        return None

    def episode_meta(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class ToyGame(GameBase):
    name, frame_size = "toygrid", SIZE
    action_space = register_action_space(DiscreteActionSpace("toygrid", ("noop", *MOVES)))
    keys = {"a": "left", "d": "right", "w": "up", "s": "down"}

    def make_env(self, size=None, **options) -> GridEnv:
        return GridEnv(size or self.frame_size)

    def policies(self):
        return {"explore": lambda seed, length, trip=0: iter(
            np.random.default_rng(seed).integers(0, 5, length).tolist())}


TOY = ToyGame()


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    """The toy game registered, a few episodes collected, a tiny model trained on them."""
    from simulator.collect import collect_episode
    from simulator.games import make_game
    from worldmodel.training.train import train

    register_game(TOY)
    root = tmp_path_factory.mktemp("toy")
    env = make_game("toygrid")
    for seed in range(3):
        assert collect_episode(env, root / "data" / f"train_{seed:07d}", seed, 12) == 12
    cfg = load_config(TINY_YAML, ["model.action_space=toygrid", f"model.frame_size={SIZE}",
                                  f"data.train={root / 'data'}", f"train.out={root / 'ckpt'}",
                                  "train.steps=40", "train.log_every=1", "train.ckpt_every=40"])
    result = train(cfg, torch.device("cpu"), quiet=True)
    yield root / "ckpt", result
    unregister_game("toygrid")


def test_the_toy_game_passes_the_seam(toy_checkpoint):
    env = TOY.make_env()
    assert isinstance(env, RealEnv)
    assert env.reset(0).shape == (SIZE, SIZE, 3) and env.step("right").obs.shape == (SIZE, SIZE, 3)
    assert env.pose().tolist() == [1, 0]


def test_the_toy_game_trains_and_its_loss_falls(toy_checkpoint):
    ckpt, result = toy_checkpoint
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 40 and np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    assert json.loads((ckpt / "config.json").read_text())["model"]["action_space"] == "toygrid"


def test_the_toy_game_plays_in_the_window_records_and_serves(toy_checkpoint, tmp_path):
    import pygame

    from simulator.recorder import Start, record_rollout
    from simulator.service import make_server
    from simulator.session import WorldSession
    from simulator.play import PlayApp
    from simulator.window import Window

    ckpt, _ = toy_checkpoint
    session = WorldSession.load(ckpt, device="cpu")
    assert session.game == "toygrid"
    app = PlayApp(session, Start(seed=1), Window(), fps=0, scale=2, recordings=tmp_path / "rec",
                  screenshots=tmp_path / "shots")
    try:
        pygame.event.clear()
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.key.key_code("d")))
        app.run(max_frames=3)
        assert app.frames == 3 and session.steps == 3 and app.last_action == "right"
    finally:
        app.close()

    out = record_rollout(session, Start(seed=2), [1, 2, 3], tmp_path / "recorded", frames=4,
                         progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["game"] == "toygrid" and meta["action_space"] == "toygrid"

    srv = make_server(session, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        for path, body in (("/reset", {"seed": 3}), ("/step", {"actions": ["left"]})):
            conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=30)
            conn.request("POST", path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            resp.read()
            conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        session.close()
