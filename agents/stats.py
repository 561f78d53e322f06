"""Evaluation statistics users can trust: aggregate metrics with stratified-bootstrap confidence intervals.

Implements the protocol of Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS), as the ``rliable`` package does (google-research/rliable, ``rliable/metrics.py`` and
``rliable/library.py``):

- aggregate metrics over a ``(num_runs, num_tasks)`` score matrix: the interquartile mean (IQM, the 25 %
  trimmed mean over all runs and tasks), mean, median of task means and optimality gap;
- **stratified bootstrap** confidence intervals: each replicate resamples runs with replacement *within each
  task*, so every task keeps its number of runs (rliable's ``StratifiedBootstrap``); the interval
  is the percentile interval of the replicates (rliable's default ``method='percentile'``);
- the average **probability of improvement** ``P(X > Y)``: per task, the Mann-Whitney U statistic divided by
  ``n_x · n_y`` (ties count one half), averaged over tasks, with CIs from resampling the runs of
  ``X`` and ``Y`` independently within each task (rliable's ``StratifiedIndependentBootstrap``);
- **performance profiles**: the fraction of runs × tasks scoring above each threshold ``tau``.

rliable itself is not used as the engine: its dependency ``arch`` cannot be used in this environment (arch
7.x fails to import with pandas 3, arch 6.x was built against numpy 1, arch 8 no longer accepts the
``random_state`` argument rliable passes). One deliberate difference: rliable draws its resampling indices
from the global ``np.random`` state, whereas here every call is seeded, and each algorithm (or pair) gets its
own stream derived from ``(seed, name)``, so adding an algorithm never changes another's interval.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.stats

logger = logging.getLogger(__name__)

Metric = Callable[[np.ndarray], float]
_MAX_ELEMENTS_PER_CHUNK = 1 << 22  # bounds the memory of one batch of bootstrap replicates (~32 MiB of f64)


class Estimate(NamedTuple):
    """A point estimate with the lower and upper bounds of its bootstrap confidence interval."""

    point: float
    lo: float
    hi: float


# ---------------------------------------------------------------------------------------------------------
# Aggregate metrics. The underscored versions take (..., runs, tasks) and reduce the last two axes, so one
# call scores a whole batch of bootstrap replicates; the public ones take one (runs, tasks) matrix.


def _iqm(s: np.ndarray) -> np.ndarray:
    # rliable.metrics.aggregate_iqm: trim_mean(scores, 0.25, axis=None), i.e. over all runs x tasks pooled.
    return scipy.stats.trim_mean(s.reshape(*s.shape[:-2], -1), proportiontocut=0.25, axis=-1)


def _mean(s: np.ndarray) -> np.ndarray:
    return s.mean(axis=-2).mean(axis=-1)  # mean of per-task means (rliable.metrics.aggregate_mean)


def _median(s: np.ndarray) -> np.ndarray:
    return np.median(s.mean(axis=-2), axis=-1)  # median of per-task means (rliable.metrics.aggregate_median)


def _optimality_gap(s: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    return gamma - np.minimum(s, gamma).mean(axis=(-2, -1))


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of all runs × tasks scores (Agarwal et al. 2021).

    Example:
        >>> iqm(np.arange(1.0, 9.0).reshape(4, 2))  # drops 1, 2, 7, 8; mean of 3, 4, 5, 6
        4.5
    """
    return float(_iqm(_as_scores(scores)))


def mean(scores: np.ndarray) -> float:
    """Mean over tasks of the per-task mean score.

    Example:
        >>> mean(np.array([[0.0, 1.0], [1.0, 1.0]]))
        0.75
    """
    return float(_mean(_as_scores(scores)))


def median(scores: np.ndarray) -> float:
    """Median over tasks of the per-task mean score.

    Example:
        >>> median(np.array([[0.0, 1.0, 9.0], [0.0, 1.0, 9.0]]))
        1.0
    """
    return float(_median(_as_scores(scores)))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """How far scores fall short of ``gamma``: ``gamma - mean(min(scores, gamma))``; lower is better.

    Example:
        >>> optimality_gap(np.array([[0.5, 2.0]]))  # 2.0 is clipped to 1.0
        0.25
    """
    return float(_optimality_gap(_as_scores(scores), gamma))


_BATCHED: dict[Callable, Callable[[np.ndarray], np.ndarray]] = {
    iqm: _iqm,
    mean: _mean,
    median: _median,
    optimality_gap: _optimality_gap,
}
DEFAULT_METRICS: dict[str, Metric] = {
    "iqm": iqm,
    "mean": mean,
    "median": median,
    "optimality_gap": optimality_gap,
}


