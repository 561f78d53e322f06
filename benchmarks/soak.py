"""Soak: does memory stay flat over long runs? (issue 8, item 5)

Two parts, each sampling the process's resident set (RSS, from /proc) as it goes:

- ``env``: a :class:`~text_env.vector.TextGenVectorEnv` with 4,096 slots and a 1,024-token context window,
  stepped with uniformly random tokens, first with autoreset (``NEXT_STEP``: slots restart as they finish,
  so every step also resets, scores and decodes some slots), then in lockstep (``DISABLED``: the rollout
  mode, every slot restarting together). RSS and the number of live Python objects every ``--sample-every``
  steps.
- ``train``: PPO on a synthetic env for ``--minutes`` (default 30), checkpointing every
  ``--checkpoint-every`` iterations into a temporary directory, RSS and tokens/s every iteration.

"Flat" is judged on the steady state (after the first ``--warmup`` fraction of samples, when allocator pools
and caches have filled): the least-squares slope of RSS against steps or iterations, in KiB per step or
iteration, and the RSS range. Two RSS figures are kept: the raw one, and the *retained* one, measured right
after ``gc.collect()`` and glibc's ``malloc_trim(0)`` (at every sample in the env part, every
``--trim-every`` iterations in the train part). glibc keeps the freed blocks of the varying tensor sizes of
ragged episodes in its heap, so raw RSS creeps up with nothing alive; the retained figure is what the process
really holds. The train part's in-memory log (``agent.logger.rows``: one dict per iteration, kept by design
for callers) is the one thing expected to grow; its length is recorded. Results go to
``benchmarks/results/soak.json`` (rewritten as the run goes, so a killed soak keeps what it measured).

Usage::

    python -m benchmarks.soak                         # both parts: 2 × 3,000 env steps, then 30 min of PPO
    python -m benchmarks.soak --part env --env-steps 5000
    python -m benchmarks.soak --part train --minutes 5
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from benchmarks.machine import RESULTS_DIR, load_average, machine_info
from benchmarks.memory import rss_kb
from text_env.io import atomic_write_json, read_json
from text_env.vector import TextGenVectorEnv

RESULTS = RESULTS_DIR / "soak.json"


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: no retained figure
        return None


MALLOC_TRIM = _malloc_trim()


def retained_rss_mb() -> float | None:
    """RSS after a full garbage collection and handing glibc's free heap pages back to the system."""
    if MALLOC_TRIM is None:
        return None
    gc.collect()
    MALLOC_TRIM(0)
    return rss_kb() / 1024


