"""Registers every ``TextEnv/<Task>-v<N>`` id with Gymnasium (on ``import text_env``).

Gymnasium ≥ 1.0 has no plugin entry points, so registration happens on import;
``gym.make("text_env:TextEnv/Reverse-v0")`` imports the package first, for trainers that only take an id.

The ids are registered **without** a ``TimeLimit`` (``spec.max_episode_steps`` is ``None``): the env's own
token budget, ``max_new_tokens``, ends an episode (``truncated=True``) and pays the state reward on that
step. A ``TimeLimit`` of the default budget would cut a longer budget short (``gym.make(id,
max_new_tokens=20)`` would stop at 5 steps without paying the reward) and would also flag an EOS on the last
budget token as truncated, where the env (and the vector env) say terminated only. Each entry still records
the default budget (:attr:`EnvEntry.max_new_tokens`), which ``text-env envs`` and :func:`list_envs` show;
it equals the task's own default, which is what the env uses when ``max_new_tokens`` is not given.
Passing ``max_episode_steps=`` to ``gym.make`` still adds a ``TimeLimit`` if a caller wants one.

Example:
    >>> import gymnasium as gym

from text_env.rewards.dense import DENSE_REWARD
    >>> env = gym.make("TextEnv/Reverse-L4-v0", max_new_tokens=20)  # the env truncates at 20 tokens
    >>> gym.spec("TextEnv/Reverse-L4-v0").max_episode_steps is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from text_env.rewards.dense import DENSE_REWARD

ENTRY_POINT = "text_env.core:TextGenEnv"
VECTOR_ENTRY_POINT = "text_env.vector:TextGenVectorEnv"


@dataclass(frozen=True)
class EnvEntry:
    """One registered id: the task it builds, its kwargs, the default token budget and the "solved"
    threshold.

    Attributes:
        env_id: The Gymnasium id.
        task: The registered task name (``""`` for Custom-v0, whose task the user passes).
        kwargs: Passed to the task factory (e.g. ``{"length": 4}``).
        max_new_tokens: The default token budget (the task's own default; ``None`` where it depends on the
            user's file). Shown by ``text-env envs``; not a ``TimeLimit`` (see the module docstring).
        reward_threshold: The mean return that counts as solved (``spec.reward_threshold``).
        description: One line for listings.
    """

    env_id: str
    task: str
    kwargs: dict[str, Any]
    max_new_tokens: int | None
    reward_threshold: float | None
    description: str

    @property
    def max_episode_steps(self) -> int | None:
        """The default budget under its Gymnasium name (the budget is the longest an episode runs)."""
        return self.max_new_tokens


def _synthetic_entries() -> list[EnvEntry]:
    out = []
    for name, title in (("copy", "Copy"), ("reverse", "Reverse"), ("sort", "Sort")):
        for length, suffix in ((8, ""), (4, "-L4"), (12, "-L12")):
            out.append(
                EnvEntry(
                    f"TextEnv/{title}{suffix}-v0",
                    name,
                    {"length": length},
                    length + 1,
                    0.9,
                    f"{name} a string of ≤{length} letters",
                )
            )
    for digits, suffix in ((2, ""), (1, "-D1"), (3, "-D3")):
        out.append(
            EnvEntry(
                f"TextEnv/Arithmetic{suffix}-v0",
                "arithmetic",
                {"digits": digits},
                len(str(2 * (10**digits - 1))) + 1,
                0.9,
                f"{digits}-digit addition",
            )
        )
    out.append(EnvEntry("TextEnv/Keyword-v0", "keyword", {}, 40, 0.9, "a sentence that uses a given word"))
    return out + _dense_entries(out)


def _dense_entries(entries: list[EnvEntry]) -> list[EnvEntry]:
    """A ``-Dense`` twin of every copy/reverse/sort/arithmetic id: the same task and splits, rewarded by
    ``position_match`` + ``stop_match`` (:mod:`text_env.rewards.dense`: credit for each token right where it
    stands, paid as it is emitted, and for ending at the right length; 1 only for the exact answer), so that
    a learner from scratch sees a signal. Success stays the task's exact match. Difficulty is the task's
    kwargs (``length=``, ``alphabet=``, ``digits=``, ``ops=``), e.g.
    ``gym.make("TextEnv/Reverse-Dense-v0", length=12)``."""
    return [
        EnvEntry(
            e.env_id.removesuffix("-v0") + "-Dense-v0",
            e.task,
            {**e.kwargs, "reward": dict(DENSE_REWARD)},
            e.max_new_tokens,
            e.reward_threshold,
            e.description + ", per-token partial credit",
        )
        for e in entries
        if e.task in ("copy", "reverse", "sort", "arithmetic")
    ]


def _language_entries() -> list[EnvEntry]:
    """The real-language tasks (their data packages are read on first use, not at registration).

    Reward thresholds are the level we call solved: ROUGE-L (+0.2·length) of 0.5 for headlines, chrF 0.9
    for the generated translations (a small regular grammar), exact match 0.9 for QA, and a 0.9 mean
    positive probability for sentiment.
    """
    return [
        EnvEntry("TextEnv/Summarize-v0", "summarize", {}, 24, 0.5, "BBC article opening → its headline"),
        EnvEntry("TextEnv/Translate-v0", "translate", {}, 32, 0.9, "English → Spanish sentences"),
        EnvEntry("TextEnv/QA-v0", "qa", {}, 8, 0.9, "bAbI-style story + question → answer"),
        EnvEntry(
            "TextEnv/Sentiment-v0", "sentiment", {}, 32, 0.9, "movie review opening → positive continuation"
        ),
    ]


ENTRIES: list[EnvEntry] = [
    *_synthetic_entries(),
    *_language_entries(),
    EnvEntry(
        "TextEnv/Custom-v0", "", {}, None, None, "the user's own prompts: gym.make(..., task='file.jsonl')"
    ),
]


def register_envs() -> None:
    """Register every TextEnv id (idempotent), without a ``TimeLimit``: the env's budget governs."""
    for e in ENTRIES:
        if e.env_id in gym.registry:
            continue
        kwargs = dict(e.kwargs)
        # Custom-v0 has no task of its own: task=None makes an env built without task=... an error
        kwargs["task"] = e.task or None
        gym.register(
            id=e.env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            max_episode_steps=None,
            reward_threshold=e.reward_threshold,
            kwargs=kwargs,
        )


def add_entries(entries: list[EnvEntry]) -> None:
    """Let a module add ids (the language tasks do) before ``register_envs`` runs."""
    known = {e.env_id for e in ENTRIES}
    ENTRIES.extend(e for e in entries if e.env_id not in known)


def env_ids() -> list[str]:
    return [e.env_id for e in ENTRIES]


def list_envs(build: bool = True) -> list[dict[str, Any]]:
    """One row per id: spaces, default reward, budget, threshold (``build=False`` skips building envs).

    ``max_new_tokens`` is the default budget; ``max_episode_steps`` repeats it under the name the listing has
    always used (no ``TimeLimit`` is registered: see the module docstring).
    """
    rows = []
    for e in ENTRIES:
        row: dict[str, Any] = {
            "id": e.env_id,
            "task": e.task or "(user file)",
            "max_new_tokens": e.max_new_tokens,
            "max_episode_steps": e.max_new_tokens,
            "reward_threshold": e.reward_threshold,
            "description": e.description,
        }
        if build and e.task:
            try:
                env: Any = gym.make(e.env_id).unwrapped
                row["action_space"] = str(env.action_space)
                row["observation_space"] = str(env.observation_space)
                row["reward"] = repr(env.reward)
                env.close()
            except ImportError as err:  # a data package that is not installed
                row["reward"] = f"unavailable: {err}"
        rows.append(row)
    return rows
