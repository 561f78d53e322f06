"""Tests for agents.stats: hand-computed metrics, the stratified bootstrap, and agreement with rliable.

Reference values marked "rliable 1.2.0" were produced by ``rliable.metrics`` / ``rliable.library`` (arch 8.0
patched to accept rliable's ``random_state`` argument) on the fixed matrices ``X`` and ``Y`` below; the
bootstrap intervals used 100,000 (IQM, mean) and 50,000 (PoI) replicates.
"""

from __future__ import annotations

import doctest
import functools
import importlib.util

import numpy as np
import pytest
import scipy.stats

from agents import stats

X = np.array([[0.1, 0.9, 0.5], [0.4, 0.2, 0.5], [0.7, 0.3, 0.8], [0.2, 0.6, 0.5], [0.9, 0.1, 0.4]])
Y = np.array([[0.3, 0.9, 0.5], [0.1, 0.4, 0.6], [0.6, 0.2, 0.5]])


def test_docstring_examples():
    assert doctest.testmod(stats).failed == 0


# --- point metrics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 1), (2, 4), (4, 2)])
def test_iqm_of_one_to_eight_is_mean_of_middle_half(shape):
    assert stats.iqm(np.arange(1.0, 9.0).reshape(shape)) == pytest.approx((3 + 4 + 5 + 6) / 4)


def test_iqm_trims_a_quarter_rounded_down_and_ignores_outliers():
    # 10 scores: int(0.25 * 10) = 2 cut from each end, leaving 3..8.
    assert stats.iqm(np.arange(1.0, 11.0).reshape(5, 2)) == pytest.approx(5.5)
    assert stats.iqm(np.array([[0.0], [1.0], [2.0], [1e9]])) == pytest.approx(1.5)


def test_mean_median_optimality_gap_by_hand():
    s = np.array([[0.0, 1.0, 3.0], [1.0, 1.0, 5.0]])  # task means 0.5, 1.0, 4.0
    assert stats.mean(s) == pytest.approx(5.5 / 3)
    assert stats.median(s) == pytest.approx(1.0)
    # min(s, 1) = [[0, 1, 1], [1, 1, 1]] -> mean 5/6
    assert stats.optimality_gap(s) == pytest.approx(1 / 6)
    assert stats.optimality_gap(s, gamma=2.0) == pytest.approx(2 - (0 + 1 + 2 + 1 + 1 + 2) / 6)


def test_point_metrics_match_rliable_reference_values():  # rliable 1.2.0
    assert stats.iqm(X) == pytest.approx(0.4555555555555556)
    assert stats.iqm(Y) == pytest.approx(0.46)
    assert stats.mean(X) == pytest.approx(0.47333333333333333)
    assert stats.median(X) == pytest.approx(0.46)
    assert stats.median(Y) == pytest.approx(0.5)
    assert stats.optimality_gap(X) == pytest.approx(0.5266666666666666)
    assert stats.probability_of_improvement(X, Y) == pytest.approx(0.4777777777777777)
    assert stats.probability_of_improvement(Y, X) == pytest.approx(0.5222222222222221)


# --- probability of improvement ------------------------------------------------------------------------


def test_poi_hand_computed():
    assert stats.probability_of_improvement([[1.0], [2.0]], [[0.0], [3.0]]) == 0.5
    # pairs (1,1)=1/2, (1,2)=0, (3,1)=1, (3,2)=1 -> 2.5 / 4
    assert stats.probability_of_improvement([[1.0], [3.0]], [[1.0], [2.0]]) == pytest.approx(0.625)
    # task 0: X always wins, task 1: X always loses -> averaged over tasks
    assert stats.probability_of_improvement([[1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]) == pytest.approx(0.5)


def test_poi_ties_and_dominance():
    assert stats.probability_of_improvement(np.ones((3, 2)), np.ones((5, 2))) == 0.5
    assert stats.probability_of_improvement(X, X) == 0.5
    assert stats.probability_of_improvement(X + 10, Y) == 1.0
    assert stats.probability_of_improvement(Y, X + 10) == 0.0


def test_poi_is_mann_whitney_u_and_antisymmetric():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (6, 3)).astype(float), rng.integers(0, 4, (4, 3)).astype(float)  # many ties
    u = [scipy.stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic for t in range(3)]
    assert stats.probability_of_improvement(x, y) == pytest.approx(np.mean(u) / (6 * 4))
    assert stats.probability_of_improvement(x, y) + stats.probability_of_improvement(y, x) == pytest.approx(
        1.0
    )


