"""Running one (env, algorithm, seed): ours, SB3 / sb3-contrib, or the user's own, on one evaluation grid.

Every runner trains for at most the run's budget of env steps and evaluates the current policy greedily on
the first ``n_eval`` prompts of the env's held-out test split at ``0, e, 2e, ..., budget``
(:class:`EvalSchedule`). :func:`execute_run` wraps a runner: it times the run, turns an exception into a
:class:`RunFailure`, and writes a finished :class:`RunResult` atomically to ``<out>/runs/<name>.json``.

Example:
    >>> sched = EvalSchedule(100, 30, lambda: {"success_rate": 1.0, "mean_return": 1.0})
    >>> sched.targets
    [0, 30, 60, 90, 100]
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents.harness.config import RunSpec, jsonable
from agents.harness.specs import AlgoSpec, parse_algo_spec, resolve_external
from text_env.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)


class BudgetExhausted(RuntimeError):
    """Raised by the step-counting wrapper when an external algorithm steps past its budget."""


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass
class RunResult:
    """A finished run; :meth:`to_dict` is the JSON written to ``<out>/runs/<name>.json``.

    Example:
        >>> point = {"target": 10, "step": 10, "success_rate": 1.0, "mean_return": 1.0, "mean_length": 3.0}
        >>> r = RunResult("e__a__0", "e", "a", 0, 10, {}, 10, {"success_rate": 1.0, "mean_return": 1.0},
        ...               [point], 1.0, 0.5, 1.6, 20.0, {}, None, 1)
        >>> RunResult.from_dict(r.to_dict()) == r
        True
    """

    name: str
    """``<env>__<algo>__<seed>`` (file-name safe)."""
    env: str
    """The env id."""
    algo: str
    """The algorithm spec."""
    seed: int
    """The run's seed."""
    budget: int
    """The budget of env steps."""
    key: dict[str, Any]
    """Every setting that changes the result (:meth:`RunSpec.key`): a resumed run must match it."""
    steps: int | None
    """Env steps the algorithm took (None where the harness cannot see them: a function algorithm)."""
    final: dict[str, float]
    """``success_rate`` and ``mean_return`` of the last evaluation."""
    curve: list[dict[str, Any]]
    """One point per grid target: ``target``, ``step``, ``success_rate``, ``mean_return``, ``mean_length``."""
    train_seconds: float
    """Seconds spent training (the run's time less its evaluations)."""
    eval_seconds: float
    """Seconds spent in evaluations."""
    wall_seconds: float
    """Wall time of the whole run."""
    steps_per_second: float | None
    """Training throughput: ``steps / train_seconds`` (None where the steps are unknown)."""
    hparams: dict[str, Any]
    """The algorithm's hyperparameters as run."""
    sft: dict[str, Any] | None
    """The supervised warm start (steps, demonstrations, demonstration tokens, seconds), or None."""
    pid: int
    """The process that ran it."""
    updates: int | None = None
    """Updates the algorithm made, as it counts them (SB3's ``train/n_updates``; our agents' iterations)."""
    host: str | None = None
    """The machine that ran it (``socket.gethostname()``)."""
    device: str | None = None
    """The torch device its model trained on (``"cpu"``, ``"cuda:0 (NVIDIA H200)"``; None if unknown)."""

    status = "done"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``status`` after ``budget``, as the files have always had it)."""
        d = jsonable(dataclasses.asdict(self))
        head = {k: d.pop(k) for k in ("name", "env", "algo", "seed", "budget")}
        return {**head, "status": "done", **d}

    @classmethod
    def from_dict(cls, data: Any, source: str = "run result") -> RunResult:
        """Inverse of :meth:`to_dict`; a missing or extra key, or another status, raises ``ValueError``
        naming ``source``."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("status") != "done":
            raise ValueError(f"{source}: status is {data.get('status')!r}, not 'done'")
        fields = {k: v for k, v in data.items() if k != "status"}
        missing = sorted(_REQUIRED_FIELDS - set(fields))
        extra = sorted(set(fields) - _RESULT_FIELDS)
        if missing or extra:
            raise ValueError(f"{source}: missing keys {missing}, unknown keys {extra}")
        for name, types in (("curve", list), ("final", dict), ("key", dict), ("hparams", dict)):
            if not isinstance(fields[name], types):
                raise ValueError(f"{source}: {name} must be a {types.__name__}, got {fields[name]!r}")
        if not fields["curve"]:
            raise ValueError(f"{source}: the curve is empty")
        return cls(**fields)


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(RunResult))
_REQUIRED_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(RunResult)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


