"""Env throughput: the native :class:`~text_env.vector.TextGenVectorEnv` against Gymnasium's ``SyncVectorEnv``
over N :class:`~text_env.core.TextGenEnv`, same id, same random actions, measured side by side.

Throughput is env-steps per second (slots × steps ÷ seconds). The two are timed in alternating rounds and the
median round is reported, so a noisy, shared machine slows both alike rather than skewing the ratio. For
scale, the same measurement of Gymnasium's own ``CartPoleVectorEnv`` against ``SyncVectorEnv(CartPoleEnv)``
is reported too (``--no-reference`` skips it). Results go to ``benchmarks/results/env_throughput.json``.

Usage::

    python -m benchmarks.env_throughput                       # TextEnv/Reverse-v0, 256 envs, NEXT_STEP
    python -m benchmarks.env_throughput --num-envs 64 --steps 500 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

import text_env
from text_env import TextGenEnv
from text_env.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "env_throughput.json"


def run_steps(env: VectorEnv, actions: np.ndarray) -> float:
    """Step ``env`` through ``actions`` (``(steps, num_envs)``); return the seconds it took."""
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return time.perf_counter() - start


def side_by_side(
    native: VectorEnv,
    sync: VectorEnv,
    n_actions: int,
    steps: int,
    sync_steps: int,
    rounds: int,
    seed: int,
) -> dict[str, Any]:
    """Alternate timed rounds of both envs on the same random actions; median env-steps/s of each."""
    num_envs = native.num_envs
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, n_actions, size=(steps, num_envs))
    native.reset(seed=seed)
    sync.reset(seed=seed)
    run_steps(native, actions[: max(steps // 10, 1)])  # warm-up: first-touch allocations, caches
    run_steps(sync, actions[: max(sync_steps // 10, 1)])
    native_rates, sync_rates = [], []
    for _ in range(rounds):
        native_rates.append(num_envs * steps / run_steps(native, actions))
        sync_rates.append(num_envs * sync_steps / run_steps(sync, actions[:sync_steps]))
    native_rate, sync_rate = statistics.median(native_rates), statistics.median(sync_rates)
    return {
        "native_steps_per_s": native_rate,
        "sync_steps_per_s": sync_rate,
        "ratio": native_rate / sync_rate,
        "native_rounds": native_rates,
        "sync_rounds": sync_rates,
    }


def profile_native(native: VectorEnv, n_actions: int, steps: int, seed: int, top: int = 20) -> str:
    """cProfile of the native step loop: the functions with the most own time."""
    actions = np.random.default_rng(seed).integers(0, n_actions, size=(steps, native.num_envs))
    native.reset(seed=seed)
    prof = cProfile.Profile()
    prof.enable()
    run_steps(native, actions)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def text_envs(env_id: str, num_envs: int, mode: AutoresetMode) -> tuple[VectorEnv, VectorEnv, int]:
    native = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode=mode
    )
    spec = gym.spec(env_id)
    kwargs = dict(spec.kwargs)

    # the single envs are bare TextGenEnv (no TimeLimit/checker wrappers): the ratio is not inflated by
    # wrapper overhead that only the Sync side would pay
    def make_one() -> gym.Env:
        return TextGenEnv(**kwargs)

    sync = SyncVectorEnv([make_one] * num_envs, autoreset_mode=mode)
    return native, sync, int(native.single_action_space.n)


def cartpole_envs(num_envs: int) -> tuple[VectorEnv, VectorEnv, int]:
    return CartPoleVectorEnv(num_envs=num_envs), SyncVectorEnv([CartPoleEnv] * num_envs), 2


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="TextEnv/Reverse-v0", help="registered TextEnv id")
    parser.add_argument("--num-envs", type=int, default=256, help="slots in both vector envs")
    parser.add_argument("--steps", type=int, default=2000, help="native vector steps per round")
    parser.add_argument(
        "--sync-steps", type=int, default=None, help="SyncVectorEnv steps per round (default steps/10)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating timed rounds (the median is reported)"
    )
    parser.add_argument("--autoreset-mode", default="NextStep", choices=["NextStep", "SameStep"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip the CartPole reference measurement")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the native step")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    sync_steps = args.sync_steps or max(args.steps // 10, 1)
    mode = AutoresetMode(args.autoreset_mode)

    native, sync, n_actions = text_envs(args.env_id, args.num_envs, mode)
    text = side_by_side(native, sync, n_actions, args.steps, sync_steps, args.rounds, args.seed)
    print(f"{args.env_id}, {args.num_envs} envs, {mode.value}, random actions over {n_actions} tokens")
    print(f"  native TextGenVectorEnv      {text['native_steps_per_s']:>12,.0f} env-steps/s")
    print(f"  SyncVectorEnv(TextGenEnv)    {text['sync_steps_per_s']:>12,.0f} env-steps/s")
    print(f"  ratio                        {text['ratio']:>12.1f}x   (issue bar: >= 50x)")

    reference = None
    if not args.no_reference:
        cp_native, cp_sync, cp_actions = cartpole_envs(args.num_envs)
        reference = side_by_side(
            cp_native, cp_sync, cp_actions, args.steps, sync_steps, args.rounds, args.seed
        )
        print(f"CartPole-v1 reference, {args.num_envs} envs")
        print(f"  CartPoleVectorEnv            {reference['native_steps_per_s']:>12,.0f} env-steps/s")
        print(f"  SyncVectorEnv(CartPoleEnv)   {reference['sync_steps_per_s']:>12,.0f} env-steps/s")
        print(f"  ratio                        {reference['ratio']:>12.1f}x")

    profile = None
    if args.profile:
        profile = profile_native(native, n_actions, min(args.steps, 1000), args.seed)
        print(profile)

    result = {
        "command": shlex.join(
            ["python", "-m", "benchmarks.env_throughput", *(sys.argv[1:] if argv is None else argv)]
        ),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "env_id": args.env_id,
        "num_envs": args.num_envs,
        "autoreset_mode": mode.value,
        "steps_per_round": {"native": args.steps, "sync": sync_steps},
        "rounds": args.rounds,
        "seed": args.seed,
        **text,
        "cartpole_reference": reference,
        "machine": {
            "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "gymnasium": gym.__version__,
            "text_env": text_env.__version__,
        },
    }
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
