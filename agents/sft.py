"""The supervised stage: train a policy on a task's demonstrations (and/or a text corpus) before RL.

``sft(env_id)`` builds the default policy for the env's task, trains it with teacher forcing on
``[BOS] prompt completion [EOS]`` (the loss counts the completion and EOS only), and caches the checkpoint
under ``$TEXT_ENV_CACHE/sft`` (default ``~/.cache/text_env/sft``) keyed by the task's data fingerprint and
every setting, so RL starts from a competent policy without retraining each time.

Example:
    >>> from agents import sft
    >>> policy = sft("TextEnv/Reverse-v0", steps=2000)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.config import check_fields
from agents.distributed import get_world
from agents.on_policy import resolve_device
from agents.optim import make_adamw
from agents.rollout import auto_num_threads, torch_threads
from text_env.rewards.base import pad_ragged
from text_env.tasks.base import Task, make_task

logger = logging.getLogger(__name__)

SFT_VERSION = 1


@dataclass
class SFTConfig:
    """The supervised stage's hyperparameters (``sft(env, **fields)``; ``text-env train --sft-<field>``)."""

    steps: int = 2000
    """Gradient steps (0: no supervised stage)."""
    batch_size: int = 64
    """Demonstrations per step."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (linear warmup, cosine decay to 10%)."""
    warmup: int = 100
    """Warmup steps."""
    seed: int = 0
    """Seeds the weights and the batch order."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Model settings for a policy built here (e.g. {"n_layer": 2, "n_embd": 128})."""
    split: str = "train"
    """Which split's demonstrations to train on."""

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("steps", "warmup", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int ≥ 0, got {getattr(self, name)!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.split not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {self.split!r}")


def cache_root() -> Path:
    """Where built artefacts are cached: ``$TEXT_ENV_CACHE`` or ``~/.cache/text_env``."""
    return Path(os.environ.get("TEXT_ENV_CACHE", Path.home() / ".cache" / "text_env"))


def task_of(env: Any, tokenizer: Any = None) -> Task:
    """The Task behind an env id (``"TextEnv/Reverse-v0"``), a task name, a Task, or an env object.

    With ``tokenizer`` (an HF policy's), the task speaks it (:func:`agents.rollout.task_with_tokenizer`); a
    Task or env of another tokenizer raises ``ValueError``.
    """
    if tokenizer is not None:
        from agents.rollout import task_with_tokenizer

        if isinstance(env, str) and env.split(":")[-1].startswith("TextEnv/"):
            import text_env  # (registers the ids)

            try:
                spec = gym.spec(env.split(":")[-1])
            except gym.error.Error as e:
                raise ValueError(f"unknown env id {env!r}: {e}") from e
            kwargs = dict(spec.kwargs)
            if kwargs.get("task") is None:
                raise ValueError(f"{env!r} has no built-in task; pass the Task (or a file path) instead")
            return task_with_tokenizer(kwargs.pop("task"), tokenizer, **kwargs)
        return task_with_tokenizer(task_of(env), tokenizer)
    if isinstance(env, Task):
        return env
    if hasattr(env, "unwrapped") and hasattr(env.unwrapped, "task"):
        return env.unwrapped.task
    if hasattr(env, "task") and isinstance(env.task, Task):
        return env.task
    if isinstance(env, str) and env.split(":")[-1].startswith("TextEnv/"):
        import text_env  # noqa: F401  (registers the ids)

        try:
            spec = gym.spec(env.split(":")[-1])
        except gym.error.Error as e:
            raise ValueError(f"unknown env id {env!r}: {e}") from e
        kwargs = dict(spec.kwargs)
        if kwargs.get("task") is None:
            raise ValueError(f"{env!r} has no built-in task; pass the Task (or a file path) instead")
        return make_task(kwargs.pop("task"), **kwargs)
    return make_task(env)


def encode_demonstrations(
    task: Task, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[BOS] prompt completion [EOS]`` rows, right-padded: ``ids (N, L)``, ``attention (N, L)`` and
    ``loss_mask (N, L)`` marking the targets (completion tokens and EOS) at the positions that predict
    them. With an HF tokenizer the prompt part is the env's, ``tokenizer.encode_prompt`` (BOS only where
    the tokenizer adds one; the chat template if enabled)."""
    tok = task.tokenizer
    demos = task.demonstrations(split)
    if not demos:
        raise ValueError(f"task {task.name!r} has no demonstrations in split {split!r}; SFT needs references")
    if hasattr(tok, "encode_prompts"):  # the env's own prompt ids (an HF tokenizer: BOS, chat template)
        prompts = tok.encode_prompts([p for p, _ in demos])
    else:
        prompts = [[tok.bos_id, *p] for p in tok.encode_batch([p for p, _ in demos])]
    completions = tok.encode_batch([c for _, c in demos])
    rows = [[*p, *c, tok.eos_id] for p, c in zip(prompts, completions)]
    ids, lengths = pad_ragged(rows, pad=tok.pad_id)
    pos = np.arange(ids.shape[1])[None, :]
    start = np.array([len(p) for p in prompts])[:, None]  # index of the first completion token
    # position j predicts token j+1: targets are tokens start..length-1, predicted from positions start-1..
    loss_mask = (pos >= start - 1) & (pos < lengths[:, None] - 1)
    attention = pos < lengths[:, None]
    return torch.as_tensor(ids), torch.as_tensor(attention), torch.as_tensor(loss_mask)


def sft_loss(
    policy: Any,
    ids: torch.Tensor,
    attention: torch.Tensor,
    loss_mask: torch.Tensor,
    count: float | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the masked positions, under the policy's own distribution
    (``policy.log_probs``: temperature and action mask included, as RL will sample it). A policy with
    ``action_hidden`` (an HF policy) is scored in chunks of columns, never holding the (B × L × V) logits.
    ``count`` divides the sum instead of the local count of masked positions (a data-parallel rank passes the
    global batch's count ÷ world size)."""
    target = ids[:, 1:]
    trunk = policy.action_hidden(ids, attention, 1) if hasattr(policy, "action_hidden") else None
    if trunk is not None:
        from agents.rollout import chunked_action_scores

        lp, _ = chunked_action_scores(policy, trunk[0], target, entropy=None)  # (B, L-1)
        nll = -lp
    else:
        logits, _ = policy(ids, attention)  # (B, L, V)
        logp = policy.log_probs(logits[:, :-1])  # (B, L-1, V)
        nll = -logp.gather(-1, target[..., None]).squeeze(-1)  # (B, L-1)
    m = loss_mask[:, :-1].float()
    if count is not None:
        return (nll * m).sum() / count
    return (nll * m).sum() / m.sum().clamp_min(1.0)


def sft(
    env: Any,
    steps: int = 2000,
    policy: Any = None,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    warmup: int = 100,
    seed: int = 0,
    device: str = "auto",
    policy_kwargs: dict[str, Any] | None = None,
    cache: bool = True,
    split: str = "train",
    progress_bar: bool = False,
) -> Any:
    """Supervised fine-tuning on the task's demonstrations; returns the trained policy.

    Args:
        env: An env id, task name, Task, or env whose task supplies the demonstrations.
        steps: Gradient steps.
        policy: A policy to start from (not cached: its weights are not part of the key), or a name of
            :data:`agents.pretrained.NAMED_POLICIES` (``"smollm2"``: its ``policy_kwargs`` are HFPolicy
            switches, e.g. ``{"lora": {"r": 16}}``); an HF policy trains on the task in its own tokenizer.
            None builds ``TransformerPolicy.for_task(task, **policy_kwargs)`` seeded with ``seed`` (cached).
        batch_size: Demonstrations per step.
        learning_rate: Peak AdamW learning rate (linear warmup, cosine decay to 10%).
        warmup: Warmup steps.
        seed: Seeds the weights and the batch order.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        policy_kwargs: Model settings for the built policy (e.g. ``n_layer=2, n_embd=128``).
        cache: Reuse/write the checkpoint under ``$TEXT_ENV_CACHE/sft``.
        split: Which split's demonstrations to train on.
        progress_bar: Show a tqdm bar over the steps (the CLI does).

    The settings are validated as an :class:`SFTConfig`.
    """
    from agents.on_policy import policy_env_tokenizer
    from agents.policies import TransformerPolicy, load_policy
    from agents.pretrained import NAMED_POLICIES, load_named_policy

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int ≥ 0, got {steps!r}")
    SFTConfig(steps, batch_size, learning_rate, warmup, seed, dict(policy_kwargs or {}), split)  # validates
    dev = resolve_device(device)
    policy_kwargs = dict(policy_kwargs or {})
    if isinstance(policy, str) and policy in NAMED_POLICIES:  # smollm2: policy_kwargs are HFPolicy switches
        torch.manual_seed(seed)
        policy = load_named_policy(policy, **(policy_kwargs if policy == "smollm2" else {}))
    task = task_of(env, policy_env_tokenizer(policy) if policy is not None else None)
    world = get_world()  # under torchrun: data-parallel steps, rank 0 alone reads and writes the cache
    cache_dir = None
    if policy is None and cache:
        key = {
            "version": SFT_VERSION, "task": task.fingerprint(), "steps": steps, "batch_size": batch_size,
            "lr": learning_rate, "warmup": warmup, "seed": seed, "policy": policy_kwargs, "split": split,
        }  # fmt: skip
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        cache_dir = cache_root() / "sft" / f"{task.name}-{digest}"
        hit = None
        if world.is_main and (cache_dir / "config.json").exists():
            try:
                logger.info("SFT cache hit: %s", cache_dir)
                hit = load_policy(cache_dir).to(dev).eval()  # as a freshly trained one is returned
            except (ValueError, OSError) as e:  # a damaged cache entry is rebuilt, not fatal
                logger.warning("ignoring damaged SFT cache entry %s: %s", cache_dir, e)
        if not world.is_distributed and hit is not None:
            return hit
        if world.is_distributed and world.broadcast_object(hit is not None):
            # the other ranks build the same model and take rank 0's cached weights (no shared filesystem)
            policy = hit if hit is not None else TransformerPolicy.for_task(task, seed=seed, **policy_kwargs)
            policy = policy.to(world.device(dev))
            world.broadcast_module(policy, "SFT policy")
            return policy.eval()
    if policy is None:
        policy = TransformerPolicy.for_task(task, seed=seed, **policy_kwargs)
    dev = world.device(dev)
    policy = policy.to(dev)
    world.broadcast_module(policy, "SFT policy")  # every rank starts from rank 0's weights
    ids, attention, loss_mask = (t.to(dev) for t in encode_demonstrations(task, split))
    n = ids.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # only what trains (a LoRA policy's adapters and value head): AdamW keeps no state for the frozen base
    opt = make_adamw([p for p in policy.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    policy.train()
    loss_val = float("nan")
    bar = None
    if progress_bar and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, unit="step", desc=f"sft {task.name}")
    with torch_threads(auto_num_threads(policy, dev)):  # one thread for small CPU models (BENCHMARKS.md)
        for step in range(steps):
            idx = torch.randint(n, (min(batch_size, n),), generator=gen).to(dev)
            # trim the right padding of this batch: shorter sequences, same loss
            width = int(attention[idx].sum(1).max())
            if world.is_distributed:
                loss_val = _data_parallel_step(world, policy, opt, ids, attention, loss_mask, idx, width)
            else:
                loss = sft_loss(policy, ids[idx, :width], attention[idx, :width], loss_mask[idx, :width])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
                loss_val = loss.item()
            sched.step()
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss_val:.4f}")
            if (step % 500 == 0 or step == steps - 1) and world.is_main:
                logger.info("sft %s step %d/%d loss %.4f", task.name, step + 1, steps, loss_val)
    if bar is not None:
        bar.close()
    policy.eval()
    if not math.isfinite(loss_val) and steps:
        raise FloatingPointError(f"SFT on {task.name!r} diverged (loss {loss_val}); lower learning_rate")
    if cache_dir is not None and world.is_main:
        policy.save(cache_dir)
    return policy


def _data_parallel_step(
    world: Any,
    policy: Any,
    opt: torch.optim.Optimizer,
    ids: torch.Tensor,
    attention: torch.Tensor,
    loss_mask: torch.Tensor,
    idx: torch.Tensor,
    width: int,
) -> float:
    """One SFT step of a data-parallel rank: every rank drew the same global batch ``idx`` and trains on its
    contiguous share, its loss divided by the global batch's count of target tokens ÷ world size (every rank
    holds the demonstrations, so the count needs no collective), and the gradients are averaged in one
    collective with the loss riding along. Returns the global batch's loss."""
    shares = torch.tensor_split(idx, world.size)
    mine = shares[world.rank]
    count = max(float(loss_mask[idx, : width - 1].sum()), 1.0) / world.size
    opt.zero_grad(set_to_none=True)
    if len(mine):
        loss = sft_loss(policy, ids[mine, :width], attention[mine, :width], loss_mask[mine, :width], count)
        loss.backward()
        share = loss.detach().reshape(1)
    else:  # a batch smaller than the world: this rank adds a zero gradient
        share = torch.zeros(1, device=idx.device)
    reduced = world.all_reduce_gradients(policy.parameters(), share.float())
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    return float(reduced[0])
