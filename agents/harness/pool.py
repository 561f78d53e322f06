"""Executing a benchmark's plan: resume from ``<out>/runs``, run what is missing (in this process or over a
pool of worker processes, supervised warm starts first), then summarize and write the outputs.

Example:
    >>> cfg = BenchmarkConfig(envs=["TextEnv/Copy-L4-v0"], algos=["ours:rloo", "sb3:PPO"], seeds=3,
    ...                       budget=10_240, out="results/benchmark")  # doctest: +SKIP
    >>> result = run_benchmark(cfg)                                      # doctest: +SKIP
    >>> print(format_table(result.summary))                              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.harness.config import BenchmarkConfig, RunSpec, plan_runs
from agents.harness.runners import RunFailure, RunResult, execute_run, load_finished, sft_job
from agents.harness.specs import AlgoSpec

logger = logging.getLogger(__name__)

# rough cost of one env step per kind, to start the slowest runs first (better packing across workers)
_COST = {"sb3": 4.0, "external": 2.0, "ours:ppo": 1.5, "ours": 0.5}


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` did and found."""

    config: BenchmarkConfig
    """The benchmark."""
    runs: list[RunResult]
    """Every finished run of this benchmark (loaded or new), in plan order."""
    executed: list[str]
    """Names of the runs executed now (not resumed)."""
    skipped: list[str]
    """Names of the runs found finished on disk and skipped."""
    failed: list[RunFailure]
    """Runs that raised (their error and traceback); they are retried on the next start."""
    summary: dict[str, Any]
    """:func:`agents.harness.summary.summarize` of ``runs``."""
    wall_seconds: float
    """Wall time of this invocation."""
    sft_seconds: float
    """Seconds spent in supervised warm starts (cache misses), summed over processes."""
    out: Path
    """The output directory."""

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"


def run_benchmark(config: BenchmarkConfig, progress: Callable[[str], None] | None = None) -> BenchmarkResult:
    """Validate, run every missing (env, algorithm, seed), aggregate, and write the outputs under ``out``.

    Args:
        config: The benchmark.
        progress: Called with one line per finished run (the CLI prints them); defaults to ``logger.info``.

    Raises:
        ValueError: a bad spec, env id or setting, before any run starts.
    """
    from agents.harness.report import write_outputs
    from agents.harness.summary import summarize

    say = progress or logger.info
    specs = config.validate()
    out = Path(config.out)
    runs = plan_runs(config, specs)
    done: dict[str, RunResult] = {}
    for run in runs:
        saved = load_finished(out, run)
        if saved is not None:
            done[run.name] = saved
    pending = [r for r in runs if r.name not in done]
    skipped = list(done)
    if skipped:
        say(f"resuming: {len(skipped)} of {len(runs)} runs already finished under {out / 'runs'}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kinds = {s.spec: s for s in specs}
    new, failed, sft_seconds = execute_plan(pending, kinds, config, out, say)
    done.update({r.name: r for r in new})
    wall = time.perf_counter() - t0
    finished = [done[r.name] for r in runs if r.name in done]
    summary = summarize(finished, list(config.envs), list(config.algos), reps=config.reps)
    result = BenchmarkResult(
        config=config,
        runs=finished,
        executed=[r.name for r in new],
        skipped=skipped,
        failed=failed,
        summary=summary,
        wall_seconds=wall,
        sft_seconds=sft_seconds,
        out=out,
    )
    write_outputs(result)
    return result


def _init_worker(sys_path: list[str]) -> None:
    """One torch thread per worker (the workers already fill the cores) and the parent's import path.

    The parent's path holds nothing the harness added (a user's ``import_path`` is appended only while a
    spec is imported, in whichever process imports it), so this only carries over what the parent itself
    was started with, e.g. a test's or a notebook's own ``sys.path`` entries.
    """
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)


def execute_plan(
    pending: list[RunSpec],
    specs: dict[str, AlgoSpec],
    config: BenchmarkConfig,
    out: Path,
    say: Callable[[str], None],
) -> tuple[list[RunResult], list[RunFailure], float]:
    """Run the pending runs (SFT warm starts first), in this process or over ``config.workers`` processes.

    Returns the finished runs, the failed ones, and the seconds spent in supervised warm starts.
    """
    # one SFT job per (env, seed) that a pending ours:<name> run needs; its runs wait for it
    sft_jobs: dict[tuple[str, int], list[RunSpec]] = {}
    free: list[RunSpec] = []
    for r in pending:
        s = specs[r.algo]
        if s.kind == "ours" and not s.scratch:
            sft_jobs.setdefault((r.env_id, r.seed), []).append(r)
        else:
            free.append(r)
    free.sort(key=lambda r: -_COST.get(specs[r.algo].kind, 1.0))  # slowest first: better packing
    total = len(pending)
    new: list[RunResult] = []
    failed: list[RunFailure] = []
    sft_seconds = 0.0

    def report(res: RunResult | RunFailure) -> None:
        n = len(new) + len(failed) + 1
        if isinstance(res, RunResult):
            new.append(res)
            f = res.final
            say(
                f"[{n}/{total}] {res.env} {res.algo} seed {res.seed}: "
                f"success {f['success_rate']:.3f} return {f['mean_return']:.3f} "
                f"({'unknown' if res.steps is None else res.steps} tokens, {res.wall_seconds:.1f}s)"
            )
        else:
            failed.append(res)
            say(f"[{n}/{total}] {res.env} {res.algo} seed {res.seed}: FAILED {res.error}")

    sft_of = {k: v[0].settings["sft"] for k, v in sft_jobs.items()}
    # absolute, so that a worker started elsewhere looks in the same places
    import_path = [os.path.abspath(p) for p in config.import_path]
    if config.workers == 1 or total <= 1:
        for (env_id, seed), waiting in sft_jobs.items():
            sft_seconds += sft_job(env_id, config.env_kwargs, seed, sft_of[env_id, seed])["seconds"]
            for r in waiting:
                report(execute_run(r, str(out), import_path))
        for r in free:
            report(execute_run(r, str(out), import_path))
        return new, failed, sft_seconds

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["agents.harness.runners", "agents.sb3", "agents"])  # torch/SB3 once
    workers = min(config.workers, total + len(sft_jobs))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(list(sys.path),)
    ) as pool:
        futures: dict[Future, Any] = {}
        for key in sft_jobs:  # the warm starts first: the runs that wait on them are queued behind
            futures[pool.submit(sft_job, key[0], config.env_kwargs, key[1], sft_of[key])] = key
        for r in free:
            futures[pool.submit(execute_run, r, str(out), import_path)] = r
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = futures.pop(fut)
                    if isinstance(item, tuple):  # an SFT job
                        try:
                            sft_seconds += fut.result()["seconds"]
                        except Exception as e:  # its runs would fail the same way: report them
                            for r in sft_jobs[item]:
                                report(
                                    RunFailure(
                                        r.name, r.env_id, r.algo, r.seed, r.budget,
                                        error=f"SFT warm start failed: {e}",
                                    )
                                )  # fmt: skip
                            continue
                        for r in sft_jobs[item]:
                            futures[pool.submit(execute_run, r, str(out), import_path)] = r
                    else:
                        report(fut.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return new, failed, sft_seconds
