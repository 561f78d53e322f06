"""Rollout tokens/s of the default policy against batch size (1 to 256) and against context length (32 to 512
tokens: the prompt window plus the new tokens), as a table and a PNG, to show where cost grows.

Every rollout runs the full token budget (EOS masked), so tokens = batch × new tokens. The batch sweep uses
64 new tokens; the context sweep uses batch 64 and a budget of ``context − prompt window`` new tokens, with
a policy whose position table covers the context. Within a sweep, the points alternate in every round
and the median is reported.

Usage::

    python -m benchmarks.scaling [--quick] [--device auto]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import RESULTS_DIR
from benchmarks.workloads import RolloutShape, alternate, med, rollout_setup, run_cli, time_collect

PROMPT_WINDOW = 18  # BOS + the longest Reverse-v0 prompt (17 tokens)


def sweep(points: dict[str, RolloutShape], device: torch.device, rounds: int) -> dict[str, Any]:
    # the policy's position table is sized to each point's context (workloads.make_policy)
    setups = {k: rollout_setup(s, device) for k, s in points.items()}

    def one(key: str):
        def fn(r: int) -> float:
            tokens, seconds = time_collect(setups[key][1], seed=max(r, 0))
            return tokens / seconds

        return fn

    rates = alternate({k: one(k) for k in points}, rounds)
    return {k: {"tokens_per_s": med(v), "rounds": v} for k, v in rates.items()}


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 3
    batches = [1, 16, 64, 256] if quick else [1, 4, 16, 64, 128, 256]
    contexts = [32, 128, 512] if quick else [32, 64, 128, 256, 512]
    by_batch = sweep(
        {str(b): RolloutShape(f"batch{b}", batch=b, max_new_tokens=64, eos_masked=True) for b in batches},
        device,
        rounds,
    )
    shapes = {
        str(c): RolloutShape(f"ctx{c}", batch=64, max_new_tokens=c - PROMPT_WINDOW, eos_masked=True)
        for c in contexts
    }
    by_context = sweep(shapes, device, rounds)
    res = {
        "batch_sweep": {"new_tokens": 64, "points": by_batch},
        "context_sweep": {"batch": 64, "prompt_window": PROMPT_WINDOW, "points": by_context},
        "rounds": rounds,
    }
    res["png"] = plot(res, RESULTS_DIR / "scaling.png")
    return res


def plot(res: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, xlabel, title in (
        (axes[0], "batch_sweep", "batch size (slots)", "tokens/s vs batch (64 new tokens)"),
        (
            axes[1],
            "context_sweep",
            "context length (prompt window + new tokens)",
            "tokens/s vs context (batch 64)",
        ),
    ):
        pts = res[key]["points"]
        xs = [int(k) for k in pts]
        ys = [pts[k]["tokens_per_s"] for k in pts]
        ax.plot(xs, ys, marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("generated tokens/s")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Default policy (2 layers x 128) rollouts through TextGenVectorEnv, KV-cached")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def print_result(res: dict[str, Any]) -> None:
    print("batch  tokens/s   (64 new tokens)")
    for k, v in res["batch_sweep"]["points"].items():
        print(f"{k:>5}  {v['tokens_per_s']:>9,.0f}")
    print("context  tokens/s   (batch 64)")
    for k, v in res["context_sweep"]["points"].items():
        print(f"{k:>7}  {v['tokens_per_s']:>9,.0f}")
    if res.get("png"):
        print(f"plot: benchmarks/results/{res['png']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli("scaling", __doc__, run, print_result, argv)


if __name__ == "__main__":
    main()
