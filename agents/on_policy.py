"""The on-policy loop every built-in learner shares: collect a batch of episodes → shape rewards with the KL
leash → update → adapt β → log → callbacks (checkpoints, progress bar, the user's).

An algorithm file (``reinforce.py``, ``actor_critic.py``, ``ppo.py``, ``rloo.py``) subclasses
:class:`OnPolicyAlgorithm`, declares its config dataclass and writes only its ``train(batch, rewards)``
update, the way stable-baselines3's ``OnPolicyAlgorithm`` owns ``collect_rollouts`` / ``learn``.

Units: a *timestep* is one env step, i.e. one generated token (EOS included), summed over slots; every
budget (``total_timesteps``, the harness's ``--budget``) counts those. An *iteration* is one rollout of
``n_envs`` episodes followed by one update; callbacks' ``on_step`` runs once per iteration. ``learn`` stops at
the first iteration boundary at or past the budget, so it may overshoot by up to one iteration's tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from agents import checkpoint as ckpt_io
from agents.advantages import (
    check_group_size,
    explained_variance,
    group_advantages,
    masked_mean,
    masked_whiten,
)
from agents.callbacks import CallbackList, CheckpointCallback, ProgressBarCallback, make_callback
from agents.checkpoint import NonFiniteUpdateError, RunLock
from agents.config import check_fields, config_from_dict
from agents.distributed import World, get_world
from agents.evaluation import evaluate_policy
from agents.kl import KLController, kl_penalized_rewards
from agents.logger import TrainLogger
from agents.optim import make_adamw
from agents.rollout import (
    RolloutBatch,
    RolloutCollector,
    auto_num_threads,
    make_rollout_env,
    score_actions,
)

logger = logging.getLogger(__name__)

CONFIG_VERSION = 1


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


def _is_name(policy: Any, name: str) -> bool:
    return isinstance(policy, (str, os.PathLike)) and str(policy) == name


def policy_env_tokenizer(policy: Any) -> Any:
    """The tokenizer an env must speak for ``policy``: an HF policy's own (None for the others, whose envs
    keep their task's tokenizer)."""
    from text_env.tokenizers import HFTokenizer

    tok = getattr(policy, "tokenizer", None)
    return tok if isinstance(tok, HFTokenizer) else None


def iteration_seed(seed: int, iteration: int) -> int:
    """A seed for one iteration, derived from the run's seed: an iteration replays identically after a
    resume without saving any RNG state."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1, dtype=np.uint32)[0])


def rank_sampler_seed(seed: int, iteration: int, rank: int) -> int:
    """The sampler's seed of one rank of a data-parallel run at one iteration, from (seed, iteration, rank):
    ranks that shared a sampling seed would repeat each other's completions of the same prompt."""
    return int(np.random.SeedSequence([seed, iteration, rank, 0xD1]).generate_state(1, dtype=np.uint32)[0])


