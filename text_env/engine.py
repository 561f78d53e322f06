"""The batched generation state machine shared by :class:`~text_env.core.TextGenEnv` (one slot) and
:class:`~text_env.vector.TextGenVectorEnv` (N slots).

Both envs drive the same arrays, so "the vector env equals N single envs" holds by construction rather than
by keeping two implementations in sync. Every per-step operation is a numpy operation over all slots; the
only Python loops run per *episode* (refilling a slot's queue of prompt draws every 64 episodes, and
rewards that read text).

Randomness: each slot owns a ``numpy.random.Generator``. A prompt is drawn as the next entry of a per-slot
queue filled ``QUEUE`` at a time by ``generator.integers(n_prompts, size=QUEUE)``, so one slot seeded with
``s`` draws exactly the prompts a single env seeded with ``s`` draws. Draws come from the split only, never
from the ad-hoc rows below.

Pinned prompt texts that the split lacks (``reset(options={"prompt": ...})``) live in a bounded pool of
*ad-hoc rows* after the split's rows (indices ``len(split)`` and up): at most ``max(ADHOC_ROWS, 2 × N)``
of them, reused least-recently-used first, so an env pinned with a new prompt on every reset keeps a
constant size. The first ad-hoc prompts get the indices they always got (``len(split)``, ``+1``, ...) and
the same text maps to the same row while it stays in the pool; a row is only reused once no slot's current
episode and no pin of the reset under way refers to it.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from text_env.rewards.base import CompositeReward, RewardBatch, check_reward_total
from text_env.rewards.registry import make_composite
from text_env.tasks.base import Example, Task, _check_encodable, make_task
from text_env.validate import int_at_least, positive_int

QUEUE = 64
MAX_CONTEXT = 1024  # the widest default observation window (a longer prompt keeps its end)
# upper bounds for what a caller or a file may ask for: beyond them a typo (max_new_tokens=10**9) allocates
# gigabytes per slot before the first step (issue 13: one edited number must not be a denial of service)
MAX_NEW_TOKENS = 1 << 16
MAX_CONTEXT_LEN = 1 << 16
MAX_SLOT_CELLS = 1 << 28  # num_envs × (context_len + max_new_tokens): 2 GiB of int64 state
# the smallest ad-hoc pool; it holds at least 2 × N rows (N slots may pin N new texts at once)
ADHOC_ROWS = 64


class GenerationState:
    """N slots, each generating one completion for one prompt of ``task``'s ``split``.

    Args:
        task: The task (prompts, references, tokenizer, stop tokens).
        split: Which split prompts are drawn from.
        num_slots: N.
        reward: The env's reward as a :class:`CompositeReward`.
        context_len: Width of the observation window (left-padded with ``pad_id``).
        max_new_tokens: The token budget per episode (reaching it truncates).
    """

    def __init__(
        self,
        task: Task,
        split: str,
        num_slots: int,
        reward: CompositeReward,
        context_len: int,
        max_new_tokens: int,
    ) -> None:
        self.task = task
        self.split = split
        self.n = num_slots
        self.reward = reward
        self.context_len = context_len
        self.max_new_tokens = max_new_tokens
        tok = task.tokenizer
        self.tokenizer = tok
        self.pad_id, self.bos_id, self.eos_id = tok.pad_id, tok.bos_id, tok.eos_id
        # an HF tokenizer encodes the whole context before the completion itself (encode_prompt: BOS only
        # where the tokenizer adds one, or the chat template): no BOS is forced in front of it
        self._bos = 0 if hasattr(tok, "encode_prompt") else 1
        self.stop_ids = task.stop_ids
        self.vocab_size = tok.vocab_size
        # a lookup table: is_stop[actions] is one gather per step, where np.isin sorts (≈10x slower at N=64)
        self._is_stop = np.zeros(self.vocab_size, dtype=bool)
        self._is_stop[np.asarray(self.stop_ids, dtype=np.int64)] = True

        # the split stays in its compact form (int32 ids + offsets, shared by every env on the task): a slot's
        # observation window is built when it resets, not precomputed for every prompt
        enc = task.encoded(split)
        self._enc = enc
        self.has_references = enc.reference_tokens is not None
        self.prompts = enc.prompts
        self.references = enc.references
        self.labels = enc.labels
        self.metadata = enc.metadata
        self.split_size = len(enc)
        self._index_of_prompt: dict[str, int] | None = None  # the split's texts (first occurrence)
        # the ad-hoc pool (allocated on the first pin of a text the split lacks)
        self.adhoc_capacity = max(ADHOC_ROWS, 2 * num_slots)
        self._adhoc_used = 0  # pool rows handed out so far (≤ adhoc_capacity)
        self._adhoc_of_prompt: dict[str, int] = {}  # text → its latest ad-hoc index (it wins over the split)
        self._adhoc_recency: OrderedDict[int, None] = OrderedDict()  # ad-hoc indices, least recent first
        self._adhoc_reserved: set[int] = set()  # handed out by index_of for the reset under way
        self._adhoc_prompt_ids = np.zeros((0, 1), dtype=np.int64)
        self._adhoc_prompt_lengths = np.zeros(0, dtype=np.int64)
        self._adhoc_reference_ids = np.zeros((0, 1), dtype=np.int64)
        self._adhoc_reference_lengths = np.zeros(0, dtype=np.int64)
        self._adhoc_windows = np.zeros((0, context_len), dtype=np.int64)

        self.success: CompositeReward | None = None
        self.success_part: str | None = None
        if task.success is not None:
            if isinstance(task.success, str) and task.success in reward.names:
                self.success_part = task.success  # reuse the reward's value: no second scoring pass
            else:
                self.success = make_composite(task.success)

        n, m = num_slots, max_new_tokens
        self.obs = np.full((n, context_len), self.pad_id, dtype=np.int64)
        self.completion = np.full((n, m), self.pad_id, dtype=np.int64)
        self.completion_len = np.zeros(n, dtype=np.int64)  # tokens in the completion (stop token excluded)
        self.steps = np.zeros(n, dtype=np.int64)  # actions taken this episode (stop token included)
        self.example = np.zeros(n, dtype=np.int64)  # index into the split
        self.finished = np.ones(n, dtype=bool)  # no episode running until a reset
        self.generators: list[np.random.Generator | None] = [None] * n
        self._queue = np.zeros((n, QUEUE), dtype=np.int64)
        self._queue_pos = np.full(n, QUEUE, dtype=np.int64)

    # ---- prompts ---------------------------------------------------------------------------------------
    def _split_windows(self, idx: np.ndarray) -> np.ndarray:
        """The left-padded ``[BOS] + prompt`` windows of split prompts ``idx``, built from the compact ids
        (the same windows as :meth:`_windows`: position ``t`` holds token ``t - (context_len - length)`` of
        ``[BOS] + prompt``, if that is ≥ 0)."""
        enc, c = self._enc, self.context_len
        starts = enc.prompt_offsets[idx]
        b = self._bos
        length = enc.prompt_offsets[idx + 1] - starts + b  # with BOS
        k = np.arange(c)[None, :] - (c - length)[:, None]  # (m, c) position in [BOS] + prompt
        out = np.full((len(idx), c), self.pad_id, dtype=np.int64)
        if b:
            out[k == 0] = self.bos_id
        body = k >= b
        out[body] = enc.prompt_tokens[(starts[:, None] + k - b)[body]]
        return out

    def _start_windows(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), context_len)``: the first observation of an episode on each prompt of ``idx``."""
        adhoc = idx >= self.split_size
        if not adhoc.any():
            return self._split_windows(idx)
        out = np.empty((len(idx), self.context_len), dtype=np.int64)
        out[~adhoc] = self._split_windows(idx[~adhoc])
        out[adhoc] = self._adhoc_windows[idx[adhoc] - self.split_size]
        return out

    def _windows(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Left-padded ``[BOS] + prompt`` windows of width ``context_len`` (long prompts keep their end)."""
        n, p = ids.shape
        b = self._bos
        full = np.concatenate([np.full((n, b), self.bos_id, dtype=np.int64), ids], axis=1)  # (n, P+1)
        length = lengths + b
        c = self.context_len
        j = np.arange(p + b)[None, :]
        target = j + (c - length)[:, None]
        valid = (j < length[:, None]) & (target >= 0)
        out = np.full((n, c), self.pad_id, dtype=np.int64)
        rows = np.broadcast_to(np.arange(n)[:, None], valid.shape)
        out[rows[valid], target[valid]] = full[valid]
        return out

    def add_example(self, example: Example) -> int:
        """Store an ad-hoc example (a pinned prompt text not in the split) in the pool; returns its index.

        The pool is bounded (see the module docstring): once full, the least recently used row that no slot
        and no pending pin refers to is overwritten.
        """
        row = self._adhoc_row()
        i = self.split_size + row
        tok: Any = self.tokenizer  # an HF tokenizer adapter has encode_prompt (its model's prompt ids)
        self._adhoc_prompt_ids, self._adhoc_prompt_lengths = _set_ragged_row(
            self._adhoc_prompt_ids, self._adhoc_prompt_lengths, row,
            tok.encode_prompt(example.prompt) if not self._bos else tok.encode(example.prompt), self.pad_id,
        )  # fmt: skip
        if self.has_references:
            ref = example.references[0] if example.references else ""
            self._adhoc_reference_ids, self._adhoc_reference_lengths = _set_ragged_row(
                self._adhoc_reference_ids, self._adhoc_reference_lengths, row, tok.encode(ref), self.pad_id
            )
        ids = self._adhoc_prompt_ids[row : row + 1]
        self._adhoc_windows[row] = self._windows(ids, self._adhoc_prompt_lengths[row : row + 1])[0]
        self.prompts[i] = example.prompt
        self.references[i] = example.references or None
        self.labels[i] = example.label
        self.metadata[i] = example.metadata
        self._adhoc_of_prompt[example.prompt] = i  # the same ad-hoc prompt maps to this index from now on
        self._touch(i)
        return i

    def _adhoc_row(self) -> int:
        """A free pool row: a new one while the pool grows, else the least recently used one not in use."""
        if self._adhoc_used == 0:  # first use: room for the whole pool in the per-row object arrays
            extra = self.adhoc_capacity
            self.prompts = _grow_objects(self.prompts, extra)
            self.references = _grow_objects(self.references, extra)
            self.labels = _grow_objects(self.labels, extra)
            self.metadata = _grow_objects(self.metadata, extra)
            n, c = self.adhoc_capacity, self.context_len
            self._adhoc_prompt_ids = np.full((n, 1), self.pad_id, dtype=np.int64)
            self._adhoc_prompt_lengths = np.zeros(n, dtype=np.int64)
            self._adhoc_reference_ids = np.full((n, 1), self.pad_id, dtype=np.int64)
            self._adhoc_reference_lengths = np.zeros(n, dtype=np.int64)
            self._adhoc_windows = np.full((n, c), self.pad_id, dtype=np.int64)
        if self._adhoc_used < self.adhoc_capacity:
            self._adhoc_used += 1
            return self._adhoc_used - 1
        busy = self._adhoc_reserved | {int(i) for i in self.example if i >= self.split_size}
        i = next(i for i in self._adhoc_recency if i not in busy)  # capacity ≥ 2N rows: one is free
        del self._adhoc_recency[i]
        old = self.prompts[i]
        if self._adhoc_of_prompt.get(old) == i:
            del self._adhoc_of_prompt[old]
        return i - self.split_size

    def _touch(self, i: int) -> None:
        if i >= self.split_size:
            self._adhoc_recency[i] = None
            self._adhoc_recency.move_to_end(i)
            self._adhoc_reserved.add(i)

    def index_of(self, prompt: str, reference: str | None = None) -> int:
        """The split index of a prompt text, adding it as an ad-hoc example if the split lacks it (or if a
        ``reference`` is given that differs from the split's)."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"options['prompt'] must be a non-empty string, got {prompt!r}")
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f"options['reference'] must be a string, got {reference!r}")
        # the same rule as task files: text that UTF-8 cannot encode (a lone surrogate) is refused here, not
        # when an info dict or a saved result later fails to encode
        _check_encodable(prompt, "reset(options=...)", "prompt")
        if reference is not None:
            _check_encodable(reference, "reset(options=...)", "reference")
            unk = getattr(self.tokenizer, "unk_id", None)
            if unk is not None and not self.task.allow_unk and unk in self.tokenizer.encode(reference):
                missing = sorted({c for c in reference if unk in self.tokenizer.encode(c)})
                raise ValueError(
                    f"options['reference'] {reference!r} holds characters the tokenizer lacks: {missing}; "
                    "they would encode to <unk>, which no agent can write (a task built with allow_unk=True "
                    "allows it)"
                )
        if self._index_of_prompt is None:
            self._index_of_prompt = {}
            for j, p in enumerate(self.prompts[: self.split_size]):
                self._index_of_prompt.setdefault(p, j)
        i = self._adhoc_of_prompt.get(prompt)
        if i is None:
            i = self._index_of_prompt.get(prompt)
        if i is not None and (reference is None or (self.references[i] or (None,))[0] == reference):
            self._touch(i)
            return i
        return self.add_example(Example(prompt, () if reference is None else (reference,)))

    @property
    def num_prompts(self) -> int:
        """Rows a ``prompt_index`` may address: the split's, then the ad-hoc rows handed out so far."""
        return self.split_size + self._adhoc_used

    # ---- row gathers (split rows, then ad-hoc rows) ------------------------------------------------------
    def _rows(self, idx: np.ndarray, reference: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)`` of the prompts (or first references) of rows ``idx``, right-padded to the
        split's width (wider if an ad-hoc row is longer)."""
        enc = self._enc
        if reference:
            rows, width = enc.reference_rows, enc.reference_width
            pool, pool_len = self._adhoc_reference_ids, self._adhoc_reference_lengths
        else:
            rows, width = enc.prompt_rows, enc.prompt_width
            pool, pool_len = self._adhoc_prompt_ids, self._adhoc_prompt_lengths
        adhoc = idx >= self.split_size
        if not adhoc.any():
            return rows(idx)
        width = max(width, pool.shape[1])
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        lengths = np.empty(len(idx), dtype=np.int64)
        ids[~adhoc], lengths[~adhoc] = rows(idx[~adhoc], width)
        a = idx[adhoc] - self.split_size
        ids[adhoc, : pool.shape[1]] = pool[a]
        lengths[adhoc] = pool_len[a]
        return ids, lengths

    def set_generator(self, slot: int, generator: np.random.Generator) -> None:
        self.generators[slot] = generator
        self._queue_pos[slot] = QUEUE

    def draw(self, slots: np.ndarray) -> np.ndarray:
        """The next prompt index for each of ``slots`` (an index array), from each slot's own queue."""
        empty = slots[self._queue_pos[slots] >= QUEUE]
        for s in empty:  # once every QUEUE episodes per slot
            gen = self.generators[s]
            if gen is None:
                raise RuntimeError("reset() must be called before the first step")
            self._queue[s] = gen.integers(self.split_size, size=QUEUE)  # the split's rows, never ad-hoc
            self._queue_pos[s] = 0
        idx = self._queue[slots, self._queue_pos[slots]]
        self._queue_pos[slots] += 1
        return idx

    # ---- episode -----------------------------------------------------------------------------------------
    def reset_slots(self, slots: np.ndarray, prompt_index: np.ndarray | None = None) -> None:
        """Start a new episode in ``slots`` (index array) on drawn or given prompt indices."""
        if prompt_index is None:
            prompt_index = self.draw(slots)
        else:
            prompt_index = np.asarray(prompt_index, dtype=np.int64)
            bad = (prompt_index < 0) | (prompt_index >= self.num_prompts)
            if bad.any():
                raise ValueError(
                    f"prompt_index {prompt_index[bad][0]} is out of range; split {self.split!r} has "
                    f"{self.num_prompts} prompts"
                )
        self.example[slots] = prompt_index
        self._adhoc_reserved.clear()  # the pins of this reset now live in self.example
        self.obs[slots] = self._start_windows(prompt_index)
        self.completion[slots] = self.pad_id
        self.completion_len[slots] = 0
        self.steps[slots] = 0
        self.finished[slots] = False

    def step(self, actions: np.ndarray, active: np.ndarray) -> dict[str, Any]:
        """Apply ``actions`` in the ``active`` slots (a bool mask); finished or inactive slots are untouched.

        Returns a dict with ``reward``, ``terminated``, ``truncated`` (``(N,)`` arrays, zero/False outside
        ``active``), ``parts`` (reward name → ``(N,)`` values) with ``parts_mask`` (name → ``(N,)`` bool),
        ``success`` and ``done`` (``(N,)`` bool) and ``batch`` (the RewardBatch of finished slots or None).
        """
        a = np.flatnonzero(active)
        act = actions[a]
        if len(a) == self.n:
            self.obs[:, :-1] = self.obs[:, 1:]
            self.obs[:, -1] = act
        else:
            self.obs[a, :-1] = self.obs[a, 1:]
            self.obs[a, -1] = act
        is_stop = self._is_stop[act]  # actions are validated token ids (< vocab_size)
        keep = a[~is_stop]
        self.completion[keep, self.completion_len[keep]] = actions[keep]
        self.completion_len[keep] += 1
        self.steps[a] += 1
        terminated = np.zeros(self.n, dtype=bool)
        truncated = np.zeros(self.n, dtype=bool)
        terminated[a] = is_stop
        truncated[a] = ~is_stop & (self.steps[a] >= self.max_new_tokens)
        done = terminated | truncated
        self.finished |= done

        reward = np.zeros(self.n, dtype=np.float32)
        parts: dict[str, np.ndarray] = {}
        parts_mask: dict[str, np.ndarray] = {}
        if self.reward.of_kind("action") and len(a):
            batch = self.batch(a, actions=act)
            total, p = self.reward.score(batch, "action")
            reward[a] += total
            for name, v in p.items():
                parts[name] = _scatter(self.n, a, v)
                parts_mask[name] = active.copy()
        success = np.zeros(self.n, dtype=bool)
        final_batch = None
        d = np.flatnonzero(done)
        if len(d):
            final_batch = self.batch(d)
            total, p = self.reward.score(final_batch, "state")
            with np.errstate(over="ignore", invalid="ignore"):
                reward[d] += total
            for name, v in p.items():
                parts[name] = _scatter(self.n, d, v)
                parts_mask[name] = done.copy()
            if parts:  # the action and the state totals, each finite, may still overflow as a sum
                check_reward_total(reward, [(t, parts.get(t.name)) for t in self.reward.terms])
            if self.success_part is not None:
                success[d] = p[self.success_part] >= self.task.success_threshold
            elif self.success is not None:
                s_total, _ = self.success.score(final_batch, "state")
                success[d] = s_total >= self.task.success_threshold
        return {
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "done": done,
            "parts": parts,
            "parts_mask": parts_mask,
            "success": success,
            "batch": final_batch,
        }

    def batch(self, slots: np.ndarray, actions: np.ndarray | None = None) -> RewardBatch:
        """The RewardBatch of ``slots`` as they stand (ids gathered with fancy indexing; text is lazy)."""
        ex = self.example[slots]
        ref_ids, ref_len = self._rows(ex, reference=True) if self.has_references else (None, None)
        prompt_ids, prompt_len = self._rows(ex)
        return RewardBatch(
            tokenizer=self.tokenizer,
            completion_ids=self.completion[slots],
            completion_lengths=self.completion_len[slots],
            prompts=self.prompts[ex],
            references=self.references[ex],
            prompt_ids=prompt_ids,
            prompt_lengths=prompt_len,
            reference_ids=ref_ids,
            reference_lengths=ref_len,
            done=self.finished[slots],
            actions=actions,
            labels=self.labels[ex],
            metadata=self.metadata[ex],
        )

    def completions_text(self, slots: np.ndarray) -> list[str]:
        return self.tokenizer.decode_batch(self.completion[slots], self.completion_len[slots])

    def validate_actions(self, actions: Any, expect_shape: Sequence[int]) -> np.ndarray:
        """Coerce actions to an int64 array of ``expect_shape``; anything else raises a clear error."""
        try:
            arr = np.asarray(actions)
        except (TypeError, ValueError) as e:  # e.g. a ragged list: numpy's message would not name the value
            raise ValueError(f"actions must be integer token ids, got {actions!r}: {e}") from None
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise TypeError(f"actions must be integer token ids, got {arr.dtype} value {actions!r}")
        if np.issubdtype(arr.dtype, np.floating) and not (
            np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        ):
            raise ValueError(f"actions must be integer token ids, got non-integer values {actions!r}")
        if arr.shape != tuple(expect_shape):
            raise ValueError(
                f"actions must have shape {tuple(expect_shape)}, got shape {arr.shape}: {actions!r}"
            )
        # range-check before the cast: a huge uint64 or float would wrap around in int64 and be misreported
        bad = (arr < 0) | (arr >= self.vocab_size)
        if bad.any():
            v = arr[bad].ravel()[0]
            v = int(v) if np.issubdtype(arr.dtype, np.integer) else float(v)
            raise ValueError(f"action {v} is not a token id; expected an integer in [0, {self.vocab_size})")
        arr = arr.astype(np.int64)
        return arr.reshape(-1) if arr.ndim else arr.reshape(1)


# ---- shared by the single and the vector env ---------------------------------------------------------------
def resolve_env_args(
    task: Task | str | Any,
    reward: Any,
    max_new_tokens: int | None,
    context_len: int | None,
    task_kwargs: dict[str, Any],
) -> tuple[Task, CompositeReward, int, int]:
    """Shared by the single and vector env: build the task and reward, choose the budget and window."""
    if task is None:
        raise ValueError(
            "no task given: TextEnv/Custom-v0 (or an env with task=None) needs task=... — a JSONL/CSV file "
            "of prompts and references (gym.make('TextEnv/Custom-v0', task='my_prompts.jsonl')), a Task, or "
            "a registered task name"
        )
    # a task read from rows takes the env's reward as its default: a file without references loads then
    task = make_task(task, env_reward=reward, **task_kwargs)
    if reward is None and task.reward is None:
        raise ValueError(
            f"task {task.name!r} has no default reward (a task saved with a Python function as its reward "
            "loads without one); pass reward=... (a registered name, a callable, a Reward)"
        )
    composite = make_composite(task.reward if reward is None else reward)
    max_new_tokens = positive_int(
        task.max_new_tokens if max_new_tokens is None else max_new_tokens, "max_new_tokens"
    )
    if max_new_tokens > MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be at most {MAX_NEW_TOKENS}, got {max_new_tokens}")
    _warn_if_references_cannot_fit(task, composite, max_new_tokens)
    if context_len is None:
        context_len = min(1 + task.max_prompt_tokens + max_new_tokens, MAX_CONTEXT)
    context_len = int_at_least(context_len, 2, "context_len")
    if context_len > MAX_CONTEXT_LEN:
        raise ValueError(f"context_len must be at most {MAX_CONTEXT_LEN}, got {context_len}")
    return task, composite, max_new_tokens, context_len


_FIT_WARNED: set[tuple[str, str, int]] = set()


def _warn_if_references_cannot_fit(task: Task, reward: CompositeReward, max_new_tokens: int) -> None:
    """Warn once per (task, budget) when the reward (or success test) compares completions with references
    and some reference is longer than the budget: no agent can write it in full, so e.g. ``exact_match``
    can never pay 1 for it. (A continuation task, whose reward
    ignores the references, is not warned about.)"""
    uses_refs = any("reference" in getattr(t.reward, "requires", ()) for t in reward.terms)
    if not uses_refs and task.success is not None:
        uses_refs = any(
            "reference" in getattr(t.reward, "requires", ()) for t in make_composite(task.success).terms
        )
    if not uses_refs:
        return
    longest = task.longest_reference_tokens
    if longest is None or longest <= max_new_tokens:
        return
    key = (task.name, task.fingerprint(), max_new_tokens)
    if key in _FIT_WARNED:
        return
    _FIT_WARNED.add(key)
    warnings.warn(
        f"task {task.name!r}: its longest reference is {longest} tokens, more than max_new_tokens="
        f"{max_new_tokens}; such references cannot be written in full and never score as exact matches. "
        f"Use max_new_tokens={longest + 1} (the reference, then EOS; the default for a task read from rows)",
        UserWarning,
        stacklevel=4,
    )


def check_state_size(num_slots: int, context_len: int, max_new_tokens: int) -> None:
    """Refuse a vector env whose per-slot arrays would not fit in memory, before allocating them."""
    cells = num_slots * (context_len + max_new_tokens)
    if cells > MAX_SLOT_CELLS:
        raise ValueError(
            f"num_envs={num_slots} slots × (context_len={context_len} + max_new_tokens={max_new_tokens}) is "
            f"{cells:,} token cells, more than {MAX_SLOT_CELLS:,}; use fewer envs or a smaller budget"
        )


def check_seed(seed: Any, what: str = "seed") -> int | None:
    """``None`` or an int ≥ 0 (numpy integers included, returned as ``int``); anything else raises a
    ``TypeError``/``ValueError`` naming it (gymnasium's own check raises ``gymnasium.error.Error``, which
    callers catching bad input do not expect, and rejects numpy integers)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{what} must be None or an int ≥ 0, got {type(seed).__name__}: {seed!r}")
    if seed < 0:
        raise ValueError(f"{what} must be an int ≥ 0, got {seed!r}")
    return int(seed)


def pinned_index(state: GenerationState, options: dict[str, Any] | None, n: int = 1) -> np.ndarray | None:
    """The prompt indices that ``reset(options=...)`` pins, or None to draw."""
    if not options:
        return None
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}: {options!r}")
    unknown = set(options) - {"prompt_index", "prompt", "reference", "reset_mask"}
    if unknown:
        raise ValueError(
            f"unknown reset options {sorted(unknown)}; expected 'prompt_index', 'prompt' (+ 'reference') "
            "or 'reset_mask'"
        )
    if "reference" in options and "prompt" not in options:
        raise ValueError("options['reference'] needs options['prompt'] (the prompt it answers)")
    if "prompt" in options:
        prompts = options["prompt"]
        if not isinstance(prompts, (str, list, tuple, np.ndarray)):
            raise TypeError(f"options['prompt'] must be a string or a list of strings, got {prompts!r}")
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        refs = options.get("reference")
        if refs is not None and not isinstance(refs, (str, list, tuple, np.ndarray)):
            raise TypeError(f"options['reference'] must be a string or a list of strings, got {refs!r}")
        refs = [refs] * n if refs is None or isinstance(refs, str) else list(refs)
        if len(prompts) != n or len(refs) != n:
            raise ValueError(
                f"options['prompt'] / ['reference'] have {len(prompts)} / {len(refs)} entries for {n} slots"
            )
        return np.array([state.index_of(p, r) for p, r in zip(prompts, refs)], dtype=np.int64)
    if "prompt_index" in options:
        given = options["prompt_index"]
        try:
            idx = np.asarray(given)
        except (TypeError, ValueError):  # e.g. a ragged list
            idx = np.asarray(None)
        if not np.issubdtype(idx.dtype, np.integer) or isinstance(given, (bool, np.bool_)):
            raise TypeError(f"options['prompt_index'] must be an int or ints, got {given!r}")
        if idx.shape not in ((), (n,)):
            raise ValueError(
                f"options['prompt_index'] must be one int or {n} ints (one per slot), got shape {idx.shape}: "
                f"{given!r}"
            )
        # range-check before the cast: a huge uint64 would wrap around in int64 and be misreported
        bad = (idx < 0) | (idx >= state.num_prompts)
        if bad.any():
            raise ValueError(
                f"prompt_index {idx[bad].ravel()[0]} is out of range; split {state.split!r} has "
                f"{state.num_prompts} prompts"
            )
        return np.broadcast_to(idx.astype(np.int64), (n,)).copy()
    return None


def _scatter(n: int, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[idx] = values
    return out


def _set_ragged_row(
    ids: np.ndarray, lengths: np.ndarray, row: int, new: list[int], pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``new`` into row ``row`` of a right-padded id array (widened if it does not fit)."""
    if len(new) > ids.shape[1]:
        wider = np.full((len(ids), len(new)), pad, dtype=ids.dtype)
        wider[:, : ids.shape[1]] = ids
        ids = wider
    ids[row] = pad
    ids[row, : len(new)] = new
    lengths[row] = len(new)
    return ids, lengths


def _grow_objects(arr: np.ndarray, extra: int) -> np.ndarray:
    out = np.empty(len(arr) + extra, dtype=object)
    out[: len(arr)] = arr
    return out