@dataclass
class RunFailure:
    """A run that raised; it is not written to disk, so the next start retries it."""

    name: str
    env: str
    algo: str
    seed: int
    budget: int
    error: str
    """``"<ExceptionType>: <message>"``."""
    traceback: str = ""

    status = "failed"

    def to_dict(self, with_traceback: bool = True) -> dict[str, Any]:
        """The JSON form (the traceback left out of results.json)."""
        d = {
            "name": self.name, "env": self.env, "algo": self.algo, "seed": self.seed, "budget": self.budget,
            "status": "failed", "error": self.error,
        }  # fmt: skip
        if with_traceback:
            d["traceback"] = self.traceback
        return d


def run_path(out: Path, run: RunSpec) -> Path:
    """Where the finished ``run`` is written."""
    return out / "runs" / f"{run.name}.json"


def load_finished(out: Path, run: RunSpec) -> RunResult | None:
    """The saved result of ``run`` if it finished with the same settings, else None."""
    path = run_path(out, run)
    if not path.exists():
        return None
    try:
        data = read_json(path, what="run result")
    except (ValueError, OSError) as e:
        logger.warning("ignoring unreadable run file (it will be rerun): %s", e)
        return None
    if not isinstance(data, dict) or data.get("status") != "done" or data.get("key") != jsonable(run.key()):
        logger.info("run %s was saved with other settings; rerunning it", run.name)
        return None
    try:
        return RunResult.from_dict(data, source=f"run result {str(path)!r}")
    except (ValueError, TypeError) as e:
        logger.warning("ignoring malformed run file (it will be rerun): %s", e)
        return None


# ---------------------------------------------------------------------------------------------------------
# Evaluation


class EvalSchedule:
    """The evaluation grid ``0, e, 2e, ..., budget`` and the curve recorded on it.

    ``target`` is the grid point (what curves are plotted and aggregated on); ``step`` is the env steps the
    algorithm had actually taken when it was evaluated (≥ target during training, ≤ budget at the end;
    None where they are unknown).
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

    def _record(self, targets: Iterable[int], step: int | None) -> None:
        t0 = time.perf_counter()
        metrics = self.evaluate()
        self.eval_seconds += time.perf_counter() - t0
        for t in targets:
            self.curve.append({"target": int(t), "step": None if step is None else int(step), **metrics})

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

    def finish(self, step: int | None) -> None:
        """The final evaluation, recorded on every grid point not reached yet (the budget included);
        ``step`` None: the algorithm's steps are unknown."""
        rest = self.targets[self._next :]
        self._next = len(self.targets)
        if rest:
            self._record(rest, step)


def evaluate_predictor(model: Any, env: gym.Env, n_episodes: int) -> dict[str, float]:
    """Greedy ``model.predict`` on the first ``n_episodes`` prompts of ``env``'s split, one token per call.

    ``state``/``episode_start`` (recurrent SB3 policies) and ``action_masks`` (MaskablePPO) are passed when
    ``predict`` accepts them.
    """
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        params = {}
    recurrent = "state" in params and "episode_start" in params
    masked = "action_masks" in params
    base: Any = env.unwrapped  # a TextGenEnv: its task, split and action mask
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


def make_env(env_id: str, env_kwargs: dict[str, Any], split: str = "train") -> gym.Env:
    """``gym.make(env_id, split=split, **env_kwargs)`` with the TextEnv ids registered (fresh workers)."""
    import text_env  # noqa: F401  (registers the TextEnv ids in a fresh worker)

    return gym.make(env_id, split=split, **env_kwargs)


# ---------------------------------------------------------------------------------------------------------
# Running one algorithm: each runner returns steps, seconds, eval_seconds, curve, hparams, sft, updates,
# device


def run_ours(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    """A built-in agent (warm-started by SFT unless ``-scratch``), stopped before a batch could cross the
    budget."""
    from agents import ALGORITHMS, BaseCallback, evaluate_policy

    env_kwargs = run.settings["env_kwargs"]
    sft_info = None
    policy: Any = "transformer"
    if not spec.scratch:
        policy, sft_info = sft_policy(run.env_id, env_kwargs, run.seed, run.settings["sft"])
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
    assert agent.env is not None  # built from run.env_id just above
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
        "hparams": jsonable(agent.hparams),
        "sft": sft_info,
        "updates": getattr(agent, "iteration", None),
        "device": describe_device(getattr(agent, "device", None)),
    }


