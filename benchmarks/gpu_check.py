"""The GPU check of issue 15, in one process and at most about 5 minutes on one GPU: SmolLM2-135M-Instruct's
rollout tokens per second against HF ``generate`` (batch 8 and 32, :mod:`benchmarks.hf_generation`; on CUDA
also with the decode step under ``torch.compile``), three
PPO iterations on ``TextEnv/Sentiment-v0`` (full fine-tune, KL leash on, bf16 autocast with fp32 master
weights on CUDA), and the peak GPU memory of each part.

UNTESTED ON A GPU: no GPU was lent while it was written. ``--cpu`` runs the same code on the CPU with a tiny
random model and small budgets (seconds), which is what the test suite runs; on a GPU machine run it
without flags and record its figures in BENCHMARKS.md with the GPU named.

Usage::

    python -m benchmarks.gpu_check                 # --device auto: CUDA when present
    python -m benchmarks.gpu_check --cpu           # the smoke run (tiny model, CPU)

Writes ``benchmarks/results/gpu_check.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import hf_generation
from benchmarks.machine import RESULTS_DIR, load_average, machine_info, resolve_device, sync
from text_env.io import atomic_write_json


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), or the process's peak RSS (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def ppo_iterations(
    policy: Any, env_id: str, device: torch.device, n_envs: int, iterations: int
) -> dict[str, Any]:
    """``iterations`` PPO iterations (rollout + update) with a KL leash; tokens per second of each."""
    from agents import PPO

    agent = PPO(
        policy, env_id, n_envs=n_envs, batch_size=max(1, n_envs // 2), n_epochs=1, kl_coef=0.05,
        learning_rate=1e-5, lr_warmup=0, device=str(device),
    )  # fmt: skip
    rates = []
    stats: dict[str, float] = {}
    with agent._training_context():  # the loop's own settings (threads, signals) around its own iteration
        for _ in range(iterations):
            sync(device)
            t0 = time.perf_counter()
            batch, stats = agent._iteration(log_interval=1)
            sync(device)
            rates.append(batch.num_tokens / (time.perf_counter() - t0))
    return {"iterations": iterations, "n_envs": n_envs, "tokens_per_s": rates, "kl": stats.get("charts/kl")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cuda or cpu [default: auto]")
    p.add_argument(
        "--cpu", action="store_true", help="the smoke run: CPU, a tiny random model, small budgets"
    )
    p.add_argument("--out", default=str(RESULTS_DIR / "gpu_check.json"))
    args = p.parse_args(argv)
    device = torch.device("cpu") if args.cpu else resolve_device(args.device)
    tiny = args.cpu
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "tested_on_gpu": False,  # set by whoever runs it on one and records the figures
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "smoke": tiny,
        "load_average_before": load_average(),
    }
    policy, env_id = hf_generation.load_policy(tiny, device)
    result["precision"] = str(policy.autocast_dtype() or torch.float32)
    # generation: every EOS masked on both sides, so both write the same number of tokens
    policy.set_action_mask(hf_generation.no_eos_mask(policy))
    policy.eval()
    new_tokens = 4 if tiny else 32
    result["generation"] = []
    for b in (2, 4) if tiny else (8, 32):
        reset_peak(device)
        row = hf_generation.measure(policy, env_id, b, new_tokens, 1 if tiny else 3, device)
        row["peak_memory_mb"] = peak_memory_mb(device)
        result["generation"].append(row)
        result[f"generation_vs_hf_generate_b{b}"] = row["ratio"]
    if device.type == "cuda":  # the decode step under torch.compile (HFPolicy(compile_decode=True)), batch 32
        policy.compile_decode = True
        try:
            row = hf_generation.measure(policy, env_id, 32, new_tokens, 3, device)
            result["compile_decode_b32"] = {
                "ours_tokens_per_s": row["ours_tokens_per_s"],
                "ratio": row["ratio"],
            }
        except Exception as e:  # untested: record why rather than lose the other figures
            result["compile_decode_b32"] = {"error": f"{type(e).__name__}: {e}"}
        policy.compile_decode = False
    policy.set_action_mask(None)
    reset_peak(device)
    result["ppo"] = ppo_iterations(policy, env_id, device, n_envs=4 if tiny else 16, iterations=3)
    result["ppo"]["peak_memory_mb"] = peak_memory_mb(device)
    result["wall_s"] = time.perf_counter() - t_start
    result["load_average_after"] = load_average()
    result["machine"] = machine_info(device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    for row in result["generation"]:
        ratio, mb = row["ratio"], row["peak_memory_mb"]
        print(f"batch {row['batch']}: rollout / HF generate = {ratio:.2f}x ({mb:.0f} MB)")
    ppo = result["ppo"]
    print(
        f"PPO: {ppo['iterations']} iterations, {[round(r) for r in ppo['tokens_per_s']]} tok/s, peak "
        f"{ppo['peak_memory_mb']:.0f} MB; {result['wall_s']:.0f} s in all; wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
