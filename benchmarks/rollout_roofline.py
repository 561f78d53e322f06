"""Rollout tokens/s of the default policy (2 layers × 128) at batch 64 through the native vector env, against
the roofline ``2 · parameters · tokens`` FLOPs at the matmul GFLOP/s measured in the same rounds.

Each round measures the matmul rates (peak and decode-shape-matched, see :mod:`benchmarks.machine`) and
then one rollout of each workload (:mod:`benchmarks.workloads`); the reported figures are medians over
rounds, and each round's ratio uses that round's rates. The headline ratio uses the **peak** rate (the
harder bar); the shape-matched ratio is reported beside it.

Two more numbers explain the ratio:

- **processed/useful**: the roofline counts generated tokens, but the model also runs every prompt column
  (prefill) and keeps decoding slots whose episode already ended (lockstep); this is the model's actual
  token-forwards per generated token, an upper bound on the ratio of 1 / that;
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
from benchmarks.workloads import LONG, REGISTERED, med, n_params, rollout_setup, run_cli, time_collect

BAR = 0.5  # issue 7: rollout tokens/s >= 50% of the roofline at batch 64


def run(device: torch.device, quick: bool = False) -> dict[str, Any]:
    rounds = 3 if quick else 5
    shapes = [REGISTERED, LONG]
    setups = {s.name: rollout_setup(s, device) for s in shapes}
    policy0 = setups[REGISTERED.name][0]
    params = n_params(policy0)
    cfg = policy0.config
    mm_shapes = decode_matmul_shapes(64, cfg.n_embd, cfg.vocab_size)

    per_round: dict[str, list[dict[str, Any]]] = {s.name: [] for s in shapes}
    rates: list[dict[str, Any]] = []
    for _, collector in setups.values():  # warm-up: first-touch allocations, lazy imports
        collector.collect(seed=10_000)
    for r in range(rounds):
        rates.append(matmul_rates(device, mm_shapes, quick=True))
        for s in shapes:
            policy, collector = setups[s.name]
            with phase_timers(policy, collector.env, device) as phases:
                tokens, seconds = time_collect(collector, seed=r)
            per_round[s.name].append({"tokens": tokens, "seconds": seconds, "phases": dict(phases)})

    peak = [x["peak_gflops"] for x in rates]
    matched = [x["matched_gflops"] for x in rates]
    out: dict[str, Any] = {
        "params": params,
        "config": {
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "n_head": cfg.n_head,
            "vocab": cfg.vocab_size,
        },
        "flops_per_token": 2 * params,
        "rounds": rounds,
        "peak_gflops": med(peak),
        "matched_gflops": med(matched),
        "peak_gflops_rounds": peak,
        "matched_gflops_rounds": matched,
        "workloads": {},
    }
    for s in shapes:
        rows = per_round[s.name]
        tps = [x["tokens"] / x["seconds"] for x in rows]
        ratio_peak = [t / (p * 1e9 / (2 * params)) for t, p in zip(tps, peak)]
        ratio_matched = [t / (m * 1e9 / (2 * params)) for t, m in zip(tps, matched)]
        shares = {ph: med([x["phases"].get(ph, 0.0) / x["seconds"] for x in rows]) for ph in PHASES}
        shares["bookkeeping"] = max(0.0, 1.0 - sum(shares.values()))
        outside = med(
            [1.0 - (x["phases"]["prefill"] + x["phases"]["decode_step"]) / x["seconds"] for x in rows]
        )
        # the positions the model actually ran: every prompt column, and every slot at every decode step
        policy, collector = setups[s.name]
        probe = collector.collect(seed=0)
        b, p = probe.input_ids.shape[0], probe.prompt_width
        steps = probe.actions.shape[1]
        processed = b * p + b * max(steps - 1, 0)
        out["workloads"][s.name] = {
            "describe": s.describe(),
            "tokens_per_rollout": med([x["tokens"] for x in rows]),
            "tokens_per_s": med(tps),
            "tokens_per_s_rounds": tps,
            "roofline_tokens_per_s_peak": med(peak) * 1e9 / (2 * params),
            "ratio_vs_peak_roofline": med(ratio_peak),
            "ratio_vs_matched_roofline": med(ratio_matched),
            "processed_positions": processed,
            "generated_tokens": probe.num_tokens,
            "processed_per_generated": processed / max(probe.num_tokens, 1),
            "prompt_width": p,
            "steps": steps,
            "model_flop_utilisation_peak": med(ratio_peak) * processed / max(probe.num_tokens, 1),
            "outside_forward_share": outside,
            "phase_shares": shares,
            "bar": BAR,
            "meets_bar": med(ratio_peak) >= BAR,
        }
    policy, collector = setups[LONG.name]
    out["profile_long"] = op_table(lambda: collector.collect(seed=1), device)
    return out


def print_result(res: dict[str, Any]) -> None:
    print(
        f"default policy: {res['params']:,} params, roofline {res['flops_per_token']:,} FLOPs/token; "
        f"matmul peak {res['peak_gflops']:.1f} GFLOP/s, decode-shape-matched {res['matched_gflops']:.1f} "
        "GFLOP/s"
    )
    for name, w in res["workloads"].items():
        print(f"  [{name}] {w['describe']}")
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
