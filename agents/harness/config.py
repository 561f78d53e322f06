"""What a benchmark is: :class:`BenchmarkConfig` (the CLI is generated from its fields), the embedded
default suite, and the plan of (env, algorithm, seed) runs it expands to.

Example:
    >>> cfg = BenchmarkConfig(envs=["TextEnv/Copy-L4-v0"], algos=["ours:rloo"], seeds=2, budget=1024)
    >>> cfg.eval_interval
    1024
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agents.harness.specs import AlgoSpec

# 2: SB3 gets the update of its last full rollout, a function algorithm's steps are unknown (None), and
# every run records its update count: results of version 1 are rerun, not mixed in.
FORMAT_VERSION = 2

# The embedded default: three synthetic envs with dense partial credit (the -Dense ids: a reward for each
# token right where it stands and for the right length, text_env.rewards.dense), our two best agents against
# SB3's PPO and A2C, three seeds. Sparse exact match at this budget is all zeros for every learner from
# scratch (SB3 never found a whole answer), so a table of it told nothing apart; per-token credit gives SB3 a
# signal it can climb, and 8-letter strings (rather than 4) leave our warm-started agents headroom
# (≈0.65-0.75 return after the warm start instead of 0.99). The budget is sized so that the whole suite takes
# ≤ 5 minutes on 2 CPU cores at load 1 (measured; see the README), and is a multiple of SB3 PPO's default
# rollout (2048 steps) so that no partial rollout is wasted. `python -m agents.harness.check results.csv`
# checks that the table discriminates (issue 16, item 3).
DEFAULT_ENVS = ("TextEnv/Reverse-Dense-v0", "TextEnv/Arithmetic-Dense-v0", "TextEnv/Copy-Dense-v0")
DEFAULT_ALGOS = ("ours:ppo", "ours:rloo", "sb3:PPO", "sb3:A2C")
DEFAULT_SEEDS = 3
DEFAULT_BUDGET = 8192
DEFAULT_EVAL_EVERY = 1024
DEFAULT_EVAL_EPISODES = 100
DEFAULT_SFT_STEPS = 100
DEFAULT_OUT = "results/benchmark"

# --quick: a ~1 minute smoke version of the same suite (two envs, two seeds, one SB3 PPO rollout).
QUICK = {
    "envs": ("TextEnv/Arithmetic-D1-Dense-v0", "TextEnv/Copy-L4-Dense-v0"),
    "algos": DEFAULT_ALGOS,
    "seeds": 2,
    "budget": 2048,
    "eval_every": 512,
    "n_eval": 50,
    "sft_steps": 30,
}

# Our agents' settings in the benchmark, beyond their own defaults: 32 episodes per iteration (instead of
# 64) so that a budget of a few thousand tokens still gives dozens of updates; each algorithm keeps its own
# default learning rate (1e-4 for PPO and RLOO). Everything runs on the CPU, SB3 included.
OURS_KWARGS: dict[str, Any] = {"n_envs": 32, "device": "cpu"}
# SB3's settings in the benchmark, beyond its own defaults: the token-embedding extractor with its cheapest
# honest encoder, "flatten" (the window's embeddings concatenated, order-aware; 1.4x (A2C) to 2x (PPO) faster
# than the one-block transformer, python -m benchmarks.sb3_extractor; it learned as much in 1-2 seed probes),
# in front of SB3's MlpPolicy heads. An --algo-kwargs '{"sb3:PPO": {"policy_kwargs": {...}}}' entry overrides
# it key by key (e.g. {"encoder": "transformer"}).
SB3_POLICY_KWARGS: dict[str, Any] = {"encoder": "flatten"}
# The supervised warm start of ``ours:<name>``: a small fixed budget (agents.sft.sft's batch size, 64).
SFT_KWARGS: dict[str, Any] = {"batch_size": 64, "learning_rate": 1e-3, "warmup": 10, "device": "cpu"}


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark; ``text-env benchmark`` has one flag per field.

    Example:
        >>> BenchmarkConfig(algos=["ours:ppo", "sb3:PPO"], seeds=5).seeds
        5
    """

    envs: Sequence[str] = field(default=DEFAULT_ENVS, metadata={"metavar": "ID"})
    """Env ids; every algorithm trains on each of them."""
    algos: Sequence[str] = field(default=DEFAULT_ALGOS, metadata={"metavar": "SPEC"})
    """Algorithm specs: ours:<name>[-scratch], sb3:<Class>, sb3_contrib:<Class> or package.module:attr."""
    seeds: int = DEFAULT_SEEDS
    """Seeds per env and algorithm: 0 .. seeds-1."""
    budget: int = DEFAULT_BUDGET
    """Env steps (generated tokens) per run, the same for every algorithm."""
    eval_every: int | None = DEFAULT_EVAL_EVERY
    """Evaluate every this many env steps (none: budget / 8)."""
    n_eval: int = field(default=DEFAULT_EVAL_EPISODES, metadata={"flag": "eval-episodes"})
    """Held-out test prompts per evaluation (the first ones of the test split; fewer if it is smaller)."""
    workers: int = 1
    """Worker processes (1: run in this process)."""
    out: str | os.PathLike = field(default=DEFAULT_OUT, metadata={"metavar": "DIR"})
    """Output directory (runs/, results.csv/json, report.md, plots)."""
    sft_steps: int = DEFAULT_SFT_STEPS
    """Supervised warm-start steps for ours:<name> (not for ours:<name>-scratch)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON kwargs for every env, e.g. {"task": "prompts.jsonl"} for TextEnv/Custom-v0."""
    algo_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """JSON extra constructor kwargs per spec, e.g. {"sb3:PPO": {"n_steps": 512}}."""
    reps: int = 2000
    """Bootstrap replicates for the confidence intervals."""
    import_path: Sequence[str] = field(default=(".",), metadata={"nargs": "*", "metavar": "DIR"})
    """Where a package.module:attr spec's module may also be found: searched after every installed package."""
    shard: str | None = field(default=None, metadata={"metavar": "I/N"})
    """Run only slice I of N (0 ≤ I < N) of the run plan, e.g. a Slurm array task; then aggregate."""
    executor: Literal["process", "ray"] = "process"
    """Where runs execute: process (here, or a pool of `workers` processes) or ray (a Ray task per run)."""
    max_retries: int = 3
    """Ray: times a run lost with its worker or node is resubmitted before it is reported as failed."""
    gpus_per_run: float = 0.25
    """Ray: the fraction of a GPU each task of a run on a GPU reserves (runs on the CPU reserve none)."""
    command: str | None = field(default=None, metadata={"cli": False})
    """The command line that reproduces this benchmark (for the report); generated from the fields if None."""

    def validate(self) -> list[AlgoSpec]:
        """Check every field, spec and env id; returns the parsed specs. Raises before any run starts."""
        from agents.harness.specs import parse_algo_spec, validate_env

        for name in ("seeds", "budget", "n_eval", "workers", "reps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ValueError(f"eval_every must be a positive int or None, got {self.eval_every!r}")
        if isinstance(self.sft_steps, bool) or not isinstance(self.sft_steps, int) or self.sft_steps < 0:
            raise ValueError(f"sft_steps must be an int ≥ 0, got {self.sft_steps!r}")
        for name in ("envs", "algos"):
            items = getattr(self, name)
            if isinstance(items, str) or not items:
                raise ValueError(f"{name} must be a non-empty list, got {items!r}")
            if len(set(items)) != len(items):
                raise ValueError(f"{name} has duplicates: {list(items)}")
        if isinstance(self.import_path, str) or not all(isinstance(p, str) for p in self.import_path):
            raise ValueError(f"import_path must be a list of directories, got {self.import_path!r}")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.executor not in ("process", "ray"):
            raise ValueError(f"executor must be 'process' or 'ray', got {self.executor!r}")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("executor 'ray' needs the ray package: pip install 'text-env[ray]'")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an int ≥ 0, got {self.max_retries!r}")
        if isinstance(self.gpus_per_run, bool) or not 0 < self.gpus_per_run <= 1:
            raise ValueError(f"gpus_per_run must be in (0, 1], got {self.gpus_per_run!r}")
        if not isinstance(self.env_kwargs, dict):
            raise TypeError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        unknown = set(self.algo_kwargs) - set(self.algos)
        if unknown:
            raise ValueError(f"algo_kwargs names specs that are not benchmarked: {sorted(unknown)}")
        specs = [parse_algo_spec(a, self.import_path) for a in self.algos]
        for env_id in self.envs:
            validate_env(env_id, self.env_kwargs)
        return specs

    @property
    def eval_interval(self) -> int:
        """The evaluation interval in env steps (``eval_every``, or budget / 8 when it is None)."""
        return self.eval_every if self.eval_every is not None else max(1, self.budget // 8)


@dataclass(frozen=True)
class RunSpec:
    """One (env, algorithm, seed) run and every setting that changes its result (its resume key)."""

    env_id: str
    algo: str
    seed: int
    budget: int
    eval_every: int
    n_eval: int
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        from agents.harness.specs import slugify

        return f"{slugify(self.env_id)}__{slugify(self.algo)}__{self.seed}"

    def key(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}


def plan_runs(config: BenchmarkConfig, specs: Sequence[AlgoSpec]) -> list[RunSpec]:
    """Every (env, algorithm, seed) of the benchmark, with its settings, in a fixed order."""
    runs = []
    for env_id in config.envs:
        for spec in specs:
            settings: dict[str, Any] = {
                "env_kwargs": dict(config.env_kwargs),
                "algo_kwargs": dict(config.algo_kwargs.get(spec.spec, {})),
            }
            if spec.kind == "sb3":
                settings["sb3_policy_kwargs"] = dict(SB3_POLICY_KWARGS)
            if spec.kind == "ours":
                settings["ours_kwargs"] = dict(OURS_KWARGS)
                if not spec.scratch:
                    settings["sft"] = {"steps": config.sft_steps, **SFT_KWARGS}
            for seed in range(config.seeds):
                runs.append(
                    RunSpec(
                        env_id, spec.spec, seed, config.budget, config.eval_interval, config.n_eval, settings
                    )
                )
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 ≤ I < N``; anything else raises ``ValueError`` naming it.

    Example:
        >>> parse_shard("3/8")
        (3, 8)
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text) if isinstance(text, str) else None
    if m is None or not int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"shard must be 'I/N' with 0 ≤ I < N (e.g. '0/4'), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_runs(runs: Sequence[RunSpec], shard: tuple[int, int]) -> list[RunSpec]:
    """Slice ``I`` of ``N`` of the plan: deterministic, disjoint, and together the whole plan.

    The plan is cut into units in plan order — the ``ours:<name>`` runs of one (env, seed) that share a
    supervised warm start form one unit (so that a shard trains it once), every other run is a unit of its
    own — and each unit in turn goes to the slice with the fewest runs so far (the lowest index on a tie):
    the slices differ by at most one unit, and each gets a mix of envs and algorithms.

    Example:
        >>> from agents.harness.specs import AlgoSpec
        >>> spec = AlgoSpec("my_algo:make", "external", "my_algo:make")
        >>> plan = plan_runs(BenchmarkConfig(envs=["TextEnv/Copy-L4-v0"], seeds=4), [spec])
        >>> [r.seed for r in shard_runs(plan, (1, 2))]
        [1, 3]
    """
    i, n = shard
    units: dict[Any, list[RunSpec]] = {}
    for r in runs:
        key = (
            (r.env_id, r.seed, json.dumps(r.settings["sft"], sort_keys=True))
            if "sft" in r.settings
            else r.name
        )
        units.setdefault(key, []).append(r)
    slices: list[list[RunSpec]] = [[] for _ in range(n)]
    for unit in units.values():
        min(slices, key=len).extend(unit)  # min() takes the first of equals: deterministic
    return slices[i]


def jsonable(x: Any) -> Any:
    """``x`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(x))