def _one_replicate_at_a_time(f: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: np.array([f(r) for r in s])


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for (..., n_x, tasks) and (..., n_y, tasks): U / (n_x n_y) per task, averaged over tasks."""
    xs, ys = x[..., :, None, :], y[..., None, :, :]  # (..., n_x, 1, T) against (..., 1, n_y, T)
    # Counting pairs with ties as 1/2 is the Mann-Whitney U statistic (what rliable gets from
    # scipy.stats.mannwhitneyu(x, y, alternative='greater')), divided by n_x * n_y.
    per_task = (xs > ys).mean(axis=(-3, -2)) + 0.5 * (xs == ys).mean(axis=(-3, -2))
    return per_task.mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Average probability that a run of X beats a run of Y on the same task (Agarwal et al. 2021).

    Args:
        x: Scores of algorithm X, shape ``(n_x runs, tasks)``.
        y: Scores of algorithm Y, shape ``(n_y runs, tasks)``; the run counts may differ, the tasks may not.

    Returns:
        ``mean_m U_m / (n_x · n_y)`` with ties counted ½; 0.5 means no difference, 1.0 means X always wins.

    Example:
        >>> probability_of_improvement(np.array([[1.0], [2.0]]), np.array([[0.0], [3.0]]))
        0.5
    """
    x, y = _as_scores(x, "x"), _as_scores(y, "y")
    _check_same_tasks({"x": x, "y": y})
    return float(_poi(x, y))


# ---------------------------------------------------------------------------------------------------------
# Stratified bootstrap.


def _stratified_resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` replicates of ``scores`` (runs, tasks), each task's runs drawn with replacement on their own.

    Returns shape ``(reps, runs, tasks)``: every task keeps exactly its number of runs (rliable's
    ``StratifiedBootstrap`` with ``task_bootstrap=False``).
    """
    n_runs, n_tasks = scores.shape
    rows = rng.integers(0, n_runs, size=(reps, n_runs, n_tasks))
    return scores[rows, np.arange(n_tasks)]


def _bootstrap(
    stat: Callable[..., np.ndarray],
    arrays: Sequence[np.ndarray],
    reps: int,
    rng: np.random.Generator,
    elements_per_rep: int,
) -> np.ndarray:
    """Apply ``stat`` to ``reps`` stratified replicates of every array (each resampled independently)."""
    chunk = max(1, _MAX_ELEMENTS_PER_CHUNK // max(1, elements_per_rep))
    out = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        out.append(np.asarray(stat(*(_stratified_resample(a, k, rng) for a in arrays))))
    return np.concatenate(out, axis=0)


def _interval(point, replicates: np.ndarray, confidence: float):
    """Percentile interval (rliable's default method): the (1-c)/2 and (1+c)/2 quantiles of the replicates."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return point, lo, hi


def aggregate_with_ci(
    score_dict: Mapping[str, np.ndarray],
    metric_fns: Mapping[str, Metric] | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Estimate]]:
    """Aggregate metrics per algorithm with stratified-bootstrap percentile confidence intervals.

    Args:
        score_dict: Algorithm name → scores of shape ``(num_runs, num_tasks)``; every algorithm must have the
            same tasks (run counts may differ). For a single task pass ``scores[:, None]``.
        metric_fns: Metric name → function of one ``(runs, tasks)`` matrix returning a float. Defaults to
            :data:`DEFAULT_METRICS` (IQM, mean, median, optimality gap).
        reps: Bootstrap replicates (rliable uses 2,000 for profiles and up to 50,000 for final tables).
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling; each algorithm's stream is derived from ``(seed, name)``.

    Returns:
        ``{algo: {metric: Estimate(point, lo, hi)}}``.

    Example:
        >>> est = aggregate_with_ci({"ppo": np.array([[0.1, 0.5], [0.2, 0.7], [0.3, 0.6]])}, reps=500)
        >>> round(est["ppo"]["mean"].point, 3), est["ppo"]["iqm"].lo <= est["ppo"]["iqm"].hi
        (0.4, True)
    """
    scores = _check_score_dict(score_dict)
    _check_bootstrap_args(reps, confidence, seed)
    metric_fns = dict(DEFAULT_METRICS if metric_fns is None else metric_fns)
    if not metric_fns or not all(callable(f) for f in metric_fns.values()):
        raise ValueError(f"metric_fns must map names to callables, got {metric_fns!r}")
    # Built-in metrics score all replicates at once; any other metric is called on one replicate at a time.
    batched = [_BATCHED.get(f) or _one_replicate_at_a_time(f) for f in metric_fns.values()]

    def stat(s: np.ndarray) -> np.ndarray:  # (k, runs, tasks) -> (k, num_metrics)
        return np.stack([f(s) for f in batched], axis=-1)

    results = {}
    for algo, s in scores.items():
        points = np.array([float(f(s)) for f in metric_fns.values()])
        reps_stats = _bootstrap(stat, [s], reps, _rng(seed, algo), s.size)
        _, lo, hi = _interval(points, reps_stats, confidence)
        results[algo] = {
            m: Estimate(float(p), float(a), float(b)) for m, p, a, b in zip(metric_fns, points, lo, hi)
        }
    return results


def probability_of_improvement_with_ci(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """:func:`probability_of_improvement` of X over Y with a stratified-bootstrap percentile interval.

    The runs of X and of Y are resampled independently within each task (rliable's
    ``StratifiedIndependentBootstrap``).

    Example:
        >>> probability_of_improvement_with_ci(np.array([[1.0], [2.0]]), np.array([[0.0], [0.5]]))
        Estimate(point=1.0, lo=1.0, hi=1.0)
    """
    x, y = _as_scores(x, "x"), _as_scores(y, "y")
    _check_same_tasks({"x": x, "y": y})
    _check_bootstrap_args(reps, confidence, seed)
    return _poi_estimate(x, y, reps, confidence, np.random.default_rng(seed))


def _poi_estimate(
    x: np.ndarray, y: np.ndarray, reps: int, confidence: float, rng: np.random.Generator
) -> Estimate:
    per_rep = x.shape[0] * y.shape[0] * x.shape[1] + x.size + y.size
    point, lo, hi = _interval(float(_poi(x, y)), _bootstrap(_poi, [x, y], reps, rng, per_rep), confidence)
    return Estimate(point, float(lo), float(hi))


def pairwise_probability_of_improvement(
    score_dict: Mapping[str, np.ndarray], reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[tuple[str, str], Estimate]:
    """P(a > b) with its interval for every ordered pair of distinct algorithms ``(a, b)``.

    Example:
        >>> poi = pairwise_probability_of_improvement({"a": np.ones((3, 2)), "b": np.zeros((3, 2))}, reps=100)
        >>> poi["a", "b"].point, poi["b", "a"].point
        (1.0, 0.0)
    """
    scores = _check_score_dict(score_dict)
    _check_bootstrap_args(reps, confidence, seed)
    if len(scores) < 2:
        raise ValueError(f"need at least two algorithms to compare, got {list(scores)}")
    return {
        (a, b): _poi_estimate(scores[a], scores[b], reps, confidence, _rng(seed, f"{a}\0{b}"))
        for a, b in itertools.permutations(scores, 2)
    }


def performance_profile(
    score_dict: Mapping[str, np.ndarray],
    taus: Sequence[float] | np.ndarray,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run-score distribution: the fraction of runs × tasks scoring strictly above each ``tau``.

    Returns:
        ``{algo: (profile, lo, hi)}``, three arrays shaped like ``taus`` (rliable's
        ``create_performance_profile`` with ``use_score_distribution=True``).

    Example:
        >>> prof, lo, hi = performance_profile({"a": np.array([[0.0, 0.5], [1.0, 1.0]])}, [0.25, 0.75])["a"]
        >>> prof.tolist()
        [0.75, 0.5]
    """
    scores = _check_score_dict(score_dict)
    _check_bootstrap_args(reps, confidence, seed)
    taus = np.asarray(taus, dtype=np.float64)
    if taus.ndim != 1 or taus.size == 0 or np.isnan(taus).any():
        raise ValueError(f"taus must be a non-empty 1-D sequence of numbers without NaN, got {taus!r}")

    def profile(s: np.ndarray) -> np.ndarray:  # (..., runs, tasks) -> (..., len(taus))
        return (s[..., None] > taus).mean(axis=(-3, -2))

    results = {}
    for algo, s in scores.items():
        reps_stats = _bootstrap(profile, [s], reps, _rng(seed, algo), s.size * taus.size)
        results[algo] = _interval(profile(s), reps_stats, confidence)
    return results


# ---------------------------------------------------------------------------------------------------------
# Input checks.


def _rng(seed: int, name: str) -> np.random.Generator:
    # crc32 (not hash()) so the stream is the same in every process, whatever PYTHONHASHSEED is.
    return np.random.default_rng([seed, zlib.crc32(str(name).encode("utf-8"))])


def _as_scores(scores: np.ndarray, what: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{what}: expected a numeric array of shape (num_runs, num_tasks), got {scores!r}"
        ) from e
    if arr.ndim != 2:
        raise ValueError(
            f"{what}: expected shape (num_runs, num_tasks), got {arr.shape}; "
            "for a single task use scores[:, None]"
        )
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape}); need at least one run and one task")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{what} has {int(bad.sum())} NaN or infinite score(s), first at index {np.argwhere(bad)[0]}"
        )
    return arr


def _check_same_tasks(scores: Mapping[str, np.ndarray]) -> None:
    if len({s.shape[1] for s in scores.values()}) > 1:
        shapes = ", ".join(f"{k!r}: {s.shape}" for k, s in scores.items())
        raise ValueError(f"all algorithms must be scored on the same number of tasks, got shapes {shapes}")


def _check_score_dict(score_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(score_dict, Mapping) or not score_dict:
        raise ValueError(f"score_dict must be a non-empty mapping algorithm -> scores, got {score_dict!r}")
    scores = {algo: _as_scores(s, f"scores of algorithm {algo!r}") for algo, s in score_dict.items()}
    _check_same_tasks(scores)
    for algo, s in scores.items():
        if s.shape[0] == 1:
            logger.warning("algorithm %r has a single run: its bootstrap interval has zero width", algo)
    return scores


def _check_bootstrap_args(reps: int, confidence: float, seed: int) -> None:
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
