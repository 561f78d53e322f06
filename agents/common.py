"""What every built-in learner shares: advantage estimators, the KL leash, callbacks, logging, seeding,
checkpoints, and the on-policy loop (collect a batch of episodes → update → log → checkpoint).

An algorithm file (``reinforce.py``, ``actor_critic.py``, ``ppo.py``, ``rloo.py``) subclasses
:class:`OnPolicyAlgorithm` and writes only its ``train(batch)`` update (and, for RLOO, how prompts are
grouped), the way stable-baselines3's ``OnPolicyAlgorithm`` owns ``collect_rollouts`` / ``learn``.

Units: a *timestep* is one env step, i.e. one generated token (EOS included), summed over slots; every
budget (``total_timesteps``, the harness's ``--budget``) counts those. An *iteration* is one rollout of
``n_envs`` episodes followed by one update; callbacks' ``on_step`` runs once per iteration.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.evaluation import evaluate_policy
from agents.rollout import (
    RolloutBatch,
    RolloutCollector,
    auto_num_threads,
    make_rollout_env,
    score_actions,
)
from text_env.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)


# ---- math ------------------------------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is true (0 if none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize ``x`` to zero mean, unit variance over the masked positions (masked-out entries → 0)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return torch.where(mask, (x - mean) / torch.sqrt(var + eps), torch.zeros_like(x))


def _discount_matrix(t: int, factor: float, device: torch.device) -> torch.Tensor:
    """``W[k, j] = factor ** (k - j)`` for ``k ≥ j`` else 0, so ``x @ W`` gives ``Σ_k factor^(k-j) x_k``."""
    k = torch.arange(t, device=device)
    exp = (k[:, None] - k[None, :]).float()
    return torch.where(exp >= 0, torch.pow(torch.tensor(factor, device=device), exp.clamp_min(0)), 0.0)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) for episodes laid out as ``(B, T)`` rows.

    Each row is one episode whose valid steps (``mask``) are a prefix; the step after the last valid one
    is terminal (value 0). Truncation at the token budget is terminal too: the env pays the final state
    reward on that step and nothing follows, so there is nothing to bootstrap (unlike SB3's time limits).

    Vectorized over time with a discount matrix (``T`` is a few dozen tokens), no Python loop.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero where ``mask`` is false; ``returns = A + V``.
    """
    m = mask.to(values.dtype)
    v = values * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # (B, T); 0 past the end
    delta = (rewards + gamma * next_v - v) * m  # (B, T)
    adv = delta @ _discount_matrix(rewards.shape[1], gamma * lam, rewards.device)  # Σ_k (γλ)^(k-t) δ_k
    adv = adv * m
    return adv, (adv + v) * m


def leave_one_out_advantages(returns: torch.Tensor, k: int, scale_by_std: bool = False) -> torch.Tensor:
    """Advantages for ``returns (G·k,)`` laid out group by group (``k`` consecutive rows per prompt).

    RLOO: ``R_i − mean_{j≠i} R_j``. With ``scale_by_std`` (GRPO): ``(R_i − mean_j R_j) / (std_j R_j + ε)``.
    """
    if returns.numel() % k:
        raise ValueError(f"{returns.numel()} returns do not split into groups of k={k}")
    g = returns.view(-1, k)  # (G, k)
    if scale_by_std:
        return ((g - g.mean(1, keepdim=True)) / (g.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1)
    baseline = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - baseline).view(-1)


def check_group_size(k: Any, n_envs: Any, minimum: int) -> int:
    """``k`` completions per prompt, validated: an int ≥ ``minimum`` that divides ``n_envs`` (the rollout
    holds ``n_envs / k`` groups of ``k``). Raises ValueError naming the bad value."""
    if isinstance(k, bool) or not isinstance(k, int) or k < minimum:
        raise ValueError(f"k must be an int ≥ {minimum} (completions per prompt), got {k!r}")
    if n_envs % k:
        raise ValueError(f"n_envs ({n_envs}) must be a multiple of k ({k})")
    return k


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = Σ_{k≥t} γ^(k-t) r_k`` per row (zero where ``mask`` is false)."""
    m = mask.to(rewards.dtype)
    return ((rewards * m) @ _discount_matrix(rewards.shape[1], gamma, rewards.device)) * m


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[y_true - y_pred] / Var[y_true] over the masked positions (SB3's diagnostic); NaN if flat."""
    yt, yp = y_true[mask].double(), y_pred[mask].double()
    var = yt.var(unbiased=False) if yt.numel() > 1 else torch.tensor(0.0)
    if var.item() == 0:
        return float("nan")
    return float(1 - (yt - yp).var(unbiased=False) / var)


