"""Run every performance measurement and write ``BENCHMARKS.md`` and ``benchmarks/results/*.json``.

Usage::

    python -m benchmarks                    # everything (~10 minutes on 2 shared cores)
    python -m benchmarks --quick            # fewer rounds and points (~3 minutes)
    python -m benchmarks --only rollout kv_cache --device auto

Items: ``env`` (native vector env ÷ SyncVectorEnv), ``rollout`` (rollout ÷ roofline, with its profile),
``threads`` (1 vs more torch threads), ``kv_cache`` (cached ÷ full re-forward), ``train_loop`` (our PPO ÷
SB3 PPO, with the update's profile), ``memory`` (PPO ÷ policy peak RSS), ``scaling`` (tokens/s vs batch
and context, PNG), ``rewards`` (completions/s per built-in reward). ``--only`` rewrites BENCHMARKS.md from
the fresh items plus the stored results of the others.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import (
    env_throughput,
    kv_cache,
    memory,
    reward_throughput,
    rollout_roofline,
    scaling,
    threads,
    train_loop,
)
from benchmarks.machine import (
    RESULTS_DIR,
    decode_matmul_shapes,
    load_average,
    machine_info,
    matmul_rates,
    resolve_device,
)
from benchmarks.report import write_markdown
from benchmarks.workloads import apply_threads
from text_env.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
ITEMS = ("env", "rollout", "threads", "kv_cache", "train_loop", "memory", "scaling", "rewards")
# the embedding model's reward needs ~40 s per 1,000 completions on one shared core: --quick leaves it out
QUICK_REWARDS = [
    "exact_match", "partial_match", "keyword", "token_f1", "rouge1", "rouge2", "rouge_l", "bleu", "chrf",
    "sentiment_vader", "length", "repetition", "regex", "fluency", "reward_model", "classifier",
]  # fmt: skip


def run_env(quick: bool) -> dict[str, Any]:
    argv = ["--num-envs", "256", "--steps", "500" if quick else "2000", "--rounds", "3"]
    if quick:
        argv.append("--no-reference")
    return env_throughput.main(argv)


def run_rewards(quick: bool) -> dict[str, Any]:
    argv = ["--n", "1000", "--rounds", "1" if quick else "2"]
    if quick:
        argv += ["--only", *QUICK_REWARDS]
    reward_throughput.main(argv)
    return json.loads(reward_throughput.RESULTS.read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and points")
    parser.add_argument("--only", nargs="+", choices=ITEMS, help="run only these items")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if present), 'cpu', 'cuda'")
    parser.add_argument(
        "--threads", default="auto", help="torch threads: 'auto' (the collector's policy) or N"
    )
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    n_threads = apply_threads(args.threads, device)
    items = args.only or list(ITEMS)
    start = time.perf_counter()
    res: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "load_start": load_average(),
        "torch_threads": n_threads,
        "machine": machine_info(device),
        "seconds": {},
        "only": args.only,
    }
    info = res["machine"]
    print(
        f"machine: {info['cpu']}, {info['usable_cores']} cores, load {res['load_start']}, "
        f"{n_threads} torch thread(s), device {device}"
    )
    res["matmul"] = matmul_rates(device, decode_matmul_shapes(64, 128, 19), quick=args.quick)
    print(f"matmul: peak {res['matmul']['peak_gflops']:.1f} GFLOP/s, "
          f"decode-shape-matched {res['matmul']['matched_gflops']:.1f} GFLOP/s")  # fmt: skip
    atomic_write_json(
        RESULTS_DIR / "machine.json", {"machine": res["machine"], "matmul": res["matmul"]}, indent=1
    )

    steps: dict[str, tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None] | None]] = {
        "env": ("env_throughput", lambda: run_env(args.quick), None),
        "rollout": (
            "rollout_roofline",
            lambda: rollout_roofline.run(device, args.quick),
            rollout_roofline.print_result,
        ),
        "threads": ("threads", lambda: threads.run(device, args.quick), threads.print_result),
        "kv_cache": ("kv_cache", lambda: kv_cache.run(device, args.quick), None),
        "train_loop": ("train_loop", lambda: train_loop.run(device, args.quick), train_loop.print_result),
        "memory": ("memory", lambda: memory.run(device, args.quick), memory.print_result),
        "scaling": ("scaling", lambda: scaling.run(device, args.quick), scaling.print_result),
        "rewards": ("reward_throughput", lambda: run_rewards(args.quick), None),
    }
    for item in ITEMS:
        name, fn, show = steps[item]
        path = RESULTS_DIR / f"{name}.json"
        if item not in items:
            if path.exists():  # keep the stored figures in the report
                res[item] = json.loads(path.read_text())
            continue
        print(f"\n== {item} ==", flush=True)
        t0 = time.perf_counter()
        out = fn()
        res["seconds"][item] = time.perf_counter() - t0
        if item not in ("env", "rewards"):  # those two write their own JSON
            out = {**out, "machine": machine_info(device), "load_after": load_average()}
            atomic_write_json(path, out, indent=1)
        if show is not None:
            show(out)
        if item == "kv_cache":
            print(
                f"KV-cached {out['cached_tokens_per_s']:,.0f} vs re-forward "
                f"{out['uncached_tokens_per_s']:,.0f} tokens/s: {out['ratio']:.1f}x; "
                f"same tokens: {out['same_tokens']}"
            )
        res[item] = out
    res["load_end"] = load_average()
    res["wall_s"] = time.perf_counter() - start
    res["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {
        k: v for k, v in res.items() if k in ("command", "load_start", "load_end", "torch_threads", "wall_s")
    }
    summary["seconds"] = res["seconds"]
    atomic_write_json(RESULTS_DIR / "summary.json", summary, indent=1)
    write_markdown(res, args.markdown)
    print(f"\nwrote {args.markdown} and {RESULTS_DIR}/ in {res['wall_s']:.0f} s")
    return res


if __name__ == "__main__":
    main()
