"""The world model as a Gymnasium env: API conformance (check_env), determinism, the vector form."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from simulator.gym_env import WorldModelEnv, WorldModelVectorEnv
from simulator.session import WorldSession
from worldmodel.training.reward_head import RewardHead, RewardHeadConfig

SIZE = 16


def fake_context(n: int, size: int = SIZE):
    """seed -> n deterministic frames and actions, standing in for the (slow) real game."""

    def fn(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        frames = np.repeat(np.repeat(rng.integers(0, 256, (n, size // 4, size // 4, 3), np.uint8), 4, 1), 4, 2)
        return frames, np.r_[-1, rng.integers(0, 17, n - 1)]

    return fn


@pytest.fixture
def make_session(tiny_config, perturbed_model):
    def make(batch: int = 1) -> WorldSession:
        cfg = tiny_config()
        return WorldSession(perturbed_model(cfg), cfg, batch=batch, seed=0)

    return make


def head(size: int = SIZE) -> RewardHead:
    return RewardHead(RewardHeadConfig(frame_size=size, channels=[4, 8], hidden=8)).eval()


def test_check_env_passes(make_session):
    sess = make_session()
    env = WorldModelEnv(sess, head(), max_episode_steps=5, context_fn=fake_context(sess.context_len))
    check_env(env, skip_render_check=True)
    assert env.observation_space == gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    assert env.action_space == gym.spaces.Discrete(17)


def test_seeded_episode_is_reproducible_and_truncates(make_session):
    sess = make_session()
    env = WorldModelEnv(sess, head(), max_episode_steps=3, done_threshold=1.1,
                        context_fn=fake_context(sess.context_len))
    runs = []
    for _ in range(2):
        obs, info = env.reset(seed=7)
        assert obs.dtype == np.uint8 and obs.shape == (SIZE, SIZE, 3) and info["game_seed"] == 7
        out = [env.step(a) for a in (1, 2, 3)]
        runs.append(out)
        assert [o[3] for o in out] == [False, False, True]  # truncated at max_episode_steps
        assert all(isinstance(o[1], float) for o in out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
    with pytest.raises(ValueError):
        env.step(17)


def test_reset_from_given_context(make_session):
    sess = make_session()
    env = WorldModelEnv(sess, None, context_fn=fake_context(sess.context_len))
    ctx, acts = fake_context(sess.context_len)(3)
    obs, _ = env.reset(options={"context": ctx, "actions": acts})
    np.testing.assert_array_equal(obs, ctx[-1])
    _, rew, term, _, _ = env.step(0)
    assert rew == 0.0 and term is False  # no reward head: no reward, no termination
    with pytest.raises(ValueError):
        env.reset(options={"bogus": 1})


def test_vector_env_steps_batch_and_autoresets(make_session):
    sess = make_session(batch=3)
    envs = WorldModelVectorEnv(sess, head(), max_episode_steps=2, done_threshold=1.1,
                               context_fn=fake_context(sess.context_len))
    assert envs.single_action_space == gym.spaces.Discrete(17)
    assert envs.action_space.shape == (3,)
    obs, info = envs.reset(seed=[4, 5, 6])
    assert obs.shape == (3, SIZE, SIZE, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[1], fake_context(sess.context_len)(5)[0][-1])
    obs, rew, term, trunc, infos = envs.step(np.array([1, 2, 3]))
    assert rew.shape == (3,) and not trunc.any() and "final_obs" not in infos
    obs, rew, term, trunc, infos = envs.step(np.array([0, 0, 0]))
    assert trunc.all() and infos["_final_obs"].all()
    assert infos["final_obs"][0].shape == (SIZE, SIZE, 3)
    # SAME_STEP autoreset: the returned frames are the next episodes' first frames.
    assert all(np.array_equal(envs._hist[i, -1], obs[i]) for i in range(3))
    obs, *_ = envs.step(np.array([4, 4, 4]))
    assert obs.shape == (3, SIZE, SIZE, 3)
    with pytest.raises(ValueError):
        envs.step(np.array([0, 0]))
    with pytest.raises(ValueError):
        envs.step(np.array([0, 0, 99]))


class EndsOneWorld:
    """A reward/termination head that ends world `world` at step `at` (and nothing else)."""

    def __init__(self, batch: int, world: int, at: int):
        self.batch, self.world, self.at, self.t = batch, world, at, 0

    def predict(self, prev: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.t += 1
        done = np.zeros(self.batch, np.float32)
        done[self.world] = float(self.t == self.at)
        return np.zeros(self.batch, np.float32), done


def test_a_world_goes_on_untouched_when_its_neighbour_ends(make_session):
    """World 0's trajectory is the same whether or not world 1 ends (and autoresets) at step 3."""
    runs = {}
    for at in (3, 0):  # 0: world 1 never ends
        sess = make_session(batch=2)
        envs = WorldModelVectorEnv(sess, None, max_episode_steps=100,
                                   context_fn=fake_context(sess.context_len))
        envs.reset(seed=[4, 5])
        envs.reward_head = EndsOneWorld(2, world=1, at=at)
        steps = [envs.step(np.array([a, 5 - a])) for a in (1, 2, 3, 4, 1, 2)]
        assert [bool(s[2][1]) for s in steps] == [i + 1 == at for i in range(6)]
        runs[at] = np.stack([s[0] for s in steps], 1)
    np.testing.assert_array_equal(runs[3][0], runs[0][0])
    assert not np.array_equal(runs[3][1, 2:], runs[0][1, 2:])  # world 1 did start over


