"""The ``text-env`` command.

Subcommands:
    envs       list every registered TextEnv id with its spaces, default reward and budget
    demo       a random and a scripted (reference-answering) policy on each synthetic env
    train      train a built-in agent on an env
    eval       evaluate a saved agent on an env's test split
    benchmark  the harness: algorithms × envs × seeds → statistics, table, plots
    label      collect human preference labels into a JSONL file

Each subcommand lives in the module that implements it and adds itself here with ``add_<name>_command``;
this file only wires them together, so importing it stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence

# (module, function) pairs: each function adds one subcommand to the parser.
_COMMANDS: list[tuple[str, str]] = [
    ("agents.cli", "add_envs_command"),
    ("agents.cli", "add_demo_command"),
    ("agents.cli", "add_train_command"),
    ("agents.cli", "add_eval_command"),
    ("agents.harness.cli", "add_benchmark_command"),
    ("text_env.rewards.feedback", "add_label_command"),
]


def add_envs_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list the registered TextEnv ids")
    p.add_argument("--no-build", action="store_true", help="do not build each env (faster, fewer columns)")
    p.set_defaults(func=_run_envs)


def _run_envs(args: argparse.Namespace) -> int:
    import text_env

    rows = text_env.list_envs(build=not args.no_build)
    print(f"{'id':28} {'budget':>6} {'actions':>14}  {'obs':34} reward")
    for r in rows:
        print(
            f"{r['id']:28} {r['max_episode_steps'] or '-':>6} {r.get('action_space', '-'):>14}  "
            f"{r.get('observation_space', '-'):34} {r.get('reward', '-')}"
        )
    return 0


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="random vs scripted policy on each synthetic env (a smoke test)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per env and policy")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np

    import text_env  # noqa: F401
    from text_env.registration import ENTRIES

    if args.episodes < 1:
        raise SystemExit(f"--episodes must be ≥ 1, got {args.episodes}")
    print(f"{'env':26} {'random':>8} {'scripted':>9} {'steps/s':>10}")
    for e in ENTRIES:
        if not e.task:
            continue
        envs = gym.make_vec(
            e.env_id,
            num_envs=args.episodes,
            vectorization_mode="vector_entry_point",
            autoreset_mode=gym.vector.AutoresetMode.DISABLED,
        )
        base = envs.unwrapped
        rng = np.random.default_rng(args.seed)
        results = []
        t0, steps = time.perf_counter(), 0
        for scripted in (False, True):
            envs.reset(seed=args.seed)
            refs = base.task.encoded(base.split)
            idx = base.prompt_index
            total = np.zeros(args.episodes)
            t = 0
            while not base.finished.all():
                if scripted:  # answer with the reference, then EOS
                    ref_ids, ref_len = refs.reference_ids[idx], refs.reference_lengths[idx]
                    col = np.minimum(t, ref_ids.shape[1] - 1)
                    act = np.where(t < ref_len, ref_ids[:, col], base.tokenizer.eos_id)
                else:
                    act = rng.integers(0, base.tokenizer.vocab_size, size=args.episodes)
                _, r, _, _, _ = envs.step(act)
                total += r
                t += 1
                steps += 1
            results.append(total.mean())
        rate = steps * args.episodes / (time.perf_counter() - t0)
        print(f"{e.env_id:26} {results[0]:8.3f} {results[1]:9.3f} {rate:10.0f}")
        envs.close()
    return 0


def add_train_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a built-in agent (SFT warm start, then RL)")
    p.add_argument("--algo", default="ppo", help="ppo, rloo, reinforce or a2c")
    p.add_argument("--env", default="TextEnv/Reverse-v0", help="a TextEnv id")
    p.add_argument("--total-timesteps", type=int, default=100_000, help="RL budget in env steps (tokens)")
    p.add_argument(
        "--sft-steps", type=int, default=1000, help="supervised warm-start steps (0: from scratch)"
    )
    p.add_argument("--n-envs", type=int, default=64, help="episodes per rollout")
    p.add_argument(
        "--policy-kwargs",
        type=json.loads,
        default=None,
        help='JSON TransformerConfig fields for a new policy, e.g. \'{"n_layer": 1, "n_embd": 32}\'',
    )
    p.add_argument("--learning-rate", type=float, default=None, help="default: the algorithm's")
    p.add_argument("--kl-coef", type=float, default=0.0, help="initial β of the KL leash to the SFT policy")
    p.add_argument("--target-kl", type=float, default=None, help="adaptive β target (per-episode KL)")
    p.add_argument(
        "--k", type=int, default=None,
        help="completions per prompt (ppo, rloo): PPO with k ≥ 2 uses their group baseline instead of "
        "the value head; default: the algorithm's (PPO 1, RLOO 4)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", default=None, help="run directory (default runs/<env>_<algo>_s<seed>)")
    p.add_argument("--checkpoint-every", type=int, default=20, help="iterations between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import text_env  # noqa: F401
    from agents import ALGORITHMS, sft
    from agents.common import latest_checkpoint

    algo_cls = ALGORITHMS.get(args.algo.lower())
    if algo_cls is None:
        raise ValueError(f"unknown --algo {args.algo!r}; expected one of {sorted(ALGORITHMS)}")
    if args.total_timesteps < 0 or args.sft_steps < 0:
        raise ValueError("--total-timesteps and --sft-steps must be ≥ 0")
    if args.k is not None and args.algo.lower() not in ("ppo", "rloo"):
        raise ValueError(f"--k applies to ppo and rloo (completions per prompt), not --algo {args.algo!r}")
    if args.policy_kwargs is not None and not isinstance(args.policy_kwargs, dict):
        raise ValueError(f"--policy-kwargs must be a JSON object, got {args.policy_kwargs!r}")
    name = args.env.split("/")[-1]
    out = Path(args.out or f"runs/{name}_{args.algo}_s{args.seed}")
    resumed = False
    if args.resume:
        try:
            latest_checkpoint(out)
        except FileNotFoundError:
            print(f"no checkpoint in {out}; starting a new run")
        else:
            agent = algo_cls.load(out, device=args.device, log_dir=out / "logs", checkpoint_dir=out)
            resumed = True
            print(f"resumed {out} at {agent.num_timesteps} steps")
    if not resumed:
        policy = "transformer"
        if args.sft_steps:
            t0 = time.perf_counter()
            policy = sft(
                args.env, steps=args.sft_steps, seed=args.seed, device=args.device,
                policy_kwargs=args.policy_kwargs,
            )  # fmt: skip
            print(f"SFT: {args.sft_steps} steps in {time.perf_counter() - t0:.1f}s")
        kwargs = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
        if args.k is not None:
            kwargs["k"] = args.k
        agent = algo_cls(
            policy, args.env, n_envs=args.n_envs, kl_coef=args.kl_coef, target_kl=args.target_kl,
            seed=args.seed,
            device=args.device, log_dir=out / "logs", checkpoint_dir=out,
            checkpoint_every=args.checkpoint_every, policy_kwargs=args.policy_kwargs, **kwargs,
        )  # fmt: skip
    remaining = max(0, args.total_timesteps - agent.num_timesteps)
    t0 = time.perf_counter()
    agent.learn(remaining, progress_bar=not args.no_progress, reset_num_timesteps=False)
    agent.save(out)
    print(f"trained {agent.num_timesteps} steps in {time.perf_counter() - t0:.1f}s; saved to {out}")
    result = agent.evaluate(n_episodes=args.eval_episodes)
    print(
        f"test split: success {result['success_rate']:.3f}  mean return {result['mean_return']:.3f}  "
        f"({result['episodes']} prompts, greedy)"
    )
    return 0


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved agent or policy on an env's test split")
    p.add_argument("path", help="a run directory (from train/save) or a saved policy directory")
    p.add_argument("--env", default=None, help="a TextEnv id (default: the one the agent was trained on)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--samples", type=int, default=5, help="example completions to print")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import text_env  # noqa: F401
    from agents import load_policy
    from agents.common import latest_checkpoint
    from agents.evaluation import evaluate_generation
    from text_env.io import read_json

    path = Path(args.path)
    env = args.env
    if (path / "latest.json").exists():
        ckpt = latest_checkpoint(path)
        policy = load_policy(ckpt / "policy")
        reference = load_policy(ckpt / "reference") if (ckpt / "reference").exists() else None
        env = env or read_json(ckpt / "state.json", what="agent state").get("env")
    elif (path / "config.json").exists():
        policy, reference = load_policy(path), None
    else:
        raise FileNotFoundError(
            f"{str(path)!r} holds neither an agent (latest.json) nor a policy (config.json)"
        )
    if not env:
        raise ValueError("the agent does not record its env; pass --env TextEnv/...")
    report = evaluate_generation(
        policy, env, n_episodes=args.episodes, split=args.split, deterministic=not args.sample,
        reference=reference, n_samples=args.samples,
    )  # fmt: skip
    print(
        f"{env} — {args.split} split, {report['episodes']} prompts, {'sampled' if args.sample else 'greedy'}"
    )
    for k in ("success_rate", "mean_return", "perplexity", "distinct_1", "distinct_2", "mean_length"):
        print(f"  {k:14} {report[k]:.4f}")
    for k, v in report["metrics"].items():
        print(f"  {k:14} {v:.4f}")
    for s in report["samples"]:
        print(f"  {s['prompt']!r} -> {s['completion']!r} (reference {s['reference']!r})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="text-env", description="Text generation as Gymnasium environments."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, fn in _COMMANDS:
        adder: Callable[[argparse._SubParsersAction], None] = getattr(importlib.import_module(module), fn)
        adder(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, ImportError) as e:
        # bad input from the command line (a bad value, a missing file, an --out that is a file, an unwritable
        # directory): one clear line, no traceback
        print(f"text-env {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
