"""The default main job (issue 16, item 3): its structure, the dense partial-credit rewards of its envs, the
harness's SB3 default, and the checker that says whether a results table discriminates. No long runs: the
one benchmark here spends a few hundred tokens."""

from __future__ import annotations

import csv
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import text_env  # noqa: F401  (registers the ids)
from agents import harness as bm
from agents.harness.check import check_discrimination, main, read_results, table_means
from agents.harness.config import SB3_POLICY_KWARGS
from text_env.registration import ENTRIES
from text_env.rewards import RewardBatch, make


# ---- the suite --------------------------------------------------------------------------------------------
def test_the_default_suite_is_dense_envs_ours_against_sb3() -> None:
    cfg = bm.BenchmarkConfig()
    specs = cfg.validate()  # every env id and spec resolves
    assert all(e.endswith("-Dense-v0") for e in cfg.envs), cfg.envs
    kinds = {s.kind for s in specs}
    assert kinds == {"ours", "sb3"}, kinds
    assert cfg.seeds >= 3
    for env_id in cfg.envs:  # each default env rewards partial credit: a dense reward, not exact match
        names = {t.name for t in gym.make(env_id).unwrapped.reward.terms}
        assert names == {"position_match", "stop_match"}, (env_id, names)
    # SB3 PPO's default rollout (2048 steps) divides the budget: no partial rollout is wasted
    assert cfg.budget % 2048 == 0 and cfg.budget % cfg.eval_interval == 0
    plan = bm.plan_runs(cfg, specs)
    assert len(plan) == len(cfg.envs) * len(cfg.algos) * cfg.seeds
    sb3 = [r for r in plan if r.algo.startswith("sb3:")]
    assert sb3 and all(r.settings["sb3_policy_kwargs"] == SB3_POLICY_KWARGS for r in sb3)
    assert all("sb3_policy_kwargs" not in r.settings for r in plan if r.algo.startswith("ours:"))


def test_every_dense_id_twins_a_sparse_one() -> None:
    by_id = {e.env_id: e for e in ENTRIES}
    dense = [e for e in ENTRIES if "-Dense-" in e.env_id]
    assert {e.task for e in dense} == {"copy", "reverse", "sort", "arithmetic"}
    for e in dense:
        sparse = by_id[e.env_id.replace("-Dense", "")]
        assert e.task == sparse.task and e.max_new_tokens == sparse.max_new_tokens
        assert {k: v for k, v in e.kwargs.items() if k != "reward"} == sparse.kwargs


# ---- dense rewards: partial credit -----------------------------------------------------------------------
def _play(env: gym.Env, text: str, stop: bool = True) -> tuple[float, dict]:
    tok = env.unwrapped.tokenizer
    total, info = 0.0, {}
    for c in text:
        _, r, terminated, truncated, info = env.step(tok.encode(c)[0])
        total += float(r)
        if terminated or truncated:
            return total, info
    if stop:
        _, r, _, _, info = env.step(tok.eos_id)
        total += float(r)
    return total, info


@pytest.mark.parametrize("env_id", ["TextEnv/Reverse-Dense-v0", "TextEnv/Arithmetic-Dense-v0"])
def test_dense_reward_gives_partial_credit(env_id: str) -> None:
    env = gym.make(env_id)
    _, info = env.reset(seed=3)
    ref = env.unwrapped._state.references[info["prompt_index"]][0]
    n = len(ref)
    exact, info = _play(env, ref)
    assert exact == pytest.approx(1.0) and info["is_success"]

    env.reset(seed=3)
    wrong = "".join(sorted(set("0123456789abcdefgh") & set(env.unwrapped.task.allowed_completion_chars)))
    other = next(c for c in wrong if c != ref[-1])
    one_off, info = _play(env, ref[:-1] + other)  # the last character wrong, the right length
    assert one_off == pytest.approx(n / (n + 1)) and not info["is_success"]

    env.reset(seed=3)
    short, _ = _play(env, ref[:-1])  # stops one token early: every token right, the length wrong
    assert short == pytest.approx((n - 1) / (n + 1))

    env.reset(seed=3)
    nothing, _ = _play(env, "")  # an empty answer earns nothing
    assert nothing == 0.0
    assert 0.0 < short < one_off < exact
    env.close()


def test_dense_return_equals_sparse_scores_per_position() -> None:
    """The dense return is the per-position match plus the length credit, over len(ref) + 1, for a batch
    of random completions scored step by step as the env does."""
    rng = np.random.default_rng(0)
    env = gym.make("TextEnv/Copy-L4-Dense-v0")
    tok = env.unwrapped.tokenizer
    for episode in range(30):
        _, info = env.reset(seed=episode)
        ref = env.unwrapped._state.references[info["prompt_index"]][0]
        text = "".join(rng.choice(list("abcdefgh"), size=int(rng.integers(0, 6))))
        total, info = _play(env, text)
        done_text = info["completion"]
        hits = sum(a == b for a, b in zip(done_text, ref, strict=False))
        expected = (hits + (len(done_text) == len(ref))) / (len(ref) + 1)
        assert total == pytest.approx(expected, abs=1e-6), (ref, text, done_text)
    env.close()
    assert tok.eos_id is not None


def test_position_match_needs_actions_and_references() -> None:
    batch = RewardBatch.from_texts(["p"], ["ab"], references=["ab"])
    with pytest.raises(ValueError, match=r"position_match.*no actions"):
        make("position_match")(batch)
    with pytest.raises(ValueError, match=r"stop_match.*needs references"):
        make("stop_match")(RewardBatch.from_texts(["p"], ["ab"]))


