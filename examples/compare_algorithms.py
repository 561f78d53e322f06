"""Compare the built-in learners from one supervised start: success on held-out prompts over training.

Each algorithm starts from the same SFT policy (trained once, cached) and gets the same RL budget in env
steps (generated tokens). Every ``--eval-every`` iterations the policy is scored (greedy and sampled) on the
first 200 prompts of the test split. Writes ``<out>/compare_<env>.json`` and a learning-curve PNG.

    python examples/compare_algorithms.py --env TextEnv/Reverse-v0 --sft-steps 300 --budget 100000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from agents import ALGORITHMS, BaseCallback, evaluate_policy, sft


class EvalCallback(BaseCallback):
    """Greedy and sampled success on held-out prompts every ``every`` iterations."""

    def __init__(self, env: str, every: int, n: int) -> None:
        super().__init__()
        self.env, self.every, self.n = env, every, n
        self.curve: list[dict[str, float]] = []

    def record(self) -> None:
        greedy = evaluate_policy(self.model.policy, self.env, n_episodes=self.n)
        sampled = evaluate_policy(self.model.policy, self.env, n_episodes=self.n, deterministic=False)
        self.curve.append(
            {
                "timesteps": self.model.num_timesteps,
                "greedy": greedy["success_rate"],
                "sampled": sampled["success_rate"],
            }
        )

    def _on_training_start(self) -> None:
        self.record()

    def _on_step(self) -> bool:
        if self.model.iteration % self.every == 0:
            self.record()
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="TextEnv/Reverse-v0")
    p.add_argument("--algos", nargs="+", default=["ppo", "rloo", "reinforce", "a2c"])
    p.add_argument("--sft-steps", type=int, default=300, help="supervised warm start (0: from scratch)")
    p.add_argument("--budget", type=int, default=100_000, help="RL env steps (tokens) per algorithm")
    p.add_argument("--n-envs", type=int, default=64)
    p.add_argument("--kl-coef", type=float, default=0.05, help="KL leash to the SFT policy (0: none)")
    p.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations")
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="examples/results")
    args = p.parse_args()
    torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest (BENCHMARKS.md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = {"args": vars(args), "algos": {}}
    for name in args.algos:
        policy = sft(args.env, steps=args.sft_steps, seed=args.seed) if args.sft_steps else "transformer"
        agent = ALGORITHMS[name](policy, args.env, n_envs=args.n_envs, kl_coef=args.kl_coef, seed=args.seed)
        cb = EvalCallback(args.env, args.eval_every, args.eval_episodes)
        t0 = time.perf_counter()
        agent.learn(args.budget, callback=cb)
        cb.record()
        seconds = time.perf_counter() - t0
        results["algos"][name] = {"curve": cb.curve, "seconds": seconds}
        first, last = cb.curve[0], cb.curve[-1]
        print(
            f"{args.env} {name:9} greedy {first['greedy']:.3f} -> {last['greedy']:.3f}   "
            f"sampled {first['sampled']:.3f} -> {last['sampled']:.3f}   {seconds:.0f}s",
            flush=True,
        )
    tag = args.env.split("/")[-1]
    (out / f"compare_{tag}.json").write_text(json.dumps(results, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, r in results["algos"].items():
        xs = [c["timesteps"] for c in r["curve"]]
        axes[0].plot(xs, [c["greedy"] for c in r["curve"]], label=name)
        axes[1].plot(xs, [c["sampled"] for c in r["curve"]], label=name)
    for ax, title in zip(axes, ("greedy decoding", "sampling (T=1)")):
        ax.set_title(f"{args.env}: {title}")
        ax.set_xlabel("RL env steps (tokens)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test success rate")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / f"compare_{tag}.png", dpi=100)
    print(f"wrote {out / f'compare_{tag}.json'} and .png")


if __name__ == "__main__":
    main()