def test_vector_env_matches_single_env_with_one_world(make_session):
    """A vector env of one world is the single env (same seed, same context, same noise)."""
    s1, s2 = make_session(), make_session()
    ctx = fake_context(s1.context_len)
    rh = head()
    env = WorldModelEnv(s1, rh, context_fn=ctx, done_threshold=1.1)
    venv = WorldModelVectorEnv(s2, rh, context_fn=ctx, done_threshold=1.1)
    o1, _ = env.reset(seed=11)
    o2, _ = venv.reset(seed=11)
    np.testing.assert_array_equal(o1, o2[0])
    for a in (1, 3, 5):
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = venv.step(np.array([a]))
        np.testing.assert_array_equal(o1, o2[0])
        assert r1 == pytest.approx(float(r2[0]))


def test_real_game_context(tiny_config, perturbed_model, monkeypatch):
    """Without a context_fn, reset(seed) plays the real game, as WorldSession.reset(seed) does."""
    import simulator.gym_env as gym_env

    calls = []

    def spy(game, seed, frames, size):
        calls.append((game, seed, frames, size))
        out[:] = real_context(game, seed, frames, size=size)
        return out

    out: list = [None, None]
    real_context = gym_env.real_context
    monkeypatch.setattr(gym_env, "real_context", spy)
    cfg = tiny_config(size=32)
    sess = WorldSession(perturbed_model(cfg), cfg, batch=1)
    obs, _ = WorldModelEnv(sess, head(32)).reset(seed=2)
    assert calls == [("crafter", 2, sess.context_len, 32)]
    np.testing.assert_array_equal(obs, out[0][-1])


def test_memory_on_steps_and_close_stops_it(make_session):
    sess = make_session()
    env = WorldModelEnv(sess, head(), max_episode_steps=5, done_threshold=1.1,
                        context_fn=fake_context(sess.context_len), memory=True)
    assert sess.memory_enabled
    obs, _ = env.reset(seed=3)
    for a in (1, 2, 3, 4):
        obs, rew, term, trunc, _ = env.step(a)
        assert obs.shape == (SIZE, SIZE, 3) and isinstance(rew, float)
    assert sess.memory.frames_seen == 4  # every imagined frame (the context seeds it apart)
    env.close()
    assert not sess.memory_enabled and not sess.memory.worker.running


def test_vector_env_memory_per_world(make_session):
    sess = make_session(batch=3)
    envs = WorldModelVectorEnv(sess, head(), max_episode_steps=2, done_threshold=1.1,
                               context_fn=fake_context(sess.context_len),
                               memory=[False, True, False])
    assert envs.memory_envs == [False, True, False]
    envs.reset(seed=0)
    envs.step(np.array([1, 2, 3]))
    envs.set_memory(True, envs=[0])
    envs.set_memory(False, envs=1)
    assert envs.memory_envs == [True, False, False]
    *_, trunc, _ = envs.step(np.array([0, 0, 0]))  # every world ends and autoresets
    assert trunc.all()
    obs, *_ = envs.step(np.array([4, 4, 4]))
    assert obs.shape == (3, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="out of range"):
        envs.set_memory(True, envs=3)
    envs.close()
    assert not sess.memory.worker.running
    with pytest.raises(ValueError, match="one per world"):
        WorldModelVectorEnv(make_session(batch=3), head(), memory=[True, False])
    off = make_session(batch=3)
    WorldModelVectorEnv(off, head())
    assert off._memory is None  # memory off (the default) builds nothing


def test_minimap_delegates_to_the_session(make_session, monkeypatch):
    sess = make_session(batch=2)
    env = WorldModelVectorEnv(sess, head(), context_fn=fake_context(sess.context_len))
    with pytest.raises(ValueError, match="no view memory"):  # the tiny model has none
        env.minimap()
    calls = []
    monkeypatch.setattr(sess, "minimap", lambda *a: calls.append(a) or np.zeros((7, 7, 3), np.uint8))
    assert env.minimap(1, radius=3).shape == (7, 7, 3) and calls == [(1, 3, 1)]
    single = WorldModelEnv(make_session(), head(), context_fn=fake_context(sess.context_len))
    monkeypatch.setattr(single.session, "minimap", lambda *a: calls.append(a))
    single.minimap(scale=2)
    assert calls[-1] == (0, 12, 2)


@pytest.mark.parametrize("actions", [np.array([1.5, 1.0]), np.array([0.0, np.nan]),
                                     np.array([True, False]), np.array(["1", "2"])])
def test_vector_env_refuses_actions_that_are_not_whole_numbers(make_session, actions):
    sess = make_session(batch=2)
    envs = WorldModelVectorEnv(sess, head(), context_fn=fake_context(sess.context_len))
    envs.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="ints in 0..16"):
        envs.step(actions)
    assert sess.steps == 0  # nothing was stepped
    obs, *_ = envs.step(np.array([1.0, 2.0]))  # whole numbers as floats are those actions
    assert obs.shape == (2, SIZE, SIZE, 3) and sess.steps == 1