def slope_per_unit(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def steady(rows: list[dict[str, Any]], warmup: float) -> list[dict[str, Any]]:
    """The rows after the warm-up fraction (at least two, when there are two)."""
    start = min(int(len(rows) * warmup), max(len(rows) - 2, 0))
    return rows[start:]


def summarize(rows: list[dict[str, Any]], x: str, warmup: float) -> dict[str, Any]:
    """RSS at the start, after warm-up and at the end, and the steady-state slopes (KiB per unit of ``x``)
    of the raw and of the retained RSS."""
    if not rows:
        return {}
    st = steady(rows, warmup)
    out = {
        "rss_start_mb": rows[0]["rss_mb"],
        "rss_after_warmup_mb": st[0]["rss_mb"],
        "rss_end_mb": rows[-1]["rss_mb"],
        "rss_steady_min_mb": min(r["rss_mb"] for r in st),
        "rss_steady_max_mb": max(r["rss_mb"] for r in st),
        f"steady_slope_kib_per_{x}": 1024 * slope_per_unit([r[x] for r in st], [r["rss_mb"] for r in st]),
        f"steady_{x}s": st[-1][x] - st[0][x],
    }
    kept = steady([r for r in rows if r.get("retained_mb") is not None], warmup)
    if len(kept) >= 2:
        out["retained_steady_first_mb"] = kept[0]["retained_mb"]
        out["retained_end_mb"] = kept[-1]["retained_mb"]
        out[f"retained_slope_kib_per_{x}"] = 1024 * slope_per_unit(
            [r[x] for r in kept], [r["retained_mb"] for r in kept]
        )
    return out


# ---- part (a): the vector env ------------------------------------------------------------------------------
def soak_env(
    slots: int, context_len: int, steps: int, sample_every: int, seed: int, mode: AutoresetMode
) -> list[dict[str, Any]]:
    """Step a ``slots``-wide env with a ``context_len`` window for ``steps`` random-token steps."""
    env = TextGenVectorEnv("reverse", num_envs=slots, context_len=context_len, autoreset_mode=mode)
    rng = np.random.default_rng(seed)
    vocab = env.single_action_space.n
    env.reset(seed=seed)
    rows: list[dict[str, Any]] = []
    finished_episodes = 0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        actions = rng.integers(0, vocab, size=slots)
        _, _, terminated, truncated, _ = env.step(actions)
        finished_episodes += int(terminated.sum() + truncated.sum())
        if mode == AutoresetMode.DISABLED and env.finished.all():
            env.reset()
        if step % sample_every == 0 or step == steps:
            dt = time.perf_counter() - t0
            rows.append(
                {
                    "step": step,
                    "rss_mb": rss_kb() / 1024,
                    "retained_mb": retained_rss_mb(),
                    "python_objects": len(gc.get_objects()),
                    "episodes": finished_episodes,
                    "slot_steps_per_s": slots * sample_every / dt if step % sample_every == 0 else None,
                }
            )
            t0 = time.perf_counter()
    env.close()
    return rows


def rows_bytes(rows: list[dict[str, Any]]) -> float:
    """Mean bytes of one row (the dict and its values; keys are shared, interned strings)."""
    if not rows:
        return 0.0
    return sum(sys.getsizeof(r) + sum(sys.getsizeof(v) for v in r.values()) for r in rows) / len(rows)


# ---- part (b): a training run ------------------------------------------------------------------------------
def soak_train(
    minutes: float,
    env_id: str,
    n_envs: int,
    checkpoint_every: int,
    trim_every: int,
    seed: int,
    on_row: Any = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """PPO on ``env_id`` until ``minutes`` have passed; one row per iteration."""
    from agents import PPO, BaseCallback

    rows: list[dict[str, Any]] = []

    class Record(BaseCallback):
        def _on_training_start(self) -> None:
            self.deadline = time.monotonic() + 60 * minutes

        def _on_step(self) -> bool:
            stats = self.locals["stats"]
            it = self.model.iteration
            rows.append(
                {
                    "iteration": it,
                    "tokens": self.model.num_timesteps,
                    "rss_mb": rss_kb() / 1024,
                    "retained_mb": retained_rss_mb() if it % trim_every == 0 else None,
                    "tokens_per_s": stats["charts/tokens_per_s"],
                    "episodic_return": stats["charts/episodic_return"],
                    "log_rows": len(self.model.logger.rows),
                }
            )
            if on_row is not None:
                on_row(rows)
            return time.monotonic() < self.deadline

    with tempfile.TemporaryDirectory(prefix="text_env_soak_") as ckpt:
        agent = PPO(
            "transformer", env_id, n_envs=n_envs, seed=seed, checkpoint_dir=ckpt,
            checkpoint_every=checkpoint_every, device="cpu",
        )  # fmt: skip
        agent.learn(10**12, callback=Record())
        info = {
            "parameters": sum(p.numel() for p in agent.policy.parameters()),
            "checkpoints_written": agent.iteration // checkpoint_every,
            # what the two per-iteration logs (the agent's and this soak's own) hold, per iteration
            "agent_log_bytes_per_iteration": rows_bytes(agent.logger.rows),
            "soak_record_bytes_per_iteration": rows_bytes(rows),
        }
    return rows, info


# ---- report ---------------------------------------------------------------------------------------------
def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def env_table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        name,
        f"{'step':>7} {'RSS MB':>8} {'retained':>8} {'objects':>9} {'episodes':>10} {'slot-steps/s':>13}",
    ]
    for r in rows:
        rate = f"{r['slot_steps_per_s']:13,.0f}" if r["slot_steps_per_s"] else f"{'-':>13}"
        lines.append(
            f"{r['step']:7d} {r['rss_mb']:8.1f} {_mb(r['retained_mb']):>8} {r['python_objects']:9,d} "
            f"{r['episodes']:10,d} {rate}"
        )
    return "\n".join(lines)


def train_table(rows: list[dict[str, Any]], lines_wanted: int = 20) -> str:
    """Every iteration with a retained-RSS sample (thinned to about ``lines_wanted``), and the last."""
    lines = [f"{'iteration':>9} {'tokens':>10} {'RSS MB':>8} {'retained':>8} {'tok/s':>8} {'log rows':>8}"]
    sampled = [r for r in rows if r["retained_mb"] is not None] or rows
    picked = sampled[:: max(1, len(sampled) // lines_wanted)]
    if rows and picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    for r in picked:
        lines.append(
            f"{r['iteration']:9d} {r['tokens']:10,d} {r['rss_mb']:8.1f} {_mb(r['retained_mb']):>8} "
            f"{r['tokens_per_s']:8.0f} {r['log_rows']:8d}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.soak")
    p.add_argument("--part", choices=["env", "train", "both"], default="both")
    p.add_argument("--slots", type=int, default=4096)
    p.add_argument("--context-len", type=int, default=1024)
    p.add_argument("--env-steps", type=int, default=3000, help="steps per autoreset mode")
    p.add_argument("--sample-every", type=int, default=100, help="env steps between RSS samples")
    p.add_argument("--minutes", type=float, default=30.0, help="length of the training soak")
    p.add_argument("--train-env", default="TextEnv/Reverse-v0")
    p.add_argument("--n-envs", type=int, default=64)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--trim-every", type=int, default=50, help="iterations between retained-RSS samples")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of samples before the steady state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # benchmarks/results/threads.json: 1 thread is fastest for small models here

    result: dict[str, Any] = {}
    if args.part != "both" and args.out.exists():  # one part: keep the other part's last figures
        try:
            result = {k: v for k, v in read_json(args.out).items() if k in ("env", "train", "runs")}
        except (ValueError, OSError, AttributeError):
            result = {}
    part_key = "env" if args.part == "env" else "train"
    runs = {} if args.part == "both" else dict(result.get("runs", {}))
    for key in ("env", "train") if args.part == "both" else (part_key,):
        runs[key] = {
            "command": "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine_info(torch.device("cpu")),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
    result["runs"] = runs

    def save() -> None:
        result["load_average_now"] = load_average()
        atomic_write_json(args.out, result, indent=1)

    if args.part in ("env", "both"):
        result["env"] = {}
        for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            t0 = time.perf_counter()
            rows = soak_env(args.slots, args.context_len, args.env_steps, args.sample_every, args.seed, mode)
            summary = summarize(rows, "step", args.warmup)
            summary["seconds"] = time.perf_counter() - t0
            result["env"][mode.value] = {"rows": rows, "summary": summary}
            print(env_table(f"\nenv: {args.slots} slots × {args.context_len} context, {mode.value}", rows))
            print(
                f"steady state: {summary['steady_slope_kib_per_step']:+.3f} KiB/step raw, "
                f"{summary.get('retained_slope_kib_per_step', float('nan')):+.3f} KiB/step retained, over "
                f"{summary['steady_steps']} steps; RSS {summary['rss_steady_min_mb']:.1f}–"
                f"{summary['rss_steady_max_mb']:.1f} MB",
                flush=True,
            )
            save()

    if args.part in ("train", "both"):
        last_save = [time.monotonic()]

        def on_row(rows: list[dict[str, Any]]) -> None:
            if time.monotonic() - last_save[0] > 30:  # keep soak.json current in a long run
                result["train"] = {"rows": rows, "summary": summarize(rows, "iteration", args.warmup)}
                save()
                last_save[0] = time.monotonic()

        t0 = time.perf_counter()
        rows, info = soak_train(
            args.minutes,
            args.train_env,
            args.n_envs,
            args.checkpoint_every,
            args.trim_every,
            args.seed,
            on_row,
        )
        summary = {**summarize(rows, "iteration", args.warmup), **info, "seconds": time.perf_counter() - t0}
        st = steady(rows, args.warmup)
        summary["tokens_per_s_first_steady"] = float(np.median([r["tokens_per_s"] for r in st[:20]]))
        summary["tokens_per_s_last"] = float(np.median([r["tokens_per_s"] for r in rows[-20:]]))
        logs_kib = (info["agent_log_bytes_per_iteration"] + info["soak_record_bytes_per_iteration"]) / 1024
        summary["retained_slope_minus_logs_kib_per_iteration"] = (
            summary.get("retained_slope_kib_per_iteration", float("nan")) - logs_kib
        )
        result["train"] = {"rows": rows, "summary": summary}
        print(f"\ntrain: PPO on {args.train_env}, {args.n_envs} episodes per iteration, {args.minutes:g} min")
        print(train_table(rows))
        print(
            f"steady state: {summary['steady_slope_kib_per_iteration']:+.2f} KiB/iteration raw, "
            f"{summary.get('retained_slope_kib_per_iteration', float('nan')):+.2f} KiB/iteration retained, "
            f"over {summary['steady_iterations']} iterations; RSS {summary['rss_steady_min_mb']:.1f}–"
            f"{summary['rss_steady_max_mb']:.1f} MB; tokens/s {summary['tokens_per_s_first_steady']:.0f} → "
            f"{summary['tokens_per_s_last']:.0f}"
        )
        print(
            f"the two per-iteration logs hold {logs_kib:.2f} KiB/iteration; retained growth beyond them: "
            f"{summary['retained_slope_minus_logs_kib_per_iteration']:+.2f} KiB/iteration"
        )
        save()
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
