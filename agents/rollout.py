"""Batched, KV-cached rollouts of a language-model policy through the native vector env.

One rollout runs N episodes in lockstep (the vector env's ``DISABLED`` autoreset mode): every slot starts
together from a left-padded prompt window, so all slots share one position in the KV cache. The policy runs
the prompts once (``prefill``; slots pinned to the same prompt, as a group of k completions, share one
prefill row) and then one forward of one token per slot per step (``decode_step``); the env scores the whole
batch per step. The result is a :class:`RolloutBatch` laid out for the update, which runs a
single full-sequence forward per episode (never one per token):

    input_ids = [prompt window (P columns, left-padded)] + [actions (T columns)]
    the logits at column P - 1 + t score action t; the value there is V(s_t).

Example:
    >>> collector = RolloutCollector(policy, make_rollout_env("TextEnv/Reverse-v0", 64))  # doctest: +SKIP
    >>> batch = collector.collect(seed=0)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from text_env.vector import TextGenVectorEnv


class RolloutBatch(NamedTuple):
    """N finished episodes, as tensors on the policy's device (``B`` episodes, ``T`` steps, ``P`` prompt)."""

    input_ids: torch.Tensor  # (B, P + T) long: prompt window then actions (pad after an episode ends)
    attention_mask: torch.Tensor  # (B, P + T) bool
    prompt_width: int  # P
    actions: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) bool: the step was taken (its episode had not ended)
    logprobs: torch.Tensor  # (B, T) float32: log π(a_t | s_t) under the sampling distribution
    values: torch.Tensor  # (B, T) float32: V(s_t) from the value head (0 where masked)
    rewards: torch.Tensor  # (B, T) float32: env rewards (action rewards + the state reward at the end)
    ref_logprobs: torch.Tensor | None  # (B, T) float32 under the frozen reference, if any
    episode_returns: np.ndarray  # (B,) sum of env rewards
    success: np.ndarray  # (B,) float: 1/0 per the task's success test, NaN if the task has none
    lengths: np.ndarray  # (B,) steps taken (stop token included)
    prompt_index: np.ndarray  # (B,) split index of each prompt
    completions: list[str]  # (B,) generated text

    @property
    def num_tokens(self) -> int:
        """Env steps in the batch (the unit of every budget)."""
        return int(self.lengths.sum())

    def action_logits_slice(self) -> slice:
        """The columns of the full-sequence logits that score the actions."""
        p, t = self.prompt_width, self.actions.shape[1]
        return slice(p - 1, p - 1 + t)


def make_rollout_env(
    env: str | TextGenVectorEnv | Any, n_envs: int, policy_tokenizer: Any = None, **env_kwargs: Any
) -> TextGenVectorEnv:
    """The lockstep vector env a collector needs, from an id, a task name/Task, or an existing env.

    ``policy_tokenizer`` (an HF policy's tokenizer) makes the env speak it: an id or a task name is built with
    it (the task factories that take ``tokenizer=``, the language tasks, get it; any other task is rebuilt
    around it), and a Task or env of another tokenizer raises ``ValueError``.
    """
    if policy_tokenizer is not None:
        return _env_with_tokenizer(env, n_envs, policy_tokenizer, env_kwargs)
    if isinstance(env, TextGenVectorEnv):
        if env.autoreset_mode != gym.vector.AutoresetMode.DISABLED:
            raise ValueError(
                "rollouts need a TextGenVectorEnv in lockstep mode (autoreset_mode=AutoresetMode.DISABLED), "
                f"got {env.autoreset_mode}"
            )
        return env
    if isinstance(env, str) and env.split(":")[-1].startswith("TextEnv/"):
        try:
            vec = gym.make_vec(
                env,
                num_envs=n_envs,
                vectorization_mode="vector_entry_point",
                autoreset_mode=gym.vector.AutoresetMode.DISABLED,
                **env_kwargs,
            )
        except gym.error.Error as e:  # gymnasium's own errors (unknown id, version) are not ValueErrors
            raise ValueError(f"cannot make env {env!r}: {e}") from e
        return cast(TextGenVectorEnv, vec.unwrapped if hasattr(vec, "unwrapped") else vec)
    return TextGenVectorEnv(
        env, num_envs=n_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED, **env_kwargs
    )


