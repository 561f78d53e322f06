"""The reward protocol: one call scores a whole batch of completions.

A reward is *state* (``kind="state"``: scores a finished completion, paid on the step that ends the episode)
or *action* (``kind="action"``: scores the token just emitted, paid on every step). Both receive a
:class:`RewardBatch` and return a float array of shape ``(N,)``.

The batch carries token ids as padded numpy arrays (cheap, always there) and the texts lazily: a reward
that compares ids never pays for decoding; one that reads ``batch.completions`` decodes once per batch.

Example:
    >>> import numpy as np
    >>> from text_env.rewards import make
    >>> em = make("exact_match")
    >>> batch = RewardBatch.from_texts(["2+2="], ["4"], references=["4"])
    >>> em(batch)
    array([1.], dtype=float32)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

RewardKind = Literal["state", "action"]
FLOAT32_MAX = float(np.finfo(np.float32).max)  # rewards are float32: weights and totals must fit


class RewardError(ValueError):
    """A reward function misbehaved (wrong length, NaN, raised); the message names the reward."""


class RewardBatch:
    """N prompts and their completions (so far), as ids and lazily as text.

    Attributes:
        completion_ids: ``(N, T)`` int array of generated ids (EOS excluded), right-padded.
        completion_lengths: ``(N,)`` number of valid ids per row.
        prompt_ids / prompt_lengths: the same for prompts (BOS excluded); may be ``None``.
        reference_ids / reference_lengths: the first reference per row as ids; may be ``None``.
        done: ``(N,)`` bool, the rows whose episode ends with this batch.
        actions: ``(N,)`` the token emitted this step (action rewards), else ``None``.
        labels: per-row labels (object array) or ``None``.
        tokenizer: the tokenizer that decodes the ids.
        metadata: per-row dicts (object array) with task-specific fields (e.g. a keyword), or ``None``.
    """

    def __init__(
        self,
        *,
        tokenizer: Any | None,
        completion_ids: np.ndarray,
        completion_lengths: np.ndarray,
        prompts: Sequence[str] | None = None,
        references: Sequence[tuple[str, ...] | None] | None = None,
        prompt_ids: np.ndarray | None = None,
        prompt_lengths: np.ndarray | None = None,
        reference_ids: np.ndarray | None = None,
        reference_lengths: np.ndarray | None = None,
        done: np.ndarray | None = None,
        actions: np.ndarray | None = None,
        labels: Sequence[Any] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        completions: Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.completion_ids = completion_ids
        self.completion_lengths = completion_lengths
        self._prompts = prompts
        self._references = references
        self.prompt_ids = prompt_ids
        self.prompt_lengths = prompt_lengths
        self.reference_ids = reference_ids
        self.reference_lengths = reference_lengths
        n = len(completion_lengths)
        self.done = np.ones(n, dtype=bool) if done is None else done
        self.actions = actions
        self.labels = labels
        self.metadata = metadata
        if completions is not None:
            self.__dict__["completions"] = list(completions)

    def __len__(self) -> int:
        return len(self.completion_lengths)

    @classmethod
    def from_texts(
        cls,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[str | Sequence[str] | None] | None = None,
        tokenizer: Any | None = None,
        labels: Sequence[Any] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> RewardBatch:
        """A batch built from strings (for evaluating texts outside an env, and for tests).

        Without a tokenizer the id arrays hold Unicode code points, so id-based rewards still work.
        """
        if len(prompts) != len(completions):
            raise ValueError(
                f"{len(prompts)} prompts but {len(completions)} completions; expected equal lengths"
            )
        if references is not None and len(references) != len(completions):
            raise ValueError(
                f"{len(references)} references but {len(completions)} completions; expected equal lengths"
            )
        encode = tokenizer.encode if tokenizer is not None else (lambda s: [ord(c) for c in s])
        refs = None if references is None else [_as_ref_tuple(r) for r in references]
        c_ids, c_len = pad_ragged([encode(c) for c in completions])
        p_ids, p_len = pad_ragged([encode(p) for p in prompts])
        r_ids = r_len = None
        if refs is not None and all(r is not None for r in refs):
            r_ids, r_len = pad_ragged([encode(r[0]) for r in refs if r is not None])
        return cls(
            tokenizer=tokenizer,
            completion_ids=c_ids,
            completion_lengths=c_len,
            prompts=list(prompts),
            references=refs,
            prompt_ids=p_ids,
            prompt_lengths=p_len,
            reference_ids=r_ids,
            reference_lengths=r_len,
            labels=labels,
            metadata=metadata,
            completions=list(completions),
        )

    @cached_property
    def completions(self) -> list[str]:
        """The completions as text, decoded once per batch."""
        if self.tokenizer is None:
            raise RewardError("this batch has no tokenizer to decode completions with")
        return self.tokenizer.decode_batch(self.completion_ids, self.completion_lengths)

    @property
    def prompts(self) -> list[str]:
        if self._prompts is None:
            raise RewardError("this batch carries no prompt texts")
        return list(self._prompts)

    @property
    def references(self) -> list[tuple[str, ...] | None]:
        """All references per row (a tuple, possibly several), or ``None`` for rows without one."""
        if self._references is None:
            return [None] * len(self)
        return list(self._references)

    @property
    def first_references(self) -> list[str | None]:
        return [None if r is None else r[0] for r in self.references]

    def subset(self, mask: np.ndarray) -> RewardBatch:
        """The rows where ``mask`` is true (vectorized; texts are sliced if already decoded)."""
        idx = np.flatnonzero(mask)

        def take(x: Any) -> Any:
            if x is None:
                return None
            if isinstance(x, np.ndarray):
                return x[idx]
            return [x[i] for i in idx]

        sub = RewardBatch(
            tokenizer=self.tokenizer,
            completion_ids=self.completion_ids[idx],
            completion_lengths=self.completion_lengths[idx],
            prompts=take(self._prompts),
            references=take(self._references),
            prompt_ids=take(self.prompt_ids),
            prompt_lengths=take(self.prompt_lengths),
            reference_ids=take(self.reference_ids),
            reference_lengths=take(self.reference_lengths),
            done=self.done[idx],
            actions=take(self.actions),
            labels=take(self.labels),
            metadata=take(self.metadata),
        )
        if "completions" in self.__dict__:
            sub.__dict__["completions"] = take(self.__dict__["completions"])
        return sub


def pad_ragged(
    rows: Sequence[Sequence[int]], pad: int = 0, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a list of id lists into ``(N, T)`` int64 plus ``(N,)`` lengths (truncated to ``width``)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if width is not None:
        lengths = np.minimum(lengths, width)
    t = max(int(lengths.max(initial=0)) if width is None else width, 1)
    out = np.full((len(rows), t), pad, dtype=np.int64)
    for i, (r, n) in enumerate(zip(rows, lengths, strict=True)):
        out[i, :n] = r[:n]
    return out, lengths


def _as_ref_tuple(ref: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if ref is None:
        return None
    if isinstance(ref, str):
        return (ref,)
    refs = tuple(ref)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"a reference must be a string or a non-empty list of strings, got {ref!r}")
    return refs


class Reward:
    """Base class for rewards: subclasses implement :meth:`score`; ``__call__`` validates the output.

    Attributes:
        name: The registry name (shown in ``info["reward_parts"]``).
        kind: ``"state"`` (scores a finished completion) or ``"action"`` (scores each new token).
        requires: What the reward reads from the batch, e.g. ``("reference",)``; shown by ``available()``.
        higher_is_better_max: The best attainable score, if bounded (used to check gold references).
    """

    name: str = "reward"
    kind: RewardKind = "state"
    requires: tuple[str, ...] = ()

    def score(self, batch: RewardBatch) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: RewardBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        try:
            out = self.score(batch)
        except RewardError as e:
            if repr(self.name) in str(e):
                raise
            raise RewardError(f"reward {self.name!r}: {e}") from e  # the message names the reward
        except Exception as e:
            raise RewardError(f"reward {self.name!r} raised {type(e).__name__}: {e}") from e
        return check_reward_output(self.name, out, len(batch))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r})"


def check_reward_output(name: str, out: Any, n: int) -> np.ndarray:
    """Coerce a reward's output to ``float32 (n,)``.

    Wrong length, ``None`` (as the output or one of its values) or non-finite values raise ``RewardError``
    naming the reward (a ``None`` is reported as such, not as the NaN numpy would make of it)."""
    if out is None:
        raise RewardError(f"reward {name!r} returned None; expected {n} floats (did it forget to return?)")
    if isinstance(out, (list, tuple)) or (isinstance(out, np.ndarray) and out.dtype == object):
        flat = np.asarray(out, dtype=object).reshape(-1) if isinstance(out, np.ndarray) else out
        nones = [i for i, v in enumerate(flat) if v is None]
        if nones:
            which = f"completion {nones[0]}" if len(nones) == 1 else f"completions {nones[:5]}"
            raise RewardError(f"reward {name!r} returned None for {which} (of {n}); expected a float each")
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, reported as non-finite below
            arr = np.asarray(out, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r} returned {type(out).__name__}, expected {n} floats: {e}") from e
    if arr.shape[0] != n:
        raise RewardError(f"reward {name!r} returned {arr.shape[0]} values for {n} completions; expected {n}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RewardError(
            f"reward {name!r} returned a non-finite value ({arr[i]}) at row {i}; expected finite floats"
        )
    return arr


def check_reward_total(total: np.ndarray, terms: Sequence[tuple[RewardTerm, np.ndarray | None]]) -> None:
    """Raise ``RewardError`` if a weighted float32 total is not finite, naming the terms behind it.

    ``terms`` pairs each term that went into ``total`` with its unweighted values (``None`` where they are
    not at hand); the first bad row's weights and values are in the message.
    """
    bad = ~np.isfinite(total)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    with np.errstate(over="ignore", invalid="ignore"):
        weighted = {t.name: (np.float32(t.weight) * v[i] if v is not None else None) for t, v in terms}
    culprits = [t for t, _ in terms if (w := weighted[t.name]) is not None and not np.isfinite(w)]
    described = ", ".join(
        f"{t.name!r} (weight {t.weight:g}" + ("" if v is None else f", value {float(v[i]):g}") + ")"
        for t, v in terms
        if not culprits or t in culprits
    )
    what = "its weighted value" if len(culprits) == 1 else "the weighted sum"
    raise RewardError(
        f"the reward of row {i} overflows float32 ({total[i]}): {what} of {described} is beyond "
        f"±{FLOAT32_MAX:.4g}; scale the reward or its weight down"
    )


class FunctionReward(Reward):
    """Wraps a user callable.

    Two shapes are accepted as-is:

    - ``fn(prompts, completions, references) -> list[float]`` (the plain TRL-style function; references are
      the first reference of each row, ``None`` where a row has none), detected by its three parameters;
    - ``fn(batch: RewardBatch) -> array`` for full access.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, kind: RewardKind = "state") -> None:
        if not callable(fn):
            raise TypeError(f"reward must be callable, got {type(fn).__name__}: {fn!r}")
        if kind not in ("state", "action"):
            raise ValueError(f"reward kind must be 'state' or 'action', got {kind!r}")
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", type(fn).__name__))
        self.kind = kind
        self._plain = _positional_arity(fn) >= 3

    def score(self, batch: RewardBatch) -> np.ndarray:
        if self._plain:
            return self.fn(batch.prompts, batch.completions, batch.first_references)
        return self.fn(batch)


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return 3
    return len(params)


