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

Example:
    >>> cfg = BenchmarkConfig(envs=["TextEnv/Copy-L4-v0"], algos=["ours:rloo", "sb3:PPO"], seeds=3,
    ...                       budget=10_240, out="results/benchmark")  # doctest: +SKIP
    >>> result = run_benchmark(cfg)                                      # doctest: +SKIP
    >>> print(format_table(result.summary))                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib
import inspect
import io
import json
import logging
import multiprocessing
import os
import platform
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents import stats
from text_env.io import atomic_write_bytes, atomic_write_json, read_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

# The embedded default: three fast synthetic envs, our two best agents against SB3's PPO and A2C, three
# seeds. The budget is sized so that the whole suite takes ≤ 10 minutes on 2 CPU cores (measured; see the
# README), and is a multiple of SB3 PPO's default rollout (2048 steps) so that no partial rollout is wasted.
# 2-digit arithmetic rather than 1-digit: the 1-digit task has only 10 test prompts, too few to compare on.
DEFAULT_ENVS = ("TextEnv/Reverse-L4-v0", "TextEnv/Arithmetic-v0", "TextEnv/Copy-L4-v0")
DEFAULT_ALGOS = ("ours:ppo", "ours:rloo", "sb3:PPO", "sb3:A2C")
DEFAULT_SEEDS = 3
DEFAULT_BUDGET = 8192
DEFAULT_EVAL_EVERY = 1024
DEFAULT_EVAL_EPISODES = 100
DEFAULT_SFT_STEPS = 100
DEFAULT_OUT = "results/benchmark"

