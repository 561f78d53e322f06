"""The whole RLHF loop, offline, checked against the hidden rule that stands in for people.

1. Supervised stage: the policy learns to write sentences for ``TextEnv/Keyword-v0`` ("use cat:" → "the big
   cat runs fast.") from the task's demonstrations.
2. Feedback: the SFT policy writes two completions per prompt; a synthetic labeller prefers the one a hidden
   rule scores higher (cheerful adjectives good, gloomy ones bad, shorter better) and flips 10% of its labels,
   as annotators disagree. The preferences go to a JSONL file, as ``text-env label`` would write them.
3. Reward model: a Bradley-Terry model learns from the pairs (held-out pairwise accuracy reported).
4. RL: PPO optimizes the learned reward plus the task's keyword reward, with a per-token KL leash to the SFT
   policy (adaptive β).
5. Check: the hidden rule's mean score and the task's success rate on the test prompts, before and after.

    python examples/rlhf_pipeline.py --budget 60000
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from agents import PPO, RolloutCollector, make_rollout_env, sft
from text_env.rewards import make_composite
from text_env.rewards.feedback import SyntheticLabeller
from text_env.rewards.learned import train_reward_model

ENV = "TextEnv/Keyword-v0"
GOOD = {"happy": 1.0, "brave": 1.0, "young": 0.5}
BAD = {"lazy": -1.0, "old": -0.5}


def hidden_rule(prompt: str, completion: str) -> float:
    """What the 'people' want: cheerful words, no gloomy ones, brevity. The reward model never sees it."""
    words = re.findall(r"[a-z]+", completion)
    return sum(GOOD.get(w, 0.0) + BAD.get(w, 0.0) for w in words) - 0.05 * len(words)


def sample_completions(policy, n_prompts: int, k: int, seed: int) -> list[tuple[str, list[str]]]:
    """``k`` sampled completions for each of ``n_prompts`` train prompts."""
    env = make_rollout_env(ENV, n_prompts * k)
    collector = RolloutCollector(policy, env)
    idx = np.repeat(np.random.default_rng(seed).integers(len(env.task.encoded("train")), size=n_prompts), k)
    batch = collector.collect(seed=seed, prompt_index=idx)
    prompts = env.task.encoded("train").prompts[idx]
    return [(str(prompts[i * k]), batch.completions[i * k : (i + 1) * k]) for i in range(n_prompts)]


def score_on_test(policy, n: int = 200) -> dict[str, float]:
    """The hidden rule's mean and the task's success rate over sampled completions of ``n`` test prompts."""
    env = make_rollout_env(ENV, n, split="test")
    batch = RolloutCollector(policy, env).collect(seed=1, prompt_index=np.arange(n))
    return {
        "hidden_rule": float(np.mean([hidden_rule("", c) for c in batch.completions])),
        "success_rate": float(np.nanmean(batch.success)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft-steps", type=int, default=600)
    p.add_argument("--pairs", type=int, default=3000, help="preference pairs to label")
    p.add_argument("--noise", type=float, default=0.1, help="label-flip probability")
    p.add_argument("--budget", type=int, default=60_000, help="PPO env steps (tokens)")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--target-kl", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="examples/results/rlhf")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    policy = sft(ENV, steps=args.sft_steps, seed=args.seed)
    print(f"[1] SFT: {args.sft_steps} steps ({time.perf_counter() - t0:.0f}s)")

    groups = sample_completions(policy, n_prompts=args.pairs // 2 + 64, k=4, seed=args.seed)
    candidates = [(prompt, c[i], c[j]) for prompt, c in groups for i, j in ((0, 1), (2, 3))]
    labeller = SyntheticLabeller(hidden_rule, noise=args.noise, seed=args.seed)
    pairs = labeller.label(candidates[: args.pairs])
    labeller.write(pairs, out / "preferences.jsonl")
    print(f"[2] labelled {len(pairs)} pairs ({labeller.n_flipped} flipped, {labeller.n_ties} ties) → {out}")

    rm, report = train_reward_model(out / "preferences.jsonl", seed=args.seed)
    rm.save(out / "reward_model")
    truth = [labeller.true_preference(pp.prompt, pp.chosen, pp.rejected) == 0 for pp in pairs]
    print(f"[3] reward model: held-out pairwise accuracy {report.val_accuracy:.3f} (vs noisy labels)")

    reward = make_composite({"keyword": 1.0, f"reward_model:{out / 'reward_model'}": 1.0})
    env = make_rollout_env(ENV, 64, reward=reward)

    before = score_on_test(policy)
    agent = PPO(policy, env, n_envs=64, kl_coef=args.kl_coef, target_kl=args.target_kl, seed=args.seed)
    agent.learn(args.budget)
    after = score_on_test(agent.policy)
    kl = agent.logger.rows[-1].get("charts/kl", float("nan"))
    print(f"[4] PPO: {args.budget} tokens, final KL to SFT {kl:.2f} nats/episode")
    print(
        f"[5] hidden rule (test prompts, sampled): {before['hidden_rule']:+.3f} → "
        f"{after['hidden_rule']:+.3f}; "
        f"keyword success {before['success_rate']:.3f} → {after['success_rate']:.3f}"
    )
    summary = {
        "pairs": len(pairs),
        "label_agreement_with_rule": float(np.mean(truth)),
        "rm_val_accuracy": report.val_accuracy,
        "before": before,
        "after": after,
        "final_kl": kl,
        "seconds": time.perf_counter() - t0,
        "args": vars(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'summary.json'} ({summary['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
