"""Generation throughput of our KV-cached rollout against Hugging Face ``generate`` on SmolLM2-135M-Instruct.

Both sides continue the same left-padded Sentiment prompts (in the model's own tokenizer), sample from the
full distribution at temperature 1 (no top-k, no top-p), and write exactly ``--max-new-tokens`` tokens per
prompt: every EOS id is masked on both sides (our policy's action mask; ``suppress_tokens`` for
``generate``), so both do the same work and tokens per second compare like for like. Our side is a whole
rollout through the lockstep vector env (env steps included) with a reward that costs nothing, so only
generation is timed. Each round runs three sides, A B C: our rollout with the weights frozen (as for
inference, and as a LoRA base is: decode steps then use oneDNN's prepacked weights, see
:class:`agents.policies.kernels.PackedWeights`), ``generate``, and our rollout with the weights trainable
(full fine-tuning's rollouts, on unpacked weights). Each rate is the median over ``--repeats`` rounds, and
a ratio the median of the rounds' paired ratios (a round's runs see the same machine load). The headline
``generation_vs_hf_generate_bN`` is the frozen side's; ``generation_trainable_vs_hf_generate_bN`` the
other's.

``--threads 1,2`` also times our rollout at each intra-op thread count (batch 8): the measurement behind
:func:`agents.rollout.auto_num_threads` for 100M-class models. The user's ``OMP_NUM_THREADS`` always wins
over that rule; here ``torch.set_num_threads`` sets the count directly.

Usage::

    python -m benchmarks.hf_generation                  # SmolLM2, batch 8 and 32, 1 thread
    python -m benchmarks.hf_generation --threads 1,2    # plus the thread rule
    python -m benchmarks.hf_generation --tiny --batches 2 --max-new-tokens 4   # a seconds-long smoke run

Writes ``benchmarks/results/hf_generation.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import RESULTS_DIR, load_average, machine_info, resolve_device, sync
from text_env.io import atomic_write_json


def zero_reward(prompts: Any, completions: Any, references: Any) -> list[float]:
    """Costs nothing: only generation is timed."""
    return [0.0] * len(completions)


def tiny_policy() -> Any:
    """A 2-layer random Llama with a character tokenizer (the smoke run; no files, no downloads)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agents"))
    from hf_fixtures import tiny_hf_policy

    return tiny_hf_policy()


def load_policy(tiny: bool, device: torch.device) -> tuple[Any, str]:
    if tiny:
        return tiny_policy().to(device), "TextEnv/Reverse-L4-v0"
    from agents.pretrained import load_smollm2

    return load_smollm2(device=device), "TextEnv/Sentiment-v0"


def no_eos_mask(policy: Any) -> torch.Tensor:
    mask = torch.ones(policy.vocab_size, dtype=torch.bool)
    mask[list(policy.tokenizer.eos_ids)] = False
    return mask


def time_ours(collector: Any, seed: int, device: torch.device) -> tuple[float, int]:
    sync(device)
    t0 = time.perf_counter()
    batch = collector.collect(seed=seed)
    sync(device)
    return time.perf_counter() - t0, batch.num_tokens


def time_generate(
    policy: Any, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, seed: int, device: torch.device
) -> tuple[float, int]:
    """HF ``generate`` as a user calls it: sampling at temperature 1 from the full distribution."""
    model = policy._lm
    tok = policy.tokenizer
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask.long(), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, suppress_tokens=list(tok.eos_ids),
            pad_token_id=tok.pad_id,
        )  # fmt: skip
    sync(device)
    dt = time.perf_counter() - t0
    return dt, int((out.shape[1] - ids.shape[1]) * ids.shape[0])


