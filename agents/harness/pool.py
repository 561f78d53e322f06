"""Executing a benchmark's plan: resume from ``<out>/runs``, run what is missing, then summarize and write the
outputs; or, after sharded runs, only aggregate what is there.

Executors
    - ``process`` (default): this process (``workers=1``) or a pool of ``workers`` processes; supervised
      warm starts run first and the runs that share one wait for it.
    - ``ray``: one Ray task per run (``num_cpus=1``; a run on a GPU also reserves ``gpus_per_run`` of one).
      The driver collects the results and writes every file itself, so the nodes need no shared
      filesystem (each caches its own warm starts). A task lost with its worker or node is resubmitted up to
      ``max_retries`` times (Ray's own retry of system failures); one that is still lost, or that raised,
      is reported as failed, never dropped. ``ray.init()`` is called unless Ray is already initialised:
      it joins the cluster at ``RAY_ADDRESS`` if that is set, else starts a local one with ``workers``
      CPUs. Every node needs text-env installed, and a user's ``package.module:attr`` importable at the
      same ``import_path``.

Shards
    ``shard="I/N"`` runs only slice I of N of the plan (:func:`agents.harness.config.shard_runs`), writes
    each finished run's file, and writes no summary (N shards would race on it);
    :func:`aggregate_benchmark` then reads every run file in ``out`` and writes the summary, tables, plots
    and report, naming the planned runs that are missing. Results never depend on where a run ran.

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
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.harness.config import BenchmarkConfig, RunSpec, parse_shard, plan_runs, shard_runs
from agents.harness.runners import RunFailure, RunResult, execute_run, load_finished, sft_job, write_run
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
    missing: list[str] = field(default_factory=list)
    """Planned runs with no result (:func:`aggregate_benchmark`; other shards' runs in a shard)."""
    wrote_outputs: bool = True
    """Whether the summary files were written (not by a shard: :func:`aggregate_benchmark` writes them)."""

    @property
    def report_path(self) -> Path:
        return self.out / "report.md"


def run_benchmark(config: BenchmarkConfig, progress: Callable[[str], None] | None = None) -> BenchmarkResult:
    """Validate, run every missing (env, algorithm, seed) of the plan (or of its ``shard``), summarize, and
    write the outputs under ``out`` (a shard writes only its run files).

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
    plan = plan_runs(config, specs)
    runs = plan if config.shard is None else shard_runs(plan, parse_shard(config.shard))
    if config.shard is not None:
        say(f"shard {config.shard}: {len(runs)} of the plan's {len(plan)} runs")
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
        missing=[r.name for r in plan if r not in runs],
        wrote_outputs=config.shard is None,
    )
    if config.shard is None:
        write_outputs(result)
    return result


def aggregate_benchmark(
    config: BenchmarkConfig, progress: Callable[[str], None] | None = None
) -> BenchmarkResult:
    """Summarize the run files already in ``out`` (e.g. written by shards) without running anything, and
    write the summary, tables, plots and report; ``missing`` names the planned runs with no result.

    Example:
        >>> result = aggregate_benchmark(dataclasses.replace(cfg, shard=None))  # doctest: +SKIP
        >>> result.missing                                                       # doctest: +SKIP
        []
    """
    from agents.harness.report import write_outputs
    from agents.harness.summary import summarize

    say = progress or logger.info
    specs = config.validate()
    out = Path(config.out)
    plan = plan_runs(config, specs)
    done = {r.name: saved for r in plan if (saved := load_finished(out, r)) is not None}
    missing = [r.name for r in plan if r.name not in done]
    say(f"aggregate: {len(done)} of {len(plan)} planned runs found under {out / 'runs'}")
    finished = [done[r.name] for r in plan if r.name in done]
    result = BenchmarkResult(
        config=config,
        runs=finished,
        executed=[],
        skipped=list(done),
        failed=[],
        summary=summarize(finished, list(config.envs), list(config.algos), reps=config.reps),
        wall_seconds=0.0,
        sft_seconds=0.0,
        out=out,
        missing=missing,
    )
    write_outputs(result)
    return result


def _one_torch_thread() -> None:
    """One torch thread per worker: the workers already fill the cores."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def _init_worker(sys_path: list[str]) -> None:
    """One torch thread per worker, and the parent's import path.

    The parent's path holds nothing the harness added (a user's ``import_path`` is appended only while a
    spec is imported, in whichever process imports it), so this only carries over what the parent itself
    was started with, e.g. a test's or a notebook's own ``sys.path`` entries.
    """
    _one_torch_thread()
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
    """Run the pending runs with ``config.executor``; returns the finished runs, the failed ones, and the
    seconds spent in supervised warm starts."""
    total = len(pending)
    new: list[RunResult] = []
    failed: list[RunFailure] = []

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

    # absolute, so that a worker started elsewhere looks in the same places
    import_path = [os.path.abspath(p) for p in config.import_path]
    if config.executor == "ray" and pending:
        sft_seconds = _execute_ray(pending, config, out, import_path, report)
    else:
        sft_seconds = _execute_processes(pending, specs, config, out, import_path, report)
    return new, failed, sft_seconds


def _execute_processes(
    pending: list[RunSpec],
    specs: dict[str, AlgoSpec],
    config: BenchmarkConfig,
    out: Path,
    import_path: list[str],
    report: Callable[[RunResult | RunFailure], None],
) -> float:
    """In this process or over ``config.workers`` processes, supervised warm starts first."""
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
    sft_seconds = 0.0
    sft_of = {k: v[0].settings["sft"] for k, v in sft_jobs.items()}
    if config.workers == 1 or total <= 1:
        for (env_id, seed), waiting in sft_jobs.items():
            sft_seconds += sft_job(env_id, config.env_kwargs, seed, sft_of[env_id, seed])["seconds"]
            for r in waiting:
                report(execute_run(r, str(out), import_path))
        for r in free:
            report(execute_run(r, str(out), import_path))
        return sft_seconds

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
    return sft_seconds


# ---------------------------------------------------------------------------------------------------------
# Ray


def _run_remotely(run: RunSpec, import_path: list[str], cwd: str) -> tuple[str, dict[str, Any]]:
    """One run as a Ray task: nothing is written on the node; the driver gets the result as JSON data.

    The task works in the driver's working directory where the node has it (relative paths in
    ``env_kwargs`` then mean what they mean to the driver, as in a process pool); imports are unaffected,
    since only absolute directories are on ``sys.path``.
    """
    _one_torch_thread()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    res = execute_run(run, None, import_path)
    return res.status, res.to_dict()


def _wants_gpu(run: RunSpec) -> bool:
    device = {**run.settings.get("ours_kwargs", {}), **run.settings["algo_kwargs"]}.get("device", "cpu")
    return not str(device).startswith("cpu")


def _execute_ray(
    pending: list[RunSpec],
    config: BenchmarkConfig,
    out: Path,
    import_path: list[str],
    report: Callable[[RunResult | RunFailure], None],
) -> float:
    import ray
    from ray.exceptions import RayError

    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS")
        # Ray puts the driver's working directory first on its workers' sys.path (and makes it theirs):
        # start it from an empty directory of ours, so that no file in the user's working directory can
        # shadow a module there (issue 13); each task then changes to the real one (_run_remotely)
        neutral = out / ".ray-driver"
        neutral.mkdir(parents=True, exist_ok=True)
        with _chdir(neutral):
            ray.init(
                address=address,
                num_cpus=None if address else config.workers,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
    try:
        remote = ray.remote(_run_remotely)
        refs = {}
        for r in pending:
            task = remote.options(
                name=r.name,
                num_cpus=1,
                num_gpus=config.gpus_per_run if _wants_gpu(r) else 0,
                max_retries=config.max_retries,  # system failures: a worker or node lost
                retry_exceptions=False,  # a run that raised would raise again
            )
            refs[task.remote(r, import_path, os.getcwd())] = r
        sft_seconds = 0.0
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                r = refs.pop(ref)
                try:
                    status, data = ray.get(ref)
                except RayError as e:  # still lost after max_retries resubmissions, or failed in Ray
                    error = f"{type(e).__name__} after up to {config.max_retries} retries: {e}"
                    report(RunFailure(r.name, r.env_id, r.algo, r.seed, r.budget, error=error.strip()))
                    continue
                if status != "done":
                    report(
                        RunFailure(
                            r.name, r.env_id, r.algo, r.seed, r.budget, error=data["error"],
                            traceback=data.get("traceback", ""),
                        )
                    )  # fmt: skip
                    continue
                result = RunResult.from_dict(data, source=f"the Ray task of {r.name}")
                write_run(out, r, result)
                sft_seconds += (result.sft or {}).get("seconds", 0.0)
                report(result)
        return sft_seconds
    finally:
        if started_here:
            ray.shutdown()


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:  # contextlib.chdir, which Python 3.10 lacks
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