def test_poi_with_ci():
    assert stats.probability_of_improvement_with_ci(X + 10, Y) == (1.0, 1.0, 1.0)
    est = stats.probability_of_improvement_with_ci(X, Y, reps=10_000)
    assert est.point == pytest.approx(0.4777777777777777)
    # rliable 1.2.0, 50k replicates: [0.2556, 0.6889]
    assert est.lo == pytest.approx(0.2556, abs=0.02)
    assert est.hi == pytest.approx(0.6889, abs=0.02)


def test_pairwise_poi_covers_ordered_pairs():
    poi = stats.pairwise_probability_of_improvement({"x": X, "y": Y, "top": X + 10}, reps=200)
    assert set(poi) == {("x", "y"), ("y", "x"), ("x", "top"), ("top", "x"), ("y", "top"), ("top", "y")}
    assert poi["x", "y"].point == pytest.approx(0.4777777777777777)
    assert poi["x", "y"].point + poi["y", "x"].point == pytest.approx(1.0)
    assert poi["top", "y"] == (1.0, 1.0, 1.0)
    for est in poi.values():
        assert est.lo <= est.point <= est.hi


# --- stratified bootstrap ------------------------------------------------------------------------------


def test_stratified_resample_keeps_each_task_and_its_run_count():
    scores = 100.0 * np.arange(3) + np.arange(5)[:, None]  # task t holds 100t + run
    out = stats._stratified_resample(scores, reps=400, rng=np.random.default_rng(0))
    assert out.shape == (400, 5, 3)  # every replicate: 5 runs of every task
    for t in range(3):
        assert set(np.unique(out[:, :, t])) <= set(scores[:, t])
    runs = out % 100
    # runs are drawn independently per task, not as whole rows (that would make the columns equal)
    assert (runs[:, :, 0] != runs[:, :, 1]).mean() > 0.5


def test_bootstrap_variance_of_mean_matches_stratified_closed_form():
    # Anti-correlated tasks: every run's row mean is 1.5, so a whole-row bootstrap would have zero variance.
    # Stratified: Var = sum_t sigma_t^2 / (n m^2) with population variances sigma_t^2 = 1.25.
    scores = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    reps = stats._bootstrap(stats._mean, [scores], 20_000, np.random.default_rng(1), scores.size)
    assert reps.shape == (20_000,)
    assert reps.var() == pytest.approx(2 * 1.25 / (4 * 2**2), rel=0.05)
    est = stats.aggregate_with_ci({"a": scores}, {"mean": stats.mean})["a"]["mean"]
    assert est.point == 1.5 and est.lo < 1.2 and est.hi > 1.8


def test_ci_exact_for_two_runs():
    # Bootstrap mean of runs {0, 1}: 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4.
    s = {"a": np.array([[0.0], [1.0]])}
    assert stats.aggregate_with_ci(s, {"mean": stats.mean})["a"]["mean"] == (0.5, 0.0, 1.0)
    assert stats.aggregate_with_ci(s, {"mean": stats.mean}, confidence=0.4)["a"]["mean"] == (0.5, 0.5, 0.5)


def test_ci_matches_rliable_reference_intervals():
    est = stats.aggregate_with_ci({"X": X}, reps=10_000)["X"]
    assert est["iqm"].point == pytest.approx(0.4555555555555556)
    # rliable 1.2.0, 100k replicates: IQM [0.3222, 0.6333], mean [0.3467, 0.6067]
    assert (est["iqm"].lo, est["iqm"].hi) == pytest.approx((0.3222, 0.6333), abs=0.02)
    assert (est["mean"].lo, est["mean"].hi) == pytest.approx((0.3467, 0.6067), abs=0.02)


def test_ci_contains_point_and_narrows_with_more_runs():
    rng = np.random.default_rng(3)
    few, many = rng.normal(size=(5, 4)), rng.normal(size=(80, 4))
    res = stats.aggregate_with_ci({"few": few, "many": many})
    for algo in res:
        for est in res[algo].values():
            assert est.lo <= est.point <= est.hi
    width = {a: res[a]["iqm"].hi - res[a]["iqm"].lo for a in res}
    assert width["many"] < 0.5 * width["few"]  # ~ 1/sqrt(16) in theory


def test_seeded_determinism_and_independence_from_other_algorithms():
    a = stats.aggregate_with_ci({"x": X, "y": Y}, reps=300, seed=7)
    assert a == stats.aggregate_with_ci({"x": X, "y": Y}, reps=300, seed=7)
    assert a["x"] == stats.aggregate_with_ci({"x": X}, reps=300, seed=7)["x"]
    assert a["x"]["iqm"] != stats.aggregate_with_ci({"x": X}, reps=300, seed=8)["x"]["iqm"]


