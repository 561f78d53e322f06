"""The benchmark harness: algorithms × envs × seeds at an equal budget of env steps → statistics, plots.

What one run is
    One algorithm trains on one env with one seed for at most ``budget`` env steps (generated tokens, EOS
    included: the unit of every budget in text-env). Every ``eval_every`` steps, and at 0 and at the end, the
    current policy answers the first ``n_eval`` prompts of the env's held-out **test** split greedily; the
    mean reward and success rate at each point form the run's learning curve, and the last point is its final
    score. A finished run is written atomically to ``<out>/runs/<env>__<algo>__<seed>.json``; a restarted
    benchmark with the same settings skips it (resume).

Algorithm specs
    - ``ours:<name>`` — a built-in agent (``ppo``, ``rloo``, ``reinforce``, ``a2c``) warm-started by
      supervised fine-tuning (:func:`agents.sft.sft`) for a small fixed number of steps (``sft_steps``,
      default 100 steps × 64 demonstrations, learning rate 1e-3, 10 warmup steps). The demonstration tokens
      are reported separately and are **not** counted in the RL budget; SB3 gets no demonstrations, so this
      is not an equal-information comparison.
    - ``ours:<name>-scratch`` — the same agent from a randomly initialised policy: the comparison at equal
      information.
    - ``sb3:<Class>`` / ``sb3_contrib:<Class>`` — a stable-baselines3 / sb3-contrib algorithm built by
      :func:`agents.sb3.make_sb3` with SB3's default hyperparameters (off-policy replay buffers are sized to
      the budget, which never evicts anything and so changes nothing). SB3 steps its single env through its
      own ``DummyVecEnv``, one token per call; a callback stops it at exactly the budget and evaluates it.
    - ``package.module:attr`` — the user's own algorithm, imported with importlib (never ``eval``):

      * a **class** with the learn/predict shape: ``attr(env, seed=seed)`` gets a Gymnasium env (the train
        split, wrapped to count steps), then ``.learn(total_timesteps=budget)`` and ``.predict(obs,
        deterministic=True)`` (SB3's ``state``/``episode_start``/``action_masks`` are passed when accepted).
        The wrapper evaluates on schedule and raises :class:`BudgetExhausted` out of ``learn`` if the
        algorithm steps past the budget (the harness catches it: training is over);
      * a **function** ``attr(env_id, budget, seed) -> object with predict`` (plus ``env_kwargs=`` if it
        accepts it). The harness cannot see its steps, so its curve has the final point only.

Every spec and env id is validated (imported, resolved, built once) before any run starts.

Modules
    :mod:`~agents.harness.specs` (spec parsing and resolution, env validation), :mod:`~agents.harness.config`
    (:class:`BenchmarkConfig`, the default suite, the run plan), :mod:`~agents.harness.runners` (one run:
    ours / SB3 / external, the evaluation schedule, :class:`RunResult`), :mod:`~agents.harness.pool`
    (executing the plan across processes), :mod:`~agents.harness.summary` (statistics),
    :mod:`~agents.harness.report` (tables, plots, report, output files), :mod:`~agents.harness.cli`
    (``text-env benchmark``, generated from :class:`BenchmarkConfig` by
    :func:`agents.config.add_dataclass_arguments`).

Example:
    >>> cfg = BenchmarkConfig(envs=["TextEnv/Copy-L4-v0"], algos=["ours:rloo", "sb3:PPO"], seeds=3,
    ...                       budget=10_240, out="results/benchmark")  # doctest: +SKIP
    >>> result = run_benchmark(cfg)                                      # doctest: +SKIP
    >>> print(format_table(result.summary))                              # doctest: +SKIP
"""

from agents.config import add_dataclass_arguments, dataclass_from_args, dataclass_to_argv
from agents.harness.cli import add_benchmark_command, benchmark_command
from agents.harness.config import (
    DEFAULT_ALGOS,
    DEFAULT_BUDGET,
    DEFAULT_ENVS,
    DEFAULT_EVAL_EPISODES,
    DEFAULT_EVAL_EVERY,
    DEFAULT_OUT,
    DEFAULT_SEEDS,
    DEFAULT_SFT_STEPS,
    FORMAT_VERSION,
    OURS_KWARGS,
    QUICK,
    SFT_KWARGS,
    BenchmarkConfig,
    RunSpec,
    parse_shard,
    plan_runs,
    shard_runs,
)
from agents.harness.pool import BenchmarkResult, aggregate_benchmark, execute_plan, run_benchmark
from agents.harness.report import (
    format_poi,
    format_table,
    machine_info,
    plot_results,
    render_report,
    write_outputs,
)
from agents.harness.runners import (
    BudgetExhausted,
    EvalSchedule,
    RunFailure,
    RunResult,
    evaluate_predictor,
    execute_run,
    load_finished,
)
from agents.harness.specs import AlgoSpec, parse_algo_spec, resolve_external, slugify, validate_env
from agents.harness.summary import summarize

__all__ = [
    "DEFAULT_ALGOS",
    "DEFAULT_BUDGET",
    "DEFAULT_ENVS",
    "DEFAULT_EVAL_EPISODES",
    "DEFAULT_EVAL_EVERY",
    "DEFAULT_OUT",
    "DEFAULT_SEEDS",
    "DEFAULT_SFT_STEPS",
    "FORMAT_VERSION",
    "OURS_KWARGS",
    "QUICK",
    "SFT_KWARGS",
    "AlgoSpec",
    "BenchmarkConfig",
    "BenchmarkResult",
    "BudgetExhausted",
    "EvalSchedule",
    "RunFailure",
    "RunResult",
    "RunSpec",
    "add_benchmark_command",
    "add_dataclass_arguments",
    "aggregate_benchmark",
    "benchmark_command",
    "dataclass_from_args",
    "dataclass_to_argv",
    "evaluate_predictor",
    "execute_plan",
    "execute_run",
    "format_poi",
    "format_table",
    "load_finished",
    "machine_info",
    "parse_algo_spec",
    "parse_shard",
    "plan_runs",
    "plot_results",
    "render_report",
    "resolve_external",
    "run_benchmark",
    "shard_runs",
    "slugify",
    "summarize",
    "validate_env",
    "write_outputs",
]
