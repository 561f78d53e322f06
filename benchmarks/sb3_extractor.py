"""SB3's time per env step with the token-embedding extractor's two encoders, side by side: the harness's
default ``flatten`` against the one-block ``transformer`` (issue 16, item 3: SB3's runs dominated the main
job's time).

For SB3's PPO and A2C (their defaults, MlpPolicy heads, one env, one torch thread) on the main job's
``TextEnv/Arithmetic-Dense-v0``, each round times ``learn(steps)`` once per encoder, alternating within the
round so that both see the same stretch of machine load; the ratio is transformer ÷ flatten seconds (> 1:
flatten is faster). Writes ``benchmarks/results/sb3_extractor.json`` with the load average before and after.

Usage::

    python -m benchmarks.sb3_extractor [--steps 4096] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from agents.sb3 import make_sb3
from benchmarks.machine import RESULTS_DIR, load_average, machine_info
from text_env.io import atomic_write_json

ENV_ID = "TextEnv/Arithmetic-Dense-v0"
ENCODERS = ("transformer", "flatten")


def run(steps: int = 4096, rounds: int = 2) -> dict[str, Any]:
    torch.set_num_threads(1)
    load_before = load_average()
    algos = ("sb3:PPO", "sb3:A2C")
    seconds: dict[str, dict[str, list[float]]] = {a: {e: [] for e in ENCODERS} for a in algos}
    for r in range(rounds):
        for algo, by in seconds.items():
            for enc in ENCODERS if r % 2 == 0 else ENCODERS[::-1]:
                model = make_sb3(algo, ENV_ID, seed=r, policy_kwargs={"encoder": enc})
                t0 = time.perf_counter()
                model.learn(total_timesteps=steps)
                by[enc].append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        "env": ENV_ID,
        "steps": steps,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": machine_info(torch.device("cpu")),
        "results": {},
    }
    for algo, by in seconds.items():
        med = {e: statistics.median(v) for e, v in by.items()}
        out["results"][algo] = {
            "seconds": by,
            "median_seconds": med,
            "steps_per_second": {e: steps / s for e, s in med.items()},
            "transformer_over_flatten": med["transformer"] / med["flatten"],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sb3_extractor", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    res = run(args.steps, args.rounds)
    for algo, r in res["results"].items():
        m = r["median_seconds"]
        print(
            f"{algo}: transformer {m['transformer']:.1f} s, flatten {m['flatten']:.1f} s "
            f"for {args.steps} steps "
            f"→ transformer ÷ flatten = {r['transformer_over_flatten']:.2f}x"
        )
    before, after = res["load_average_before"], res["load_average_after"]
    print(f"torch threads 1; load average before {before}, after {after}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS_DIR / "sb3_extractor.json", res)
    return res


if __name__ == "__main__":
    main()
