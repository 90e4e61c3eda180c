"""The world model as a Gymnasium environment, one world or a batch of them.

    env = WorldModelEnv.load()                     # shipped model + shipped reward head
    obs, info = env.reset(seed=3)                  # real Crafter frames as context
    obs, rew, terminated, truncated, info = env.step(env.action_space.sample())

    envs = WorldModelVectorEnv.load(num_envs=32)   # one batched WorldSession, one forward pass
    obs, infos = envs.reset(seed=0)                # (32, 64, 64, 3) uint8

Observations are the imagined frames, uint8 (64, 64, 3); actions Discrete(17) (Crafter's).
Reward and termination come from `worldmodel.training.reward_head` run on (previous frame, frame): a small
CNN trained on the real game's reward and death signals. Episodes are truncated after
`max_episode_steps` imagined steps (long rollouts drift). `reset(seed)` plays the real game from
`seed` for the context frames and reseeds the sampler's noise, so a seeded episode is exactly
reproducible (Gymnasium's `check_env` asserts it).

The vector env autoresets in SAME_STEP mode: a world that ends returns its first frame of the next
episode at once, with the last frame in `infos["final_obs"]`. Only the ended worlds' context is
rewritten (`WorldSession.reset_worlds`): the worlds that go on are untouched, so a world's
trajectory does not depend on whether its neighbours ended.

Episodic memory (`memory=True`; off by default): each world fast-learns a temporal LoRA from its
own frames in a background thread (see `simulator.session`), so a world keeps looking the same
when the agent comes back. The vector env switches it per world (`memory=[False, True, ...]`,
`set_memory(on, envs)`); an autoreset restarts only the ended worlds' memories. Learning runs
beside the frame loop, so with memory on a seeded episode is no longer bit-reproducible. `close()`
stops the thread. `minimap()` is the view memory's remembered map (models trained with one; a
ValueError otherwise), an image for logging, not part of the observation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulator.session import ROOT, WorldSession, real_context
from worldmodel.training.reward_head import RewardHead, load_reward_head

DEFAULT_REWARD_HEAD = ROOT / "assets" / "crafter_reward"
ENV_ID = "WorldModelCrafter-v0"

HeadArg = RewardHead | str | Path | None
# seed -> (frames (n, h, w, 3) uint8, the actions that produced them (n,), -1 for none)
ContextFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def _head(head: HeadArg) -> RewardHead | None:
    if head is None or isinstance(head, RewardHead):
        return head
    return load_reward_head(head)


def game_context(session: WorldSession) -> ContextFn:
    """Context from the real game: what `WorldSession.reset(seed=...)` plays, for one world."""
    return lambda seed: real_context(session.game, seed, session.context_len, size=session.frame_size)


def _spaces(session: WorldSession) -> tuple[spaces.Box, spaces.Space]:
    """Observations, and actions: Discrete(n) for a discrete space, a Box of the continuous
    space's bounds (buttons 0..1, camera deltas) otherwise."""
    s = session.frame_size
    obs = spaces.Box(0, 255, (s, s, 3), np.uint8)
    if session.space.kind == "discrete":
        return obs, spaces.Discrete(session.space.n)
    low, high = session.space.bounds()
    return obs, spaces.Box(low, high, low.shape, np.float32)


