"""One number, given by a caller or read from a file, must not be a denial of service (issue 13, item 6):
sizes that would allocate gigabytes or spin for minutes are refused at once, naming the value. And a pinned
prompt follows the task files' text rule (no lone surrogates)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import text_env  # noqa: F401


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 10**9}, "max_new_tokens must be at most 65536"),
        ({"context_len": 10**9}, "context_len must be at most 65536"),
        ({"length": 10**7}, "length must be at most 1024"),
    ],
)
def test_huge_sizes_are_refused_before_anything_is_built(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("TextEnv/Reverse-L4-v0", **kwargs)


def test_a_vector_env_too_large_for_memory_is_refused() -> None:
    with pytest.raises(ValueError, match="num_envs=100000000 slots"):
        gym.make_vec("TextEnv/Reverse-L4-v0", num_envs=10**8, vectorization_mode="vector_entry_point")


def test_the_largest_allowed_budget_still_builds() -> None:
    env = gym.make("TextEnv/Reverse-L4-v0", max_new_tokens=4096)
    env.reset(seed=0)
    assert env.unwrapped.max_new_tokens == 4096


@pytest.mark.parametrize("options", [{"prompt": "ab\ud800"}, {"prompt": "ab", "reference": "\udfff"}])
def test_a_pinned_prompt_with_a_lone_surrogate_is_refused(options) -> None:
    env = gym.make("TextEnv/Reverse-L4-v0")
    with pytest.raises(ValueError, match="lone surrogate"):
        env.reset(seed=0, options=options)