# --quick: a ~1 minute smoke version of the same suite (two envs, two seeds, one SB3 PPO rollout).
QUICK = {
    "envs": ("TextEnv/Arithmetic-D1-v0", "TextEnv/Copy-L4-v0"),
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
# The supervised warm start of ``ours:<name>``: a small fixed budget (agents.sft.sft's batch size, 64).
SFT_KWARGS: dict[str, Any] = {"batch_size": 64, "learning_rate": 1e-3, "warmup": 10, "device": "cpu"}

# rough cost of one env step per kind, to start the slowest runs first (better packing across workers)
_COST = {"sb3": 4.0, "external": 2.0, "ours:ppo": 1.5, "ours": 0.5}

_SPEC_HELP = "expected ours:<name>[-scratch], sb3:<Class>, sb3_contrib:<Class> or package.module:attr"
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class BudgetExhausted(RuntimeError):
    """Raised by the step-counting wrapper when an external algorithm steps past its budget."""


# ---------------------------------------------------------------------------------------------------------
# Algorithm specs


@dataclass(frozen=True)
class AlgoSpec:
    """A parsed algorithm spec.

    Attributes:
        spec: The spec as given (``"ours:ppo"``, ``"sb3:PPO"``, ``"my_pkg.algo:Make"``).
        kind: ``"ours"``, ``"sb3"`` (SB3 and sb3-contrib) or ``"external"``.
        target: Our algorithm's name, the SB3 spec, or ``module:attr``.
        scratch: ``ours:<name>-scratch``: no supervised warm start.
    """

    spec: str
    kind: str
    target: str
    scratch: bool = False

    @property
    def slug(self) -> str:
        return slugify(self.spec)


def slugify(text: str) -> str:
    """A file-name-safe form of an env id or spec: ``"TextEnv/Copy-L4-v0"`` → ``"TextEnv-Copy-L4-v0"``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def parse_algo_spec(spec: str) -> AlgoSpec:
    """Parse and resolve one spec; raises ``ValueError`` naming the spec if it is not usable.

    Resolution imports what the spec names (the SB3 class, the user's module), so a typo fails here, before
    any run starts.

    Example:
        >>> parse_algo_spec("ours:rloo-scratch")
        AlgoSpec(spec='ours:rloo-scratch', kind='ours', target='rloo', scratch=True)
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"bad algorithm spec {spec!r}: {_SPEC_HELP}")
    prefix, _, name = spec.partition(":")
    if prefix == "ours":
        from agents import ALGORITHMS

        scratch = name.endswith("-scratch")
        base = name[: -len("-scratch")] if scratch else name
        if base not in ALGORITHMS:
            raise ValueError(
                f"bad algorithm spec {spec!r}: no built-in agent {base!r}; expected one of "
                f"{sorted(ALGORITHMS)} (optionally with -scratch)"
            )
        return AlgoSpec(spec, "ours", base, scratch)
    if prefix in ("sb3", "sb3_contrib"):
        from agents.sb3 import resolve_sb3_class

        try:
            resolve_sb3_class(spec)
        except (ValueError, ImportError) as e:
            raise ValueError(f"bad algorithm spec {spec!r}: {e}") from e
        return AlgoSpec(spec, "sb3", spec)
    resolve_external(spec)
    return AlgoSpec(spec, "external", spec)


def resolve_external(spec: str) -> Any:
    """Import ``package.module:attr`` (``attr`` may be dotted) and check it has a usable shape.

    Returns the class (with ``learn`` and ``predict``) or the function ``(env_id, budget, seed)``.
    """
    module_name, _, attr = spec.partition(":")
    if not _MODULE_RE.match(module_name) or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"bad algorithm spec {spec!r}: {_SPEC_HELP}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"bad algorithm spec {spec!r}: cannot import module {module_name!r} ({e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"bad algorithm spec {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        missing = [m for m in ("learn", "predict") if not callable(getattr(obj, m, None))]
        if missing:
            raise ValueError(
                f"bad algorithm spec {spec!r}: class {obj.__name__} lacks {missing}; an algorithm class "
                "needs learn(total_timesteps) and predict(obs, deterministic=)"
            )
        return obj
    if callable(obj):
        try:
            inspect.signature(obj).bind("TextEnv/Copy-L4-v0", 1, 0)
        except TypeError as e:
            raise ValueError(
                f"bad algorithm spec {spec!r}: a function algorithm must accept (env_id, budget, seed): {e}"
            ) from e
        except ValueError:  # builtins without a signature: trust them
            pass
        return obj
    raise ValueError(f"bad algorithm spec {spec!r}: {attr!r} is neither a class nor a function")


def validate_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """Build the env once (train split) to catch unknown ids and missing data before any run starts."""
    import text_env  # noqa: F401  (registers the TextEnv ids)

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"bad env id {env_id!r}: expected a registered id like 'TextEnv/Reverse-v0'")
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        known = ", ".join(sorted(i for i in gym.registry if i.startswith("TextEnv/")))
        raise ValueError(f"bad env id {env_id!r}: not registered ({e}); TextEnv ids: {known}") from e
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except ImportError as e:
        raise ValueError(f"env {env_id!r} cannot be built: {e}") from e
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ValueError(f"env {env_id!r} cannot be built with env_kwargs={env_kwargs!r}: {e}") from e
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(
                f"env {env_id!r} has action space {env.action_space}; the harness needs Discrete"
            )
        if not hasattr(env.unwrapped, "task"):
            raise ValueError(
                f"env {env_id!r} is not a text-env environment: the harness evaluates on a TextEnv task's "
                "held-out test split"
            )
        if len(env.unwrapped.task.encoded("test")) == 0:
            raise ValueError(f"env {env_id!r} has an empty test split: nothing to evaluate on")
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------------------
# Configuration and runs


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark (the CLI fills it from its flags)."""

    envs: Sequence[str] = DEFAULT_ENVS
    """Env ids."""
    algos: Sequence[str] = DEFAULT_ALGOS
    """Algorithm specs (see the module docstring)."""
    seeds: int = DEFAULT_SEEDS
    """Seeds per env and algorithm: 0 .. seeds-1."""
    budget: int = DEFAULT_BUDGET
    """Env steps (generated tokens) per run, the same for every algorithm."""
    eval_every: int | None = DEFAULT_EVAL_EVERY
    """Evaluate every this many env steps (None: budget / 8)."""
    n_eval: int = DEFAULT_EVAL_EPISODES
    """Held-out test prompts per evaluation (the first ones of the test split; fewer if it is smaller)."""
    workers: int = 1
    """Worker processes (1: run in this process)."""
    out: str | os.PathLike = DEFAULT_OUT
    """Output directory (runs/, results.csv/json, report.md, plots)."""
    sft_steps: int = DEFAULT_SFT_STEPS
    """Supervised warm-start steps for ``ours:<name>`` (not for ``-scratch``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to every env (e.g. ``{"task": "prompts.jsonl"}`` for ``TextEnv/Custom-v0``)."""
    algo_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per spec, extra constructor kwargs (``{"sb3:PPO": {"n_steps": 512}}``)."""
    reps: int = 2000
    """Bootstrap replicates for the confidence intervals."""
    command: str | None = None
    """The command line that reproduces this benchmark (for the report); built from the fields if None."""

    def validate(self) -> list[AlgoSpec]:
        """Check every field, spec and env id; returns the parsed specs. Raises before any run starts."""
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
        if not isinstance(self.env_kwargs, dict):
            raise TypeError(f"env_kwargs must be a dict, got {self.env_kwargs!r}")
        unknown = set(self.algo_kwargs) - set(self.algos)
        if unknown:
            raise ValueError(f"algo_kwargs names specs that are not benchmarked: {sorted(unknown)}")
        specs = [parse_algo_spec(a) for a in self.algos]
        for env_id in self.envs:
            validate_env(env_id, self.env_kwargs)
        return specs

    @property
    def eval_interval(self) -> int:
        return self.eval_every if self.eval_every is not None else max(1, self.budget // 8)

    def to_command(self) -> str:
        """A ``text-env benchmark`` command line that reproduces this configuration."""
        if self.command:
            return self.command
        parts = ["text-env", "benchmark", "--envs", *self.envs, "--algos", *self.algos]
        parts += [
            "--seeds",
            str(self.seeds),
            "--budget",
            str(self.budget),
            "--eval-every",
            str(self.eval_interval),
        ]
        parts += ["--eval-episodes", str(self.n_eval), "--sft-steps", str(self.sft_steps)]
        parts += ["--workers", str(self.workers), "--out", str(self.out)]
        if self.env_kwargs:
            parts += ["--env-kwargs", json.dumps(self.env_kwargs)]
        if self.algo_kwargs:
            parts += ["--algo-kwargs", json.dumps(self.algo_kwargs)]
        return shlex.join(parts)


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
        return f"{slugify(self.env_id)}__{slugify(self.algo)}__{self.seed}"

    def key(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}


def plan_runs(config: BenchmarkConfig, specs: Sequence[AlgoSpec]) -> list[RunSpec]:
    """Every (env, algorithm, seed) of the benchmark, with its settings."""
    runs = []
    for env_id in config.envs:
        for spec in specs:
            settings: dict[str, Any] = {
                "env_kwargs": dict(config.env_kwargs),
                "algo_kwargs": dict(config.algo_kwargs.get(spec.spec, {})),
            }
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


def _run_path(out: Path, run: RunSpec) -> Path:
    return out / "runs" / f"{run.name}.json"


def load_finished(out: Path, run: RunSpec) -> dict[str, Any] | None:
    """The saved result of ``run`` if it finished with the same settings, else None."""
    path = _run_path(out, run)
    if not path.exists():
        return None
    try:
        data = read_json(path, what="run result")
    except (ValueError, OSError) as e:
        logger.warning("ignoring unreadable run file (it will be rerun): %s", e)
        return None
    if not isinstance(data, dict) or data.get("status") != "done" or data.get("key") != _jsonable(run.key()):
        logger.info("run %s was saved with other settings; rerunning it", run.name)
        return None
    return data


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))


# ---------------------------------------------------------------------------------------------------------
# Evaluation


class EvalSchedule:
    """The evaluation grid ``0, e, 2e, ..., budget`` and the curve recorded on it.

    ``target`` is the grid point (what curves are plotted and aggregated on); ``step`` is the env steps the
    algorithm had actually taken when it was evaluated (≥ target during training, ≤ budget at the end).
    """

    def __init__(
        self, budget: int, every: int, evaluate: Callable[[], dict[str, float]], start: bool = True
    ) -> None:
        self.targets = sorted({*range(0 if start else every, budget, every), budget})
        self.budget = budget
        self.evaluate = evaluate
        self.curve: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._next = 0

    def _record(self, targets: Iterable[int], step: int) -> None:
        t0 = time.perf_counter()
        metrics = self.evaluate()
        self.eval_seconds += time.perf_counter() - t0
        for t in targets:
            self.curve.append({"target": int(t), "step": int(step), **metrics})

    def maybe_eval(self, step: int) -> None:
        """Evaluate once if ``step`` has reached the next grid points before the budget."""
        due = []
        while (
            self._next < len(self.targets)
            and self.targets[self._next] <= step
            and self.targets[self._next] < self.budget
        ):
            due.append(self.targets[self._next])
            self._next += 1
        if due:
            self._record(due, step)

    def finish(self, step: int) -> None:
        """The final evaluation, recorded on every grid point not reached yet (the budget included)."""
        rest = self.targets[self._next :]
        self._next = len(self.targets)
        if rest:
            self._record(rest, step)


def evaluate_predictor(model: Any, env: gym.Env, n_episodes: int) -> dict[str, float]:
    """Greedy ``model.predict`` on the first ``n_episodes`` prompts of ``env``'s split, one token per call.

    ``state``/``episode_start`` (recurrent SB3 policies) and ``action_masks`` (MaskablePPO) are passed when
    ``predict`` accepts them.
    """
    try:
        params = inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        params = {}
    recurrent = "state" in params and "episode_start" in params
    masked = "action_masks" in params
    base = env.unwrapped
    n = min(int(n_episodes), len(base.task.encoded(base.split)))
    returns, successes, lengths = np.zeros(n), np.full(n, np.nan), np.zeros(n)
    for i in range(n):
        obs, _ = env.reset(options={"prompt_index": i})
        state, start, done = None, True, False
        while not done:
            kwargs: dict[str, Any] = {"deterministic": True}
            if recurrent:
                kwargs.update(state=state, episode_start=np.array([start]))
            if masked:
                kwargs["action_masks"] = base.action_masks()
            out = model.predict(obs, **kwargs)
            action, state = out if isinstance(out, tuple) else (out, None)
            obs, r, terminated, truncated, info = env.step(int(np.asarray(action).reshape(-1)[0]))
            returns[i] += r
            lengths[i] += 1
            start, done = False, terminated or truncated
        if "is_success" in info:
            successes[i] = float(info["is_success"])
    return {
        "mean_return": float(returns.mean()),
        "success_rate": float(np.nanmean(successes)) if not np.isnan(successes).all() else float("nan"),
        "mean_length": float(lengths.mean()),
    }


def _make_env(env_id: str, env_kwargs: dict[str, Any], split: str = "train") -> gym.Env:
    import text_env  # noqa: F401  (registers the TextEnv ids in a fresh worker)

    return gym.make(env_id, split=split, **env_kwargs)


# ---------------------------------------------------------------------------------------------------------
# Running one algorithm


def _run_ours(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    from agents import ALGORITHMS, BaseCallback, evaluate_policy

    env_kwargs = run.settings["env_kwargs"]
    sft_info = None
    policy: Any = "transformer"
    if not spec.scratch:
        policy, sft_info = _sft_policy(run.env_id, env_kwargs, run.seed, run.settings["sft"])
    kwargs = {**run.settings["ours_kwargs"], **run.settings["algo_kwargs"]}
    t0 = time.perf_counter()
    agent = ALGORITHMS[spec.target](
        policy, run.env_id, seed=run.seed, env_kwargs=env_kwargs or None, **kwargs
    )
    schedule = EvalSchedule(
        run.budget,
        run.eval_every,
        lambda: evaluate_policy(agent.policy, agent.env, n_episodes=run.n_eval, split="test"),
    )
    # an iteration takes at most n_envs full-length episodes: stop before one could cross the budget
    max_batch = agent.n_envs * agent.env.max_new_tokens
    budget = run.budget

    class EvalAndStop(BaseCallback):
        def _on_step(self) -> bool:
            schedule.maybe_eval(self.model.num_timesteps)
            return self.model.num_timesteps + max_batch <= budget

    schedule.maybe_eval(0)
    if max_batch <= budget:
        agent.learn(total_timesteps=budget, callback=EvalAndStop())
    else:
        logger.warning(
            "%s: one iteration (up to %d tokens) exceeds the budget %d: no training",
            run.name,
            max_batch,
            budget,
        )
    schedule.finish(agent.num_timesteps)
    return {
        "steps": int(agent.num_timesteps),
        "seconds": time.perf_counter() - t0,
        "eval_seconds": schedule.eval_seconds,
        "curve": schedule.curve,
        "hparams": _jsonable(agent.hparams),
        "sft": sft_info,
    }


def _sft_policy(
    env_id: str, env_kwargs: dict[str, Any], seed: int, sft_cfg: dict[str, Any]
) -> tuple[Any, dict]:
    """The warm-start policy (cached by agents.sft) and what it cost in demonstrations."""
    from agents.sft import encode_demonstrations, sft, task_of

    env = _make_env(env_id, env_kwargs)
    cfg = dict(sft_cfg)
    steps = cfg.pop("steps")
    t0 = time.perf_counter()
    policy = sft(env, steps=steps, seed=seed, **cfg)
    seconds = time.perf_counter() - t0
    task = task_of(env)
    _, _, loss_mask = encode_demonstrations(task, "train")
    per_demo = float(loss_mask.sum()) / loss_mask.shape[0]
    batch = min(cfg["batch_size"], loss_mask.shape[0])
    env.close()
    info = {
        "steps": steps,
        **cfg,
        "demonstrations": steps * batch,
        # the expected number of supervised target tokens (completion + EOS) seen: steps × batch × mean length
        "demo_tokens": round(steps * batch * per_demo),
        "seconds": seconds,
    }
    return policy, info


def _run_sb3(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    from stable_baselines3.common.callbacks import BaseCallback as SB3Callback

    from agents.sb3 import make_sb3, resolve_sb3_class

    env_kwargs = run.settings["env_kwargs"]
    cls = resolve_sb3_class(spec.target)
    kwargs = dict(run.settings["algo_kwargs"])
    if "buffer_size" in inspect.signature(cls.__init__).parameters and "buffer_size" not in kwargs:
        kwargs["buffer_size"] = min(1_000_000, run.budget)  # holds the whole run: same as SB3's 1e6 here
    t0 = time.perf_counter()
    model = make_sb3(cls, run.env_id, run.seed, env_kwargs=env_kwargs, **kwargs)
    n_steps = getattr(model, "n_steps", None)
    if isinstance(n_steps, int) and run.budget % n_steps > 0.05 * run.budget:
        logger.warning(
            "%s: the budget %d is not a multiple of %s's rollout (n_steps=%d): its last partial rollout is "
            "collected but never trained on", run.name, run.budget, cls.__name__, n_steps,
        )  # fmt: skip
    eval_env = _make_env(run.env_id, env_kwargs, split="test")
    schedule = EvalSchedule(
        run.budget, run.eval_every, lambda: evaluate_predictor(model, eval_env, run.n_eval)
    )
    budget = run.budget

    class EvalAndStop(SB3Callback):
        def _on_step(self) -> bool:
            schedule.maybe_eval(self.num_timesteps)
            return self.num_timesteps < budget  # stop at exactly the budget

    schedule.maybe_eval(0)
    model.learn(total_timesteps=budget, callback=EvalAndStop())
    schedule.finish(model.num_timesteps)
    eval_env.close()
    hparams = dict(kwargs)
    for name in (
        "learning_rate",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gamma",
        "gae_lambda",
        "ent_coef",
        "buffer_size",
    ):
        value = getattr(model, name, None)
        if isinstance(value, (int, float)):
            hparams[name] = value
    return {
        "steps": int(model.num_timesteps),
        "seconds": time.perf_counter() - t0,
        "eval_seconds": schedule.eval_seconds,
        "curve": schedule.curve,
        "hparams": _jsonable(hparams),
        "sft": None,
    }


class _StepBudget(gym.Wrapper):
    """Counts an external algorithm's env steps, evaluates it on schedule, and stops it at the budget."""

    def __init__(self, env: gym.Env, budget: int) -> None:
        super().__init__(env)
        self.budget = budget
        self.steps = 0
        self.on_step: Callable[[int], None] = lambda steps: None

    def step(self, action: Any) -> Any:
        if self.steps >= self.budget:
            raise BudgetExhausted(f"the budget of {self.budget} env steps is spent")
        out = self.env.step(action)
        self.steps += 1
        self.on_step(self.steps)
        return out


def _run_external(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    env_kwargs = run.settings["env_kwargs"]
    kwargs = dict(run.settings["algo_kwargs"])
    algo = resolve_external(spec.target)
    eval_env = _make_env(run.env_id, env_kwargs, split="test")
    t0 = time.perf_counter()
    if inspect.isclass(algo):
        env = _StepBudget(_make_env(run.env_id, env_kwargs), run.budget)
        model = algo(env, seed=run.seed, **kwargs)
        schedule = EvalSchedule(
            run.budget, run.eval_every, lambda: evaluate_predictor(model, eval_env, run.n_eval)
        )
        schedule.maybe_eval(0)
        env.on_step = schedule.maybe_eval
        try:
            model.learn(total_timesteps=run.budget)
        except BudgetExhausted:
            logger.info("%s: stopped at the budget of %d env steps", run.name, run.budget)
        steps = env.steps
        env.close()
    else:
        if "env_kwargs" in _parameters(algo):
            kwargs["env_kwargs"] = env_kwargs
        model = algo(run.env_id, run.budget, run.seed, **kwargs)
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"{spec.spec} returned {type(model).__name__}, which has no predict(obs, ...)")
        # the steps of a function algorithm are invisible to the harness: only its final point is known
        schedule = EvalSchedule(
            run.budget, run.budget, lambda: evaluate_predictor(model, eval_env, run.n_eval), start=False
        )
        steps = run.budget
    schedule.finish(steps)
    eval_env.close()
    return {
        "steps": int(steps),
        "seconds": time.perf_counter() - t0,
        "eval_seconds": schedule.eval_seconds,
        "curve": schedule.curve,
        "hparams": _jsonable({k: v for k, v in kwargs.items() if k != "env_kwargs"}),
        "sft": None,
    }


def _parameters(fn: Any) -> dict[str, Any]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def execute_run(run: RunSpec, out: str) -> dict[str, Any]:
    """Run one (env, algorithm, seed); a finished run is written atomically to ``<out>/runs/<name>.json``.

    A failure is returned (status ``"failed"`` with the error), not written, so a restart retries it.
    """
    spec = parse_algo_spec(run.algo)
    runner = {"ours": _run_ours, "sb3": _run_sb3, "external": _run_external}[spec.kind]
    t0 = time.perf_counter()
    base = {"name": run.name, "env": run.env_id, "algo": run.algo, "seed": run.seed, "budget": run.budget}
    try:
        res = runner(run, spec)
    except Exception as e:  # one failed run must not end the benchmark: report it
        logger.exception("run %s failed", run.name)
        return {
            **base,
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    curve = res["curve"]
    final = curve[-1]
    seconds, eval_s = res["seconds"], res["eval_seconds"]
    result = {
        **base,
        "status": "done",
        "key": _jsonable(run.key()),
        "steps": res["steps"],
        "final": {"success_rate": final["success_rate"], "mean_return": final["mean_return"]},
        "curve": curve,
        "train_seconds": seconds - eval_s,
        "eval_seconds": eval_s,
        "wall_seconds": time.perf_counter() - t0,
        "steps_per_second": res["steps"] / max(seconds - eval_s, 1e-9),
        "hparams": res["hparams"],
        "sft": res["sft"],
        "pid": os.getpid(),
    }
    atomic_write_json(_run_path(Path(out), run), _jsonable(result), indent=1)
    return result


def _sft_job(env_id: str, env_kwargs: dict[str, Any], seed: int, sft_cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm the SFT cache for (env, seed) so that ``ours:ppo`` and ``ours:rloo`` share one training."""
    _, info = _sft_policy(env_id, env_kwargs, seed, sft_cfg)
    return info


def _init_worker(sys_path: list[str]) -> None:
    """One torch thread per worker (the workers already fill the cores) and the parent's import path."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)


# ---------------------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` did and found."""

    config: BenchmarkConfig
    runs: list[dict[str, Any]]
    """Every finished run of this benchmark (loaded or new), in plan order."""
    executed: list[str]
    """Names of the runs executed now (not resumed)."""
    skipped: list[str]
    """Names of the runs found finished on disk and skipped."""
    failed: list[dict[str, Any]]
    """Runs that raised (their error and traceback); they are retried on the next start."""
    summary: dict[str, Any]
    wall_seconds: float
    sft_seconds: float
    """Seconds spent in supervised warm starts (cache misses), summed over processes."""
    out: Path

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
    say = progress or logger.info
    specs = config.validate()
    out = Path(config.out)
    runs = plan_runs(config, specs)
    done: dict[str, dict[str, Any]] = {}
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
    new, failed, sft_seconds = _execute(pending, kinds, config, out, say)
    done.update({r["name"]: r for r in new})
    wall = time.perf_counter() - t0
    finished = [done[r.name] for r in runs if r.name in done]
    summary = summarize(finished, list(config.envs), list(config.algos), reps=config.reps)
    result = BenchmarkResult(
        config=config,
        runs=finished,
        executed=[r["name"] for r in new],
        skipped=skipped,
        failed=failed,
        summary=summary,
        wall_seconds=wall,
        sft_seconds=sft_seconds,
        out=out,
    )
    write_outputs(result)
    return result


def _execute(
    pending: list[RunSpec],
    specs: dict[str, AlgoSpec],
    config: BenchmarkConfig,
    out: Path,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Run the pending runs (SFT warm starts first), in this process or over ``config.workers`` processes."""
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
    new: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    sft_seconds = 0.0

    def report(res: dict[str, Any]) -> None:
        (new if res["status"] == "done" else failed).append(res)
        n = len(new) + len(failed)
        if res["status"] == "done":
            f = res["final"]
            say(
                f"[{n}/{total}] {res['env']} {res['algo']} seed {res['seed']}: "
                f"success {f['success_rate']:.3f} return {f['mean_return']:.3f} "
                f"({res['steps']} tokens, {res['wall_seconds']:.1f}s)"
            )
        else:
            say(f"[{n}/{total}] {res['env']} {res['algo']} seed {res['seed']}: FAILED {res['error']}")

    sft_of = {k: v[0].settings["sft"] for k, v in sft_jobs.items()}
    if config.workers == 1 or total <= 1:
        for (env_id, seed), waiting in sft_jobs.items():
            sft_seconds += _sft_job(env_id, config.env_kwargs, seed, sft_of[env_id, seed])["seconds"]
            for r in waiting:
                report(execute_run(r, str(out)))
        for r in free:
            report(execute_run(r, str(out)))
        return new, failed, sft_seconds

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["agents.benchmark", "agents.sb3", "agents"])  # import torch/SB3 once
    workers = min(config.workers, total + len(sft_jobs))
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(list(sys.path),)
    ) as pool:
        futures: dict[Future, Any] = {}
        for key in sft_jobs:  # the warm starts first: the runs that wait on them are queued behind
            futures[pool.submit(_sft_job, key[0], config.env_kwargs, key[1], sft_of[key])] = key
        for r in free:
            futures[pool.submit(execute_run, r, str(out))] = r
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
                                base = {"name": r.name, "env": r.env_id, "algo": r.algo, "seed": r.seed}
                                report({**base, "status": "failed", "error": f"SFT warm start failed: {e}"})
                            continue
                        for r in sft_jobs[item]:
                            futures[pool.submit(execute_run, r, str(out))] = r
                    else:
                        report(fut.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return new, failed, sft_seconds


# ---------------------------------------------------------------------------------------------------------
# Statistics


def _score(run: dict[str, Any], metric: str) -> float:
    return float(run["final"][metric])


def summarize(
    runs: Sequence[dict[str, Any]], envs: Sequence[str], algos: Sequence[str], reps: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Statistics over finished runs (Agarwal et al. 2021, via :mod:`agents.stats`).

    Per env and algorithm: mean and IQM over seeds of the final success rate and of the final mean return,
    with stratified-bootstrap 95% percentile CIs. Over the suite (a ``(seeds, envs)`` score matrix per
    algorithm): IQM and mean with CIs, and the probability of improvement of every algorithm over every
    other. An algorithm enters the suite statistics only if it has the same number of runs on every env;
    an env enters the success statistics only if all its runs report success.

    Returns:
        ``{"per_env": {env: {algo: {"n", "success": {"mean", "iqm"}, "return": {...}, "steps",
        "train_seconds"}}}, "aggregate": {metric: {algo: {"iqm", "mean"}}}, "poi": {metric: {"a>b": est}},
        "curves": {env: {algo: [{"target", "mean", "lo", "hi", "n"}]}}, "notes": [...]}`` where every
        estimate is ``{"point", "lo", "hi"}``.
    """
    notes: list[str] = []
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["env"], r["algo"]), []).append(r)
    metric_fns = {"mean": stats.mean, "iqm": stats.iqm}

    def estimates(values: np.ndarray, name: str) -> dict[str, dict[str, float]]:
        est = stats.aggregate_with_ci({name: values}, metric_fns, reps=reps, seed=seed)[name]
        return {m: e._asdict() for m, e in est.items()}

    metrics = {"success": "success_rate", "return": "mean_return"}
    per_env: dict[str, dict[str, Any]] = {}
    success_envs = []
    for env in envs:
        per_env[env] = {}
        env_has_success = True
        for algo in algos:
            rs = by.get((env, algo), [])
            if not rs:
                continue
            row: dict[str, Any] = {"n": len(rs)}
            for label, key in metrics.items():
                values = np.array([_score(r, key) for r in rs])
                if np.isnan(values).any():
                    env_has_success = env_has_success and label != "success"
                    continue
                row[label] = estimates(values[:, None], f"{env}/{algo}/{label}")
            row["steps"] = float(np.mean([r["steps"] for r in rs]))
            row["train_seconds"] = float(np.mean([r["train_seconds"] for r in rs]))
            row["steps_per_second"] = float(np.mean([r["steps_per_second"] for r in rs]))
            per_env[env][algo] = row
        if env_has_success:
            success_envs.append(env)
        else:
            notes.append(f"{env} reports no success for some runs: it is left out of the success statistics")

    aggregate: dict[str, dict[str, Any]] = {}
    poi: dict[str, dict[str, Any]] = {}
    for label, key in metrics.items():
        suite_envs = success_envs if label == "success" else list(envs)
        matrices = {}
        for algo in algos:
            cols = [
                [_score(r, key) for r in sorted(by.get((e, algo), []), key=lambda r: r["seed"])]
                for e in suite_envs
            ]
            if not suite_envs or len({len(c) for c in cols}) != 1 or not cols[0]:
                if suite_envs:
                    notes.append(
                        f"{algo} has unequal or missing runs across envs: left out of the {label} aggregate"
                    )
                continue
            matrices[algo] = np.array(cols, dtype=float).T  # (seeds, envs)
        if not matrices:
            continue
        est = stats.aggregate_with_ci(matrices, metric_fns, reps=reps, seed=seed)
        aggregate[label] = {a: {m: e._asdict() for m, e in v.items()} for a, v in est.items()}
        if len(matrices) >= 2:
            pairs = stats.pairwise_probability_of_improvement(matrices, reps=reps, seed=seed)
            poi[label] = {f"{a}>{b}": e._asdict() for (a, b), e in pairs.items()}
    curves = _curve_stats(by, envs, algos, reps=min(reps, 1000), seed=seed)
    return {"per_env": per_env, "aggregate": aggregate, "poi": poi, "curves": curves, "notes": notes}


def _curve_stats(
    by: dict[tuple[str, str], list[dict[str, Any]]],
    envs: Sequence[str],
    algos: Sequence[str],
    reps: int,
    seed: int,
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Per env and algorithm, the mean over seeds at each grid point with a bootstrap 95% CI (success rate,
    or mean return where the env has no success test)."""
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for env in envs:
        out[env] = {}
        for algo in algos:
            rs = by.get((env, algo), [])
            if not rs:
                continue
            points: dict[int, list[tuple[float, float]]] = {}
            for r in rs:
                for p in r["curve"]:
                    points.setdefault(int(p["target"]), []).append((p["success_rate"], p["mean_return"]))
            series = []
            for target in sorted(points):
                vals = np.array(points[target], dtype=float)
                if len(vals) != len(rs):  # not every seed has this point
                    continue
                use_success = not np.isnan(vals[:, 0]).any()
                v = vals[:, 0] if use_success else vals[:, 1]
                e = stats.aggregate_with_ci({"c": v[:, None]}, {"mean": stats.mean}, reps=reps, seed=seed)[
                    "c"
                ]["mean"]
                series.append(
                    {
                        "target": target,
                        "mean": e.point,
                        "lo": e.lo,
                        "hi": e.hi,
                        "n": len(v),
                        "metric": "success_rate" if use_success else "mean_return",
                    }
                )
            out[env][algo] = series
    return out


# ---------------------------------------------------------------------------------------------------------
# Outputs


def _ci(e: dict[str, float] | None, digits: int = 2) -> str:
    if e is None:
        return "-"
    return f"{e['point']:.{digits}f} [{e['lo']:.{digits}f}, {e['hi']:.{digits}f}]"


def format_table(summary: dict[str, Any], markdown: bool = False) -> str:
    """The per-env table (mean and IQM of final success with 95% CIs, mean return, tokens) and the suite
    aggregate, as aligned text or a markdown table."""
    header = [
        "env",
        "algorithm",
        "runs",
        "success mean [95% CI]",
        "success IQM [95% CI]",
        "return mean [95% CI]",
        "tokens",
        "tok/s",
    ]
    rows = []
    for env, algos in summary["per_env"].items():
        for algo, row in algos.items():
            rows.append(
                [
                    env, algo, str(row["n"]), _ci(row.get("success", {}).get("mean")),
                    _ci(row.get("success", {}).get("iqm")), _ci(row.get("return", {}).get("mean")),
                    f"{row['steps']:.0f}", f"{row['steps_per_second']:.0f}",
                ]
            )  # fmt: skip
    for algo in summary["aggregate"].get("success", summary["aggregate"].get("return", {})):
        s = summary["aggregate"].get("success", {}).get(algo, {})
        r = summary["aggregate"].get("return", {}).get(algo, {})
        rows.append(["(suite)", algo, "", _ci(s.get("mean")), _ci(s.get("iqm")), _ci(r.get("mean")), "", ""])
    return _render(header, rows, markdown)


def _render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
    )


def format_poi(summary: dict[str, Any], metric: str = "success", markdown: bool = True) -> str:
    """The probability-of-improvement matrix: row X, column Y, cell P(X > Y) [95% CI]."""
    poi = summary["poi"].get(metric)
    if not poi:
        return "(needs at least two algorithms with complete runs)"
    algos = list(dict.fromkeys(k.split(">")[0] for k in poi))
    rows = [[a] + ["-" if a == b else _ci(poi[f"{a}>{b}"]) for b in algos] for a in algos]
    return _render(["P(row > column)", *algos], rows, markdown)


def write_outputs(result: BenchmarkResult) -> None:
    """results.csv, results.json, curves.png, aggregate_iqm.png and report.md under ``result.out``."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["env", "algo", "seed", "target", "step", "success_rate", "mean_return", "final"])
    for r in result.runs:
        for i, p in enumerate(r["curve"]):
            w.writerow(
                [
                    r["env"],
                    r["algo"],
                    r["seed"],
                    p["target"],
                    p["step"],
                    p["success_rate"],
                    p["mean_return"],
                    i == len(r["curve"]) - 1,
                ]
            )
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode("utf-8"))
    cfg = dataclasses.asdict(result.config)
    cfg["out"] = str(cfg["out"])
    cfg["command"] = result.config.to_command()
    atomic_write_json(
        out / "results.json",
        _jsonable(
            {
                "config": cfg,
                "machine": machine_info(),
                "wall_seconds": result.wall_seconds,
                "sft_seconds": result.sft_seconds,
                "runs": result.runs,
                "failed": [{k: v for k, v in f.items() if k != "traceback"} for f in result.failed],
                "summary": result.summary,
            }
        ),
        indent=1,
    )
    plots = plot_results(result.summary, out)
    atomic_write_bytes(out / "report.md", render_report(result, plots).encode("utf-8"))


def machine_info() -> dict[str, Any]:
    import torch

    info = {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
    }
    for pkg in ("stable_baselines3", "sb3_contrib"):
        with contextlib.suppress(ImportError):
            info[pkg] = importlib.import_module(pkg).__version__
    return info


def plot_results(summary: dict[str, Any], out: Path) -> list[str]:
    """Learning curves with 95% CI bands per env, and the suite IQM bar chart; returns the PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    curves = summary["curves"]
    envs = [e for e in curves if curves[e]]
    if envs:
        fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.6), squeeze=False)
        for ax, env in zip(axes[0], envs):
            metric = "success_rate"
            for algo, series in curves[env].items():
                if not series:
                    continue
                x = [p["target"] for p in series]
                ax.plot(x, [p["mean"] for p in series], marker="o", ms=3, label=algo)
                ax.fill_between(x, [p["lo"] for p in series], [p["hi"] for p in series], alpha=0.2)
                metric = series[0]["metric"]
            ax.set_title(env.split("/")[-1], fontsize=10)
            ax.set_xlabel("env steps (tokens)")
            ax.set_ylabel("test success rate" if metric == "success_rate" else "test mean return")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=110)
        plt.close(fig)
        names.append("curves.png")
    label = "success" if "success" in summary["aggregate"] else "return"
    agg = summary["aggregate"].get(label)
    if agg:
        algos = list(agg)
        pts = np.array([agg[a]["iqm"]["point"] for a in algos])
        lo = np.array([agg[a]["iqm"]["lo"] for a in algos])
        hi = np.array([agg[a]["iqm"]["hi"] for a in algos])
        fig, ax = plt.subplots(figsize=(1.3 * len(algos) + 2, 3.4))
        ax.bar(
            range(len(algos)),
            pts,
            yerr=np.vstack([pts - lo, hi - pts]),
            capsize=4,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_xticks(range(len(algos)), algos, rotation=20, ha="right")
        ax.set_ylabel(f"IQM final test {label} (95% CI)")
        ax.set_title("Aggregate over the suite", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "aggregate_iqm.png", dpi=110)
        plt.close(fig)
        names.append("aggregate_iqm.png")
    return names


def render_report(result: BenchmarkResult, plots: Sequence[str]) -> str:
    """The markdown report: command, machine, budgets, tables with CIs, PoI matrix, plots, notes."""
    cfg, summary, m = result.config, result.summary, machine_info()
    sft_runs = [r["sft"] for r in result.runs if r.get("sft")]
    lines = [
        "# text-env benchmark",
        "",
        "```",
        cfg.to_command(),
        "```",
        "",
        f"- Machine: {m['cpu_cores']} CPU cores ({m['platform']}); Python {m['python']}, torch {m['torch']}, "
        f"gymnasium {m['gymnasium']}, stable-baselines3 {m.get('stable_baselines3', '-')}, "
        f"sb3-contrib {m.get('sb3_contrib', '-')}.",
        f"- Workers: {cfg.workers} process(es), one torch thread each when more than one; everything on CPU.",
        f"- Wall time of this invocation: {result.wall_seconds:.0f} s ({len(result.executed)} runs executed, "
        f"{len(result.skipped)} resumed from disk); the runs' own wall times sum to "
        f"{sum(r['wall_seconds'] for r in result.runs):.0f} s; supervised warm starts of this invocation: "
        f"{result.sft_seconds:.0f} s (summed over processes, cache misses only).",
        f"- Budget: **{cfg.budget} env steps (generated tokens) per run for every algorithm**; "
        f"{cfg.seeds} seeds; evaluation every {cfg.eval_interval} steps on the first {cfg.n_eval} prompts of "
        "each env's held-out test split, greedy decoding.",
    ]
    if sft_runs:
        s = sft_runs[0]
        demo_tokens = np.mean([r["demo_tokens"] for r in sft_runs])
        lines.append(
            f"- `ours:<name>` starts from supervised fine-tuning: {s['steps']} steps × {s['batch_size']} "
            f"demonstrations (lr {s['learning_rate']}, {s['warmup']} warmup steps), ≈{demo_tokens:.0f} "
            "demonstration target tokens per run — **not counted in the RL budget**; SB3 sees no "
            "demonstrations. `ours:<name>-scratch` is the comparison at equal information."
        )
    lines += [
        f"- Our agents: their defaults plus {json.dumps(OURS_KWARGS)}; SB3: its defaults with the "
        "token-embedding extractor (agents/sb3.py).",
        "",
        "## Final test success per env",
        "",
        "Mean and interquartile mean (IQM) over seeds with stratified-bootstrap 95% confidence intervals "
        "(Agarwal et al. 2021); `(suite)` rows aggregate over every env.",
        "",
        format_table(summary, markdown=True),
        "",
        "## Probability of improvement (final success, over the suite)",
        "",
        format_poi(summary, "success"),
        "",
    ]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    step0 = _step0_table(result.runs)
    if step0:
        lines += ["## Where each algorithm started (test success at step 0, mean over seeds)", "", step0, ""]
    notes = list(summary["notes"])
    for r in result.runs:
        if r["steps"] > r["budget"]:
            notes.append(f"{r['name']} took {r['steps']} steps, more than the budget {r['budget']}")
    notes += [f"FAILED {f['name']}: {f['error']}" for f in result.failed]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _step0_table(runs: Sequence[dict[str, Any]]) -> str:
    vals: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        first = r["curve"][0]
        if first["target"] == 0:
            vals.setdefault((r["env"], r["algo"]), []).append(first["success_rate"])
    if not vals:
        return ""
    rows = [[env, algo, f"{np.mean(v):.2f}"] for (env, algo), v in vals.items()]
    return _render(["env", "algorithm", "success at step 0"], rows, markdown=True)


# ---------------------------------------------------------------------------------------------------------
# CLI


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``text-env benchmark`` to the CLI."""
    p = subparsers.add_parser(
        "benchmark",
        help="algorithms × envs × seeds at an equal token budget → table, CSV/JSON, report, plots",
        description=(
            "Benchmark algorithms on TextEnv ids at an equal budget of env steps (tokens). With no arguments "
            f"it runs the embedded default: {', '.join(DEFAULT_ALGOS)} on {', '.join(DEFAULT_ENVS)}, "
            f"{DEFAULT_SEEDS} seeds, {DEFAULT_BUDGET} tokens per run. Algorithm specs: {_SPEC_HELP}."
        ),
    )
    p.add_argument("--envs", nargs="+", metavar="ID", help=f"env ids (default: {' '.join(DEFAULT_ENVS)})")
    p.add_argument(
        "--algos", nargs="+", metavar="SPEC", help=f"algorithm specs (default: {' '.join(DEFAULT_ALGOS)})"
    )
    p.add_argument("--seeds", type=int, help=f"seeds per env and algorithm (default {DEFAULT_SEEDS})")
    p.add_argument("--budget", type=int, help=f"env steps (tokens) per run (default {DEFAULT_BUDGET})")
    p.add_argument(
        "--eval-every", type=int, help=f"env steps between evaluations (default {DEFAULT_EVAL_EVERY})"
    )
    p.add_argument(
        "--eval-episodes", type=int, help=f"test prompts per evaluation (default {DEFAULT_EVAL_EPISODES})"
    )
    p.add_argument(
        "--sft-steps",
        type=int,
        help=f"supervised warm-start steps for ours:<name> (default {DEFAULT_SFT_STEPS})",
    )
    p.add_argument("--workers", type=int, help="worker processes (default: the CPU cores)")
    p.add_argument("--out", help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument(
        "--env-kwargs",
        type=json.loads,
        default={},
        help='JSON kwargs for every env, e.g. \'{"task": "my.jsonl"}\'',
    )
    p.add_argument(
        "--algo-kwargs",
        type=json.loads,
        default={},
        help='JSON {spec: kwargs}, e.g. \'{"sb3:PPO": {"n_steps": 512}}\'',
    )
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (default 2000)")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke version of the default suite")
    p.set_defaults(func=_run_benchmark_command)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """The benchmark the parsed flags describe (``--quick`` changes the defaults, flags override them)."""
    base: dict[str, Any] = {
        "envs": DEFAULT_ENVS, "algos": DEFAULT_ALGOS, "seeds": DEFAULT_SEEDS, "budget": DEFAULT_BUDGET,
        "eval_every": DEFAULT_EVAL_EVERY, "n_eval": DEFAULT_EVAL_EPISODES, "sft_steps": DEFAULT_SFT_STEPS,
    }  # fmt: skip
    if args.quick:
        base.update(QUICK)
    given = {
        "envs": args.envs, "algos": args.algos, "seeds": args.seeds, "budget": args.budget,
        "eval_every": args.eval_every, "n_eval": args.eval_episodes, "sft_steps": args.sft_steps,
    }  # fmt: skip
    base.update({k: v for k, v in given.items() if v is not None})
    if not isinstance(args.env_kwargs, dict) or not isinstance(args.algo_kwargs, dict):
        raise ValueError("--env-kwargs and --algo-kwargs must be JSON objects")
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    out = args.out or (DEFAULT_OUT + ("-quick" if args.quick else ""))
    return BenchmarkConfig(
        envs=list(base["envs"]), algos=list(base["algos"]), seeds=base["seeds"], budget=base["budget"],
        eval_every=base["eval_every"], n_eval=base["n_eval"], workers=workers, out=out,
        sft_steps=base["sft_steps"], env_kwargs=args.env_kwargs, algo_kwargs=args.algo_kwargs, reps=args.reps,
    )  # fmt: skip


def _run_benchmark_command(args: argparse.Namespace) -> int:
    # like uvicorn/gunicorn, resolve the user's module:attr specs from the current directory too
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    config = config_from_args(args)
    config.validate()  # every spec and env id, before anything runs
    n_runs = len(config.envs) * len(config.algos) * config.seeds
    print(
        f"benchmark: {len(config.algos)} algorithms × {len(config.envs)} envs × {config.seeds} seeds = "
        f"{n_runs} runs, {config.budget} tokens each, {config.workers} worker(s) → {config.out}",
        flush=True,
    )
    result = run_benchmark(config, progress=lambda line: print(line, flush=True))
    print()
    print(format_table(result.summary))
    print()
    agg = result.summary["aggregate"].get("success", {})
    if agg:
        print(
            "IQM final success over the suite: " + ", ".join(f"{a} {_ci(v['iqm'])}" for a, v in agg.items())
        )
    print(f"wall time {result.wall_seconds:.0f} s; report: {result.report_path}")
    if result.failed:
        print(
            f"{len(result.failed)} run(s) failed (see the report); rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0