class WorldModelEnv(gym.Env):
    """One imagined world; see module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, session: WorldSession, reward_head: HeadArg = DEFAULT_REWARD_HEAD,
                 max_episode_steps: int = 500, done_threshold: float = 0.5,
                 render_mode: str | None = None, context_fn: ContextFn | None = None,
                 memory: bool = False):
        if session.batch != 1:
            raise ValueError(f"WorldModelEnv drives one world; got a session of batch "
                             f"{session.batch} (use WorldModelVectorEnv)")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.session = session
        self.reward_head = _head(reward_head)
        self.context_fn = context_fn or game_context(session)
        self.max_episode_steps = max_episode_steps
        self.done_threshold = done_threshold
        self.render_mode = render_mode
        self.observation_space, self.action_space = _spaces(session)
        self._frame: np.ndarray | None = None
        self._t = 0
        if memory:
            session.set_memory(True)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, reward_head: HeadArg = DEFAULT_REWARD_HEAD,
             device: str | None = None, **kwargs: Any) -> "WorldModelEnv":
        return cls(WorldSession.load(checkpoint, device=device, batch=1), reward_head, **kwargs)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """options: {"context": (n, h, w, 3) uint8, "actions": (n,) ints} to start from given
        frames instead of the real game at `seed`."""
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"context", "actions"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; known: context, actions")
        game_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        noise_seed = int(self.np_random.integers(2**62))  # a seeded episode is reproducible
        if "context" in options:
            context, acts = np.asarray(options["context"], np.uint8), options.get("actions")
        else:
            context, acts = self.context_fn(game_seed)
        context = np.asarray(context, np.uint8)[None]
        acts = None if acts is None else np.asarray(acts, np.int64)[None]
        frame = self.session.reset(context=context, actions=acts, noise_seed=noise_seed)
        self._frame = np.array(frame, np.uint8)
        self._t = 0
        return self._frame.copy(), {"game_seed": game_seed}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {str(action)[:200]} is not in {self.action_space}")
        if isinstance(self.action_space, spaces.Discrete):
            frame = self.session.step(int(action))
        else:  # a Box sample: buttons pressed from 0.5
            frame = self.session.step(self.session.space.snap(action)[None])
        rew, done_prob = 0.0, 0.0
        if self.reward_head is not None:
            r, p = self.reward_head.predict(self._frame, frame)
            rew, done_prob = float(r), float(p)
        self._frame = frame
        self._t += 1
        terminated = done_prob > self.done_threshold
        truncated = self._t >= self.max_episode_steps and not terminated
        # (no timings in info: Gymnasium checks that a seeded step's info is reproducible)
        return frame.copy(), rew, terminated, truncated, {"done_prob": done_prob}

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._frame is not None:
            return self._frame.copy()
        return None

    def minimap(self, radius: int = 12, scale: int = 1) -> np.ndarray:
        """The remembered map around the player, uint8 (H, W, 3) (`WorldSession.minimap`)."""
        return self.session.minimap(0, radius, scale)

    def close(self) -> None:
        """Stop the session's background work (the memory's worker thread)."""
        self.session.close()
        super().close()


class WorldModelVectorEnv(VectorEnv):
    """`num_envs` imagined worlds stepped in one batched forward pass; see module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, session: WorldSession, reward_head: HeadArg = DEFAULT_REWARD_HEAD,
                 max_episode_steps: int = 500, done_threshold: float = 0.5,
                 render_mode: str | None = None, context_fn: ContextFn | None = None,
                 memory: bool | Sequence[bool] = False):
        self.session = session
        self.reward_head = _head(reward_head)
        self.context_fn = context_fn or game_context(session)
        self.num_envs = session.batch
        self.max_episode_steps = max_episode_steps
        self.done_threshold = done_threshold
        self.render_mode = render_mode
        self.single_observation_space, self.single_action_space = _spaces(session)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        n = session.context_len
        s = session.frame_size
        self._hist = np.zeros((self.num_envs, n, s, s, 3), np.uint8)  # last n frames per world
        self._hist_act = np.full((self.num_envs, n), -1, np.int64)  # the actions that made them
        self._t = np.zeros(self.num_envs, np.int64)
        self._ready = False
        on = self._memory_envs(memory)
        if on:
            self.set_memory(True, on)

    def _memory_envs(self, memory: bool | Sequence[bool]) -> list[int]:
        """The `memory` option (one bool, or one per world) -> the worlds to switch on."""
        if isinstance(memory, (bool, np.bool_)):
            return list(range(self.num_envs)) if memory else []
        flags = list(memory)
        if len(flags) != self.num_envs or not all(isinstance(f, (bool, np.bool_)) for f in flags):
            raise ValueError(f"memory must be a bool or {self.num_envs} bools (one per world), "
                             f"got {memory!r}")
        return [i for i, f in enumerate(flags) if f]

    def set_memory(self, on: bool, envs: int | Sequence[int] | None = None) -> None:
        """Episodic memory on or off for sub-envs `envs` (None: all; an index or a list)."""
        self.session.set_memory(on, envs)

    @property
    def memory_envs(self) -> list[bool]:
        """Episodic memory on or off, per sub-env."""
        return self.session.memory_worlds

    def minimap(self, env: int = 0, radius: int = 12, scale: int = 1) -> np.ndarray:
        """Sub-env `env`'s remembered map, uint8 (H, W, 3) (`WorldSession.minimap`)."""
        return self.session.minimap(env, radius, scale)

    @classmethod
    def load(cls, num_envs: int, checkpoint: str | Path | None = None,
             reward_head: HeadArg = DEFAULT_REWARD_HEAD, device: str | None = None,
             **kwargs: Any) -> "WorldModelVectorEnv":
        return cls(WorldSession.load(checkpoint, device=device, batch=num_envs), reward_head,
                   **kwargs)

    def _context(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        frames, acts = self.context_fn(seed)
        if frames.shape != self._hist.shape[1:] or np.shape(acts) != self._hist_act.shape[1:]:
            raise ValueError(f"context_fn({seed}) gave frames {frames.shape} and actions "
                             f"{np.shape(acts)}; the vector env keeps {self._hist.shape[1:]}")
        return frames, acts

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """seed: an int (worlds get seed, seed+1, ...) or one seed per world."""
        if options:
            raise ValueError(f"WorldModelVectorEnv.reset takes no options, got {sorted(options)}")
        if isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seed)}")
            game_seeds = [int(s) for s in seed]
            super().reset(seed=game_seeds[0])
        else:
            super().reset(seed=seed)
            if seed is None:
                game_seeds = [int(s) for s in self.np_random.integers(2**31 - 1, size=self.num_envs)]
            else:
                game_seeds = [int(seed) + i for i in range(self.num_envs)]
        noise_seed = int(self.np_random.integers(2**62))
        for i, s in enumerate(game_seeds):
            self._hist[i], self._hist_act[i] = self._context(s)
        self.session.reset(context=self._hist, actions=self._hist_act, noise_seed=noise_seed)
        self._t[:] = 0
        self._ready = True
        return self._hist[:, -1].copy(), {"game_seed": np.asarray(game_seeds)}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        whole = (np.issubdtype(actions.dtype, np.integer)
                 or (np.issubdtype(actions.dtype, np.floating) and np.isfinite(actions).all()
                     and (actions == np.round(actions)).all()))  # 1.0 is action 1; 1.5 is none
        if (actions.shape != (self.num_envs,) or not whole
                or not self.action_space.contains(actions.astype(np.int64))):
            raise ValueError(f"actions must be {self.num_envs} ints in 0..{self.single_action_space.n - 1}, "
                             f"got {str(actions.tolist())[:200]}")
        actions = actions.astype(np.int64)
        prev = self._hist[:, -1].copy()
        frames = np.asarray(self.session.step(actions)).reshape(prev.shape)
        rewards = np.zeros(self.num_envs, np.float32)
        done_prob = np.zeros(self.num_envs, np.float32)
        if self.reward_head is not None:
            rewards, done_prob = self.reward_head.predict(prev, frames)
        self._hist = np.concatenate([self._hist[:, 1:], frames[:, None]], 1)
        self._hist_act = np.concatenate([self._hist_act[:, 1:], actions[:, None]], 1)
        self._t += 1
        terminated = done_prob > self.done_threshold
        truncated = (self._t >= self.max_episode_steps) & ~terminated
        infos: dict[str, Any] = {"done_prob": done_prob}
        obs = frames.copy()
        ended = np.flatnonzero(terminated | truncated)
        if len(ended):
            for i in ended:
                infos = self._add_info(infos, {"final_obs": frames[i].copy(), "final_info": {}}, int(i))
                seed = int(self.np_random.integers(2**31 - 1))
                self._hist[i], self._hist_act[i] = self._context(seed)
                obs[i] = self._hist[i, -1]
                self._t[i] = 0
            # the ended worlds start new episodes (memories too); the others go on untouched
            self.session.reset_worlds(ended.tolist(), self._hist[ended], self._hist_act[ended])
        return obs, rewards.astype(np.float32), terminated, truncated, infos

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._ready:
            return self._hist[:, -1].copy()
        return None

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the session's background work (the memory's worker thread)."""
        self.session.close()


def _make(checkpoint: str | None = None, **kwargs: Any) -> WorldModelEnv:
    return WorldModelEnv.load(checkpoint, **kwargs)


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=_make)
