"""torch intra-op threads, 1 against every other count up to the usable cores, for the default policy's
rollout (batch 64, TextEnv/Reverse-v0), its PPO update (one ``PPO.train`` epoch on a fixed batch: 4
minibatches of 16 episodes, forward + backward + AdamW), and a large square matmul (what extra threads buy
when each op is big).

Thread counts alternate within each round, so each sees the same stretch of machine load; a count whose
round takes over ``--cap`` seconds is not repeated (on a loaded machine more threads can be 50x slower).
This is the measurement behind :func:`agents.rollout.auto_num_threads` (1 thread for small models on CPU).

Usage::

    python -m benchmarks.threads [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from agents.ppo import PPO
from benchmarks.machine import RESULTS_DIR, machine_info, matmul_rate, resolve_device, sync
from benchmarks.workloads import ENV_ID, REGISTERED, med, rollout_setup, time_collect
from text_env.io import atomic_write_json


def thread_counts() -> list[int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [1, 2] + ([cores] if cores > 2 else [])
    return sorted(set(c for c in counts if c <= max(cores, 2)))


def run(device: torch.device, quick: bool = False, cap_s: float = 20.0) -> dict[str, Any]:
    if device.type != "cpu":
        return {"skipped": f"intra-op CPU threads do not apply on {device}"}
    rounds = 1 if quick else 2
    counts = thread_counts()
    previous = torch.get_num_threads()
    _, collector = rollout_setup(REGISTERED, device)  # num_threads=None: the process setting applies
    agent = PPO(
        "transformer", ENV_ID, n_envs=64, n_epochs=1, batch_size=16, max_approx_kl=None, kl_coef=0.05, seed=0,
        device=str(device),
    )  # fmt: skip
    agent.collector.num_threads = None
    batch = agent.collect_rollouts()
    agent.policy.train()
    values: dict[str, dict[int, list[float]]] = {
        "rollout_tokens_per_s": {c: [] for c in counts},
        "update_s": {c: [] for c in counts},
        "matmul_1024_gflops": {c: [] for c in counts},
    }
    torch.set_num_threads(1)
    time_collect(collector, seed=0)  # warm-up: first-touch allocations are the same at any count
    agent.train(batch)
    capped: set[int] = set()
    try:
        for r in range(rounds):
            for c in counts:
                if c in capped:
                    continue
                torch.set_num_threads(c)
                round_start = time.perf_counter()
                tokens, seconds = time_collect(collector, seed=r)
                sync(device)
                start = time.perf_counter()
                agent.train(batch)
                sync(device)
                update = time.perf_counter() - start
                rate = matmul_rate(1024, 1024, 1024, device, seconds=0.2)
                if time.perf_counter() - round_start > cap_s:
                    capped.add(c)
                values["rollout_tokens_per_s"][c].append(tokens / seconds)
                values["update_s"][c].append(update)
                values["matmul_1024_gflops"][c].append(rate)
    finally:
        torch.set_num_threads(previous)
    out: dict[str, Any] = {
        "thread_counts": counts,
        "rounds": rounds,
        "capped": sorted(capped),
        "rollout_tokens": batch.num_tokens,
        "update": "one PPO.train epoch: 4 minibatches of 16 episodes (forward, backward, AdamW)",
    }
    for key, per in values.items():
        out[key] = {str(c): med(v) for c, v in per.items()}
        out[f"{key}_rounds"] = {str(c): v for c, v in per.items()}
    best_other = max(counts[1:], key=lambda c: out["rollout_tokens_per_s"][str(c)]) if len(counts) > 1 else 1
    out["rollout_speedup_1_vs_best_other"] = (
        out["rollout_tokens_per_s"]["1"] / out["rollout_tokens_per_s"][str(best_other)]
    )
    out["update_speedup_1_vs_2"] = out["update_s"].get("2", float("nan")) / out["update_s"]["1"]
    out["chosen"] = 1 if out["rollout_speedup_1_vs_best_other"] >= 1 else best_other
    return out


def print_result(res: dict[str, Any]) -> None:
    if "skipped" in res:
        print(res["skipped"])
        return
    print(
        f"threads  rollout tokens/s  PPO epoch (s)  matmul 1024^3 GFLOP/s   (median of up to {res['rounds']} "
        "rounds)"
    )
    for c in res["thread_counts"]:
        k = str(c)
        print(
            f"{c:>7}  {res['rollout_tokens_per_s'][k]:>16,.0f}  {res['update_s'][k]:>13.3f}"
            f"  {res['matmul_1024_gflops'][k]:>22.1f}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cap", type=float, default=20.0, help="seconds after which a count is not repeated")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    res = run(device, args.quick, args.cap)
    res["machine"] = machine_info(device)
    print_result(res)
    atomic_write_json(RESULTS_DIR / "threads.json", res, indent=1)
    return res


if __name__ == "__main__":
    main()