class KLController:
    """The KL leash's coefficient β: fixed, or adaptive toward a target KL (Ziegler et al. 2019, "Fine-Tuning
    Language Models from Human Preferences", §2.2): ``β ← β · (1 + clip(KL/target − 1, ±0.2) · n / horizon)``.

    Args:
        init: Initial β (``kl_coef``).
        target: Target per-episode KL in nats; None keeps β fixed.
        horizon: How many episodes the adaptation is spread over.
    """

    def __init__(self, init: float, target: float | None = None, horizon: int = 10_000) -> None:
        if not math.isfinite(init) or init < 0:
            raise ValueError(f"kl_coef must be a finite number ≥ 0, got {init!r}")
        if target is not None and not target > 0:
            raise ValueError(f"target_kl must be > 0 or None, got {target!r}")
        self.value = float(init)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_episodes: int) -> None:
        if self.target is None or not math.isfinite(current_kl):
            return
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_episodes / self.horizon


# ---- callbacks ------------------------------------------------------------------------------------------
class BaseCallback:
    """SB3-shaped callback: subclass and implement ``_on_step`` (return False to stop training).

    ``self.model`` is the algorithm, ``self.locals`` the loop's variables (``batch``, ``stats``),
    ``self.num_timesteps`` the env steps so far. ``on_step`` runs once per iteration (rollout + update).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.model: Any = None
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.n_calls = 0
        self.num_timesteps = 0

    def init_callback(self, model: Any) -> None:
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_
        self._on_training_start()

    def _on_training_start(self) -> None:
        pass

    def on_step(self) -> bool:
        self.n_calls += 1
        self.num_timesteps = self.model.num_timesteps
        return bool(self._on_step())

    def _on_step(self) -> bool:
        return True

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_end(self) -> None:
        pass


class CallbackList(BaseCallback):
    def __init__(self, callbacks: list[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = callbacks

    def init_callback(self, model: Any) -> None:
        super().init_callback(model)
        for c in self.callbacks:
            c.init_callback(model)

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_training_start(locals_, globals_)

    def update_locals(self, locals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.update_locals(locals_)

    def _on_step(self) -> bool:
        return all([c.on_step() for c in self.callbacks])  # every callback runs, even after a False

    def on_training_end(self) -> None:
        for c in self.callbacks:
            c.on_training_end()


class FunctionCallback(BaseCallback):
    """Wraps ``fn(locals_, globals_) -> bool | None`` (SB3's old callable style); ``None`` means go on."""

    def __init__(self, fn: Callable[[dict[str, Any], dict[str, Any]], Any]) -> None:
        super().__init__()
        self.fn = fn

    def _on_step(self) -> bool:
        out = self.fn(self.locals, self.globals)
        return True if out is None else bool(out)


def make_callback(callback: Any) -> BaseCallback:
    if callback is None:
        return CallbackList([])
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList([make_callback(c) for c in callback])
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(f"callback must be a BaseCallback, a callable or a list of them, got {callback!r}")


# ---- logging --------------------------------------------------------------------------------------------
class TrainLogger:
    """Writes each iteration's scalars to ``progress.csv`` (and TensorBoard when ``tensorboard=True``).

    The CSV gains columns as new keys appear (it is rewritten then, rarely); values are appended per row.
    """

    def __init__(self, log_dir: str | os.PathLike | None, tensorboard: bool = True) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer = None
        self._keys: list[str] = []
        self._rows: list[dict[str, float]] = []
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.log_dir))
                except ImportError:  # tensorboard is a dependency, but keep training if it is missing
                    logger.warning("tensorboard is not installed; logging to CSV only")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        row = {"global_step": step, **{k: float(v) for k, v in scalars.items()}}
        self._rows.append(row)
        if self._writer is not None:
            for k, v in scalars.items():
                if math.isfinite(float(v)):
                    self._writer.add_scalar(k, float(v), step)
        if self.log_dir is None:
            return
        path = self.log_dir / "progress.csv"
        new_keys = [k for k in row if k not in self._keys]
        if new_keys or not path.exists():
            self._keys += new_keys
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self._keys)
                w.writeheader()
                w.writerows(self._rows)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys).writerow(row)

    @property
    def rows(self) -> list[dict[str, float]]:
        return self._rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ---- devices and seeds ----------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # e.g. "meta" builds but cannot sample
        raise ValueError(f"device {device!r} cannot run a policy; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    n_gpus = torch.cuda.device_count()
    if dev.type == "cuda" and (dev.index or 0) >= n_gpus:  # torch would fail later with an AssertionError
        raise ValueError(f"device {device!r} is not available: this machine has {n_gpus} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available on this machine")
    return dev


def iteration_seed(seed: int, iteration: int) -> int:
    """A seed for one iteration, derived from the run's seed: an iteration replays identically after a
    resume without saving any RNG state."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1, dtype=np.uint32)[0])


# ---- checkpoints ----------------------------------------------------------------------------------------
def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (hyperparameters): no pickle."""
    from agents.policies.transformer import write_safetensors

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    write_safetensors(directory / "optimizer.safetensors", tensors)
    atomic_write_json(directory / "optimizer.json", {"param_groups": groups, "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Inverse of :func:`save_optimizer`; a malformed or tampered file raises ``ValueError`` naming it."""
    from agents.policies.transformer import read_safetensors

    meta_path, tensors_path = directory / "optimizer.json", directory / "optimizer.safetensors"
    meta = read_json(meta_path, what="optimizer state")
    tensors = read_safetensors(tensors_path)
    state: dict[int, dict[str, Any]] = {}
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list):
            raise ValueError("expected an object with a 'param_groups' list")
        for key, v in [*tensors.items(), *meta.get("scalars", {}).items()]:
            pid, name = key.split(".", 1)  # "<parameter index>.<state name>"
            state.setdefault(int(pid), {})[name] = v
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"optimizer state {str(meta_path)!r} / {tensors_path.name!r} is malformed: {e}"
        ) from e
    # a per-parameter tensor of the wrong shape loads fine and fails only at the next step, deep in torch
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for pid, st in state.items():
        for name, v in st.items():
            want = tuple(params[pid].shape) if 0 <= pid < len(params) else "no parameter"
            if want == "no parameter" or (isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != want):
                raise ValueError(
                    f"optimizer state {str(tensors_path)!r} does not fit this model: {pid}.{name} has shape "
                    f"{tuple(getattr(v, 'shape', ()))}; the model's parameter {pid}: {want}"
                )
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"optimizer state in {str(directory)!r} does not fit this model: {e}") from e


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """The directory of the newest complete checkpoint under ``path`` (named by ``latest.json``)."""
    path = Path(path)
    pointer = path / "latest.json"
    if not pointer.exists():
        raise FileNotFoundError(f"no checkpoint in {str(path)!r} (missing latest.json)")
    data = read_json(pointer, what="checkpoint pointer")
    if not isinstance(data, dict) or "checkpoint" not in data:
        raise ValueError(f"checkpoint pointer {str(pointer)!r} is malformed: {data!r}")
    name = data["checkpoint"]
    ckpt = path / str(name)
    # a bare directory name in ``path``: not "", ".", ".." or a path that leads elsewhere
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or not ckpt.is_dir():
        raise ValueError(
            f"checkpoint pointer {str(pointer)!r} names {data['checkpoint']!r}, which is missing"
        )
    return ckpt


