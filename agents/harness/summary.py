"""Statistics over finished runs (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice",
via :mod:`agents.stats`): per-env mean and IQM with stratified-bootstrap CIs, suite aggregates, the
probability of improvement, and learning curves with CI bands.

Example:
    >>> summarize([], ["TextEnv/Copy-L4-v0"], ["ours:ppo"], reps=10)["aggregate"]
    {}
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from agents import stats
from agents.harness.runners import RunResult

logger = logging.getLogger(__name__)


def _score(run: RunResult, metric: str) -> float:
    return float(run.final[metric])


def _mean_or_nan(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None]
    return float("nan") if len(present) < len(values) else float(np.mean(present))


class _SingleRunNotes(logging.Filter):
    """Collects :mod:`agents.stats`' "has a single run" warnings (one per estimate) instead of logging
    them: :func:`summarize` turns them into one note that names the env and algorithm."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "has a single run" in str(record.msg):
            self.dropped += 1
            return False
        return True


@contextlib.contextmanager
def _quiet_single_runs() -> Iterator[_SingleRunNotes]:
    stats_logger = logging.getLogger(stats.__name__)
    notes = _SingleRunNotes()
    stats_logger.addFilter(notes)
    try:
        yield notes
    finally:
        stats_logger.removeFilter(notes)


