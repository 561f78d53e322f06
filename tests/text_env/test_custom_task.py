"""Issue 16, item 5: custom tasks — Custom-v0 needs task=, the default budget fits the longest reference, a
budget that cannot fit one warns once, and a too-short file says what it needs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

import text_env  # noqa: F401


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"prompt": f"say {w}:", "reference": w} for w in ["hi", "hello", "greetings", "yo", "hey", "howdy"]]


def test_custom_v0_without_a_task_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"TextEnv/Custom-v0 .* needs task="):
        gym.make("TextEnv/Custom-v0")
    with pytest.raises(ValueError, match="needs task="):
        gym.make_vec("TextEnv/Custom-v0", num_envs=2, vectorization_mode="vector_entry_point")


def test_default_budget_is_the_longest_reference_plus_one(tmp_path: Path) -> None:
    task = _jsonl(tmp_path / "greet.jsonl", ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default budget fits: no warning
        env = gym.make("TextEnv/Custom-v0", task=str(task))
    assert env.unwrapped.max_new_tokens == len("greetings") + 1  # 32 before: silently cut longer answers
    # a long reference is written in full (and EOS fits after it)
    tok = env.unwrapped.tokenizer
    env.reset(seed=0, options={"prompt": "say greetings:"})
    for t in tok.encode("greetings"):
        *_, terminated, truncated, _ = env.step(t)
        assert not (terminated or truncated)
    _, reward, terminated, _, info = env.step(tok.eos_id)
    assert terminated and reward == 1.0 and info["is_success"]


def test_a_budget_too_short_for_a_reference_warns_once(tmp_path: Path) -> None:
    task = str(_jsonl(tmp_path / "greet.jsonl", ROWS))
    with pytest.warns(UserWarning, match=r"longest reference is 9 tokens, more than max_new_tokens=4") as rec:
        gym.make("TextEnv/Custom-v0", task=task, max_new_tokens=4)
        gym.make("TextEnv/Custom-v0", task=task, max_new_tokens=4)
        gym.make_vec("TextEnv/Custom-v0", num_envs=2, vectorization_mode="vector_entry_point", task=task,
                     max_new_tokens=4)  # fmt: skip
    assert sum("longest reference" in str(w.message) for w in rec) == 1


def test_a_too_short_file_says_how_many_rows_and_that_split_exists(tmp_path: Path) -> None:
    csv = tmp_path / "two.csv"
    csv.write_text("prompt,reference\n1+1=,2\n2+2=,4\n")
    with pytest.raises(ValueError, match=r"2 rows .*at least 3 rows, or a 'split' field") as e:
        gym.make("TextEnv/Custom-v0", task=str(csv))
    assert "'validation'" in str(e.value) and "'test'" in str(e.value)
    placed = tmp_path / "three.csv"
    placed.write_text("prompt,reference,split\n1+1=,2,train\n2+2=,4,validation\n3+3=,6,test\n")
    env = gym.make("TextEnv/Custom-v0", task=str(placed))
    assert env.unwrapped.task.split_sizes() == {"train": 1, "validation": 1, "test": 1}


def test_readme_shows_the_task_file_format_and_the_tokenizer() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "env.unwrapped.tokenizer" in readme and "prompt,reference,split" in readme
    assert '{"prompt": "2+2=", "reference": "4"}' in readme
