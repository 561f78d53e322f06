"""Evaluation the way RL4LMs reports it: the task's metrics, fluency (perplexity of the generated text under
a reference policy) and diversity (distinct-1/2), on a held-out split.

Example:
    >>> report = evaluate_generation(policy, "TextEnv/Reverse-v0", n_episodes=200)  # doctest: +SKIP
    >>> report["metrics"]["exact_match"]                                              # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agents.rollout import RolloutCollector, action_logprobs, make_rollout_env
from text_env import rewards as reward_registry
from text_env.rewards.base import RewardBatch
from text_env.vector import TextGenVectorEnv


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over the whole set of texts."""
    total, unique = 0, set()
    for t in texts:
        words = t.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def evaluate_generation(
    policy: Any,
    env: Any,
    n_episodes: int = 200,
    split: str = "test",
    deterministic: bool = True,
    reference: Any = None,
    metrics: Sequence[str] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    n_samples: int = 5,
) -> dict[str, Any]:
    """Generate completions for the first ``n_episodes`` prompts of ``split`` and score them.

    Args:
        policy: The policy to evaluate.
        env: An env id, task, or ``TextGenVectorEnv`` (its reward is reported as ``mean_return``).
        reference: A policy under which to measure perplexity of the generated completions (RL4LMs'
            fluency); None skips it.
        metrics: Reward names to report (default: the task's ``metrics``).
        n_samples: How many (prompt, completion, reference) examples to include.

    Returns:
        ``{"metrics": {name: mean}, "per_prompt": {name: [score of each prompt]}, "mean_return",
        "success_rate", "perplexity", "distinct_1", "distinct_2", "mean_length", "episodes",
        "samples": [...]}`` (``per_prompt`` follows the split's order, so two policies' lists pair up).
    """
    base = env if isinstance(env, TextGenVectorEnv) else make_rollout_env(env, 1)
    task = base.task
    n = min(int(n_episodes), len(task.encoded(split)))
    b = max(1, min(batch_size, n))
    eval_env = TextGenVectorEnv(
        task, num_envs=b, reward=base.reward, split=split, max_new_tokens=base.max_new_tokens,
        context_len=base.context_len, autoreset_mode="Disabled",
    )  # fmt: skip
    collector = RolloutCollector(policy, eval_env)
    completions: list[str] = []
    returns, success, lengths, nll, ntok = [], [], [], 0.0, 0
    for start in range(0, n, b):
        k = min(b, n - start)
        idx = np.arange(start, start + b) % n
        batch = collector.collect(seed=seed, prompt_index=idx, deterministic=deterministic)
        completions += batch.completions[:k]
        returns.append(batch.episode_returns[:k])
        success.append(batch.success[:k])
        lengths.append(batch.lengths[:k])
        if reference is not None:
            with torch.no_grad():
                lp = action_logprobs(
                    reference,
                    batch.input_ids[:k],
                    batch.attention_mask[:k],
                    batch.actions[:k],
                    batch.prompt_width,
                )
            m = batch.mask[:k]
            nll -= float((lp * m).sum())
            ntok += int(m.sum())
    examples = task.examples(split)[:n]
    names = list(metrics if metrics is not None else task.metrics)
    scored: dict[str, float] = {}
    per_prompt: dict[str, list[float]] = {}
    if names:
        rb = RewardBatch.from_texts(
            [e.prompt for e in examples],
            completions,
            references=[e.references or None for e in examples]
            if all(e.references for e in examples)
            else None,
            tokenizer=task.tokenizer,
            labels=[e.label for e in examples],
            metadata=[e.metadata for e in examples],
        )
        for name in names:
            values = reward_registry.make(name)(rb)
            scored[name] = float(np.mean(values))
            per_prompt[name] = [float(v) for v in values]
    succ = np.concatenate(success)
    return {
        "metrics": scored,
        "per_prompt": per_prompt,
        "mean_return": float(np.concatenate(returns).mean()),
        "success_rate": float(np.nanmean(succ)) if not np.isnan(succ).all() else float("nan"),
        "perplexity": math.exp(nll / ntok) if ntok else float("nan"),
        "distinct_1": distinct_n(completions, 1),
        "distinct_2": distinct_n(completions, 2),
        "mean_length": float(np.concatenate(lengths).mean()),
        "episodes": n,
        "samples": [
            {"prompt": e.prompt, "completion": c, "reference": e.reference}
            for e, c in zip(examples[:n_samples], completions[:n_samples])
        ],
    }


def evaluate_policy(
    policy: Any,
    env: Any,
    n_episodes: int = 200,
    split: str = "test",
    deterministic: bool = True,
    seed: int = 0,
    batch_size: int = 200,
) -> dict[str, float]:
    """Mean return and success rate on the first ``n_episodes`` prompts of ``split`` (greedy by default).

    Every policy is scored on the same held-out prompts, in the split's order, with the env's reward and
    limits (an env object keeps its own reward; an id or task builds the default one).
    """
    r = evaluate_generation(
        policy,
        env,
        n_episodes,
        split,
        deterministic,
        metrics=(),
        batch_size=batch_size,
        seed=seed,
        n_samples=0,
    )
    return {k: r[k] for k in ("mean_return", "success_rate", "mean_length", "episodes")}
