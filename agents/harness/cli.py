"""``text-env benchmark``: its flags are generated from :class:`~agents.harness.config.BenchmarkConfig` by
the dataclass → argparse helper of :mod:`agents.config`.

Example:
    >>> benchmark_command(BenchmarkConfig(seeds=5, workers=os.cpu_count()))
    'text-env benchmark --seeds 5'
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from agents.config import (
    add_dataclass_arguments,
    dataclass_from_args,
    dataclass_to_argv,
)
from agents.harness.config import DEFAULT_ALGOS, DEFAULT_ENVS, QUICK, BenchmarkConfig

# ---------------------------------------------------------------------------------------------------------
# text-env benchmark


def cli_defaults(quick: bool = False) -> dict[str, Any]:
    """Where the command line's defaults differ from :class:`BenchmarkConfig`'s: one worker per CPU core,
    and with ``--quick`` the smoke suite (:data:`agents.harness.config.QUICK`) written to its own directory.
    """
    defaults: dict[str, Any] = {"workers": max(1, os.cpu_count() or 1)}
    if quick:
        defaults.update(QUICK, out=str(BenchmarkConfig.out) + "-quick")
    return defaults


def benchmark_command(config: BenchmarkConfig) -> str:
    """A ``text-env benchmark`` command line that reproduces ``config`` (``config.command`` if set): the
    flags of the fields that differ from the command line's defaults.

    Example:
        >>> benchmark_command(BenchmarkConfig(seeds=5, workers=os.cpu_count()))
        'text-env benchmark --seeds 5'
    """
    if config.command:
        return config.command
    return shlex.join(["text-env", "benchmark", *dataclass_to_argv(config, defaults=cli_defaults())])


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``text-env benchmark``: one flag per :class:`BenchmarkConfig` field, plus ``--quick``."""
    from agents.harness.specs import SPEC_HELP

    p = subparsers.add_parser(
        "benchmark",
        help="algorithms × envs × seeds at an equal token budget → table, CSV/JSON, report, plots",
        description=(
            "Benchmark algorithms on TextEnv ids at an equal budget of env steps (tokens). With no arguments "
            f"it runs the embedded default: {', '.join(DEFAULT_ALGOS)} on {', '.join(DEFAULT_ENVS)}, "
            f"{BenchmarkConfig.seeds} seeds, {BenchmarkConfig.budget} tokens per run. Algorithm specs: "
            f"{SPEC_HELP}."
        ),
    )
    add_dataclass_arguments(p, BenchmarkConfig, defaults=cli_defaults())
    p.add_argument(
        "--quick",
        action="store_true",
        help="a ~1 minute smoke version of the default suite (its own defaults; flags still override them)",
    )
    p.add_argument(
        "--aggregate",
        action="store_true",
        help="run nothing: summarize the run files already in --out (e.g. from --shard jobs) into the table, "
        "plots and report, and name the planned runs that are missing",
    )
    p.set_defaults(func=_run_benchmark_command)


def _run_benchmark_command(args: argparse.Namespace) -> int:
    from agents.harness.pool import aggregate_benchmark, run_benchmark
    from agents.harness.report import ci, format_table

    # nothing is put on sys.path here: a package.module:attr spec's module is looked up in --import-path
    # (default: the current directory) after every installed package, and only while it is imported
    config = dataclass_from_args(BenchmarkConfig, args, defaults=cli_defaults(args.quick))
    if args.aggregate and config.shard is not None:
        raise ValueError("--aggregate reads every shard's runs: leave out --shard")
    config.validate()  # every spec and env id, before anything runs
    n_runs = len(config.envs) * len(config.algos) * config.seeds

    def say(line: str) -> None:
        print(line, flush=True)

    if args.aggregate:
        result = aggregate_benchmark(config, progress=say)
    else:
        print(
            f"benchmark: {len(config.algos)} algorithms × {len(config.envs)} envs × {config.seeds} seeds = "
            f"{n_runs} runs, {config.budget} tokens each, "
            + (f"{config.workers} worker(s)" if config.executor == "process" else "on Ray")
            + f" → {config.out}",
            flush=True,
        )
        result = run_benchmark(config, progress=say)
    print()
    print(format_table(result.summary))
    print()
    agg = result.summary["aggregate"].get("success", {})
    if agg and result.wrote_outputs:
        print("IQM final success over the suite: " + ", ".join(f"{a} {ci(v['iqm'])}" for a, v in agg.items()))
    if result.wrote_outputs:
        print(f"wall time {result.wall_seconds:.0f} s; report: {result.report_path}")
    else:
        print(
            f"shard {config.shard}: {len(result.runs)} run(s) in {Path(config.out) / 'runs'}; when every "
            f"shard has finished: {benchmark_command(dataclasses.replace(config, shard=None))} --aggregate"
        )
    code = 0
    if result.failed:
        print(
            f"{len(result.failed)} run(s) failed (see the report); rerun the same command to retry them",
            file=sys.stderr,
        )
        code = 1
    if args.aggregate and result.missing:
        print(
            f"{len(result.missing)} of {n_runs} planned run(s) have no result: {', '.join(result.missing)}",
            file=sys.stderr,
        )
        code = 1
    return code
