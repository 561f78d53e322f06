"""BENCHMARKS.md renders from the figures the benchmark scripts store in ``benchmarks/results/`` (committed
with the repo), with every bar of the performance issue in its table. Timing itself is never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FILES = {
    "env": "env_throughput", "rollout": "rollout_roofline", "threads": "threads", "kv_cache": "kv_cache",
    "train_loop": "train_loop", "memory": "memory", "scaling": "scaling", "rewards": "reward_throughput",
}  # fmt: skip


def stored_results() -> dict:
    res = json.loads((RESULTS / "summary.json").read_text())
    machine = json.loads((RESULTS / "machine.json").read_text())
    res |= {"machine": machine["machine"], "matmul": machine["matmul"], "only": None, "finished": "t"}
    for key, stem in FILES.items():
        res[key] = json.loads((RESULTS / f"{stem}.json").read_text())
    return res


def test_report_renders_every_bar_from_the_stored_results():
    from benchmarks.report import generated_markdown

    md = generated_markdown(stored_results())
    for row in (
        "| 1. native vector env ÷ SyncVectorEnv",
        "| 2. rollout ÷ roofline, batch 64, `registered`",
        "| 2. rollout ÷ roofline, batch 64, `english-long`",
        "| 3. KV-cached ÷ full re-forward",
        "| 4. our PPO ÷ SB3 PPO (`long-full`",
        "| 5. PPO (value head + reference) ÷ policy alone",
    ):
        assert row in md, row
    assert "## 2. Rollout vs roofline" in md and "and of one `english-long` rollout:" in md


@pytest.mark.parametrize(("rollout", "update", "want"), [
    (2.0, 3.0, "1 thread was 2.0x faster for the rollout and 1 thread was 3.0x faster for the update"),
    (0.5, 1.0, "2 threads were 2.0x faster for the rollout and 1 thread was 1.0x faster for the update"),
])  # fmt: skip
def test_thread_sentence_says_which_side_won(rollout, update, want):
    from benchmarks.report import _speedup_sentence

    assert want in _speedup_sentence(rollout, update)
