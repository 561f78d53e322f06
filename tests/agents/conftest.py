"""Fixtures for the agent tests: tiny tasks, tiny policies and agent factories.

Not an ``__init__.py`` on purpose: a ``tests/agents`` package would shadow the real ``agents`` package.

Every test here runs with ``$TEXT_ENV_CACHE`` pointed at its own temporary directory (nothing is written to
the user's cache), and torch uses one thread: the test machine has two shared cores, and torch's two-thread
mode stalls when the other core is busy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.policies import TransformerPolicy
from text_env.tasks.base import Task

torch.set_num_threads(1)

# the knobs of every tiny model in these tests (about 20k parameters)
TINY_MODEL = {"n_layer": 1, "n_embd": 32, "n_head": 2}
# timing diagnostics differ from run to run; everything else a learner logs must replay exactly
TIMING_KEYS = frozenset({"charts/tokens_per_s", "charts/rollout_fraction"})
SPLITS = ("train", "validation", "test")


def _task(name: str, pairs: list[tuple[str, str]], max_new_tokens: int) -> Task:
    # the same rows in every split: the tests care about learning and bookkeeping, not generalisation
    rows = [{"prompt": p, "reference": r, "split": s} for s in SPLITS for p, r in pairs]
    return Task.from_examples(rows, name=name, max_new_tokens=max_new_tokens)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$TEXT_ENV_CACHE`` (SFT checkpoints, converted models) at a per-test directory."""
    cache = tmp_path / "text_env_cache"
    monkeypatch.setenv("TEXT_ENV_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def one_step_task() -> Task:
    """Four one-character prompts, each with a fixed one-character answer (``a→d, b→c, c→b, d→a``).

    ``max_new_tokens=1``: an episode is one token, rewarded 1 by exact match. Vocabulary: 4 specials +
    ``abcd`` = 8 tokens, so a fresh policy succeeds about 1 time in 8.
    """
    return _task("one-step", list(zip("abcd", "dcba", strict=True)), max_new_tokens=1)


@pytest.fixture(scope="session")
def tiny_reverse_task() -> Task:
    """Reverse every string over ``ab`` of length 1–3 (``ab=`` → ``ba``), at most 4 new tokens.

    Vocabulary: 4 specials + ``=ab`` = 7 tokens, so a fresh policy often emits EOS early: rollouts hold
    episodes of different lengths.
    """
    strings = ["".join(p) for n in (1, 2, 3) for p in itertools.product("ab", repeat=n)]
    return _task("tiny-reverse", [(s + "=", s[::-1]) for s in strings], max_new_tokens=4)


@pytest.fixture
def make_policy() -> Callable[..., TransformerPolicy]:
    """``make_policy(task, seed=0)``: a 1-layer, 32-wide policy for ``task`` in eval mode."""

    def make(task: Task, seed: int = 0, **overrides: Any) -> TransformerPolicy:
        return TransformerPolicy.for_task(task, seed=seed, **{**TINY_MODEL, **overrides}).eval()

    return make


@pytest.fixture
def make_agent() -> Callable[..., Any]:
    """``make_agent(Algo, task, seed=0, **kwargs)``: an agent on CPU with a tiny policy built by the agent
    itself (``policy="transformer"``, so the seed decides the initial weights too)."""

    def make(algo: type, task: Task, seed: int = 0, **kwargs: Any) -> Any:
        kwargs.setdefault("n_envs", 8)
        kwargs.setdefault("policy_kwargs", dict(TINY_MODEL))
        return algo("transformer", task, seed=seed, device="cpu", **kwargs)

    return make


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Exact (bitwise) equality of two modules' parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_timing(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Progress rows with the wall-clock diagnostics removed (NaN-safe comparison: NaN → None)."""
    return [{k: (None if v != v else v) for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.fixture
def helpers() -> Any:
    """The comparison helpers above, for tests (conftest modules are not importable by name)."""

    class Helpers:
        state_dicts_equal = staticmethod(state_dicts_equal)
        without_timing = staticmethod(without_timing)

    return Helpers


@pytest.fixture
def load_eval_language(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """Loads examples/eval_language.py as the module ``eval_language`` (in sys.modules for the test:
    its dataclasses look their module up there). Called after the test has set its environment."""
    import importlib.util
    import sys

    def load() -> Any:
        path = Path(__file__).resolve().parents[2] / "examples" / "eval_language.py"
        spec = importlib.util.spec_from_file_location("eval_language", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "eval_language", module)
        spec.loader.exec_module(module)
        return module

    return load
