"""Supervised warm start, then PPO with a KL leash, on TextEnv/Reverse-v0 — the shortest useful recipe.

    python examples/train_reverse.py --sft-steps 1000 --budget 100000 --out runs/reverse_ppo

Prints greedy and sampled success on the test split after each stage, saves the agent (reload it with
``PPO.load(out)``) and its training log (``<out>/logs/progress.csv``, TensorBoard events beside it).
"""

from __future__ import annotations

import argparse
import time

import torch

from agents import PPO, evaluate_policy, sft

ENV = "TextEnv/Reverse-v0"


def report(stage: str, policy) -> None:
    greedy = evaluate_policy(policy, ENV, n_episodes=500)
    sampled = evaluate_policy(policy, ENV, n_episodes=500, deterministic=False)
    print(
        f"{stage:12} test success: greedy {greedy['success_rate']:.3f}, sampled {sampled['success_rate']:.3f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-steps", type=int, default=1000)
    p.add_argument("--budget", type=int, default=100_000, help="PPO env steps (tokens)")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--target-kl", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/reverse_ppo")
    args = p.parse_args()
    torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest

    t0 = time.perf_counter()
    policy = sft(ENV, steps=args.sft_steps, seed=args.seed, device=args.device)
    report("SFT", policy)
    agent = PPO(
        policy, ENV, n_envs=64, kl_coef=args.kl_coef, target_kl=args.target_kl, seed=args.seed,
        device=args.device, log_dir=f"{args.out}/logs",
    )  # fmt: skip
    agent.learn(args.budget, progress_bar=True)
    agent.save(args.out)
    report("SFT + PPO", agent.policy)
    print(f"saved to {args.out} ({time.perf_counter() - t0:.0f}s in all)")


if __name__ == "__main__":
    main()