# ---- the config --------------------------------------------------------------------------------------------
@dataclass
class OnPolicyConfig:
    """Hyperparameters every built-in on-policy learner shares (each learner's config extends these)."""

    n_envs: int = 64
    """Episodes per rollout (slots of the vector env)."""
    learning_rate: float = 3e-4
    """AdamW learning rate."""
    gamma: float = 1.0
    """Discount (1.0: a completion's reward counts fully for every token)."""
    kl_coef: float = 0.0
    """Initial β of the per-token KL leash -β (log π − log π_ref); 0 disables the reference."""
    target_kl: float | None = None
    """Target per-episode KL (nats) for the adaptive β (Ziegler et al. 2019); none keeps β fixed."""
    kl_horizon: int = 10_000
    """Episodes over which the adaptive β moves toward its target."""
    ent_coef: float = 0.0
    """Entropy bonus weight (0 leaves the entropy out of the loss)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    micro_batch_size: int | None = None
    """Episodes per forward/backward pass of the update (None: a whole minibatch at once). The passes'
    gradients accumulate into the minibatch's one optimizer step, every loss term divided by the whole
    minibatch's token count, so the update is the same up to float rounding while the activations held
    at once shrink to a micro-batch's (what bounds a real LM's update memory)."""
    temperature: float | None = None
    """Sampling temperature (none keeps the policy's); training scores the same distribution."""
    seed: int = 0
    """Seeds the weights (when the policy is built here), the prompt draws and the sampling."""
    checkpoint_every: int = 50
    """Iterations between checkpoints (when a checkpoint directory is set)."""
    lr_warmup: int = 10
    """Iterations of linear learning-rate warmup (0: none)."""
    max_nonfinite_updates: int = 3
    """Updates in a row with a non-finite loss or gradient (each skipped) before training stops."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """TransformerConfig fields for policy='transformer' (e.g. {"n_layer": 1}); HFPolicy switches for
    policy='smollm2' or an HF policy directory (e.g. {"lora": {"r": 16}, "gradient_checkpointing": True})."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to the env factory when env is an id or a task (e.g. {"reward": "exact_match"})."""
    verbose: int = 0
    """0 silent; 1 logs a summary line per iteration through logging."""

    def __post_init__(self) -> None:
        # None means "none given" for the two dicts, as the keyword arguments always accepted
        self.policy_kwargs = {} if self.policy_kwargs is None else self.policy_kwargs
        self.env_kwargs = {} if self.env_kwargs is None else self.env_kwargs
        if isinstance(self.n_envs, bool) or not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise ValueError(f"n_envs must be a positive int, got {self.n_envs!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"learning_rate must be a finite number > 0, got {lr!r}")
        if (
            isinstance(self.gamma, bool)
            or not isinstance(self.gamma, (int, float))
            or not 0 <= self.gamma <= 1
        ):
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if type(self.checkpoint_every) is not int or self.checkpoint_every < 1:  # (bools are ints too)
            raise ValueError(f"checkpoint_every must be a positive int, got {self.checkpoint_every!r}")
        kl = self.kl_coef
        if isinstance(kl, bool) or not isinstance(kl, (int, float)) or not math.isfinite(kl) or kl < 0:
            raise ValueError(f"kl_coef must be a finite number ≥ 0, got {kl!r}")
        t = self.target_kl
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf):
            raise ValueError(f"target_kl must be > 0 or None, got {t!r}")
        for name in ("kl_horizon", "max_nonfinite_updates"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("lr_warmup", "seed", "verbose"):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValueError(f"{name} must be an int ≥ 0, got {v!r}")
        mb = self.micro_batch_size
        if mb is not None and (type(mb) is not int or mb < 1):
            raise ValueError(f"micro_batch_size must be a positive int or None, got {mb!r}")
        for name in ("ent_coef", "max_grad_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {v!r}")
        temp = self.temperature
        if temp is not None and (
            isinstance(temp, bool) or not isinstance(temp, (int, float)) or not (0 < temp < math.inf)
        ):
            raise ValueError(f"temperature must be a positive finite number or None, got {temp!r}")
        check_fields(self)


# ---- the loop ---------------------------------------------------------------------------------------------
class OnPolicyAlgorithm:
    """The shared loop. Subclasses set ``algo_name`` and ``config_class`` and implement
    ``train(batch, rewards) -> dict of stats``.

    Args:
        policy: A policy object (e.g. :class:`~agents.policies.TransformerPolicy`), a directory with a saved
            policy, or ``"transformer"`` to build the default policy for the env's task.
        env: A ``TextEnv/...`` id, a task name/Task, or a lockstep ``TextGenVectorEnv``.
        config: The hyperparameters (the learner's config dataclass); None uses its defaults.
        reference: The frozen reference policy; None = a frozen copy of the initial policy when kl_coef > 0.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``.
        log_dir: Where ``progress.csv`` and TensorBoard events go (None: keep logs in memory only).
        checkpoint_dir: Where periodic checkpoints go (None: none).
        **hyperparameters: Fields of the config, overriding ``config``'s (e.g. ``n_envs=32``).
    """

    algo_name: ClassVar[str] = "base"
    config_class: ClassVar[type[OnPolicyConfig]] = OnPolicyConfig
    uses_value_head: bool = True

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        config: OnPolicyConfig | None = None,
        reference: Any = None,
        device: str = "auto",
        log_dir: str | os.PathLike | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        **hyperparameters: Any,
    ) -> None:
        if config is not None and not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(hyperparameters) - known)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown hyperparameters {unknown}; its config "
                f"({self.config_class.__name__}) has {sorted(known)}"
            )
        base = config if config is not None else self.config_class()
        self.config = dataclasses.replace(base, **hyperparameters)  # validated in __post_init__
        cfg = self.config
        # data parallelism (agents/distributed.py): a world of size 1 changes nothing below
        self.world: World = get_world()
        self._shard = self.world.slice(cfg.n_envs, self.group_size)  # this rank's rows of the global batch
        n_local = self._shard.stop - self._shard.start
        self._global_lengths: np.ndarray | None = None  # every rank's episode lengths, this iteration
        self.device = self.world.device(resolve_device(device))
        self.env_spec = env if isinstance(env, str) else None
        if _is_name(policy, "transformer"):  # sized for the env's task: the env first
            self.env = make_rollout_env(env, n_local, **cfg.env_kwargs) if env is not None else None
            self._warn_unserialisable()
            torch.manual_seed(cfg.seed)
            self.policy = self._build_policy(policy, cfg.policy_kwargs).to(self.device)
        else:  # the env speaks an HF policy's own tokenizer: the policy first
            torch.manual_seed(cfg.seed)
            self.policy = self._build_policy(policy, cfg.policy_kwargs).to(self.device)
            self.env = None if env is None else make_rollout_env(
                env, n_local, policy_tokenizer=policy_env_tokenizer(self.policy), **cfg.env_kwargs
            )  # fmt: skip
            self._warn_unserialisable()
        if self.world.is_distributed:
            if self.env is not None and self.env.num_envs != n_local:
                raise ValueError(
                    f"a data-parallel rank rolls out n_envs / world_size = {cfg.n_envs} / {self.world.size} "
                    f"= {n_local} slots, but the env passed has num_envs={self.env.num_envs}; pass an env id "
                    "or a task, or an env of that size"
                )
            self.world.broadcast_module(self.policy)  # every rank starts from rank 0's weights
        self._check_trainable(self.policy)
        if cfg.temperature is not None:
            self.policy.temperature = cfg.temperature
        self.kl = KLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
        given_reference = reference is not None
        if reference is None and cfg.kl_coef > 0:
            reference = self.policy.clone_frozen()  # of the broadcast weights
        self.reference = None if reference is None else reference.to(self.device).eval()
        if self.reference is not None and given_reference and self.world.is_distributed:
            self.world.broadcast_module(self.reference, "reference")
        self.optimizer = make_adamw(self.policy.parameters(), lr=cfg.learning_rate)
        self.collector = None if self.env is None else RolloutCollector(self.policy, self.env, self.reference)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._logger: TrainLogger | None = None
        self._append_logs = False
        self.num_timesteps = 0
        self.iteration = 0
        self.saved_at: tuple[str, int, int] | None = None
        self.skipped_updates = 0  # updates skipped for a non-finite loss or gradient, over the run
        self._nonfinite_in_a_row = 0
        self._stop_requested = False
        self._last_tokens = 0

    # ---- config access (the hyperparameters read as attributes) -------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: agent.n_envs, agent.clip_range, ... read the config
        config = self.__dict__.get("config")
        if config is not None and name in {f.name for f in dataclasses.fields(config)}:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def hparams(self) -> dict[str, Any]:
        """The config as a dict (what checkpoints record; callables recorded by name)."""
        record, _ = ckpt_io.to_record(dataclasses.asdict(self.config))
        return record

    @property
    def logger(self) -> TrainLogger:
        if self._logger is None:
            # rank 0 alone writes progress.csv and TensorBoard; the others keep their rows in memory
            self._logger = TrainLogger(self.log_dir, append=self._append_logs, enabled=self.world.is_main)
        return self._logger

    # ---- construction helpers --------------------------------------------------------------------------
    def _build_policy(self, policy: Any, policy_kwargs: dict[str, Any]) -> Any:
        from agents.policies import TransformerPolicy, _policy_class, load_policy
        from agents.pretrained import NAMED_POLICIES, load_named_policy

        if isinstance(policy, torch.nn.Module):
            return policy
        if _is_name(policy, "transformer"):
            if self.env is None:
                raise ValueError("policy='transformer' needs an env to size the model for")
            return TransformerPolicy.for_task(self.env.task, **policy_kwargs)
        if isinstance(policy, str) and policy in NAMED_POLICIES:
            return load_named_policy(policy, **policy_kwargs)  # smollm2: HFPolicy switches (lora=...)
        if isinstance(policy, (str, os.PathLike)) and Path(policy).is_dir():
            if policy_kwargs and _policy_class(Path(policy)).__name__ == "HFPolicy":
                return load_policy(policy, **policy_kwargs)  # HFPolicy switches
            return load_policy(policy)
        raise ValueError(
            f"unknown policy {policy!r}; expected 'transformer', one of {list(NAMED_POLICIES)}, a policy "
            "object, or a saved-policy directory"
        )

    @staticmethod
    def _check_trainable(policy: Any) -> None:
        """Training keeps fp32 master weights (DESIGN.md): fp16/bf16 parameters would lose Adam's small
        updates or overflow (AdamW's eps of 1e-8 is 0 in fp16, so a zero gradient gives a NaN weight)."""
        low = sorted(
            {str(p.dtype) for p in policy.parameters() if p.requires_grad and p.dtype != torch.float32}
        )
        if low:
            raise ValueError(
                f"the policy has trainable {', '.join(low)} parameters; training needs float32 master "
                "weights (call policy.float(); on CUDA the forward runs under bf16 autocast)"
            )

    def _warn_unserialisable(self) -> None:
        _, missing = ckpt_io.to_record(self.config.env_kwargs, "env_kwargs")
        if missing:
            what = ", ".join(f"{k} ({v})" for k, v in missing.items())
            logger.warning(
                "%s is not serialisable: checkpoints record it by name only, so resuming needs it passed "
                "again (%s.load(path, env_kwargs={...}))",
                what,
                type(self).__name__,
            )

    # ---- the loop ------------------------------------------------------------------------------------------
    def collect_rollouts(self) -> RolloutBatch:
        """One batch of ``n_envs`` episodes, seeded by the iteration (replays identically on resume).

        With ``k`` ≥ 2: ``n_envs / k`` prompts drawn from the train split, each repeated ``k``
        times in consecutive rows.
        """
        if self.collector is None:
            raise ValueError("this agent has no env; pass env=... to train it")
        seed = iteration_seed(self.config.seed, self.iteration)
        self.policy.eval()
        k = self.group_size
        if self.world.is_distributed:
            return self._collect_shard(seed, k)
        if k == 1:
            return self.collector.collect(seed=seed)
        assert self.env is not None  # grouped collection runs on the env the learner was built with
        n_prompts = len(self.env.task.encoded(self.env.split))
        groups = np.random.default_rng(seed).integers(n_prompts, size=self.config.n_envs // k)
        return self.collector.collect(seed=seed, prompt_index=np.repeat(groups, k))

    def _collect_shard(self, seed: int, k: int) -> RolloutBatch:
        """A data-parallel rank's rows of the global batch: every rank draws the single-process plan (global
        slot ``i``'s prompt comes from seed ``seed + i``, as ``env.reset(seed=seed)`` seeds it; a group plan
        is drawn whole) and keeps its slice; the sampler is seeded from (seed, iteration, rank)."""
        assert self.collector is not None
        shard = self._shard
        sampler = rank_sampler_seed(self.config.seed, self.iteration, self.world.rank)
        slot_seeds = [seed + i for i in range(shard.start, shard.stop)]
        if k == 1:
            return self.collector.collect(seed=slot_seeds, sampler_seed=sampler)
        assert self.env is not None  # grouped collection runs on the env the learner was built with
        n_prompts = len(self.env.task.encoded(self.env.split))
        groups = np.random.default_rng(seed).integers(n_prompts, size=self.config.n_envs // k)
        plan = np.repeat(groups, k)[shard]
        return self.collector.collect(seed=slot_seeds, sampler_seed=sampler, prompt_index=plan)

    @property
    def group_size(self) -> int:
        """Completions sampled per prompt in one rollout: k ≥ 2 draws ``n_envs / k`` prompts and repeats each
        k times (the group baselines of RLOO and of PPO(k=...)); 1 draws n_envs prompts independently."""
        return int(getattr(self.config, "k", 1))

    def shaped_rewards(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Env rewards plus the per-token KL leash ``-β (log π − log π_ref)``; also each episode's KL."""
        return kl_penalized_rewards(
            batch.rewards, batch.logprobs, batch.ref_logprobs, batch.mask, self.kl.value
        )

    def group_advantages(self, rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The shared critic-free estimator (RLOO, PPO with k ≥ 2): per-token advantages from each
        completion's return baselined by the other completions of its prompt (``scale_by_std``: GRPO)."""
        return group_advantages(
            rewards, mask, self.group_size, bool(getattr(self.config, "scale_by_std", False))
        )

    def train(self, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        """The algorithm's update on one batch, given its KL-shaped per-token ``rewards (B, T)``."""
        raise NotImplementedError

    # ---- global normalisers (data parallelism; a single process computes exactly what it always did) -----
    def global_count(self, rows: np.ndarray | torch.Tensor | None = None) -> float:
        """Valid tokens over every rank in the global batch's ``rows`` (all rows if None)."""
        lengths = self._global_lengths
        if lengths is None:
            raise RuntimeError("global_count is only known inside a data-parallel iteration")
        if rows is None:
            return float(lengths.sum())
        return float(lengths[np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)].sum())

    def batch_mean(self, x: torch.Tensor, mask: torch.Tensor, rows: Any = None) -> torch.Tensor:
        """The masked mean of a loss term over the global batch's ``rows``: in a single process
        :func:`~agents.advantages.masked_mean`; on a data-parallel rank its local sum ÷ (global count ÷
        world size), so that the ranks' mean (the gradient all-reduce) is the single-process value."""
        return masked_mean(x, mask, self.loss_count(mask, rows))

    def whiten(self, x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Advantage whitening over the whole global batch (mean and variance over every rank's tokens)."""
        if not self.world.is_distributed:
            return masked_whiten(x, mask, eps)
        n = max(self.global_count(), 1.0)
        m = mask.to(x.dtype)
        mean = self.world.sum([float((x * m).sum())])[0] / n
        var = self.world.sum([float((((x - mean) ** 2) * m).sum())])[0] / n
        return torch.where(mask, (x - mean) / math.sqrt(var + eps), torch.zeros_like(x))

    def batch_explained_variance(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor
    ) -> float:
        """:func:`~agents.advantages.explained_variance` over the global batch (a logged diagnostic)."""
        if not self.world.is_distributed:
            return explained_variance(y_pred, y_true, mask)
        yt, d = y_true[mask].double(), (y_true - y_pred)[mask].double()
        n, s1, s2, r1, r2 = self.world.sum([yt.numel(), yt.sum(), (yt**2).sum(), d.sum(), (d**2).sum()])
        if n < 2:
            return float("nan")
        var = s2 / n - (s1 / n) ** 2
        if var <= 0:
            return float("nan")
        return float(1 - (r2 / n - (r1 / n) ** 2) / var)

    def loss_count(self, mask: torch.Tensor, rows: Any = None) -> float:
        """The divisor of a loss term averaged over a minibatch: its valid tokens (``mask``: the minibatch's
        rows) in a single process; on a data-parallel rank the global minibatch's (``rows``) count ÷ world
        size, as :meth:`batch_mean` divides. Fixed for the minibatch, so the terms of its micro-batches (and
        of its ranks) add up to the minibatch's mean."""
        if not self.world.is_distributed:
            return max(float(mask.sum()), 1.0)
        return max(self.global_count(rows), 1.0) / self.world.size

    def micro_batches(self, rows: torch.Tensor | slice, n_rows: int) -> list[torch.Tensor | slice]:
        """This rank's ``rows`` of a minibatch (``n_rows`` of them; a slice means all of the batch) in chunks
        of at most ``micro_batch_size`` (one chunk when it is unset or not smaller)."""
        size = self.config.micro_batch_size
        if size is None or n_rows <= size:
            return [rows]
        if isinstance(rows, slice):
            rows = torch.arange(n_rows, device=self.device)[rows]
        return list(rows.split(size))

    def step_on_rows(
        self,
        rows: torch.Tensor | slice,
        n_rows: int,
        loss_fn: Callable[[torch.Tensor | slice], tuple[torch.Tensor, dict[str, torch.Tensor]]],
        names: Sequence[str],
    ) -> tuple[float, dict[str, float]]:
        """One optimizer step on the loss over this rank's ``rows`` of a minibatch.

        ``loss_fn(idx)`` returns the loss of rows ``idx`` and the scalars ``names``, every term a masked sum
        ÷ the minibatch's :meth:`loss_count`, so the terms of disjoint rows add up to the minibatch's. The
        rows run in :meth:`micro_batches`, each backward accumulating into the gradient (at most one
        micro-batch's activations are held at once); then the gradient is averaged over ranks, clipped and
        applied, as :meth:`reduced_step`. ``n_rows`` is 0 on a data-parallel rank that holds none of the
        minibatch: it joins the collectives with a zero gradient. Returns the gradient norm and the scalars
        summed over micro-batches (and averaged over ranks)."""
        if n_rows == 0 and not self.world.is_distributed:
            raise ValueError("step_on_rows needs at least one row in a single process")
        self.optimizer.zero_grad(set_to_none=True)
        totals = {k: torch.zeros((), device=self.device) for k in names}
        bad: torch.Tensor | None = None
        for idx in self.micro_batches(rows, n_rows) if n_rows else []:
            loss, scalars = loss_fn(idx)
            for k in names:
                totals[k] = totals[k] + scalars[k].detach().float().reshape(()).to(self.device)
            if not bool(torch.isfinite(loss)):
                bad = loss.detach()
                break
            loss.backward()
        return self._apply_gradients(bad, totals)

    def reduced_step(
        self, loss: torch.Tensor | None, scalars: dict[str, torch.Tensor]
    ) -> tuple[float, dict[str, float]]:
        """:meth:`optimizer_step` on ``loss``, returning the gradient norm and ``scalars`` as floats.

        On a data-parallel rank the gradients and the scalars (each a rank's share, see :meth:`batch_mean`)
        are averaged over ranks in one collective, so the scalars are the global batch's; a rank with no
        rows in a minibatch passes ``loss=None`` (zero gradient) and still joins the collective. A
        non-finite loss on any rank skips the step on every rank. (:meth:`step_on_rows` does the same over
        micro-batches.)"""
        if loss is None and not self.world.is_distributed:
            raise ValueError("reduced_step needs a loss in a single process")
        self.optimizer.zero_grad(set_to_none=True)
        bad: torch.Tensor | None = None
        if loss is not None:
            if bool(torch.isfinite(loss)):
                loss.backward()
            else:
                bad = loss.detach()
        totals = {k: v.detach().float().reshape(()).to(self.device) for k, v in scalars.items()}
        return self._apply_gradients(bad, totals)

    def _apply_gradients(
        self, bad: torch.Tensor | None, totals: dict[str, torch.Tensor]
    ) -> tuple[float, dict[str, float]]:
        """After the backward passes: average over ranks (gradients and ``totals`` in one collective),
        then clip and step — or skip the step everywhere if a rank's loss was not finite (``bad``)."""
        if not self.world.is_distributed:
            local = {k: v.item() for k, v in totals.items()}
            if bad is not None:
                self.optimizer.zero_grad(set_to_none=True)
                return self._skip_update(f"the loss is {bad.item()}"), local
            return self._clip_and_step(), local
        names = list(totals)
        flag = torch.tensor(0.0 if bad is None else 1.0, device=self.device)
        extras = self.world.all_reduce_gradients(
            self.policy.parameters(), torch.stack([*totals.values(), flag])
        )
        assert extras is not None
        values = extras.tolist()
        reduced = dict(zip(names, values[:-1]))
        if values[-1] > 0:
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip_update("the loss is not finite on at least one rank"), reduced
        return self._clip_and_step(), reduced

    def _clip_and_step(self) -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        if not bool(torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip_update(f"the gradient norm is {float(grad_norm)}")
        self.optimizer.step()
        self._nonfinite_in_a_row = 0
        return float(grad_norm)

    def learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        progress_bar: bool = False,
        reset_num_timesteps: bool = True,
    ) -> OnPolicyAlgorithm:
        """Train for ``total_timesteps`` env steps (generated tokens), SB3-style.

        The run stops at the first iteration boundary at or past the budget (an iteration is ``n_envs`` whole
        episodes). With ``reset_num_timesteps=False`` the budget is added to the steps already taken (a
        resumed run continues its count). SIGINT/SIGTERM finish the current iteration, write a checkpoint (if
        ``checkpoint_dir`` is set) and return.
        """
        if not isinstance(total_timesteps, (int, np.integer)) or total_timesteps < 0:
            raise ValueError(f"total_timesteps must be an int ≥ 0, got {total_timesteps!r}")
        if reset_num_timesteps:
            self.num_timesteps, self.iteration = 0, 0
        target = self.num_timesteps + int(total_timesteps)
        builtin: list[Any] = []
        if self.checkpoint_dir is not None:
            builtin.append(CheckpointCallback(self.checkpoint_dir, self.config.checkpoint_every))
        show_bar = progress_bar and self.world.is_main  # one bar per run, on rank 0
        progress = ProgressBarCallback(int(total_timesteps), self.algo_name) if show_bar else None
        if progress is not None:
            builtin.append(progress)
        cb = CallbackList([*builtin, make_callback(callback)])
        cb.init_callback(self)
        if self.num_timesteps >= target:  # nothing to do (e.g. a resume past its budget): no bar, no save
            return self
        with self._training_context():
            cb.on_training_start(locals(), globals())
            try:
                while self.num_timesteps < target:
                    batch, stats = self._iteration(log_interval)
                    cb.update_locals({"batch": batch, "stats": stats})
                    go_on = cb.on_step()
                    if self.world.is_distributed:  # every rank leaves together, or the others would hang
                        votes = self.world.sum([0.0 if go_on else 1.0, float(self._stop_requested)])
                        go_on, self._stop_requested = votes[0] == 0, votes[1] > 0
                    if not go_on:
                        break
                    if self._stop_requested:
                        logger.warning("stop requested by a signal: checkpointing and returning")
                        if self.checkpoint_dir is not None:
                            self.save(self.checkpoint_dir)
                        break
            finally:
                if progress is not None:
                    progress.on_training_end()
        cb.on_training_end()
        return self

    def _iteration(self, log_interval: int) -> tuple[RolloutBatch, dict[str, float]]:
        """One rollout and one update; returns the batch and the logged scalars."""
        t0 = time.perf_counter()
        batch = self.collect_rollouts()
        t_rollout = time.perf_counter() - t0
        stats = self.update(batch)
        dt = time.perf_counter() - t0
        stats["charts/tokens_per_s"] = self._last_tokens / dt
        stats["charts/rollout_fraction"] = t_rollout / dt
        self.logger.write(self.num_timesteps, stats)
        if self.config.verbose and self.world.is_main and self.iteration % log_interval == 0:
            logger.info(
                "%s it=%d steps=%d return=%.3f success=%.3f kl=%.3f tok/s=%.0f", self.algo_name,
                self.iteration, self.num_timesteps, stats["charts/episodic_return"],
                stats.get("charts/success_rate", float("nan")), stats.get("charts/kl", 0.0),
                stats["charts/tokens_per_s"],
            )  # fmt: skip
        return batch, stats

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Everything an iteration does after its rollout: shape the rewards, train on the batch, adapt β,
        count the tokens; returns the iteration's scalars (the timings are the caller's). On a data-parallel
        rank ``batch`` is its rows of the global batch, and β, the counts and the scalars are the global
        batch's."""
        rewards, kl = self.shaped_rewards(batch)
        table = None
        if self.world.is_distributed:  # every rank's episodes, for the global counts, β and the logs
            table = self._gather_episodes(batch, kl)
            self._global_lengths = table[:, 0].astype(np.int64)
        self.policy.train()
        self._set_learning_rate()
        skipped_before = self.skipped_updates
        stats = self.train(batch, rewards)
        if table is None:
            self.kl.update(float(kl.mean()), batch.actions.shape[0])
            stats["charts/kl"] = float(kl.mean())
            n_tokens = batch.num_tokens
            stats_episodes = self._episode_stats(batch)
        else:  # β moves on the global batch's KL; the budget counts every rank's tokens
            global_kl = float(table[:, 3].mean())
            self.kl.update(global_kl, table.shape[0])
            stats["charts/kl"] = global_kl
            assert self._global_lengths is not None  # set with the table just above
            n_tokens = int(self._global_lengths.sum())
            stats_episodes = {
                "charts/episodic_return": float(table[:, 1].mean()),
                "charts/episode_length": float(table[:, 0].mean()),
            }
            if not np.isnan(table[:, 2]).all():
                stats_episodes["charts/success_rate"] = float(np.nanmean(table[:, 2]))
            self._global_lengths = None
        self.policy.eval()
        self.num_timesteps += n_tokens
        self._last_tokens = n_tokens
        self.iteration += 1
        stats.update(stats_episodes)
        stats["charts/tokens_per_s"] = stats["charts/rollout_fraction"] = float("nan")  # timed by the caller
        stats["charts/kl_coef"] = self.kl.value
        stats["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        stats["losses/skipped_updates"] = float(self.skipped_updates - skipped_before)
        return stats

    def _gather_episodes(self, batch: RolloutBatch, kl: torch.Tensor) -> np.ndarray:
        """``(n_envs, 4)`` float64: every rank's episodes in global order — length, return, success, KL."""
        local = torch.as_tensor(
            np.stack(
                [batch.lengths, batch.episode_returns, batch.success, kl.detach().cpu().double().numpy()],
                axis=1,
            ),
            dtype=torch.float64,
        )
        return self.world.all_gather(local).numpy()

    @contextmanager
    def _training_context(self) -> Iterator[None]:
        """Signals stop the loop gracefully, the run directories are locked, and small models on CPU run on
        one thread (BENCHMARKS.md: 4-70x faster on 2 shared cores), the update as well as the rollout; a
        user's OMP_NUM_THREADS or a large model keeps torch's setting."""
        previous = self._install_signal_handlers()
        threads_before = torch.get_num_threads()
        threads = auto_num_threads(self.policy, self.device)
        if threads is not None:
            torch.set_num_threads(threads)
        dirs = (self.checkpoint_dir, self.log_dir) if self.world.is_main else ()  # rank 0 writes them
        locks = [RunLock.for_directory(d) for d in dirs if d is not None]
        try:
            with contextlib.ExitStack() as stack:
                for lock in locks:
                    stack.enter_context(lock)
                yield
        finally:
            torch.set_num_threads(threads_before)
            self._restore_signal_handlers(previous)

    def _set_learning_rate(self) -> None:
        """Linear warmup over the first ``lr_warmup`` iterations, then constant.

        Adam's first steps move every weight by about the full learning rate whatever the gradient's size,
        and the first RL gradients are noisy (a fresh value head, few episodes): without warmup a
        warm-started policy loses some of its SFT accuracy before it starts to gain (seen on Reverse-v0 for
        all four learners). Computed from the iteration count, so a resumed run continues it exactly.
        """
        warmup = self.config.lr_warmup
        scale = min(1.0, (self.iteration + 1) / warmup) if warmup > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * scale

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
        first, and the LM head runs on the action columns only (in chunks for an HF policy, see
        :func:`~agents.rollout.score_actions`). The entropies are out of the graph when ``ent_coef == 0``."""
        # the entropy enters the graph only when it is in the loss (it is logged either way)
        new_logp, values, entropy = score_actions(
            self.policy, batch.input_ids[idx], batch.attention_mask[idx], batch.actions[idx], batch.mask[idx],
            batch.prompt_width, entropy="grad" if self.config.ent_coef > 0 else "detached",
        )  # fmt: skip
        assert entropy is not None  # "grad" and "detached" both compute it
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
        advantages. No ratio is needed: the batch was sampled by the current weights. The whole batch is
        one minibatch (in micro-batches if ``micro_batch_size`` is set).
        """
        m_all = batch.mask
        count = self.loss_count(m_all)
        adv = advantages.detach()
        fit_values = returns is not None and vf_coef > 0
        ent_coef = self.config.ent_coef

        def loss_fn(idx: torch.Tensor | slice) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            m = m_all[idx]
            new_logp, new_values, entropy = self.forward_batch(batch, idx)
            pg_loss = -masked_mean(adv[idx] * new_logp, m, count)
            ent = masked_mean(entropy, m, count)
            loss = pg_loss - ent_coef * ent
            v_loss = torch.zeros((), device=pg_loss.device)
            if fit_values:
                assert returns is not None
                v_loss = 0.5 * masked_mean((new_values - returns[idx].detach()) ** 2, m, count)
                loss = loss + vf_coef * v_loss
            with torch.no_grad():
                approx_kl = masked_mean(batch.logprobs[idx] - new_logp, m, count)  # ≈ 0: on-policy
            scalars = {"policy_loss": pg_loss, "entropy": ent, "approx_kl": approx_kl, "value_loss": v_loss}
            return loss, scalars

        names = ("policy_loss", "entropy", "approx_kl", "value_loss")
        grad_norm, reduced = self.step_on_rows(slice(None), batch.actions.shape[0], loss_fn, names)
        out = {
            "losses/policy_loss": reduced["policy_loss"],
            "losses/entropy": reduced["entropy"],
            "losses/grad_norm": grad_norm,
            "losses/approx_kl": reduced["approx_kl"],
        }
        if fit_values:
            assert returns is not None
            out["losses/value_loss"] = reduced["value_loss"]
            out["losses/explained_variance"] = self.batch_explained_variance(batch.values, returns, m_all)
        return out

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """Backward, clip and step — unless the loss or the gradient is not finite: then the step is skipped
        (counted in ``losses/skipped_updates``), and ``max_nonfinite_updates`` skips in a row stop training
        with :class:`~agents.checkpoint.NonFiniteUpdateError` (nothing non-finite is ever applied or saved).
        Returns the gradient norm before clipping. On a data-parallel rank the gradients are averaged over
        the ranks first (:meth:`reduced_step`), so a learner's own ``train`` keeps the replicas equal."""
        return self.reduced_step(loss, {})[0]

    def _skip_update(self, why: str) -> float:
        self.skipped_updates += 1
        self._nonfinite_in_a_row += 1
        logger.warning("%s: update skipped at iteration %d: %s", self.algo_name, self.iteration, why)
        if self._nonfinite_in_a_row >= self.config.max_nonfinite_updates:
            raise NonFiniteUpdateError(
                f"{self._nonfinite_in_a_row} updates in a row were skipped ({why}); training stopped at "
                f"iteration {self.iteration} without applying or saving them. Check the rewards' scale "
                "(reward weights, a length reward), the learning rate, and the KL coefficient."
            )
        return float("nan")

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
        """Greedy (by default) mean return and success rate on held-out prompts (the first ``n_episodes`` of
        ``split``; data-parallel ranks each score a contiguous share of them, and the sums are combined)."""
        if self.env is None:
            raise ValueError("this agent has no env to evaluate on")
        if self.world.is_distributed:
            return self._evaluate_sharded(n_episodes, split, deterministic)
        return evaluate_policy(
            self.policy, self.env, n_episodes=n_episodes, split=split, deterministic=deterministic
        )

    def _evaluate_sharded(self, n_episodes: int, split: str, deterministic: bool) -> dict[str, float]:
        from text_env.vector import TextGenVectorEnv

        env = self.env
        assert env is not None  # evaluate() refuses a learner without an env before this
        n = min(int(n_episodes), len(env.task.encoded(split)))
        mine = np.array_split(np.arange(n), self.world.size)[self.world.rank]
        ret = succ = n_succ = length = 0.0
        if len(mine):
            b = min(200, len(mine))
            eval_env = TextGenVectorEnv(
                env.task, num_envs=b, reward=env.reward, split=split, max_new_tokens=env.max_new_tokens,
                context_len=env.context_len, autoreset_mode="Disabled",
            )  # fmt: skip
            collector = RolloutCollector(self.policy, eval_env)
            for start in range(0, len(mine), b):
                idx = mine[start : start + b]
                k = len(idx)
                batch = collector.collect(seed=0, prompt_index=np.resize(idx, b), deterministic=deterministic)
                ret += float(batch.episode_returns[:k].sum())
                length += float(batch.lengths[:k].sum())
                s_ = batch.success[:k]
                succ += float(np.nansum(s_))
                n_succ += float((~np.isnan(s_)).sum())
        ret, succ, n_succ, length = self.world.sum([ret, succ, n_succ, length])
        return {
            "mean_return": ret / n if n else float("nan"),
            "success_rate": succ / n_succ if n_succ else float("nan"),
            "mean_length": length / n if n else float("nan"),
            "episodes": n,
        }

    # ---- persistence ------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """What ``state.json`` records: the algorithm, its config (callables by name), the env id, the step
        counters and β."""
        config, missing = ckpt_io.to_record(dataclasses.asdict(self.config))
        return {
            "algo": type(self).__name__,
            "format_version": ckpt_io.FORMAT_VERSION,
            "config_class": self.config_class.__name__,
            "config_version": CONFIG_VERSION,
            "config": config,
            "not_serialized": missing,
            "env": self.env_spec,
            "num_timesteps": self.num_timesteps,
            "iteration": self.iteration,
            "kl_coef_value": self.kl.value,
            "has_reference": self.reference is not None,
            "world_size": self.world.size,
        }

    def save(self, path: str | os.PathLike, keep: int = 2) -> Path:
        """Write a checkpoint under the directory ``path`` and point ``path/latest.json`` at it.

        Each checkpoint is a new ``ckpt-<iteration>`` directory (see :mod:`agents.checkpoint`: policy and
        reference, optimizer state, the loop's state, a sha256 manifest; nothing pickled). Only once all of it
        is on disk does the pointer move, so a crash at any point leaves the previous checkpoint loadable.
        The ``keep`` newest checkpoints are kept.
        """
        if not self.world.is_distributed:
            return ckpt_io.write_checkpoint(self, path, keep)
        # data parallel: every rank holds the same state; rank 0 writes it, the others wait for its answer
        written, error = None, None
        if self.world.is_main:
            try:
                written = ckpt_io.write_checkpoint(self, path, keep)
            except Exception as e:  # the others must hear of it, not wait forever
                error = e
        answer = self.world.broadcast_object(
            {
                "path": None if written is None else str(written),
                "error": None if error is None else str(error),
            }
        )
        if error is not None:
            raise error
        if answer["error"] is not None:
            raise RuntimeError(f"rank 0 could not write the checkpoint in {str(path)!r}: {answer['error']}")
        return Path(answer["path"])

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        env: Any = None,
        device: str = "auto",
        trust_code: bool = False,
        **overrides: Any,
    ) -> Any:
        """Rebuild an agent from ``save(path)``: weights, optimizer, step counters and β, so that
        ``learn(..., reset_num_timesteps=False)`` continues the run exactly.

        Every file is checked against the checkpoint's manifest first. ``env`` defaults to the saved env id
        (agents built on an env object need ``env=`` to train again; ``predict`` works without one).
        ``overrides`` are config fields (e.g. ``learning_rate``; ``env_kwargs`` to pass a reward function
        again) or ``log_dir`` / ``checkpoint_dir`` / ``reference``. Nothing read from the checkpoint is
        imported: a reward recorded by name must be passed again, or ``trust_code=True`` imports it from an
        installed package (never from the working directory). A truncated, tampered or malformed file raises
        ``ValueError`` naming it.
        """
        world = get_world()
        if world.is_distributed:  # rank 0 reads the run; the others get its files (no shared filesystem)
            import tempfile

            with tempfile.TemporaryDirectory(prefix="text-env-ckpt-") as tmp:
                local = ckpt_io.broadcast_checkpoint(world, path, Path(tmp))
                return cls._load(local, path, env, device, trust_code, overrides)
        return cls._load(path, path, env, device, trust_code, overrides)

    @classmethod
    def _load(
        cls,
        path: str | os.PathLike,
        run_path: str | os.PathLike,
        env: Any,
        device: str,
        trust_code: bool,
        overrides: dict[str, Any],
    ) -> Any:
        from agents import ALGORITHMS
        from agents.policies import load_policy, load_reference

        ckpt, state = ckpt_io.read_checkpoint_state(path)
        where = repr(str(ckpt / "state.json"))
        algo_cls = {c.__name__: c for c in ALGORITHMS.values()}.get(state["algo"])
        if algo_cls is None:
            raise ValueError(f"{where} names an unknown algorithm {state['algo']!r}")
        if cls is not OnPolicyAlgorithm and algo_cls is not cls:
            raise ValueError(f"{str(ckpt)!r} holds a {state['algo']!r} agent, not a {cls.__name__}")
        runtime = {k: overrides.pop(k) for k in ("log_dir", "checkpoint_dir", "reference") if k in overrides}
        config_data = ckpt_io.resolve_recorded_config(state["config"], where, trust_code, overrides)
        config = config_from_dict(algo_cls.config_class, config_data, where=where, **overrides)
        policy = load_policy(ckpt / "policy")
        reference = runtime.pop("reference", None)
        if reference is None and state["has_reference"]:
            reference = load_reference(ckpt / "reference", policy)
        env_arg = env if env is not None else state["env"]
        agent = algo_cls(policy, env_arg, config=config, reference=reference, device=device, **runtime)
        ckpt_io.load_optimizer(agent.optimizer, ckpt)
        agent.num_timesteps, agent.iteration = state["num_timesteps"], state["iteration"]
        agent.kl.value = float(state["kl_coef_value"])
        agent._append_logs = True  # a resumed run continues its progress.csv
        # saving again before training more returns this checkpoint instead of writing a copy of it
        agent.saved_at = (str(Path(run_path).resolve()), agent.iteration, agent.num_timesteps)
        if state.get("world_size", 1) != agent.world.size:
            logger.info(
                "resuming a run saved at world size %d at world size %d: the same global batch of n_envs=%d",
                state.get("world_size", 1), agent.world.size, agent.config.n_envs,
            )  # fmt: skip
        return agent

    def __repr__(self) -> str:
        return f"{type(self).__name__}(env={self.env_spec or self.env}, steps={self.num_timesteps})"


__all__ = [
    "OnPolicyAlgorithm",
    "OnPolicyConfig",
    "check_group_size",
    "iteration_seed",
    "resolve_device",
]
