"""Every registered id: both env checkers pass without a single warning, the spec is complete, and the
vector entry point builds the native vector env."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from text_env import TextGenEnv, TextGenVectorEnv, list_envs
from text_env.registration import ENTRIES, env_ids

ENV_IDS = env_ids()
CUSTOM_ID = "TextEnv/Custom-v0"


class _NoWarnings:
    """Records every warning (``simplefilter("always")``, so none is swallowed as a repeat) and fails the test
    on exit if there was any, listing them all."""

    def __enter__(self) -> None:
        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
        if exc[0] is None and self._caught:
            lines = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in self._caught]
            pytest.fail("unexpected warnings:\n" + "\n".join(lines))


@pytest.fixture
def no_warnings() -> Iterator[_NoWarnings]:
    yield _NoWarnings()


def test_ids_are_registered_and_include_the_documented_ones() -> None:
    registered = {i for i in gym.registry if i.startswith("TextEnv/")}
    assert set(ENV_IDS) <= registered
    for expected in ("Copy", "Reverse", "Sort", "Arithmetic", "Keyword", "Custom"):
        assert f"TextEnv/{expected}-v0" in ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id: str, make_env: Callable[..., gym.Env], no_warnings: _NoWarnings) -> None:
    with no_warnings:
        env = make_env(env_id)
        gym_check_env(env.unwrapped)
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id: str, make_env: Callable[..., gym.Env], no_warnings: _NoWarnings) -> None:
    with no_warnings:
        env = make_env(env_id)
        sb3_check_env(env, warn=True, skip_render_check=False)
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spec_is_complete(env_id: str, make_env: Callable[..., gym.Env]) -> None:
    env = make_env(env_id)
    spec = gym.spec(env_id)
    assert spec.entry_point == "text_env.core:TextGenEnv"
    assert spec.vector_entry_point == "text_env.vector:TextGenVectorEnv"
    inner = env.unwrapped
    assert isinstance(inner, TextGenEnv)
    # no TimeLimit: the env's own budget ends episodes (and pays the state reward when it does)
    assert spec.max_episode_steps is None
    entry = next(e for e in ENTRIES if e.env_id == env_id)
    if env_id == CUSTOM_ID:
        # the budget and the "solved" level depend on the user's file, so the id cannot fix them
        assert entry.max_new_tokens is None
    else:
        assert spec.reward_threshold is not None and 0 < spec.reward_threshold <= 1
        # the budget the listing shows is the one the env uses by default
        assert entry.max_new_tokens == inner.max_new_tokens
    v = inner.tokenizer.vocab_size
    assert inner.action_space == gym.spaces.Discrete(v)
    obs_space = inner.observation_space
    assert isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.int64
    assert obs_space.shape == (inner.context_len,)
    assert obs_space.low.min() == 0 and obs_space.high.max() == v - 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_builds_the_native_vector_env(env_id: str, make_env: Callable[..., gym.Env]) -> None:
    single = make_env(env_id).unwrapped  # skips ids whose data is missing; gives the expected spaces
    kwargs = {"task": single.task} if env_id == CUSTOM_ID else {}
    envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    assert isinstance(envs.unwrapped, TextGenVectorEnv)
    assert envs.single_action_space == single.action_space
    assert envs.single_observation_space == single.observation_space
    assert envs.unwrapped.max_new_tokens == single.max_new_tokens
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, single.context_len) and obs.dtype == np.int64
    obs, reward, terminated, truncated, _ = envs.step(np.full(3, single.tokenizer.eos_id))
    assert terminated.all() and not truncated.any()
    assert reward.shape == (3,)
    envs.close()


def _non_stop_action(env: TextGenEnv) -> int:
    """A token the task allows that does not end the episode, so that only the budget can end it."""
    allowed = env.task.action_mask.astype(bool)
    allowed[env.task.stop_ids] = False
    return int(np.flatnonzero(allowed)[0])


def _state_reward_names(env: TextGenEnv) -> set[str]:
    names = {t.name for t in env.reward.of_kind("state")}
    assert names, "every registered task has a state reward"
    return names


BUDGET = 20  # longer than every registered default budget of the synthetic tasks (4 to 13)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gym_make_with_a_larger_budget_truncates_at_it_and_pays_the_state_reward(
    env_id: str, make_env: Callable[..., gym.Env]
) -> None:
    env = make_env(env_id, max_new_tokens=BUDGET)
    inner = env.unwrapped
    assert inner.max_new_tokens == BUDGET
    a, state = _non_stop_action(inner), _state_reward_names(inner)
    env.reset(seed=0)
    for t in range(BUDGET):
        _, _, terminated, truncated, info = env.step(a)
        last = t == BUDGET - 1
        assert not terminated and truncated == last, (env_id, t)
        assert (state <= set(info["reward_parts"])) == last, (env_id, t, info["reward_parts"])
    env.close()


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_with_a_larger_budget_truncates_at_it_and_pays_the_state_reward(
    env_id: str, mode: str, make_env: Callable[..., gym.Env]
) -> None:
    single = make_env(env_id).unwrapped  # skips ids whose data is missing
    kwargs = {"task": single.task} if env_id == CUSTOM_ID else {}
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, max_new_tokens=BUDGET, **kwargs)
    a, state = _non_stop_action(single), _state_reward_names(single)
    envs.reset(seed=0)
    for t in range(BUDGET):
        _, _, terminated, truncated, info = envs.step(np.full(2, a))
        last = t == BUDGET - 1
        assert not terminated.any() and truncated.tolist() == [last, last], (env_id, mode, t)
        parts = info.get("reward_parts", {})
        paid = {name for name in state if name in parts and parts[f"_{name}"].all()}
        assert (paid == state) == last, (env_id, mode, t, parts)
    envs.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_eos_on_the_last_budget_token_terminates_in_gym_make_and_in_the_vector_env(
    env_id: str, make_env: Callable[..., gym.Env]
) -> None:
    env = make_env(env_id)
    inner = env.unwrapped
    kwargs = {"task": inner.task} if env_id == CUSTOM_ID else {}
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    a, eos, budget = _non_stop_action(inner), inner.tokenizer.eos_id, inner.max_new_tokens
    env.reset(seed=0)
    envs.reset(seed=0)
    for t in range(budget):
        action = eos if t == budget - 1 else a
        _, _, terminated, truncated, _ = env.step(action)
        _, _, v_terminated, v_truncated, _ = envs.step(np.full(2, action))
        assert (terminated, truncated) == (t == budget - 1, False), (env_id, t)
        assert v_terminated.tolist() == [terminated] * 2 and v_truncated.tolist() == [truncated] * 2
    env.close()
    envs.close()


def test_module_prefixed_id_works_in_a_fresh_interpreter() -> None:
    # gym.make("text_env:...") imports the package itself: what trainers that only take an id rely on
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('text_env:TextEnv/Arithmetic-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, info['prompt'].endswith('='))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TextGenEnv", "True"]


def test_list_envs_describes_every_id() -> None:
    rows = {r["id"]: r for r in list_envs()}
    assert list(rows) == ENV_IDS
    rev = rows["TextEnv/Reverse-v0"]
    assert rev["task"] == "reverse"
    assert rev["max_episode_steps"] == 9  # 8 letters + EOS
    assert rev["action_space"].startswith("Discrete(")
    assert rev["observation_space"].startswith("Box(0,")
    assert "exact_match" in rev["reward"]
    assert rows[CUSTOM_ID]["task"] == "(user file)"
    assert "action_space" not in list_envs(build=False)[0]


def test_unknown_env_id_is_an_error() -> None:
    with pytest.raises(gym.error.Error, match="NoSuchTask"):
        gym.make("TextEnv/NoSuchTask-v0")