def sft_policy(
    env_id: str, env_kwargs: dict[str, Any], seed: int, sft_cfg: dict[str, Any]
) -> tuple[Any, dict]:
    """The warm-start policy (cached by agents.sft) and what it cost in demonstrations."""
    from agents.sft import encode_demonstrations, sft, task_of

    env = make_env(env_id, env_kwargs)
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


def run_sb3(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    """An SB3 / sb3-contrib algorithm with SB3's defaults and the token-embedding extractor."""
    from stable_baselines3.common.callbacks import BaseCallback as SB3Callback

    from agents.sb3 import make_sb3, resolve_sb3_class

    env_kwargs = run.settings["env_kwargs"]
    cls = resolve_sb3_class(spec.target)
    kwargs = dict(run.settings["algo_kwargs"])
    # the harness's extractor settings (config.SB3_POLICY_KWARGS), overridden key by key by the user's; a
    # policy without a features extractor (sb3-contrib's ARS) gets none of the harness's
    harness_policy = run.settings.get("sb3_policy_kwargs", {}) if _takes_extractor(cls) else {}
    policy_kwargs = {**harness_policy, **kwargs.pop("policy_kwargs", {})}
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    if "buffer_size" in inspect.signature(cls.__init__).parameters and "buffer_size" not in kwargs:
        kwargs["buffer_size"] = min(1_000_000, run.budget)  # holds the whole run: same as SB3's 1e6 here
    t0 = time.perf_counter()
    # the budget is enforced by the env, not by the callback: SB3 trains on a rollout only after its last
    # step's callback returns, so a callback that stops at the budget would skip the update that the
    # budget's last rollout paid for (PPO, n_steps 256, budget 512: 1 update instead of 2). The env instead
    # refuses step budget + 1, which only a rollout that would cross the budget ever asks for.
    train_env = StepBudget(make_env(run.env_id, env_kwargs), run.budget)
    model = make_sb3(cls, train_env, run.seed, **kwargs)
    n_steps = getattr(model, "n_steps", None)
    if isinstance(n_steps, int) and run.budget % n_steps > 0.05 * run.budget:
        logger.warning(
            "%s: the budget %d is not a multiple of %s's rollout (n_steps=%d): its last partial rollout is "
            "collected but never trained on", run.name, run.budget, cls.__name__, n_steps,
        )  # fmt: skip
    eval_env = make_env(run.env_id, env_kwargs, split="test")
    schedule = EvalSchedule(
        run.budget, run.eval_every, lambda: evaluate_predictor(model, eval_env, run.n_eval)
    )

    class Evaluate(SB3Callback):
        def _on_step(self) -> bool:
            schedule.maybe_eval(self.num_timesteps)
            return True

    schedule.maybe_eval(0)
    try:
        model.learn(total_timesteps=run.budget, callback=Evaluate())
    except BudgetExhausted:  # a partial last rollout (or ARS candidate) that the budget did not pay for
        logger.info("%s: stopped at the budget of %d env steps", run.name, run.budget)
    schedule.finish(model.num_timesteps)
    train_env.close()
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
        "hparams": jsonable(hparams),
        "sft": None,
        "updates": int(model._n_updates) if hasattr(model, "_n_updates") else None,  # train/n_updates
        "device": describe_device(model.device),
    }


def _takes_extractor(cls: type) -> bool:
    """Whether an SB3 class's MLP policy accepts a features extractor (ARS's ARSPolicy does not)."""
    aliases = getattr(cls, "policy_aliases", {})
    policy = aliases.get("MlpLstmPolicy") or aliases.get("MlpPolicy")
    if policy is None:
        return False
    params = inspect.signature(policy.__init__).parameters
    return "features_extractor_class" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class StepBudget(gym.Wrapper):
    """Counts an algorithm's env steps, evaluates it on schedule, and stops it at the budget: step
    ``budget + 1`` raises :class:`BudgetExhausted` before it is taken."""

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


