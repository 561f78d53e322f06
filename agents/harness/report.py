"""What a benchmark writes and prints: the per-env table, the probability-of-improvement matrix, plots,
the markdown report and the CSV/JSON results.

Files under ``out``: ``results.csv`` (one row per curve point of every run), ``results.json`` (config,
machine, runs, failures, summary), ``curves.png``, ``aggregate_iqm.png`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import io
import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from agents.harness.cli import benchmark_command
from agents.harness.config import OURS_KWARGS, SB3_POLICY_KWARGS, BenchmarkConfig, jsonable
from agents.harness.runners import RunResult
from text_env.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from agents.harness.pool import BenchmarkResult


def ci(e: dict[str, float] | None, digits: int = 2) -> str:
    """``"point [lo, hi]"`` of an estimate, ``"-"`` for None."""
    if e is None:
        return "-"
    return f"{e['point']:.{digits}f} [{e['lo']:.{digits}f}, {e['hi']:.{digits}f}]"


def format_table(summary: dict[str, Any], markdown: bool = False) -> str:
    """The per-env table (mean and IQM of final success with 95% CIs, mean return, tokens) and the suite
    aggregate, as aligned text or a markdown table."""
    header = [
        "env",
        "algorithm",
        "runs",
        "success mean [95% CI]",
        "success IQM [95% CI]",
        "return mean [95% CI]",
        "tokens",
        "tok/s",
    ]
    rows = []
    for env, algos in summary["per_env"].items():  # tokens and tok/s: "—" where the steps are unknown
        for algo, row in algos.items():
            rows.append(
                [
                    env, algo, str(row["n"]), ci(row.get("success", {}).get("mean")),
                    ci(row.get("success", {}).get("iqm")), ci(row.get("return", {}).get("mean")),
                    _number(row["steps"]), _number(row["steps_per_second"]),
                ]
            )  # fmt: skip
    for algo in summary["aggregate"].get("success", summary["aggregate"].get("return", {})):
        s = summary["aggregate"].get("success", {}).get(algo, {})
        r = summary["aggregate"].get("return", {}).get(algo, {})
        rows.append(["(suite)", algo, "", ci(s.get("mean")), ci(s.get("iqm")), ci(r.get("mean")), "", ""])
    return _render(header, rows, markdown)


def _number(x: float) -> str:
    """A whole number, or "—" where it is unknown (NaN: e.g. a function algorithm's steps)."""
    return "—" if x is None or np.isnan(x) else f"{x:.0f}"


def _render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


def format_poi(summary: dict[str, Any], metric: str = "success", markdown: bool = True) -> str:
    """The probability-of-improvement matrix: row X, column Y, cell P(X > Y) [95% CI]."""
    poi = summary["poi"].get(metric)
    if not poi:
        return "(needs at least two algorithms with complete runs)"
    algos = list(dict.fromkeys(k.split(">")[0] for k in poi))
    rows = [[a] + ["-" if a == b else ci(poi[f"{a}>{b}"]) for b in algos] for a in algos]
    return _render(["P(row > column)", *algos], rows, markdown)


def write_outputs(result: BenchmarkResult) -> None:
    """results.csv, results.json, curves.png, aggregate_iqm.png and report.md under ``result.out``."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["env", "algo", "seed", "target", "step", "success_rate", "mean_return", "final"])
    for r in result.runs:
        for i, p in enumerate(r.curve):
            w.writerow(
                [
                    r.env,
                    r.algo,
                    r.seed,
                    p["target"],
                    p["step"],
                    p["success_rate"],
                    p["mean_return"],
                    i == len(r.curve) - 1,
                ]
            )
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode("utf-8"))
    cfg = dataclasses.asdict(result.config)
    cfg["out"] = str(cfg["out"])
    cfg["command"] = benchmark_command(result.config)
    atomic_write_json(
        out / "results.json",
        jsonable(
            {
                "config": cfg,
                "machine": machine_info(),
                "wall_seconds": result.wall_seconds,
                "sft_seconds": result.sft_seconds,
                "runs": [r.to_dict() for r in result.runs],
                "failed": [f.to_dict(with_traceback=False) for f in result.failed],
                "summary": result.summary,
            }
        ),
        indent=1,
    )
    plots = plot_results(result.summary, out)
    atomic_write_bytes(out / "report.md", render_report(result, plots).encode("utf-8"))


def machine_info() -> dict[str, Any]:
    """CPU cores, platform and the versions of Python, torch, gymnasium, SB3 and sb3-contrib."""
    import torch

    info = {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
    }
    for pkg in ("stable_baselines3", "sb3_contrib"):
        with contextlib.suppress(ImportError):
            info[pkg] = importlib.import_module(pkg).__version__
    return info


def _plot_curves(axes: Any, envs: Sequence[str], curves: dict[str, Any]) -> None:
    for ax, env in zip(axes, envs):
        metric = "success_rate"
        for algo, series in curves.get(env, {}).items():
            if not series:
                continue
            x = [p["target"] for p in series]
            ax.plot(x, [p["mean"] for p in series], marker="o", ms=3, label=algo)
            ax.fill_between(x, [p["lo"] for p in series], [p["hi"] for p in series], alpha=0.2)
            metric = series[0]["metric"]
        ax.set_title(env.split("/")[-1], fontsize=10)
        ax.set_xlabel("env steps (tokens)")
        ax.set_ylabel("test success rate" if metric == "success_rate" else "test mean return")
        ax.grid(alpha=0.3)


def plot_results(summary: dict[str, Any], out: Path) -> list[str]:
    """Learning curves with 95% CI bands per env, and the suite IQM bar chart; returns the PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    curves = summary["curves"]
    envs = [e for e in curves if curves[e]]
    # a second row of mean-return curves where the first row shows success (the two differ)
    returns = summary.get("return_curves") or {}
    has_success = any(s and s[0]["metric"] == "success_rate" for e in envs for s in curves[e].values())
    rows = [curves, returns] if returns and has_success else [curves]
    if envs:
        fig, axes = plt.subplots(
            len(rows), len(envs), figsize=(4.5 * len(envs), 3.6 * len(rows)), squeeze=False
        )
        for row, data in enumerate(rows):
            _plot_curves(axes[row], envs, data)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=110)
        plt.close(fig)
        names.append("curves.png")
    label = "success" if "success" in summary["aggregate"] else "return"
    agg = summary["aggregate"].get(label)
    if agg:
        algos = list(agg)
        pts = np.array([agg[a]["iqm"]["point"] for a in algos])
        lo = np.array([agg[a]["iqm"]["lo"] for a in algos])
        hi = np.array([agg[a]["iqm"]["hi"] for a in algos])
        fig, ax = plt.subplots(figsize=(1.3 * len(algos) + 2, 3.4))
        ax.bar(
            range(len(algos)),
            pts,
            yerr=np.vstack([pts - lo, hi - pts]),
            capsize=4,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_xticks(range(len(algos)), algos, rotation=20, ha="right")
        ax.set_ylabel(f"IQM final test {label} (95% CI)")
        ax.set_title("Aggregate over the suite", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "aggregate_iqm.png", dpi=110)
        plt.close(fig)
        names.append("aggregate_iqm.png")
    return names


def render_report(result: BenchmarkResult, plots: Sequence[str]) -> str:
    """The markdown report: command, machine, budgets, tables with CIs, PoI matrix, plots, notes."""
    cfg, summary, m = result.config, result.summary, machine_info()
    sft_runs = [r.sft for r in result.runs if r.sft]
    lines = [
        "# text-env benchmark",
        "",
        "```",
        benchmark_command(cfg),
        "```",
        "",
        f"- Machine: {m['cpu_cores']} CPU cores ({m['platform']}); Python {m['python']}, torch {m['torch']}, "
        f"gymnasium {m['gymnasium']}, stable-baselines3 {m.get('stable_baselines3', '-')}, "
        f"sb3-contrib {m.get('sb3_contrib', '-')}.",
        _executor_line(cfg, result.runs),
        f"- Wall time of this invocation: {result.wall_seconds:.0f} s ({len(result.executed)} runs executed, "
        f"{len(result.skipped)} resumed from disk); the runs' own wall times sum to "
        f"{sum(r.wall_seconds for r in result.runs):.0f} s; supervised warm starts of this invocation: "
        f"{result.sft_seconds:.0f} s (summed over processes, cache misses only).",
        f"- Budget: **{cfg.budget} env steps (generated tokens) per run for every algorithm**; "
        f"{cfg.seeds} seeds; evaluation every {cfg.eval_interval} steps on the first {cfg.n_eval} prompts of "
        "each env's held-out test split, greedy decoding.",
    ]
    if sft_runs:
        s = sft_runs[0]
        demo_tokens = np.mean([r["demo_tokens"] for r in sft_runs])
        lines.append(
            f"- `ours:<name>` starts from supervised fine-tuning: {s['steps']} steps × {s['batch_size']} "
            f"demonstrations (lr {s['learning_rate']}, {s['warmup']} warmup steps), ≈{demo_tokens:.0f} "
            "demonstration target tokens per run — **not counted in the RL budget**; SB3 sees no "
            "demonstrations. `--sft-steps 0` (or `ours:<name>-scratch`) is the comparison at equal "
            "information."
        )
    lines += [
        f"- Our agents: their defaults plus {json.dumps(OURS_KWARGS)}; SB3: its defaults (MlpPolicy heads) "
        f"over the token-embedding extractor (agents/sb3.py) with {json.dumps(SB3_POLICY_KWARGS)}.",
        "",
        "## Final test success per env",
        "",
        "Mean and interquartile mean (IQM) over seeds with stratified-bootstrap 95% confidence intervals "
        "(Agarwal et al. 2021); `(suite)` rows aggregate over every env.",
        "",
        format_table(summary, markdown=True),
        "",
        "## Probability of improvement (final success, over the suite)",
        "",
        format_poi(summary, "success"),
        "",
    ]
    if summary["poi"].get("return"):
        lines += [
            "## Probability of improvement (final mean return, over the suite)",
            "",
            format_poi(summary, "return"),
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    step0 = _step0_table(result.runs)
    if step0:
        lines += ["## Where each algorithm started (test success and return at step 0, mean over seeds)", ""]
        lines += [step0, ""]
    notes = list(summary["notes"])
    for r in result.runs:
        if r.steps is not None and r.steps > r.budget:
            notes.append(f"{r.name} took {r.steps} steps, more than the budget {r.budget}")
    notes += [f"FAILED {f.name}: {f.error}" for f in result.failed]
    if result.missing:
        notes.append(
            f"MISSING {len(result.missing)} of the plan's runs (no result in runs/): "
            + ", ".join(result.missing)
        )
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _executor_line(cfg: BenchmarkConfig, runs: Sequence[RunResult]) -> str:
    where = Counter(f"{r.host or '?'} ({r.device or 'device unknown'})" for r in runs)
    ran_on = "; runs ran on " + ", ".join(f"{w} × {n}" for w, n in where.items()) if where else ""
    if cfg.executor == "ray":
        return f"- Executor: Ray, one task (1 CPU) per run{ran_on}."
    return (
        f"- Workers: {cfg.workers} process(es), one torch thread each when more than one{ran_on}."
        if ran_on
        else f"- Workers: {cfg.workers} process(es), one torch thread each when more than one."
    )


def _step0_table(runs: Sequence[RunResult]) -> str:
    vals: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in runs:
        first = r.curve[0]
        if first["target"] == 0:
            vals.setdefault((r.env, r.algo), []).append((first["success_rate"], first["mean_return"]))
    if not vals:
        return ""
    rows = [
        [env, algo, f"{np.mean([s for s, _ in v]):.2f}", f"{np.mean([m for _, m in v]):.2f}"]
        for (env, algo), v in vals.items()
    ]
    return _render(["env", "algorithm", "success at step 0", "mean return at step 0"], rows, markdown=True)
