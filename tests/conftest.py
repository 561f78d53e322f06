"""Shared fixtures. Tests never touch the network: the Hugging Face libraries are forced offline here,
before anything imports them."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import text_env  # noqa: F401  (registers the TextEnv/* ids)

try:  # the language tasks' data packages are optional installs
    from text_env.data.sources import MissingDataError
except ImportError:  # pragma: no cover - only while the data module is absent

    class MissingDataError(ImportError):  # type: ignore[no-redef]
        pass


CUSTOM_ID = "TextEnv/Custom-v0"

# 12 two-digit additions: enough for three non-empty splits (the default 80/10/10 gives 10/1/1)
TINY_ROWS = [{"prompt": f"{a}+{b}=", "reference": str(a + b)} for a, b in zip(range(10, 22), range(30, 42))]


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    """A JSONL task file of 12 ``a+b=`` prompts with references."""
    path = tmp_path / "tiny_add.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TINY_ROWS), encoding="utf-8")
    return path


@pytest.fixture
def make_env(task_file: Path) -> Callable[..., gym.Env]:
    """``make_env(env_id, **kwargs)``: ``gym.make`` that gives ``TextEnv/Custom-v0`` a task file and skips
    (with the pip command in the reason) ids whose data package is not installed."""

    def make(env_id: str, **kwargs: Any) -> gym.Env:
        if env_id == CUSTOM_ID:
            kwargs.setdefault("task", str(task_file))
        try:
            return gym.make(env_id, **kwargs)
        except MissingDataError as e:
            pytest.skip(f"{env_id}: data package not installed ({e})")

    return make
