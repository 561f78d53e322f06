"""Registers every ``TextEnv/<Task>-v<N>`` id with Gymnasium (on ``import text_env``).

Gymnasium ≥ 1.0 has no plugin entry points, so registration happens on import;
``gym.make("text_env:TextEnv/Reverse-v0")`` imports the package first, for trainers that only take an id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

ENTRY_POINT = "text_env.core:TextGenEnv"
VECTOR_ENTRY_POINT = "text_env.vector:TextGenVectorEnv"


@dataclass(frozen=True)
class EnvEntry:
    """One registered id: the task it builds, its kwargs, the episode limit and the "solved" threshold."""

    env_id: str
    task: str
    kwargs: dict[str, Any]
    max_episode_steps: int | None
    reward_threshold: float | None
    description: str


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
    return out


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
    """Register every TextEnv id (idempotent)."""
    for e in ENTRIES:
        if e.env_id in gym.registry:
            continue
        kwargs = dict(e.kwargs)
        if e.task:
            kwargs["task"] = e.task
        gym.register(
            id=e.env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT,
            max_episode_steps=e.max_episode_steps,
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
    """One row per id: spaces, default reward, budget, threshold (``build=False`` skips building envs)."""
    rows = []
    for e in ENTRIES:
        row: dict[str, Any] = {
            "id": e.env_id,
            "task": e.task or "(user file)",
            "max_episode_steps": e.max_episode_steps,
            "reward_threshold": e.reward_threshold,
            "description": e.description,
        }
        if build and e.task:
            try:
                env = gym.make(e.env_id).unwrapped
                row["action_space"] = str(env.action_space)
                row["observation_space"] = str(env.observation_space)
                row["reward"] = repr(env.reward)
                env.close()
            except ImportError as err:  # a data package that is not installed
                row["reward"] = f"unavailable: {err}"
        rows.append(row)
    return rows