def test_custom_metrics_run_per_replicate():
    res = stats.aggregate_with_ci(
        {"x": X},
        {"max": lambda s: float(s.max()), "gap2": functools.partial(stats.optimality_gap, gamma=2.0)},
        reps=200,
    )["x"]
    assert res["max"].point == 0.9 and res["max"].hi == 0.9 and res["max"].lo <= 0.9
    assert res["gap2"].point == pytest.approx(2 - stats.mean(X))


def test_batched_builtin_metrics_equal_per_replicate_calls():
    batch = stats._stratified_resample(X, 50, np.random.default_rng(0))
    for fn, batched in stats._BATCHED.items():
        np.testing.assert_allclose(batched(batch), [fn(b) for b in batch])
    np.testing.assert_allclose(
        stats._poi(batch, Y[None]), [stats.probability_of_improvement(b, Y) for b in batch]
    )


# --- performance profiles ------------------------------------------------------------------------------


def test_performance_profile_by_hand():
    prof = stats.performance_profile({"a": np.array([[0.0, 0.5], [1.0, 1.0]])}, [-1.0, 0.0, 0.5, 0.75, 1.0])
    point, lo, hi = prof["a"]
    np.testing.assert_allclose(point, [1.0, 0.75, 0.5, 0.5, 0.0])  # strictly above tau
    assert np.all(lo <= point) and np.all(point <= hi)
    assert lo[0] == hi[0] == 1.0 and lo[-1] == hi[-1] == 0.0


def test_performance_profile_is_non_increasing():
    point, lo, hi = stats.performance_profile({"x": X}, np.linspace(0, 1, 11), reps=300)["x"]
    for arr in (point, lo, hi):
        assert np.all(np.diff(arr) <= 0)


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.iqm(np.zeros((0, 3))), "empty"),
        (lambda: stats.iqm(np.zeros(4)), r"num_runs, num_tasks.*scores\[:, None\]"),
        (lambda: stats.aggregate_with_ci({}), "non-empty"),
        (
            lambda: stats.aggregate_with_ci({"ppo": X, "a2c": Y[:, :2]}),
            "same number of tasks.*'a2c': \\(3, 2\\)",
        ),
        (lambda: stats.aggregate_with_ci({"ppo": X, "a2c": np.array([[np.nan, 1, 2]])}), "'a2c'.*NaN"),
        (lambda: stats.aggregate_with_ci({"ppo": X}, reps=0), "reps must be an integer >= 1, got 0"),
        (lambda: stats.aggregate_with_ci({"ppo": X}, reps=2.5), "reps"),
        (lambda: stats.aggregate_with_ci({"ppo": X}, confidence=95), "confidence"),
        (lambda: stats.aggregate_with_ci({"ppo": X}, seed=-1), "seed"),
        (lambda: stats.aggregate_with_ci({"ppo": X}, metric_fns={}), "metric_fns"),
        (lambda: stats.probability_of_improvement(X, Y[:, :1]), "same number of tasks"),
        (lambda: stats.probability_of_improvement_with_ci(X, Y, reps=-3), "reps"),
        (lambda: stats.pairwise_probability_of_improvement({"ppo": X}), "at least two"),
        (lambda: stats.performance_profile({"ppo": X}, []), "taus"),
    ],
)
def test_bad_input_gives_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_numeric_scores_give_type_error():
    with pytest.raises(TypeError, match="numeric array"):
        stats.iqm([["a", "b"]])


def test_single_run_warns_zero_width(caplog):
    est = stats.aggregate_with_ci({"lone": X[:1]}, {"mean": stats.mean}, reps=50)["lone"]["mean"]
    assert est.lo == est.point == est.hi
    assert "single run" in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("rliable") is None, reason="rliable not installed")
def test_agrees_with_installed_rliable_metrics():
    from rliable import metrics as rm

    rng = np.random.default_rng(5)
    for _ in range(20):
        x, y = rng.random((rng.integers(1, 7), 3)).round(1), rng.random((rng.integers(1, 7), 3)).round(1)
        assert stats.iqm(x) == pytest.approx(rm.aggregate_iqm(x))
        assert stats.median(x) == pytest.approx(rm.aggregate_median(x))
        assert stats.probability_of_improvement(x, y) == pytest.approx(rm.probability_of_improvement(x, y))