def run_external(run: RunSpec, spec: AlgoSpec) -> dict[str, Any]:
    """The user's class (stepped through :class:`StepBudget`) or function (final point only)."""
    env_kwargs = run.settings["env_kwargs"]
    kwargs = dict(run.settings["algo_kwargs"])
    algo: Any = resolve_external(spec.target)
    eval_env = make_env(run.env_id, env_kwargs, split="test")
    t0 = time.perf_counter()
    if inspect.isclass(algo):
        env = StepBudget(make_env(run.env_id, env_kwargs), run.budget)
        user_class: Any = algo  # a user class, duck-typed
        model = user_class(env, seed=run.seed, **kwargs)
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
        # the steps of a function algorithm are invisible to the harness: only its final point is known,
        # and its steps (and so its throughput) are unknown, not the budget
        schedule = EvalSchedule(
            run.budget, run.budget, lambda: evaluate_predictor(model, eval_env, run.n_eval), start=False
        )
        steps = None
    schedule.finish(steps)
    eval_env.close()
    return {
        "steps": None if steps is None else int(steps),
        "seconds": time.perf_counter() - t0,
        "eval_seconds": schedule.eval_seconds,
        "curve": schedule.curve,
        "hparams": jsonable({k: v for k, v in kwargs.items() if k != "env_kwargs"}),
        "sft": None,
        "updates": None,
        "device": describe_device(getattr(model, "device", None)),
    }


def describe_device(device: Any) -> str | None:
    """``"cpu"``, ``"cuda:0 (NVIDIA H200)"``, ...; None when the algorithm does not say."""
    if device is None:
        return None
    text = str(device)
    if text.startswith("cuda"):
        import torch

        with contextlib.suppress(RuntimeError, AssertionError, ValueError):
            index = torch.device(text).index
            text = f"{text if index is not None else 'cuda:0'} ({torch.cuda.get_device_name(index or 0)})"
    return text


def _parameters(fn: Any) -> dict[str, Any]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


RUNNERS: dict[str, Callable[[RunSpec, AlgoSpec], dict[str, Any]]] = {
    "ours": run_ours,
    "sb3": run_sb3,
    "external": run_external,
}


def execute_run(run: RunSpec, out: str | None, import_path: Sequence[str] = ()) -> RunResult | RunFailure:
    """Run one (env, algorithm, seed); a finished run is written atomically to ``<out>/runs/<name>.json``
    (``out`` None: not written, the caller writes it, e.g. a Ray driver for a task that ran elsewhere).

    ``import_path`` is where a ``package.module:attr`` spec's module may also be found
    (:func:`agents.harness.specs.resolve_external`). A failure is returned (a :class:`RunFailure` with the
    error), not written, so a restart retries it.
    """
    spec = parse_algo_spec(run.algo, import_path)
    runner = RUNNERS[spec.kind]
    t0 = time.perf_counter()
    try:
        res = runner(run, spec)
    except Exception as e:  # one failed run must not end the benchmark: report it
        logger.exception("run %s failed", run.name)
        return RunFailure(
            run.name,
            run.env_id,
            run.algo,
            run.seed,
            run.budget,
            error=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
        )
    curve = res["curve"]
    final = curve[-1]
    seconds, eval_s = res["seconds"], res["eval_seconds"]
    result = RunResult(
        name=run.name,
        env=run.env_id,
        algo=run.algo,
        seed=run.seed,
        budget=run.budget,
        key=jsonable(run.key()),
        steps=res["steps"],
        final={"success_rate": final["success_rate"], "mean_return": final["mean_return"]},
        curve=curve,
        train_seconds=seconds - eval_s,
        eval_seconds=eval_s,
        wall_seconds=time.perf_counter() - t0,
        steps_per_second=None if res["steps"] is None else res["steps"] / max(seconds - eval_s, 1e-9),
        hparams=res["hparams"],
        sft=res["sft"],
        pid=os.getpid(),
        updates=res["updates"],
        host=socket.gethostname(),
        device=res["device"],
    )
    if out is not None:
        write_run(Path(out), run, result)
    return result


def write_run(out: Path, run: RunSpec, result: RunResult) -> None:
    """Write a finished run atomically to ``<out>/runs/<name>.json`` (what resume and aggregate read)."""
    atomic_write_json(run_path(out, run), result.to_dict(), indent=1)


def sft_job(env_id: str, env_kwargs: dict[str, Any], seed: int, sft_cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm the SFT cache for (env, seed) so that ``ours:ppo`` and ``ours:rloo`` share one training."""
    _, info = sft_policy(env_id, env_kwargs, seed, sft_cfg)
    return info
