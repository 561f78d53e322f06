"""KV cache: the collector's cached rollout against a full re-forward of the whole sequence per new token,
64 new tokens at batch 64 (prompts of 10-17 tokens + BOS), the same env loop on both sides.

The uncached loop is the collector's loop with ``decode_step`` replaced by ``policy(all ids so far)`` and
the last position's logits; both sample from the same seeded generator, so they must produce the same
tokens (checked), and both step the same env, so the ratio isolates the cache.

Usage::

    python -m benchmarks.kv_cache [--quick] [--device auto]
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from benchmarks.machine import sync
from benchmarks.workloads import LONG, alternate, med, rollout_setup, run_cli

BAR = 15.0  # issue 7: KV-cached ÷ full re-forward >= 15x


@torch.inference_mode()
def collect_uncached(policy: Any, env: Any, seed: int, device: torch.device) -> torch.Tensor:
    """The collector's loop without a cache: every new token re-runs the whole sequence. Returns the
    actions ``(B, T)``."""
    pad = env.tokenizer.pad_id
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    nonpad = obs != pad
    first = int(np.argmax(nonpad.any(axis=0)))
    ids = torch.as_tensor(obs[:, first:], device=device)  # (B, P)
    mask = torch.as_tensor(nonpad[:, first:], device=device)  # (B, P)
    logits, _ = policy(ids, mask)
    actions = []
    for _ in range(env.max_new_tokens):
        tokens, _ = policy.sample(logits[:, -1], generator)
        live = torch.as_tensor(~env.finished, device=device)
        tokens = torch.where(live, tokens, torch.full_like(tokens, pad))
        actions.append(tokens)
        env.step(tokens.cpu().numpy())
        if env.finished.all():
            break
        ids = torch.cat([ids, tokens[:, None]], dim=1)  # (B, P + t + 1)
        mask = torch.cat([mask, torch.ones_like(live)[:, None]], dim=1)  # a decode step's token is real
        logits, _ = policy(ids, mask)
    return torch.stack(actions, dim=1)


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 3
    policy, collector = rollout_setup(LONG, device)
    env = collector.env

    def cached(r: int) -> float:
        sync(device)
        start = time.perf_counter()
        collector.collect(seed=max(r, 0))
        sync(device)
        return time.perf_counter() - start

    def uncached(r: int) -> float:
        sync(device)
        start = time.perf_counter()
        collect_uncached(policy, env, max(r, 0), device)
        sync(device)
        return time.perf_counter() - start

    times = alternate({"cached": cached, "uncached": uncached}, rounds)
    same = torch.equal(collector.collect(seed=7).actions, collect_uncached(policy, env, 7, device))
    batch = collector.collect(seed=0)
    tokens = batch.num_tokens
    ratios = [u / c for u, c in zip(times["uncached"], times["cached"])]
    return {
        "describe": LONG.describe(),
        "prompt_width": batch.prompt_width,
        "new_tokens": batch.actions.shape[1],
        "batch": batch.actions.shape[0],
        "tokens": tokens,
        "cached_s": med(times["cached"]),
        "uncached_s": med(times["uncached"]),
        "cached_tokens_per_s": tokens / med(times["cached"]),
        "uncached_tokens_per_s": tokens / med(times["uncached"]),
        "ratio": med(ratios),
        "ratio_rounds": ratios,
        "same_tokens": same,
        "bar": BAR,
        "meets_bar": med(ratios) >= BAR,
    }


def print_result(res: dict[str, Any]) -> None:
    print(f"{res['describe']} (prompt window {res['prompt_width']})")
    print(f"  cached     {res['cached_tokens_per_s']:>10,.0f} tokens/s")
    print(f"  re-forward {res['uncached_tokens_per_s']:>10,.0f} tokens/s")
    print(f"  ratio      {res['ratio']:>10.1f}x (bar >= {BAR:.0f}x); same tokens: {res['same_tokens']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli("kv_cache", __doc__, run, print_result, argv)


if __name__ == "__main__":
    main()