# ---- the on-policy loop ---------------------------------------------------------------------------------
class OnPolicyAlgorithm:
    """The shared loop. Subclasses set ``algo_name`` and implement ``train(batch) -> dict of stats``.

    Args:
        policy: A policy object (e.g. :class:`~agents.policies.TransformerPolicy`), a directory with a saved
            policy, or ``"transformer"`` to build the default policy for the env's task.
        env: A ``TextEnv/...`` id, a task name/Task, or a lockstep ``TextGenVectorEnv``.
        n_envs: Episodes per rollout (slots of the vector env).
        learning_rate: AdamW learning rate.
        gamma: Discount (1.0: a completion's reward counts fully for every token).
        kl_coef: Initial β of the per-token KL leash ``-β (log π − log π_ref)``; 0 disables the reference.
        target_kl: Target per-episode KL for the adaptive β (Ziegler et al. 2019); None keeps β fixed.
        kl_horizon: Episodes over which β adapts.
        reference: The frozen reference policy; None = a frozen copy of the initial policy when kl_coef > 0.
        ent_coef: Entropy bonus weight.
        max_grad_norm: Gradient clipping.
        temperature: Sampling temperature (None keeps the policy's); training uses the same one.
        seed: Seeds weights (when the policy is built here), prompts and sampling.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``.
        log_dir: Where ``progress.csv`` and TensorBoard events go (None: keep logs in memory only).
        checkpoint_dir: Where periodic checkpoints go (None: none).
        checkpoint_every: Iterations between checkpoints.
        lr_warmup: Iterations of linear learning-rate warmup (0: none).
        policy_kwargs: Passed to ``TransformerPolicy.for_task`` when ``policy="transformer"``.
        env_kwargs: Passed to the env factory when ``env`` is an id or task.
        verbose: 0 silent, 1 a summary line per ``log_interval`` iterations via ``logging``.
    """

    algo_name = "base"
    uses_value_head = True
    # completions sampled per prompt in one rollout: k ≥ 2 draws n_envs / k prompts and repeats each k times
    # (the group baselines of RLOO and of PPO(k=...)); 1 draws n_envs prompts independently
    k = 1

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        n_envs: int = 64,
        learning_rate: float = 3e-4,
        gamma: float = 1.0,
        kl_coef: float = 0.0,
        target_kl: float | None = None,
        kl_horizon: int = 10_000,
        reference: Any = None,
        ent_coef: float = 0.0,
        max_grad_norm: float = 1.0,
        temperature: float | None = None,
        seed: int = 0,
        device: str = "auto",
        log_dir: str | os.PathLike | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 50,
        lr_warmup: int = 10,
        policy_kwargs: dict[str, Any] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        if not (learning_rate > 0 and math.isfinite(learning_rate)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if type(checkpoint_every) is not int or checkpoint_every < 1:  # (bools are ints too)
            raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
        self.hparams: dict[str, Any] = dict(
            n_envs=n_envs, learning_rate=learning_rate, gamma=gamma, kl_coef=kl_coef, target_kl=target_kl,
            kl_horizon=kl_horizon, ent_coef=ent_coef, max_grad_norm=max_grad_norm, temperature=temperature,
            seed=seed, checkpoint_every=checkpoint_every, lr_warmup=lr_warmup,
            policy_kwargs=policy_kwargs or {}, env_kwargs=env_kwargs or {}, verbose=verbose,
        )  # fmt: skip
        self.n_envs = n_envs
        self.learning_rate = learning_rate
        self.gamma = gamma
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.seed = seed
        self.verbose = verbose
        self.device = resolve_device(device)
        self.env_spec = env if isinstance(env, str) else None
        self.env = make_rollout_env(env, n_envs, **(env_kwargs or {})) if env is not None else None
        torch.manual_seed(seed)
        self.policy = self._build_policy(policy, policy_kwargs or {}).to(self.device)
        if temperature is not None:
            self.policy.temperature = temperature
        self.kl = KLController(kl_coef, target_kl, kl_horizon)
        if reference is None and kl_coef > 0:
            reference = self.policy.clone_frozen()
        self.reference = None if reference is None else reference.to(self.device).eval()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=learning_rate, weight_decay=0.0)
        self.collector = None if self.env is None else RolloutCollector(self.policy, self.env, self.reference)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.lr_warmup = int(lr_warmup)
        self.logger = TrainLogger(self.log_dir)
        self.num_timesteps = 0
        self.iteration = 0
        self._stop_requested = False

    # ---- construction helpers --------------------------------------------------------------------------
    def _build_policy(self, policy: Any, policy_kwargs: dict[str, Any]) -> Any:
        from agents.policies import TransformerPolicy, load_policy

        if isinstance(policy, torch.nn.Module):
            return policy
        if isinstance(policy, (str, os.PathLike)) and str(policy) == "transformer":
            if self.env is None:
                raise ValueError("policy='transformer' needs an env to size the model for")
            return TransformerPolicy.for_task(self.env.task, **policy_kwargs)
        if isinstance(policy, (str, os.PathLike)) and Path(policy).is_dir():
            return load_policy(policy)
        raise ValueError(
            f"unknown policy {policy!r}; expected 'transformer', a policy object, or a saved-policy directory"
        )

    # ---- the loop ------------------------------------------------------------------------------------------
    def collect_rollouts(self) -> RolloutBatch:
        """One batch of ``n_envs`` episodes, seeded by the iteration (replays identically on resume).

        With ``k`` ≥ 2: ``n_envs / k`` prompts drawn from the train split, each repeated ``k``
        times in consecutive rows.
        """
        if self.collector is None:
            raise ValueError("this agent has no env; pass env=... to train it")
        seed = iteration_seed(self.seed, self.iteration)
        self.policy.eval()
        if self.k == 1:
            return self.collector.collect(seed=seed)
        n_prompts = len(self.env.task.encoded(self.env.split))
        groups = np.random.default_rng(seed).integers(n_prompts, size=self.n_envs // self.k)
        return self.collector.collect(seed=seed, prompt_index=np.repeat(groups, self.k))

    def shaped_rewards(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Env rewards plus the per-token KL leash ``-β (log π − log π_ref)``; also each episode's KL."""
        if batch.ref_logprobs is None:
            return batch.rewards, torch.zeros(batch.rewards.shape[0], device=batch.rewards.device)
        kl = (batch.logprobs - batch.ref_logprobs) * batch.mask  # (B, T)
        return batch.rewards - self.kl.value * kl, kl.sum(dim=1)

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        raise NotImplementedError

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        progress_bar: bool = False,
        reset_num_timesteps: bool = True,
    ) -> OnPolicyAlgorithm:
        """Train for ``total_timesteps`` env steps (generated tokens), SB3-style.

        With ``reset_num_timesteps=False`` the budget is added to the steps already taken (a resumed run
        continues its count). SIGINT/SIGTERM finish the current iteration, write a checkpoint (if
        ``checkpoint_dir`` is set) and return.
        """
        if not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < 0:
            raise ValueError(f"total_timesteps must be an int ≥ 0, got {total_timesteps!r}")
        if reset_num_timesteps:
            self.num_timesteps, self.iteration = 0, 0
        target = self.num_timesteps + int(total_timesteps)
        cb = make_callback(callback)
        cb.init_callback(self)
        cb.on_training_start(locals(), globals())
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total_timesteps), unit="tok", desc=self.algo_name)
        previous = self._install_signal_handlers()
        # small models on CPU run fastest on one thread (BENCHMARKS.md: 4-70x on 2 shared cores), the update
        # as well as the rollout; a user's OMP_NUM_THREADS or a large model keeps torch's setting
        threads_before = torch.get_num_threads()
        threads = auto_num_threads(self.policy, self.device)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            while self.num_timesteps < target:
                t0 = time.perf_counter()
                batch = self.collect_rollouts()
                t_rollout = time.perf_counter() - t0
                self.policy.train()
                self._set_learning_rate()
                stats = self.train(batch)
                self.policy.eval()
                self.num_timesteps += batch.num_tokens
                self.iteration += 1
                dt = time.perf_counter() - t0
                stats.update(self._episode_stats(batch))
                stats["charts/tokens_per_s"] = batch.num_tokens / dt
                stats["charts/rollout_fraction"] = t_rollout / dt
                stats["charts/kl_coef"] = self.kl.value
                stats["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
                self.logger.write(self.num_timesteps, stats)
                if self.verbose and self.iteration % log_interval == 0:
                    logger.info(
                        "%s it=%d steps=%d return=%.3f success=%.3f kl=%.3f tok/s=%.0f", self.algo_name,
                        self.iteration, self.num_timesteps, stats["charts/episodic_return"],
                        stats.get("charts/success_rate", float("nan")), stats.get("charts/kl", 0.0),
                        stats["charts/tokens_per_s"],
                    )  # fmt: skip
                if bar is not None:
                    bar.update(min(batch.num_tokens, target - bar.n))
                    bar.set_postfix(ret=f"{stats['charts/episodic_return']:.3f}")
                if self.checkpoint_dir is not None and self.iteration % self.checkpoint_every == 0:
                    self.save(self.checkpoint_dir)
                cb.update_locals({"batch": batch, "stats": stats})
                if not cb.on_step():
                    break
                if self._stop_requested:
                    logger.warning("stop requested by a signal: checkpointing and returning")
                    if self.checkpoint_dir is not None:
                        self.save(self.checkpoint_dir)
                    break
        finally:
            torch.set_num_threads(threads_before)
            self._restore_signal_handlers(previous)
            if bar is not None:
                bar.close()
        cb.on_training_end()
        return self

    def _set_learning_rate(self) -> None:
        """Linear warmup over the first ``lr_warmup`` iterations, then constant.

        Adam's first steps move every weight by about the full learning rate whatever the gradient's size,
        and the first RL gradients are noisy (a fresh value head, few episodes): without warmup a
        warm-started policy loses some of its SFT accuracy before it starts to gain (seen on Reverse-v0 for
        all four learners). Computed from the iteration count, so a resumed run continues it exactly.
        """
        scale = min(1.0, (self.iteration + 1) / self.lr_warmup) if self.lr_warmup > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate * scale

    def _episode_stats(self, batch: RolloutBatch) -> dict[str, float]:
        out = {
            "charts/episodic_return": float(batch.episode_returns.mean()),
            "charts/episode_length": float(batch.lengths.mean()),
        }
        if not np.isnan(batch.success).all():
            out["charts/success_rate"] = float(np.nanmean(batch.success))
        return out

    def _install_signal_handlers(self) -> dict[int, Any]:
        self._stop_requested = False
        previous: dict[int, Any] = {}

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop_requested = True

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # ---- training helpers --------------------------------------------------------------------------------
    def forward_batch(
        self, batch: RolloutBatch, idx: torch.Tensor | slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One full-sequence forward over episodes ``idx``: new log-probs, values and entropies ``(b, T)``
        (0 after each episode's end). Columns that are padding in every row of the minibatch are cropped
        first, and the LM head runs on the action columns only."""
        new_logp, values, logp_all = score_actions(
            self.policy, batch.input_ids[idx], batch.attention_mask[idx], batch.actions[idx], batch.mask[idx],
            batch.prompt_width,
        )  # fmt: skip
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # (b, T')
        pad = (0, batch.actions.shape[1] - new_logp.shape[1])
        return F.pad(new_logp, pad), F.pad(values, pad), F.pad(entropy, pad)

    def policy_gradient_step(
        self,
        batch: RolloutBatch,
        advantages: torch.Tensor,
        returns: torch.Tensor | None,
        vf_coef: float,
    ) -> dict[str, float]:
        """One on-policy gradient step on ``-A·log π`` (+ a value regression toward ``returns``, if given).

        The vanilla policy-gradient update shared by REINFORCE, A2C and RLOO: they differ only in their
        advantages. No ratio is needed: the batch was sampled by the current weights.
        """
        m = batch.mask
        new_logp, new_values, entropy = self.forward_batch(batch)
        pg_loss = -masked_mean(advantages.detach() * new_logp, m)
        ent = masked_mean(entropy, m)
        loss = pg_loss - self.ent_coef * ent
        v_loss = torch.zeros(())
        if returns is not None and vf_coef > 0:
            v_loss = 0.5 * masked_mean((new_values - returns.detach()) ** 2, m)
            loss = loss + vf_coef * v_loss
        grad_norm = self.optimizer_step(loss)
        with torch.no_grad():
            approx_kl = masked_mean(batch.logprobs - new_logp, m)  # ≈ 0: the batch is on-policy
        out = {
            "losses/policy_loss": pg_loss.item(),
            "losses/entropy": ent.item(),
            "losses/grad_norm": grad_norm,
            "losses/approx_kl": approx_kl.item(),
        }
        if returns is not None and vf_coef > 0:
            out["losses/value_loss"] = v_loss.item()
            out["losses/explained_variance"] = explained_variance(batch.values, returns, m)
        return out

    def optimizer_step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return float(grad_norm)

    # ---- inference -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """The next token for an observation window ``(context_len,)`` or a batch ``(N, context_len)``.

        SB3's signature (``state`` and ``episode_start`` are accepted and ignored: the window is the state).
        This re-reads the whole window per call; training and evaluation use the KV-cached rollout instead.
        """
        obs = np.asarray(observation)
        single = obs.ndim == 1
        if single:
            obs = obs[None]
        if obs.ndim != 2 or not np.issubdtype(obs.dtype, np.integer):
            raise ValueError(
                "observation must be token ids of shape (context_len,) or (N, context_len), "
                f"got {obs.shape} {obs.dtype}"
            )
        pad = self.policy.tokenizer.pad_id
        ids = torch.as_tensor(obs, dtype=torch.long, device=self.device)
        mask = ids != pad
        keep = mask.any(dim=0).nonzero()
        first = int(keep[0]) if len(keep) else 0
        ids, mask = ids[:, first:], mask[:, first:]
        self.policy.eval()
        logits, _ = self.policy(ids, mask)
        tokens, _ = self.policy.sample(logits[:, -1], deterministic=deterministic)
        actions = tokens.cpu().numpy()
        return (actions[0] if single else actions), None

    def evaluate(
        self, n_episodes: int = 200, split: str = "test", deterministic: bool = True
    ) -> dict[str, float]:
        """Greedy (by default) mean return and success rate on held-out prompts."""
        if self.env is None:
            raise ValueError("this agent has no env to evaluate on")
        return evaluate_policy(
            self.policy, self.env, n_episodes=n_episodes, split=split, deterministic=deterministic
        )

    # ---- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, keep: int = 2) -> Path:
        """Write a checkpoint under the directory ``path`` and point ``path/latest.json`` at it.

        Each checkpoint is a new ``ckpt-<iteration>`` directory (policy and reference as safetensors + JSON,
        optimizer state as safetensors + JSON, the loop's state as JSON; nothing pickled). Only once all of it
        is on disk does the pointer move (an atomic rename), so a crash at any point leaves the previous
        checkpoint loadable. The ``keep`` newest checkpoints are kept.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{self.iteration:08d}"
        tmp = root / f".{name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self.policy.save(tmp / "policy")
        if self.reference is not None:
            self.reference.save(tmp / "reference")
        save_optimizer(self.optimizer, tmp)
        state = {
            "algo": type(self).__name__,
            "format_version": 1,
            "hparams": self.hparams,
            "env": self.env_spec,
            "num_timesteps": self.num_timesteps,
            "iteration": self.iteration,
            "kl_coef_value": self.kl.value,
            "has_reference": self.reference is not None,
        }
        atomic_write_json(tmp / "state.json", state, indent=1)
        final = root / name
        if final.exists():  # saved twice at one iteration: never touch the directory the pointer may name
            name = f"{name}-{time.time_ns()}"
            final = root / name
        os.replace(tmp, final)
        atomic_write_json(root / "latest.json", {"checkpoint": name})
        # prune by age, never the checkpoint just written (an older run in the same directory can hold
        # higher-numbered ones)
        ckpts = sorted(
            (p for p in root.glob("ckpt-*") if p.is_dir() and p != final), key=lambda p: p.stat().st_mtime
        )
        for old in ckpts[: max(0, len(ckpts) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        # a process killed mid-save leaves its partial directory or temporary pointer behind; the checkpoints
        # never depend on them, so clear them here rather than let them pile up over restarts
        for debris in [*root.glob(".ckpt-*.partial-*"), *root.glob(".latest.json.tmp*")]:
            if debris.is_dir():
                shutil.rmtree(debris, ignore_errors=True)
            else:
                debris.unlink(missing_ok=True)
        return final

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str = "auto", **overrides: Any) -> Any:
        """Rebuild an agent from ``save(path)``: weights, optimizer, step counters and β, so that
        ``learn(..., reset_num_timesteps=False)`` continues the run exactly.

        ``env`` defaults to the saved env id (agents built on an env object need ``env=`` to train again;
        ``predict`` works without one). A truncated or tampered file raises ``ValueError`` naming it.
        """
        from agents.policies import load_policy

        ckpt = latest_checkpoint(path)
        state_path = ckpt / "state.json"
        state = read_json(state_path, what="agent state")
        if not isinstance(state, dict) or not isinstance(state.get("hparams"), dict):
            raise ValueError(f"{str(state_path)!r} is not an agent state file")
        if state.get("algo") != cls.__name__ and cls is not OnPolicyAlgorithm:
            raise ValueError(f"{str(ckpt)!r} holds a {state.get('algo')!r} agent, not a {cls.__name__}")
        try:
            counters = int(state["num_timesteps"]), int(state["iteration"]), float(state["kl_coef_value"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{str(state_path)!r} lacks valid step counters: {type(e).__name__}: {e}") from e
        policy = load_policy(ckpt / "policy")
        reference = load_policy(ckpt / "reference") if state.get("has_reference") else None
        hp = {**state["hparams"], **overrides}
        env_arg = env if env is not None else state.get("env")
        try:
            agent = cls(policy, env_arg, reference=reference, device=device, **hp)
        except TypeError as e:  # an unknown hyperparameter: an edited file (or a mistyped override)
            raise ValueError(f"cannot rebuild the agent from {str(state_path)!r} and overrides: {e}") from e
        load_optimizer(agent.optimizer, ckpt)
        agent.num_timesteps, agent.iteration, agent.kl.value = counters
        return agent

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.env_spec or self.env}, steps={self.num_timesteps})"
