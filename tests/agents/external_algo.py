"""Small hand-written "external" algorithms that the harness tests load as ``external_algo:<attr>``.

They stand for a user's own code: nothing here imports the harness.

- :class:`TabularMC`: every-visit Monte-Carlo control over observation windows, ε-greedy over the task's
  allowed tokens (a real, if weak, learner).
- :class:`CopyPrompt`: answers ``copy <s>=`` with ``s`` (a scripted policy with a known success rate of 1 on
  the copy tasks); its ``learn`` ignores ``total_timesteps`` and steps until the env stops it, to check that
  the harness enforces the budget.
- :func:`make_copy`: the function form ``(env_id, budget, seed) -> object with predict``.
- :func:`crash_once`: the function form whose first call kills its process (a lost Ray worker).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np


class TabularMC:
    """Every-visit Monte-Carlo control with a table keyed by the observation window."""

    def __init__(self, env: gym.Env, seed: int = 0, epsilon: float = 0.2) -> None:
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.epsilon = epsilon
        self.allowed = np.flatnonzero(env.unwrapped.action_masks())
        self.q: dict[tuple[int, ...], np.ndarray] = defaultdict(lambda: np.zeros(env.action_space.n))
        self.n: dict[tuple[int, ...], np.ndarray] = defaultdict(lambda: np.zeros(env.action_space.n))
        self.num_timesteps = 0

    def _greedy(self, key: tuple[int, ...]) -> int:
        q = self.q[key][self.allowed] if key in self.q else np.zeros(len(self.allowed))
        return int(self.allowed[int(np.argmax(q))])

    def learn(self, total_timesteps: int) -> TabularMC:
        obs, _ = self.env.reset(seed=self.seed)
        while self.num_timesteps < total_timesteps:
            visited, done, ret = [], False, 0.0
            while not done:
                key = tuple(int(x) for x in obs)
                explore = self.rng.random() < self.epsilon
                action = int(self.rng.choice(self.allowed)) if explore else self._greedy(key)
                obs, reward, terminated, truncated, _ = self.env.step(action)
                visited.append((key, action))
                ret += float(reward)
                done = terminated or truncated
                self.num_timesteps += 1
            for key, action in visited:  # undiscounted: the return of the whole episode
                self.n[key][action] += 1
                self.q[key][action] += (ret - self.q[key][action]) / self.n[key][action]
            obs, _ = self.env.reset()
        return self

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ):
        return np.array(self._greedy(tuple(int(x) for x in observation))), state


class CopyPrompt:
    """Reads ``copy <s>=<done so far>`` from the window and writes the next character of ``s`` (then EOS)."""

    def __init__(self, env: gym.Env, seed: int = 0) -> None:
        self.env = env
        self.tokenizer = env.unwrapped.tokenizer
        self.rng = np.random.default_rng(seed)
        self.steps_taken = 0

    def learn(self, total_timesteps: int) -> CopyPrompt:
        self.env.reset(seed=0)
        while True:  # ignores total_timesteps on purpose: the harness must stop it at the budget
            _, _, terminated, truncated, _ = self.env.step(int(self.rng.integers(self.env.action_space.n)))
            self.steps_taken += 1
            if terminated or truncated:
                self.env.reset()

    def predict(self, observation: np.ndarray, deterministic: bool = True) -> np.ndarray:
        tok = self.tokenizer
        text = tok.decode([int(i) for i in observation if int(i) not in (tok.pad_id, tok.bos_id)])
        prompt, _, done = text.partition("=")
        source = prompt.split(" ", 1)[-1]
        if len(done) >= len(source):
            return np.array(tok.eos_id)
        return np.array(tok.encode(source[len(done)])[0])


def make_copy(env_id: str, budget: int, seed: int) -> CopyPrompt:
    """The function form: build, (not) train, return something with ``predict``."""
    return CopyPrompt(gym.make(env_id), seed=seed)


def crash_once(env_id: str, budget: int, seed: int, marker: str | None = None) -> CopyPrompt:
    """The function form, but the first call (while ``marker`` does not exist) kills its own process, as a
    worker lost with its node would be; later calls behave like :func:`make_copy`."""
    import os
    from pathlib import Path

    if marker is not None and not Path(marker).exists():
        Path(marker).write_text("crashed once")
        os._exit(1)
    return make_copy(env_id, budget, seed)
