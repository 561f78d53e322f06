"""The workloads the performance benchmarks share: the default policy on TextEnv/Reverse-v0 through the
lockstep vector env, and side-by-side timing in alternating rounds.

Two rollout shapes are used throughout:

- ``registered``: TextEnv/Reverse-v0 as registered (prompts of ≤ 17 tokens, a budget of 9 new tokens,
  episodes end at the sampled EOS), the env every example trains on;
- ``long``: the same task with a budget of 64 new tokens and EOS removed from the policy's action mask, so
  every slot generates exactly 64 tokens: the decode-dominated shape where a KV cache matters.

A fresh, untrained default policy is used (its speed does not depend on its weights, except through how
soon it samples EOS, which ``long`` removes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.policies import TransformerPolicy
from agents.rollout import RolloutCollector, auto_num_threads, make_rollout_env
from benchmarks.machine import RESULTS_DIR, machine_info, resolve_device, sync
from text_env.io import atomic_write_json
from text_env.vector import TextGenVectorEnv

ENV_ID = "TextEnv/Reverse-v0"


@dataclass
class RolloutShape:
    """A rollout workload: batch, token budget and whether EOS may end an episode early."""

    name: str
    batch: int = 64
    max_new_tokens: int | None = None  # None: the registered budget
    eos_masked: bool = False
    env_id: str = ENV_ID
    policy: str = "default"  # "default": TransformerPolicy.for_task; "english": the shipped English policy

    def describe(self) -> str:
        budget = "registered budget" if self.max_new_tokens is None else f"{self.max_new_tokens} new tokens"
        if self.max_new_tokens is None:
            budget += f" ({_default_budget(self.env_id)})"
        eos = (
            ", EOS masked (every slot runs the full budget)"
            if self.eos_masked
            else ", sampled EOS ends episodes"
        )
        return f"{self.env_id}, batch {self.batch}, {budget}{eos}"


REGISTERED = RolloutShape("registered")
LONG = RolloutShape("long", max_new_tokens=64, eos_masked=True)
# the language tasks' default policy (agents/pretrained/english-small: 4 layers × 128, vocabulary 8192)
ENGLISH = RolloutShape("english", env_id="TextEnv/Sentiment-v0", policy="english")
ENGLISH_LONG = RolloutShape(
    "english-long", max_new_tokens=64, eos_masked=True, env_id="TextEnv/Sentiment-v0", policy="english"
)


def make_env(shape: RolloutShape) -> TextGenVectorEnv:
    kwargs: dict[str, Any] = {}
    if shape.max_new_tokens is not None:
        kwargs["max_new_tokens"] = shape.max_new_tokens
    return make_rollout_env(shape.env_id, shape.batch, **kwargs)


def make_policy(
    env: TextGenVectorEnv,
    device: torch.device,
    eos_masked: bool = False,
    seed: int = 0,
    kind: str = "default",
    **config: Any,
) -> Any:
    """The policy of a workload, in eval mode: ``kind="default"`` is the default policy for the env's task
    (2 layers × 128 unless ``config`` overrides), ``"english"`` the shipped pretrained English policy."""
    if kind == "english":
        from agents.pretrained import load_english_policy

        policy = load_english_policy().to(device).eval()
    else:
        needed = 1 + env.task.max_prompt_tokens + env.max_new_tokens
        config.setdefault("max_seq_len", max(128, needed))
        policy = TransformerPolicy.for_task(env.task, seed=seed, **config).to(device).eval()
    if eos_masked:
        mask_stop_tokens(policy, env.task)
    return policy


def mask_stop_tokens(policy: Any, task: Any) -> None:
    """Forbid the task's stop tokens (EOS) to ``policy``: every episode then runs its whole budget."""
    mask = np.ones(policy.vocab_size, dtype=bool)
    mask[list(task.stop_ids)] = False
    policy.set_action_mask(mask)


def rollout_setup(
    shape: RolloutShape, device: torch.device, num_threads: int | str | None = None, **config: Any
) -> tuple[Any, RolloutCollector]:
    """Policy and collector for ``shape``. ``num_threads=None`` keeps the process's thread count (the
    benchmarks set it once for every side of a comparison)."""
    env = make_env(shape)
    policy = make_policy(env, device, shape.eos_masked, kind=shape.policy, **config)
    return policy, RolloutCollector(policy, env, num_threads=num_threads)


def time_collect(collector: RolloutCollector, seed: int) -> tuple[int, float]:
    """``(tokens, seconds)`` of one rollout (tokens = env steps taken)."""
    device = collector.device
    sync(device)
    start = time.perf_counter()
    batch = collector.collect(seed=seed)
    sync(device)
    return batch.num_tokens, time.perf_counter() - start


def alternate(fns: dict[str, Callable[[int], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call each ``fn(round)`` once per round, in turn, for ``rounds`` rounds after ``warmup`` untimed ones;
    every function sees the same stretch of machine load, so their ratio is stable even when the machine
    is not. Returns each function's values."""
    for w in range(warmup):
        for fn in fns.values():
            fn(-1 - w)
    values: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            values[name].append(fn(r))
    return values


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def n_params(policy: Any) -> int:
    return sum(p.numel() for p in policy.parameters())


def apply_threads(threads: str | int, device: torch.device) -> int:
    """Set the process's torch thread count once, for every side of every comparison: ``"auto"`` applies
    the collector's own policy (:func:`agents.rollout.auto_num_threads`) for the default policy; an int sets
    it. Returns the count in effect."""
    if threads == "auto":
        env = make_env(REGISTERED)
        n = auto_num_threads(make_policy(env, torch.device("cpu")), device)
    else:
        n = int(threads)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def run_cli(
    name: str,
    doc: str | None,
    run: Callable[[torch.device, bool], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The command line every rollout benchmark shares (``--device``, ``--quick``, ``--threads``): run it,
    print its report, and write ``benchmarks/results/<name>.json``."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or name).split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", default="auto", help="torch threads: 'auto' (the rollout's policy) or N")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    apply_threads(args.threads, device)
    res = run(device, args.quick)
    res["machine"] = machine_info(device)
    report(res)
    atomic_write_json(RESULTS_DIR / f"{name}.json", res, indent=1)
    return res


def _default_budget(env_id: str) -> int | None:
    """The registered default token budget of ``env_id`` (ids carry no TimeLimit: the env governs)."""
    from text_env.registration import ENTRIES

    return next((e.max_new_tokens for e in ENTRIES if e.env_id == env_id), None)
