"""Rollout tokens/s of the default policies at batch 64 through the native vector env, against the roofline
``2 · parameters · tokens`` FLOPs at the matmul GFLOP/s measured in the same rounds: the synthetic tasks'
default (``TransformerPolicy.for_task``, 2 layers × 128, character vocabulary) and the language tasks'
default (the shipped English policy, 4 layers × 128, vocabulary 8192).

Each round measures the matmul rates (peak and decode-shape-matched, see :mod:`benchmarks.machine`) and
then one rollout of each workload (:mod:`benchmarks.workloads`); the reported figures are medians over
rounds, and each round's ratio uses that round's rates. The headline ratio uses the **peak** rate (the
harder bar); the shape-matched ratio is reported beside it.

Two more numbers explain the ratio:

- **processed/useful**: the roofline counts generated tokens, but the model also runs every prompt column
  (prefill) and, until the collector compacts its KV cache, slots whose episode already ended (lockstep);
  this is the model's actual token-forwards per generated token, an upper bound on the ratio of 1 / that;
- **outside the forward**: the share of wall time not spent in ``prefill`` / ``decode_step`` (sampling, the
  env step with its rewards, the collector's bookkeeping), from timers on the collector's own calls.

Usage::

    python -m benchmarks.rollout_roofline [--quick] [--device auto]
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.machine import decode_matmul_shapes, matmul_rates
from benchmarks.profiling import PHASES, op_table, phase_timers
from benchmarks.workloads import (
    ENGLISH,
    ENGLISH_LONG,
    LONG,
    REGISTERED,
    med,
    n_params,
    rollout_setup,
    run_cli,
    time_collect,
)

BAR = 0.5  # issue 7: rollout tokens/s >= 50% of the roofline at batch 64


def _positions_run(policy: Any, collector: Any, seed: int) -> tuple[Any, int]:
    """One rollout, and the token-positions the model ran: every prompt column, plus the slots the KV cache
    still held at each decode step (finished slots are compacted away, see ``RolloutCollector``)."""
    rows: list[int] = []
    decode = policy.decode_step

    def counting(tokens: torch.Tensor, cache: Any) -> Any:
        rows.append(int(tokens.shape[0]))
        return decode(tokens, cache)

    object.__setattr__(policy, "decode_step", counting)
    try:
        batch = collector.collect(seed=seed)
    finally:
        object.__delattr__(policy, "decode_step")
    return batch, batch.input_ids.shape[0] * batch.prompt_width + sum(rows)


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    rounds = 3 if quick else 5
    shapes = [REGISTERED, LONG, ENGLISH, ENGLISH_LONG]
    setups = {s.name: rollout_setup(s, device) for s in shapes}
    policies = {"default": setups[REGISTERED.name][0], "english": setups[ENGLISH.name][0]}
    mm_shapes = {
        kind: decode_matmul_shapes(64, p.config.n_embd, p.config.vocab_size) for kind, p in policies.items()
    }

    per_round: dict[str, list[dict[str, Any]]] = {s.name: [] for s in shapes}
    rates: list[dict[str, dict[str, Any]]] = []
    for _, collector in setups.values():  # warm-up: first-touch allocations, lazy imports
        collector.collect(seed=10_000)
    for r in range(rounds):
        rates.append({kind: matmul_rates(device, sh, quick=True) for kind, sh in mm_shapes.items()})
        for s in shapes:
            policy, collector = setups[s.name]
            with phase_timers(policy, collector.env, device) as phases:
                tokens, seconds = time_collect(collector, seed=r)
            per_round[s.name].append({"tokens": tokens, "seconds": seconds, "phases": dict(phases)})

    peak = [max(x[k]["peak_gflops"] for k in x) for x in rates]  # one peak per round for every policy
    out: dict[str, Any] = {
        "rounds": rounds,
        "peak_gflops": med(peak),
        "peak_gflops_rounds": peak,
        "policies": {},
    }
    for kind, p in policies.items():
        cfg = p.config
        out["policies"][kind] = {
            "params": n_params(p),
            "flops_per_token": 2 * n_params(p),
            "config": {
                "n_layer": cfg.n_layer,
                "n_embd": cfg.n_embd,
                "n_head": cfg.n_head,
                "vocab": cfg.vocab_size,
            },
            "matched_gflops": med([x[kind]["matched_gflops"] for x in rates]),
        }
    # the synthetic tasks' default policy keeps the top-level keys the report has always read
    out.update(
        {k: out["policies"]["default"][k] for k in ("params", "flops_per_token", "config", "matched_gflops")}
    )
    out["workloads"] = {}
    for s in shapes:
        rows = per_round[s.name]
        params = out["policies"][s.policy]["params"]
        matched = [x[s.policy]["matched_gflops"] for x in rates]
        tps = [x["tokens"] / x["seconds"] for x in rows]
        ratio_peak = [t / (pk * 1e9 / (2 * params)) for t, pk in zip(tps, peak)]
        ratio_matched = [t / (m * 1e9 / (2 * params)) for t, m in zip(tps, matched)]
        shares = {ph: med([x["phases"].get(ph, 0.0) / x["seconds"] for x in rows]) for ph in PHASES}
        shares["bookkeeping"] = max(0.0, 1.0 - sum(shares.values()))
        outside = med(
            [1.0 - (x["phases"]["prefill"] + x["phases"]["decode_step"]) / x["seconds"] for x in rows]
        )
        policy, collector = setups[s.name]
        probe, processed = _positions_run(policy, collector, seed=0)
        out["workloads"][s.name] = {
            "describe": s.describe(),
            "policy": s.policy,
            "params": params,
            "tokens_per_rollout": med([x["tokens"] for x in rows]),
            "tokens_per_s": med(tps),
            "tokens_per_s_rounds": tps,
            "roofline_tokens_per_s_peak": med(peak) * 1e9 / (2 * params),
            "ratio_vs_peak_roofline": med(ratio_peak),
            "ratio_vs_matched_roofline": med(ratio_matched),
            "processed_positions": processed,
            "generated_tokens": probe.num_tokens,
            "processed_per_generated": processed / max(probe.num_tokens, 1),
            "prompt_width": probe.prompt_width,
            "steps": probe.actions.shape[1],
            "model_flop_utilisation_peak": med(ratio_peak) * processed / max(probe.num_tokens, 1),
            "outside_forward_share": outside,
            "phase_shares": shares,
            "bar": BAR,
            "meets_bar": med(ratio_peak) >= BAR,
        }
    for name in (LONG.name, ENGLISH_LONG.name):
        policy, collector = setups[name]
        out[f"profile_{name.replace('-', '_')}"] = op_table(lambda c=collector: c.collect(seed=1), device)
    return out


def print_result(res: dict[str, Any]) -> None:
    print(f"matmul peak {res['peak_gflops']:.1f} GFLOP/s")
    for kind, p in res["policies"].items():
        print(
            f"{kind} policy: {p['params']:,} params, roofline {p['flops_per_token']:,} FLOPs/token, "
            f"decode-shape-matched matmul {p['matched_gflops']:.1f} GFLOP/s"
        )
    for name, w in res["workloads"].items():
        print(f"  [{name}] {w['describe']} ({w['policy']} policy)")
        print(
            f"    {w['tokens_per_s']:,.0f} tokens/s = {100 * w['ratio_vs_peak_roofline']:.1f}% of the peak "
            "roofline "
            f"({100 * w['ratio_vs_matched_roofline']:.1f}% of the shape-matched one); bar {100 * BAR:.0f}%"
        )
        print(
            f"    the model ran {w['processed_per_generated']:.2f} token-positions per generated token; "
            f"{100 * w['outside_forward_share']:.1f}% of the time is outside the model forward"
        )
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in w["phase_shares"].items())
        print(f"    phases: {shares}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_cli("rollout_roofline", __doc__, run, print_result, argv)


if __name__ == "__main__":
    main()