# ---- the checker -----------------------------------------------------------------------------------------
def _rows(finals: dict[tuple[str, str], tuple[float, float]], seeds: int = 2) -> list[dict]:
    rows = []
    for (env, algo), (start, final) in finals.items():
        for seed in range(seeds):
            rows.append(dict(env=env, algo=algo, seed=seed, target=0, mean_return=start, final=False))
            rows.append(dict(env=env, algo=algo, seed=seed, target=100, mean_return=final, final=True))
    return rows


def _verdict(rows: list[dict]) -> dict[str, bool]:
    return {c.name: c.passed for c in check_discrimination(rows)}


def test_checker_passes_a_discriminating_table_and_fails_each_condition() -> None:
    good = {("A", "ours:ppo"): (0.5, 0.9), ("A", "sb3:PPO"): (0.1, 0.2), ("B", "ours:ppo"): (0.3, 0.4)}
    good[("B", "sb3:A2C")] = (0.05, 0.06)
    assert _verdict(_rows(good)) == {"spread": True, "not_saturated": True, "baseline_learns": True}

    close = {**good, ("B", "sb3:A2C"): (0.3, 0.3)}  # B: 0.4 vs 0.3, a spread of 0.1
    assert _verdict(_rows(close))["spread"] is False

    floor = {**good, ("B", "ours:ppo"): (0.0, 0.01), ("B", "sb3:A2C"): (0.0, 0.0)}  # everyone fails B
    assert _verdict(_rows(floor))["not_saturated"] is False
    ceiling = {**good, ("B", "ours:ppo"): (0.9, 1.0), ("B", "sb3:A2C"): (0.9, 0.96)}  # everyone solves B
    assert _verdict(_rows(ceiling))["not_saturated"] is False

    flat = {**good, ("A", "sb3:PPO"): (0.1, 0.14)}  # no baseline gains 0.05
    assert _verdict(_rows(flat))["baseline_learns"] is False
    ours_only = {k: v for k, v in good.items() if k[1].startswith("ours:")}  # ours learning does not count
    assert _verdict(_rows(ours_only))["baseline_learns"] is False


def test_checker_means_over_seeds_and_skips_unfinished_runs() -> None:
    rows = _rows({("A", "sb3:PPO"): (0.0, 0.3)}, seeds=2)
    rows[-1]["mean_return"] = 0.1  # seed 1 ends at 0.1: the mean is 0.2
    rows.append(dict(env="A", algo="sb3:PPO", seed=2, target=0, mean_return=0.9, final=False))  # unfinished
    m = table_means(rows)["A"]["sb3:PPO"]
    assert m == {"final": pytest.approx(0.2), "start": pytest.approx(0.0), "seeds": 2.0}
    with pytest.raises(ValueError, match="row 1 lacks the column"):
        table_means([{"env": "A"}])
    with pytest.raises(ValueError, match="no finished runs"):
        check_discrimination([r for r in rows if not r["final"]])


def test_checker_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "results.csv"
    rows = _rows({("A", "ours:ppo"): (0.5, 0.9), ("A", "sb3:PPO"): (0.1, 0.2)})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "PASS spread" in out and "PASS baseline_learns" in out and "all conditions pass" in out
    assert main([str(path), "--min-spread", "0.9"]) == 1
    assert "FAIL spread" in capsys.readouterr().out
    assert main([str(tmp_path / "nope.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert len(read_results(path)) == len(rows)


# ---- a tiny benchmark on dense envs ---------------------------------------------------------------------
def test_a_tiny_dense_benchmark_scores_partial_credit_and_checks(tmp_path: Path) -> None:
    """At a few hundred tokens no one learns, but untrained policies already earn partial credit (a
    random token is right 1 time in 8 at a position), and the checker reads the table the harness wrote."""
    cfg = bm.BenchmarkConfig(
        envs=["TextEnv/Reverse-L4-Dense-v0"],
        algos=["ours:rloo-scratch", "sb3:A2C"],
        seeds=1,
        budget=256,
        eval_every=128,
        n_eval=16,
        out=tmp_path,
        reps=50,
    )
    result = bm.run_benchmark(cfg)
    assert result.failed == []
    by = {r.algo: r for r in result.runs}
    assert by["sb3:A2C"].hparams["policy_kwargs"] == SB3_POLICY_KWARGS  # the harness's cheap extractor
    for run in result.runs:
        assert 0.0 <= run.final["mean_return"] <= 1.0
    # partial credit: some evaluation of some run earned a non-zero return without any exact answer
    points = [p for r in result.runs for p in r.curve]
    assert any(p["mean_return"] > 0 and p["success_rate"] < 1 for p in points)
    # the mean return's curves and probability of improvement are reported beside success's
    curves = result.summary["return_curves"]["TextEnv/Reverse-L4-Dense-v0"]
    assert {p["metric"] for series in curves.values() for p in series} == {"mean_return"}
    report = (tmp_path / "report.md").read_text()
    assert "Probability of improvement (final mean return" in report and "mean return at step 0" in report
    conditions = check_discrimination(read_results(tmp_path / "results.csv"))
    assert [c.name for c in conditions] == ["spread", "not_saturated", "baseline_learns"]
    assert all(c.details for c in conditions)
