"""benchmarks/vs_trl.py's pieces on a tiny random Llama (never SmolLM2; TRL only where installed)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")
from benchmarks import vs_trl
from text_env.data.sources import MissingDataError


@pytest.fixture(autouse=True)
def _sentiment_data():
    import torch

    try:
        vs_trl.prompt_plan(4)
    except MissingDataError as e:  # the movie reviews are a data-only package
        pytest.skip(str(e))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # a worker sets its own count


def test_the_prompt_plan_holds_out_the_eval_prompts():
    plan = vs_trl.prompt_plan(64)
    assert len(plan["eval"]) == 64 and len(plan["train"]) > 1000
    assert not set(plan["eval"]) & set(plan["train"])  # held out
    with pytest.raises(ValueError, match="--eval-prompts"):
        vs_trl.prompt_plan(10**9)


def test_both_sides_train_on_the_envs_reward():
    from text_env.rewards import RewardBatch, make

    texts = ["a wonderful, moving film", "a dull and awful mess", "it was a film"]
    ours = make("sentiment_vader")(RewardBatch.from_texts([""] * 3, texts))
    assert vs_trl.reward_scores(texts) == pytest.approx(list(ours), abs=1e-6)
    assert vs_trl.trl_reward(["p"] * 3, texts) == vs_trl.reward_scores(texts)
    s = vs_trl.reward_scores(texts)
    assert s[0] > s[2] > s[1]


def test_the_paired_gain_and_its_standard_error():
    g = vs_trl.paired_gain([0.0, 0.0, 0.0, 0.0], [0.1, 0.3, 0.1, 0.3])
    assert g["mean"] == pytest.approx(0.2) and g["n"] == 4
    assert g["se"] == pytest.approx(math.sqrt((4 * 0.01) / 3 / 4))
    with pytest.raises(ValueError):
        vs_trl.paired_gain([0.0], [1.0, 2.0])


def _args(tmp_path, kind):
    return vs_trl.build_parser().parse_args(
        ["--worker", kind, "--tiny", "--steps", "2", "--eval-prompts", "4", "--max-new-tokens", "3",
         "--prompts", "2", "--k", "2", "--scratch", str(tmp_path)]
    )  # fmt: skip


def test_our_worker_trains_and_the_summary_has_the_issues_keys(tmp_path):
    ours = vs_trl.worker(_args(tmp_path, "ours"))
    base = vs_trl.worker(_args(tmp_path, "baseline"))
    assert len(ours["iteration_seconds"]) == 2 and all(t > 0 for t in ours["iteration_tokens"])
    assert len(ours["eval_after"]) == len(base["eval_before"]) == 4
    assert ours["peak_rss_kb"] >= ours["rss_kb"] > 0 and ours["num_threads"] == 1
    # the summary from stand-in TRL runs (the same shape): every key the issue names, with verdicts
    trl = {**ours, "kind": "trl", "peak_rss_kb": ours["peak_rss_kb"] * 2}
    runs = {"baseline": [base], "ours": [ours], "trl": [trl], "ours-lora": [ours], "trl-default": [trl]}
    res = vs_trl.summarize(
        runs, {"generation_vs_hf_generate_b8": 1.1, "generation_vs_hf_generate_b32": 2.5}, {}
    )
    for key in (
        "generation_vs_hf_generate_b32", "iteration_vs_trl", "peak_rss_vs_trl_kl_on",
        "peak_rss_full_ft_vs_trl", "reward_gain_ours", "reward_gain_trl", "reward_gain_ours_se",
        "reward_gain_trl_se",
    ):  # fmt: skip
        assert key in res and res[key] is not None, key
    assert res["peak_rss_vs_trl_kl_on"] == pytest.approx(0.5)
    assert res["iteration_vs_trl"] == pytest.approx(1.0)
    assert res["bars"]["generation_vs_hf_generate_b32"]["verdict"] == "met"
    assert res["bars"]["iteration_vs_trl"]["verdict"] == "not met"
    assert res["bars"]["peak_rss_vs_trl_kl_on"]["verdict"] == "met"


def test_the_lora_memory_run_trains_adapters_with_checkpointing(tmp_path):
    pytest.importorskip("peft")
    out = vs_trl.worker(_args(tmp_path, "ours-lora"))
    assert len(out["iteration_seconds"]) == 2 and "eval_after" not in out  # memory only


def test_the_trl_worker_runs_grpo_on_the_same_plan(tmp_path):
    pytest.importorskip("trl")
    out = vs_trl.worker(_args(tmp_path, "trl"))
    assert len(out["iteration_seconds"]) == 2 and len(out["iteration_tokens"]) == 2
    assert len(out["eval_after"]) == 4 and not out["gradient_checkpointing"]