@dataclass
class RewardTerm:
    name: str
    weight: float
    reward: Reward


@dataclass
class CompositeReward:
    """A weighted sum of rewards, split by kind. Every env holds one (a single reward is a one-term sum).

    ``score(batch, kind)`` returns the weighted total for that kind and each term's *unweighted* value, which
    the env reports in ``info["reward_parts"]``.
    """

    terms: list[RewardTerm] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"reward terms must have distinct names, got {names}")
        for t in self.terms:
            # rewards are summed in float32: a weight beyond its range would turn every reward into inf/NaN
            if not math.isfinite(t.weight) or abs(t.weight) > FLOAT32_MAX:
                raise ValueError(
                    f"reward weight for {t.name!r} must be a finite float32 number "
                    f"(|w| ≤ {FLOAT32_MAX:.4g}), got {t.weight}"
                )

    def of_kind(self, kind: RewardKind) -> list[RewardTerm]:
        return [t for t in self.terms if t.reward.kind == kind]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def score(self, batch: RewardBatch, kind: RewardKind) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The weighted float32 total of the terms of ``kind`` and each term's unweighted values.

        Raises:
            RewardError: A weighted value or the total overflows float32 (each term's own values are
                finite, but e.g. a weight of 10 on a reward of 1e38 is not); the message names the terms,
                their weights and values.
        """
        total = np.zeros(len(batch), dtype=np.float32)
        parts: dict[str, np.ndarray] = {}
        terms = self.of_kind(kind)
        for t in terms:
            v = t.reward(batch)
            parts[t.name] = v
            with np.errstate(over="ignore", invalid="ignore"):
                total += np.float32(t.weight) * v
        check_reward_total(total, [(t, parts[t.name]) for t in terms])
        return total, parts

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name}×{t.weight:g}" for t in self.terms)
        return f"CompositeReward({inner})"
