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
import logging
import sys
import time
from collections.abc import Callable, Sequence

# (module, function) pairs: each function adds one subcommand to the parser.
_COMMANDS: list[tuple[str, str]] = [
    ("agents.cli", "add_envs_command"),
    ("agents.cli", "add_demo_command"),
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
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        # bad input from the command line: one clear line, no traceback
        print(f"text-env {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