# the TextGenVectorEnv arguments among an id's kwargs; the rest go to the task factory
_ENV_OPTIONS = ("reward", "split", "max_new_tokens", "context_len", "render_mode", "max_episode_steps")


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (the same object, or equal descriptions)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if hasattr(a, "to_dict") and hasattr(b, "to_dict"):
        return a.to_dict() == b.to_dict()
    return bool(a == b)


def task_with_tokenizer(spec: Any, tokenizer: Any, **task_kwargs: Any) -> Any:
    """The task ``spec`` (a Task, a registered name, a file) speaking ``tokenizer``.

    A registered factory that takes ``tokenizer=`` (the language tasks) is called with it; any other task is
    built as usual and rebuilt around ``tokenizer`` (same examples, reward and settings). A Task object of
    another tokenizer is refused: it was built on purpose.

    Raises:
        ValueError: ``spec`` is a Task whose tokenizer differs.
    """
    from text_env.tasks.base import _TASKS, Task, make_task

    if isinstance(spec, Task):
        if task_kwargs:
            raise TypeError(f"task options {sorted(task_kwargs)} given with an already built task {spec!r}")
        if same_tokenizer(spec.tokenizer, tokenizer):
            return spec
        raise ValueError(
            f"the task {spec.name!r} speaks {spec.tokenizer!r}, but the policy speaks {tokenizer!r}: their "
            f"token ids differ. Build the task with the policy's tokenizer (make_task({spec.name!r}, "
            "tokenizer=policy.tokenizer)) or pass the env id"
        )
    factory = _TASKS.get(spec) if isinstance(spec, str) else None
    if factory is not None and "tokenizer" in inspect.signature(factory).parameters:
        return make_task(spec, tokenizer=tokenizer, **task_kwargs)
    task = make_task(spec, **task_kwargs)
    if same_tokenizer(task.tokenizer, tokenizer):
        return task
    return Task(
        task.name, task.splits, tokenizer=tokenizer, reward=task.reward, success=task.success,
        success_threshold=task.success_threshold, max_new_tokens=task.max_new_tokens, stop=task.stop,
        allowed_completion_chars=task.allowed_completion_chars, metrics=task.metrics,
        description=task.description, corpus=task.corpus, allow_unk=task.allow_unk,
    )  # fmt: skip


def _env_with_tokenizer(
    env: Any, n_envs: int, tokenizer: Any, env_kwargs: dict[str, Any]
) -> TextGenVectorEnv:
    if isinstance(env, TextGenVectorEnv):
        if not same_tokenizer(env.tokenizer, tokenizer):
            raise ValueError(
                f"the env speaks {env.tokenizer!r}, but the policy speaks {tokenizer!r}: their token ids "
                "differ. Build the env's task with tokenizer=policy.tokenizer, or pass the env id"
            )
        return make_rollout_env(env, n_envs)
    spec, kwargs = env, dict(env_kwargs)
    if isinstance(env, str) and env.split(":")[-1].startswith("TextEnv/"):
        import text_env  # noqa: F401  (registers the ids)

        try:
            registered = gym.spec(env.split(":")[-1])
        except gym.error.Error as e:
            raise ValueError(f"cannot make env {env!r}: {e}") from e
        kwargs = {**registered.kwargs, **env_kwargs}
        if kwargs.get("task") is None:
            raise ValueError(f"{env!r} has no built-in task; pass its task (env_kwargs={{'task': ...}})")
        spec = kwargs.pop("task")
        kwargs.setdefault("max_episode_steps", registered.max_episode_steps)
    options = {k: kwargs.pop(k) for k in _ENV_OPTIONS if k in kwargs}
    task = task_with_tokenizer(spec, tokenizer, **kwargs)
    return TextGenVectorEnv(
        task, num_envs=n_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED, **options
    )