def summarize(
    runs: Sequence[RunResult], envs: Sequence[str], algos: Sequence[str], reps: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Statistics over finished runs.

    Per env and algorithm: mean and IQM over seeds of the final success rate and of the final mean return,
    with stratified-bootstrap 95% percentile CIs. Over the suite (a ``(seeds, envs)`` score matrix per
    algorithm): IQM and mean with CIs, and the probability of improvement of every algorithm over every
    other. An algorithm enters the suite statistics only if it has the same number of runs on every env;
    an env enters the success statistics only if all its runs report success.

    Returns:
        ``{"per_env": {env: {algo: {"n", "success": {"mean", "iqm"}, "return": {...}, "steps",
        "train_seconds"}}}, "aggregate": {metric: {algo: {"iqm", "mean"}}}, "poi": {metric: {"a>b": est}},
        "curves": {env: {algo: [{"target", "mean", "lo", "hi", "n"}]}}, "notes": [...]}`` where every
        estimate is ``{"point", "lo", "hi"}``. A pair (env, algorithm) with a single run gets zero-width
        intervals; one note (and one warning) names every such pair.
    """
    with _quiet_single_runs():
        summary = _summarize(runs, envs, algos, reps, seed)
    pairs = list(dict.fromkeys((r.env, r.algo) for r in runs))
    several = _pairs_with_several_runs(runs)
    single = [p for p in pairs if p not in several]
    if single:
        if len(single) == len(pairs):
            names = "every env and algorithm (" + ", ".join(dict.fromkeys(a for _, a in pairs)) + ")"
        else:
            names = ", ".join(f"{algo} on {env}" for env, algo in single)
        note = f"a single run (seed) for {names}: their 95% intervals have zero width; use more seeds"
        summary["notes"].append(note)
        logger.warning(note)
    return summary


def _pairs_with_several_runs(runs: Sequence[RunResult]) -> set[tuple[str, str]]:
    counts: dict[tuple[str, str], int] = {}
    for r in runs:
        counts[r.env, r.algo] = counts.get((r.env, r.algo), 0) + 1
    return {k for k, n in counts.items() if n > 1}


def _summarize(
    runs: Sequence[RunResult], envs: Sequence[str], algos: Sequence[str], reps: int, seed: int
) -> dict[str, Any]:
    notes: list[str] = []
    by: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        by.setdefault((r.env, r.algo), []).append(r)
    metric_fns = {"mean": stats.mean, "iqm": stats.iqm}

    def estimates(values: np.ndarray, name: str) -> dict[str, dict[str, float]]:
        est = stats.aggregate_with_ci({name: values}, metric_fns, reps=reps, seed=seed)[name]
        return {m: e._asdict() for m, e in est.items()}

    metrics = {"success": "success_rate", "return": "mean_return"}
    per_env: dict[str, dict[str, Any]] = {}
    success_envs = []
    for env in envs:
        per_env[env] = {}
        env_has_success = True
        for algo in algos:
            rs = by.get((env, algo), [])
            if not rs:
                continue
            row: dict[str, Any] = {"n": len(rs)}
            for label, key in metrics.items():
                values = np.array([_score(r, key) for r in rs])
                if np.isnan(values).any():
                    env_has_success = env_has_success and label != "success"
                    continue
                row[label] = estimates(values[:, None], f"{env}/{algo}/{label}")
            # unknown steps (a function algorithm) stay unknown: NaN, never the budget
            row["steps"] = _mean_or_nan([r.steps for r in rs])
            row["train_seconds"] = float(np.mean([r.train_seconds for r in rs]))
            row["steps_per_second"] = _mean_or_nan([r.steps_per_second for r in rs])
            per_env[env][algo] = row
        if env_has_success:
            success_envs.append(env)
        else:
            notes.append(f"{env} reports no success for some runs: it is left out of the success statistics")

    aggregate: dict[str, dict[str, Any]] = {}
    poi: dict[str, dict[str, Any]] = {}
    for label, key in metrics.items():
        suite_envs = success_envs if label == "success" else list(envs)
        matrices = {}
        for algo in algos:
            cols = [
                [_score(r, key) for r in sorted(by.get((e, algo), []), key=lambda r: r.seed)]
                for e in suite_envs
            ]
            if not suite_envs or len({len(c) for c in cols}) != 1 or not cols[0]:
                if suite_envs:
                    notes.append(
                        f"{algo} has unequal or missing runs across envs: left out of the {label} aggregate"
                    )
                continue
            matrices[algo] = np.array(cols, dtype=float).T  # (seeds, envs)
        if not matrices:
            continue
        est = stats.aggregate_with_ci(matrices, metric_fns, reps=reps, seed=seed)
        aggregate[label] = {a: {m: e._asdict() for m, e in v.items()} for a, v in est.items()}
        if len(matrices) >= 2:
            pairs = stats.pairwise_probability_of_improvement(matrices, reps=reps, seed=seed)
            poi[label] = {f"{a}>{b}": e._asdict() for (a, b), e in pairs.items()}
    curves = _curve_stats(by, envs, algos, reps=min(reps, 1000), seed=seed)
    # the mean return's curves too: with a dense reward (the -Dense ids) it moves long before success does
    return_curves = _curve_stats(by, envs, algos, reps=min(reps, 1000), seed=seed, metric="mean_return")
    return {
        "per_env": per_env,
        "aggregate": aggregate,
        "poi": poi,
        "curves": curves,
        "return_curves": return_curves,
        "notes": notes,
    }


def _curve_stats(
    by: dict[tuple[str, str], list[RunResult]],
    envs: Sequence[str],
    algos: Sequence[str],
    reps: int,
    seed: int,
    metric: str | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per env and algorithm, the mean over seeds at each grid point with a bootstrap 95% CI (success rate,
    or mean return where the env has no success test; ``metric="mean_return"``: always the mean return)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for env in envs:
        out[env] = {}
        for algo in algos:
            rs = by.get((env, algo), [])
            if not rs:
                continue
            points: dict[int, list[tuple[float, float]]] = {}
            for r in rs:
                for p in r.curve:
                    points.setdefault(int(p["target"]), []).append((p["success_rate"], p["mean_return"]))
            series = []
            for target in sorted(points):
                vals = np.array(points[target], dtype=float)
                if len(vals) != len(rs):  # not every seed has this point
                    continue
                use_success = metric != "mean_return" and not np.isnan(vals[:, 0]).any()
                v = vals[:, 0] if use_success else vals[:, 1]
                name = f"{env}/{algo}/curve"  # the bootstrap stream is seeded by this name
                ci = stats.aggregate_with_ci({name: v[:, None]}, {"mean": stats.mean}, reps=reps, seed=seed)
                e = ci[name]["mean"]
                series.append(
                    {
                        "target": target,
                        "mean": e.point,
                        "lo": e.lo,
                        "hi": e.hi,
                        "n": len(v),
                        "metric": "success_rate" if use_success else "mean_return",
                    }
                )
            out[env][algo] = series
    return out