def measure(
    policy: Any, env_id: str, batch: int, new_tokens: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """A B C rounds: our rollout with the weights frozen (``requires_grad`` False: generation for
    inference, a LoRA base, which decodes on prepacked weights), HF ``generate``, and our rollout with the
    weights trainable (full fine-tuning's rollouts: no packed copies)."""
    from agents.rollout import RolloutCollector, make_rollout_env

    env = make_rollout_env(
        env_id, batch, policy_tokenizer=policy.tokenizer, reward=zero_reward, max_new_tokens=new_tokens
    )
    collector = RolloutCollector(policy, env, num_threads=None)
    obs, _ = env.reset(seed=0)
    ids = torch.as_tensor(obs, device=device)
    mask = ids != env.tokenizer.pad_id
    keep = mask.any(0)
    ids, mask = ids[:, keep], mask[:, keep]  # the same prompts the rollout reads (seed 0)

    def ours(frozen: bool) -> tuple[float, int]:
        policy.requires_grad_(not frozen)
        return time_ours(collector, 0, device)

    flags = [p.requires_grad for p in policy.parameters()]
    try:
        return _rounds(policy, ours, ids, mask, batch, new_tokens, repeats, device)
    finally:  # the caller's policy as it was (gpu_check trains it next)
        for p, flag in zip(policy.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _rounds(
    policy: Any,
    ours: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    batch: int,
    new_tokens: int,
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    # warm-up all sides (first-touch allocations; the first frozen rollout packs the weights)
    packed_before = policy.packed_weights.nbytes if hasattr(policy, "packed_weights") else 0
    first, _ = ours(True)
    packed = policy.packed_weights.nbytes if hasattr(policy, "packed_weights") else 0
    time_generate(policy, ids, mask, new_tokens, 0, device)
    ours(False)
    frozen, hf, trainable = [], [], []
    for r in range(repeats):  # A B C A B C: the sides see the same stretch of machine load
        dt, n = ours(True)
        frozen.append(n / dt)
        dt, n = time_generate(policy, ids, mask, new_tokens, r, device)
        hf.append(n / dt)
        dt, n = ours(False)
        trainable.append(n / dt)
    o, h, t = statistics.median(frozen), statistics.median(hf), statistics.median(trainable)
    return {
        "batch": batch,
        "prompt_width": int(ids.shape[1]),
        "ours_tokens_per_s": o,
        "hf_generate_tokens_per_s": h,
        # the median of each round's own ratio: the runs of a round share the machine's load
        "ratio": statistics.median(a / b for a, b in zip(frozen, hf)),
        "ratio_of_medians": o / h,
        "ours_trainable_tokens_per_s": t,
        "ratio_trainable": statistics.median(a / b for a, b in zip(trainable, hf)),
        "ours_runs": frozen,
        "hf_runs": hf,
        "ours_trainable_runs": trainable,
        "prepacked_mib": (packed - packed_before) / 2**20,
        "first_frozen_rollout_s": first,
    }


def thread_rule(policy: Any, env_id: str, counts: list[int], new_tokens: int, repeats: int) -> dict[str, Any]:
    from agents.rollout import RolloutCollector, make_rollout_env

    env = make_rollout_env(
        env_id, 8, policy_tokenizer=policy.tokenizer, reward=zero_reward, max_new_tokens=new_tokens
    )
    before = torch.get_num_threads()
    rates: dict[int, list[float]] = {c: [] for c in counts}
    try:
        for _ in range(repeats):
            for c in counts:  # alternating counts within a round
                torch.set_num_threads(c)
                collector = RolloutCollector(policy, env, num_threads=None)
                dt, n = time_ours(collector, 0, torch.device("cpu"))
                rates[c].append(n / dt)
    finally:
        torch.set_num_threads(before)
    return {str(c): statistics.median(v) for c, v in rates.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto [default: cpu]")
    p.add_argument("--batches", default="8,32", help="comma-separated batch sizes [default: 8,32]")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="", help="also time our rollout at these thread counts (batch 8)")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads for the comparison [default: 1]")
    p.add_argument("--tiny", action="store_true", help="a tiny random model instead of SmolLM2 (smoke run)")
    p.add_argument("--out", default=str(RESULTS_DIR / "hf_generation.json"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.num_threads)
    load_before = load_average()
    policy, env_id = load_policy(args.tiny, device)
    policy.set_action_mask(no_eos_mask(policy))
    policy.eval()
    rows = [
        measure(policy, env_id, int(b), args.max_new_tokens, args.repeats, device)
        for b in args.batches.split(",")
    ]
    result: dict[str, Any] = {
        "model": "tiny-random-llama" if args.tiny else "SmolLM2-135M-Instruct (fp32)",
        "env": env_id,
        "max_new_tokens": args.max_new_tokens,
        "num_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "static_cache": policy.static_cache,
        "rows": rows,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": machine_info(device),
    }
    for row in rows:
        result[f"generation_vs_hf_generate_b{row['batch']}"] = row["ratio"]
        result[f"generation_trainable_vs_hf_generate_b{row['batch']}"] = row["ratio_trainable"]
    if args.threads and device.type == "cpu":
        counts = [int(c) for c in args.threads.split(",")]
        result["threads_rollout_tokens_per_s_b8"] = thread_rule(
            policy, env_id, counts, args.max_new_tokens, args.repeats
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    for row in rows:
        print(
            f"batch {row['batch']:3d}: ours {row['ours_tokens_per_s']:8.1f} tok/s, HF generate "
            f"{row['hf_generate_tokens_per_s']:8.1f} tok/s, ratio {row['ratio']:.2f}x; weights trainable "
            f"{row['ours_trainable_tokens_per_s']:8.1f} tok/s, {row['ratio_trainable']:.2f}x"
        )
    if "threads_rollout_tokens_per_s_b8" in result:
        print("our rollout at batch 8 by threads:", result["threads_rollout_tokens_per_s_b8"])
    print(f"load average before {load_before}, after {result['load_average_after']}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