# Below this many parameters a model's CPU ops are small (tens to hundreds of microseconds at rollout
# batch sizes), and OpenMP's fork/join per op costs more than a second thread saves. On a shared machine it
# is far worse: a parallel region waits for a descheduled peer thread. benchmarks/threads.py measured 1
# thread 4x to 60x faster than 2 (depending on the load) for the default policy's rollout and PPO update
# on 2 shared cores; see BENCHMARKS.md.
SMALL_MODEL_PARAMS = 20_000_000
# a rollout drops finished slots from the KV cache once at most this share of the cached slots is still live
COMPACT_AT = 0.75


# On a machine of at most this many usable cores, every model runs on one thread: SmolLM2-135M's rollout
# (batch 8, 32 new tokens) ran 4.8x faster at 1 thread than at 2 on the 2 shared cores (32.8 vs 6.8 tok/s,
# load average 2.8-4.4; benchmarks/hf_generation.py --threads 1,2), as the 7x did: with other
# processes on the cores, the second thread's share of each op waits for a core.
FEW_CORES = 2


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_num_threads(model: Any, device: torch.device | str = "cpu") -> int | None:
    """The intra-op thread count for running ``model`` fast on ``device``: 1 on CPU for a small model, or for
    any model on a machine of at most :data:`FEW_CORES` usable cores; else None (keep torch's setting). A
    user's ``OMP_NUM_THREADS`` always wins (None).

    Example:
        >>> auto_num_threads(torch.nn.Linear(128, 128))
        1
    """
    if torch.device(device).type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    n_params = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 0
    return 1 if n_params < SMALL_MODEL_PARAMS or _usable_cores() <= FEW_CORES else None


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` and restore the previous count after
    (None: leave it alone)."""
    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class RolloutCollector:
    """Runs a policy (and optionally a frozen reference) over a lockstep :class:`TextGenVectorEnv`.

    Args:
        policy: An LM policy (``prefill``, ``decode_step``, ``sample``, ``log_probs``, ``new_cache``).
        env: The lockstep vector env (see :func:`make_rollout_env`).
        reference: A frozen policy scored on the same tokens (for the KL leash), or None.
        device: Where the policy lives (tensors are created there).
        num_threads: torch intra-op threads during :meth:`collect` (restored after): ``"auto"`` uses
            :func:`auto_num_threads` (1 for a small model on CPU), an int sets it, None leaves torch's.
        compact: Drop the slots whose episodes ended from the KV cache (once at most ``COMPACT_AT`` of the
            cached slots are live; needs a cache with ``select(rows)``, as :class:`KVCache` and the
            Hugging Face adapter's have), so they stop costing a forward per step. The episodes are the same
            either way in distribution; the sampled tokens differ (the sampler draws for fewer rows).
        share_prompts: Slots that start from the same prompt share one prefill of it (see
            :meth:`_prefill`; needs a cache with ``select(rows)``). Off: every slot prefills its own copy.
    """

    def __init__(
        self,
        policy: Any,
        env: TextGenVectorEnv,
        reference: Any | None = None,
        device: Any = None,
        num_threads: int | str | None = "auto",
        compact: bool = True,
        share_prompts: bool = True,
    ):
        self.policy = policy
        self.env = env
        self.reference = reference
        self.device = torch.device(device) if device is not None else next(policy.parameters()).device
        if num_threads == "auto":
            num_threads = auto_num_threads(policy, self.device)
        elif num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be 'auto', None or a positive int, got {num_threads!r}")
        self.num_threads = num_threads
        self.compact = bool(compact)
        self.share_prompts = bool(share_prompts)
        self.generator = torch.Generator(device=self.device)
        tok = env.tokenizer
        self.pad_id = tok.pad_id
        if policy.vocab_size < tok.vocab_size:
            raise ValueError(
                f"the policy's vocabulary ({policy.vocab_size}) is smaller than the env's ({tok.vocab_size})"
            )

    def collect(
        self,
        seed: int | list[int] | None = None,
        prompt_index: np.ndarray | None = None,
        deterministic: bool = False,
        sampler_seed: int | None = None,
    ) -> RolloutBatch:
        """Run every slot to the end of one episode.

        Args:
            seed: Seeds the env's prompt draws and the sampling generator (None continues both streams); a
                list seeds each slot's prompt draw (``env.reset(seed=[...])``) and needs ``sampler_seed``.
            prompt_index: Pin each slot's prompt (e.g. k copies of a prompt for RLOO).
            deterministic: Greedy decoding (evaluation).
            sampler_seed: Seeds the sampling generator instead of ``seed`` (a data-parallel rank draws the
                global run's prompts but samples its own completions).
        """
        if sampler_seed is None and isinstance(seed, (list, tuple, np.ndarray)):
            raise ValueError("collect(seed=[...]) seeds the prompts only; pass sampler_seed= for the sampler")
        with torch_threads(self.num_threads), torch.inference_mode():
            batch = self._collect(seed, prompt_index, deterministic, sampler_seed)
        # inference tensors cannot enter autograd: hand the update ordinary copies
        copies: dict[str, Any] = {
            k: v.clone() for k, v in batch._asdict().items() if isinstance(v, torch.Tensor)
        }
        return batch._replace(**copies)

    def _prefill(
        self, prompt: torch.Tensor, prompt_mask: torch.Tensor, max_len: int
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Prompts into a fresh cache: ``logits (B, V)``, ``values (B,)`` and the cache of ``B`` slots.

        Slots that share a prompt (k completions of one prompt, as RLOO and PPO(k) roll out) share its
        prefill: each distinct prompt runs once and the cache rows are then copied for the slots that share
        it (``cache.select``, where the cache has one). The same keys, values and logits as a prefill of every
        row, up to float rounding, for U rather than B prompt rows."""
        policy, n = self.policy, prompt.shape[0]
        groups = repeated_prompts(prompt, prompt_mask) if self.share_prompts else None
        if groups is not None:
            first, inverse = groups
            cache = policy.new_cache(len(first), max_len)
            if hasattr(cache, "select"):
                logits, value = policy.prefill(prompt[first], prompt_mask[first], cache)  # (U, V), (U,)
                cache.select(inverse)  # (U → B) slots
                return logits[inverse], value[inverse], cache
        cache = policy.new_cache(n, max_len)
        logits, value = policy.prefill(prompt, prompt_mask, cache)
        return logits, value, cache

    def _collect(
        self,
        seed: int | list[int] | None,
        prompt_index: np.ndarray | None,
        deterministic: bool,
        sampler_seed: int | None = None,
    ) -> RolloutBatch:
        env, policy = self.env, self.policy
        gen_seed = seed if sampler_seed is None else sampler_seed
        if isinstance(
            gen_seed, list
        ):  # per-slot env seeds and no sampler seed: the sampler follows the first
            gen_seed = gen_seed[0]
        if gen_seed is not None:
            self.generator.manual_seed(int(gen_seed) & 0x7FFF_FFFF_FFFF_FFFF)
        options = None if prompt_index is None else {"prompt_index": np.asarray(prompt_index, dtype=np.int64)}
        obs, _ = env.reset(seed=cast(Any, seed), options=options)  # list[int] is a list[int | None]
        # drop the columns that are padding in every row: the prompt window is as wide as the longest prompt
        nonpad = obs != self.pad_id
        first = int(np.argmax(nonpad.any(axis=0)))
        prompt = torch.as_tensor(obs[:, first:], device=self.device)  # (B, P)
        prompt_mask = torch.as_tensor(nonpad[:, first:], device=self.device)  # (B, P)
        n, p = prompt.shape
        t_max = env.max_new_tokens

        actions = torch.full((n, t_max), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((n, t_max), dtype=torch.float32, device=self.device)
        values = torch.zeros((n, t_max), dtype=torch.float32, device=self.device)
        rewards = np.zeros((n, t_max), dtype=np.float32)
        mask = np.zeros((n, t_max), dtype=bool)
        success = np.full(n, np.nan)
        completions: list[Any] = [None] * n

        logits, value, cache = self._prefill(prompt, prompt_mask, p + t_max)  # (R, V), (R,): a row per slot
        compact = self.compact and hasattr(cache, "select")  # a duck-typed policy's cache may not compact
        rows_np = np.arange(n)  # the slot of each cache row (the cache drops slots whose episodes ended)
        rows = torch.arange(n, device=self.device)
        pad = torch.full((n,), self.pad_id, dtype=torch.long, device=self.device)
        steps = 0
        for t in range(t_max):
            tokens, logp = policy.sample(logits, self.generator, deterministic)  # (R,), (R,)
            live = ~env.finished  # (B,) numpy
            live_t = torch.as_tensor(live[rows_np], device=self.device)  # (R,)
            tokens = torch.where(live_t, tokens, pad[: len(rows_np)])
            if len(rows_np) == n:
                actions[:, t] = tokens
                logprobs[:, t] = torch.where(live_t, logp, torch.zeros_like(logp))
                values[:, t] = torch.where(live_t, value, torch.zeros_like(value))
                step_tokens = tokens
            else:  # finished slots outside the cache take no step: pad, logprob 0, value 0
                actions[rows, t] = tokens
                logprobs[rows, t] = torch.where(live_t, logp, torch.zeros_like(logp))
                values[rows, t] = torch.where(live_t, value, torch.zeros_like(value))
                step_tokens = actions[:, t]
            _, r, terminated, truncated, info = env.step(step_tokens.cpu().numpy())
            rewards[:, t] = r
            mask[:, t] = live
            done = terminated | truncated
            if done.any():
                d = np.flatnonzero(done)
                if "is_success" in info:
                    success[d] = info["is_success"][d]
                for i in d:
                    completions[i] = info["completion"][i]
            steps = t + 1
            finished = env.finished
            if finished.all():
                break
            keep = np.flatnonzero(~finished[rows_np])
            if compact and len(keep) <= COMPACT_AT * len(rows_np):
                # Batch compaction: drop the cache rows of ended episodes so that they stop costing a forward
                # per step. Copying the cache costs about one decode step's attention read; at ≤ 3/4 live
                # rows every later step saves at least a quarter of its work.
                keep_t = torch.as_tensor(keep, device=self.device)
                cache.select(keep_t)
                rows_np, rows, tokens = rows_np[keep], rows[keep_t], tokens[keep_t]
            logits, value = policy.decode_step(tokens, cache)

        actions, logprobs, values = actions[:, :steps], logprobs[:, :steps], values[:, :steps]
        mask_t = torch.as_tensor(mask[:, :steps], device=self.device)
        input_ids = torch.cat([prompt, actions], dim=1)  # (B, P + T)
        attention_mask = torch.cat([prompt_mask, mask_t], dim=1)  # (B, P + T)
        ref_logprobs = None
        if self.reference is not None:
            # the leash compares both distributions at the sampling temperature (as TRL does): a reference
            # scored at T = 1 would charge a policy sampling at T < 1 for its temperature alone
            ref_logprobs = action_logprobs(
                self.reference, input_ids, attention_mask, actions, p,
                temperature=getattr(policy, "temperature", None),
            )  # fmt: skip
            ref_logprobs = torch.where(mask_t, ref_logprobs, torch.zeros_like(ref_logprobs))
        rewards_t = torch.as_tensor(rewards[:, :steps], device=self.device)
        return RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prompt_width=p,
            actions=actions,
            mask=mask_t,
            logprobs=logprobs,
            values=values,
            rewards=rewards_t,
            ref_logprobs=ref_logprobs,
            episode_returns=rewards[:, :steps].sum(axis=1),
            success=success,
            lengths=mask[:, :steps].sum(axis=1),
            prompt_index=env.prompt_index,
            completions=completions,
        )


def crop_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor, prompt_width: int
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Drop the columns that are padding in every row of these episodes: left of the earliest prompt
    token and right of the longest episode. Returns ``(input_ids, attention_mask, P', T')``; the logits at
    column ``P' - 1 + t`` still score action ``t``, for ``t < T'``. The forward is unchanged (padding is
    masked out of attention and does not move position ids); it only skips work.
    """
    used = attention_mask[:, :prompt_width].any(dim=0)  # (P,)
    left = int(used.int().argmax()) if bool(used.any()) else prompt_width - 1
    t = max(1, int(mask.sum(dim=1).max()))
    return (
        input_ids[:, left : prompt_width + t],
        attention_mask[:, left : prompt_width + t],
        prompt_width - left,
        t,
    )


def forward_actions(
    policy: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, T, V)`` and values ``(B, T)`` at the action columns: the policy's own
    ``forward_actions`` if it has one (the LM head on those columns only), else a full forward, sliced."""
    if hasattr(policy, "forward_actions"):
        return policy.forward_actions(input_ids, attention_mask, prompt_width)
    logits, values = policy(input_ids, attention_mask)
    cols = slice(prompt_width - 1, input_ids.shape[1] - 1)
    return logits[:, cols], values[:, cols]


# The update scores the action columns of an LM with a large vocabulary in chunks, so that it never holds the
# (B × T × V) logits at once: at most this many logits per chunk (2^24 floats: 64 MB, with as much again for
# their log-softmax). SmolLM2's 49152-token vocabulary at 16 episodes × 32 tokens would otherwise be 100 MB of
# logits plus their gradient per forward.
LOGITS_CHUNK_ELEMENTS = 1 << 24


def _score_chunk(
    policy: Any, hidden: torch.Tensor, actions: torch.Tensor, temperature: float | None, entropy: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = policy.head_logits(hidden)  # (B, c, V) float32
    logp = policy.log_probs(logits) if temperature is None else policy.log_probs(logits, temperature)
    lp = logp.gather(-1, actions[..., None]).squeeze(-1)  # (B, c)
    if entropy is None:
        return lp, lp.new_zeros(())
    with contextlib.nullcontext() if entropy == "grad" else torch.no_grad():
        ent = -(logp.exp() * logp).sum(-1)  # (B, c)
    return lp, ent


def chunked_action_scores(
    policy: Any,
    hidden: torch.Tensor,
    actions: torch.Tensor,
    temperature: float | None = None,
    entropy: str | None = "grad",
    chunk_elements: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(a_t | s_t) ``(B, T)`` and the entropies ``(B, T)`` (or None) from final hidden states
    ``hidden (B, T, C)``, running the policy's LM head (``policy.head_logits``) on a chunk of columns at a
    time.

    Under autograd each chunk is a checkpoint (``torch.utils.checkpoint``, non-reentrant): only its hidden
    states are kept, and the backward makes its logits again, so neither pass holds more than one chunk's
    logits. The values equal those of one full-width head (each row's log-softmax is its own).

    Args:
        policy: Has ``head_logits(hidden)`` and ``log_probs(logits, temperature)``.
        hidden: ``(B, T, C)``.
        actions: ``(B, T)`` long.
        temperature: Overrides the policy's own.
        entropy: ``"grad"`` (in the graph), ``"detached"`` (computed for the logs, out of the graph) or None.
        chunk_elements: Logits per chunk (default :data:`LOGITS_CHUNK_ELEMENTS`).
    """
    if entropy not in ("grad", "detached", None):
        raise ValueError(f"entropy must be 'grad', 'detached' or None, got {entropy!r}")
    B, T = actions.shape
    chosen: Any = chunk_elements or getattr(policy, "logits_chunk_elements", LOGITS_CHUNK_ELEMENTS)
    budget = int(chosen)
    cols = max(1, budget // max(1, B * int(policy.vocab_size)))
    lps, ents = [], []
    for s in range(0, T, cols):
        h, a = hidden[:, s : s + cols], actions[:, s : s + cols]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, ent = checkpoint(_score_chunk, policy, h, a, temperature, entropy, use_reentrant=False)
        else:
            lp, ent = _score_chunk(policy, h, a, temperature, entropy)
        lps.append(lp)
        ents.append(ent)
    lp = torch.cat(lps, dim=1) if lps else hidden.new_zeros(B, 0)
    if entropy is None:
        return lp, None
    return lp, (torch.cat(ents, dim=1) if ents else hidden.new_zeros(B, 0))


def prompt_groups(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(first (U,), inverse (B,))`` when the rows' prompts (the first ``prompt_width`` columns, padding
    included) repeat enough to be worth sharing (at most half as many distinct prompts as rows): row ``i``'s
    prompt is row ``first[inverse[i]]``'s. None otherwise."""
    if prompt_width < 1 or input_ids.shape[1] <= prompt_width:
        return None
    return repeated_prompts(input_ids[:, :prompt_width], attention_mask[:, :prompt_width])


def repeated_prompts(
    prompt: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(first (U,), inverse (B,))`` when the ``(B, P)`` left-padded prompts (padding included) hold at most
    half as many distinct rows as rows: row ``i`` equals row ``first[inverse[i]]``. None otherwise."""
    B = prompt.shape[0]
    key = prompt.masked_fill(~prompt_mask.bool(), -1)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
    U = distinct.shape[0]
    if 2 * U > B:
        return None
    rows = torch.arange(B, device=prompt.device)
    first = torch.full((U,), B, dtype=torch.long, device=prompt.device)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    return first, inverse


def score_actions(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    prompt_width: int,
    temperature: float | None = None,
    entropy: str | None = "grad",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One full-sequence forward over episodes cropped to the columns some row uses (:func:`crop_padding`):
    ``(log π(a_t | s_t) (B, T'), values (B, T'), entropies (B, T') or None)`` for the first ``T'`` steps,
    where ``T'`` is the longest episode (``mask (B, T)`` marks the steps taken). ``temperature`` overrides
    the policy's own (see ``LMPolicy.log_probs``); ``entropy`` is ``"grad"``, ``"detached"`` (out of the
    graph: what an update with ``ent_coef == 0`` wants) or None.

    A policy with ``action_hidden`` and ``head_logits`` (:class:`~agents.policies.HFPolicy`) is scored in
    chunks of action columns (:func:`chunked_action_scores`); any other from one forward of the LM head.
    """
    ids, am, p, t = crop_padding(input_ids, attention_mask, mask, prompt_width)
    trunk = None
    if hasattr(policy, "shared_prompt_hidden"):
        groups = prompt_groups(ids, am, p)
        if groups is not None:  # each distinct prompt runs once (k completions per prompt)
            trunk = policy.shared_prompt_hidden(ids, am, p, *groups)
    if trunk is None and hasattr(policy, "action_hidden"):
        trunk = policy.action_hidden(ids, am, p)
    if trunk is not None:
        hidden, values = trunk  # (B, T', C), (B, T')
        lp, ent = chunked_action_scores(policy, hidden, actions[:, :t], temperature, entropy)
        return lp, values, ent
    logits, values = forward_actions(policy, ids, am, p)  # (B, T', V), (B, T')
    logp = policy.log_probs(logits) if temperature is None else policy.log_probs(logits, temperature)
    lp = logp.gather(-1, actions[:, :t, None]).squeeze(-1)  # (B, T')
    ent = None
    if entropy is not None:
        with contextlib.nullcontext() if entropy == "grad" else torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)  # (B, T')
    return lp, values, ent


def action_logprobs(
    policy: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    actions: torch.Tensor,
    prompt_width: int,
    return_values: bool = False,
    temperature: float | None = None,
) -> Any:
    """log π(a_t | s_t) for every action from ONE full-sequence forward (and the values, if asked), as
    ``(B, T)`` (0 after each episode's end); the LM head runs only on the action columns (in chunks, for a
    policy that supports it). ``temperature`` overrides the policy's own.

    ``return_values=True`` also returns the values and the full log-probabilities ``(B, T, V)``, made from
    one full-width head (a test's view; it holds every logit)."""
    mask = attention_mask[:, prompt_width:]
    if not return_values:
        lp, _, _ = score_actions(
            policy, input_ids, attention_mask, actions, mask, prompt_width, temperature, entropy=None
        )
        return F.pad(lp, (0, actions.shape[1] - lp.shape[1]))
    ids, am, p, t = crop_padding(input_ids, attention_mask, mask, prompt_width)
    logits, values = forward_actions(policy, ids, am, p)  # (B, T', V), (B, T')
    logp = policy.log_probs(logits) if temperature is None else policy.log_probs(logits, temperature)
    lp = logp.gather(-1, actions[:, :t, None]).squeeze(-1)  # (B, T')
    pad = actions.shape[1] - lp.shape[1]
    return F.pad(lp, (0, pad)), F.pad(values, (0, pad)), F.pad(logp, (0, 0, 0, pad))
