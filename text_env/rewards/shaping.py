"""Shaping rewards: target length, an n-gram repetition penalty (per token), a regex format check, and
fluency under a caller-supplied language-model scorer.

Example:
    >>> from text_env.rewards import RewardBatch, make
    >>> batch = RewardBatch.from_texts(["", ""], ["one two three four", "one two"])
    >>> make("length:4")(batch)  # 1 - |words - 4| / 4, clipped to [0, 1]
    array([1. , 0.5], dtype=float32)
    >>> make(r"regex:\\w+ \\w+")(batch)
    array([0., 1.], dtype=float32)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from text_env.rewards.base import Reward, RewardBatch, RewardError
from text_env.rewards.registry import register_reward

LengthUnit = Literal["words", "tokens", "chars"]


def _parse_int(reward: str, what: str, value: Any, minimum: int = 1) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"reward {reward!r}: {what} must be an integer >= {minimum}, got {value!r}"
        ) from None
    if out < minimum or (isinstance(value, float) and value != out):
        raise ValueError(f"reward {reward!r}: {what} must be an integer >= {minimum}, got {value!r}")
    return out


@register_reward("length", takes_argument=True)
class LengthReward(Reward):
    """Closeness to a target length in words, tokens or characters (1 at the target, 0 at 0 or 2x it).

    Score = ``max(0, 1 - |length - target| / target)``: it falls linearly to 0 at an empty completion
    and at twice the target. The target is, in order: the ``target`` argument (``"length:20"``), the
    row's ``metadata["target_length"]``, or the length of the row's first reference (the usual choice for
    summaries); a row with none of these raises :class:`RewardError`.

    Args:
        target: Target length (an integer >= 1), or ``None`` to read it per row.
        unit: ``"words"`` (whitespace-separated, default), ``"tokens"`` (the env tokenizer's ids, read from
            the batch without decoding) or ``"chars"``.
    """

    name = "length"
    kind = "state"
    requires = ()

    def __init__(self, target: int | str | None = None, unit: LengthUnit = "words") -> None:
        if unit not in ("words", "tokens", "chars"):
            raise ValueError(f"reward 'length': unit must be 'words', 'tokens' or 'chars', got {unit!r}")
        self.target = None if target is None else _parse_int("length", "target", target)
        self.unit = unit

    def _measure(self, texts: Sequence[str]) -> np.ndarray:
        if self.unit == "words":
            return np.array([len(t.split()) for t in texts], dtype=np.float64)
        return np.array([len(t) for t in texts], dtype=np.float64)

    def _lengths(self, batch: RewardBatch) -> np.ndarray:
        if self.unit == "tokens":
            return batch.completion_lengths.astype(np.float64)
        return self._measure(batch.completions)

    def _targets(self, batch: RewardBatch) -> np.ndarray:
        if self.target is not None:
            return np.full(len(batch), float(self.target))
        out = np.full(len(batch), np.nan)
        meta = batch.metadata if batch.metadata is not None else [None] * len(batch)
        for i, m in enumerate(meta):
            if m and m.get("target_length") is not None:
                out[i] = _parse_int("length", f"row {i}'s metadata['target_length']", m["target_length"])
        missing = np.flatnonzero(np.isnan(out))
        if len(missing):
            refs = batch.first_references
            for j in missing:
                if refs[j] is None:
                    raise RewardError(
                        f"reward 'length': row {j} has no target (pass target=..., e.g. 'length:20', or give "
                        "rows metadata['target_length'] or a reference)"
                    )
            if self.unit == "tokens" and batch.reference_lengths is not None:
                out[missing] = batch.reference_lengths[missing]
            else:
                out[missing] = self._measure([refs[i] for i in missing])  # type: ignore[misc]
        return np.maximum(out, 1.0)  # an empty reference: target 1, not a division by zero

    def score(self, batch: RewardBatch) -> np.ndarray:
        n, target = self._lengths(batch), self._targets(batch)
        return np.clip(1.0 - np.abs(n - target) / target, 0.0, 1.0).astype(np.float32)


@register_reward("repetition", kind="action", takes_argument=True)
class RepetitionPenalty(Reward):
    """Per-token n-gram repetition penalty (-1 when the new token repeats an earlier n-gram, else 0).

    The token just emitted scores ``penalty`` when it completes an n-gram of ids that already occurs
    earlier in the completion (overlaps count: the fourth ``a`` of ``aaaa`` repeats the trigram ``aaa``).
    An action reward: it reads ``batch.completion_ids`` (which, in the env, already holds the token just
    emitted as each row's last valid id) and never decodes text. A stop action is not appended to the
    completion, so a row whose last id differs from ``batch.actions`` scores 0. Vectorized: one
    ``(N, T-n+1, n)`` sliding-window comparison per call.

    Args:
        n: The n-gram order (``"repetition:4"``); 3 by default (trigram blocking, as in Paulus et al.,
            2018, "A Deep Reinforced Model for Abstractive Summarization").
        penalty: The reward for a repeating token (negative).
    """

    name = "repetition"
    kind = "action"
    requires = ()

    def __init__(self, n: int | str = 3, penalty: float = -1.0) -> None:
        self.n = _parse_int("repetition", "n", n)
        self.penalty = float(penalty)
        if not np.isfinite(self.penalty):
            raise ValueError(f"reward 'repetition': penalty must be finite, got {penalty!r}")

    def score(self, batch: RewardBatch) -> np.ndarray:
        ids, lengths, n = batch.completion_ids, batch.completion_lengths.astype(np.int64), self.n
        out = np.zeros(len(batch), dtype=np.float32)
        if ids.shape[1] < n + 1:  # no row is long enough to hold an earlier copy of its last n-gram
            return out
        rows = np.arange(len(batch))
        # the n-gram ending at each row's last id: (N, n); rows shorter than n+1 are masked below
        last = ids[rows[:, None], np.clip(lengths[:, None] - n + np.arange(n), 0, ids.shape[1] - 1)]
        windows = np.lib.stride_tricks.sliding_window_view(ids, n, axis=1)  # (N, T-n+1, n), a view
        same = (windows == last[:, None, :]).all(axis=2)  # (N, T-n+1)
        start = np.arange(windows.shape[1])
        earlier = start[None, :] < (lengths - n)[:, None]  # windows that end before the last id
        repeated = (same & earlier).any(axis=1) & (lengths >= n + 1)
        if batch.actions is not None:  # the token was appended (not a stop action)
            tail = ids[rows, np.maximum(lengths - 1, 0)]
            repeated &= (lengths > 0) & (tail == np.asarray(batch.actions).reshape(-1))
        out[repeated] = self.penalty
        return out


@register_reward("regex", takes_argument=True)
class RegexReward(Reward):
    """1 if the completion matches a regular expression ('regex:<pattern>', full match by default), else 0.

    Args:
        pattern: The regular expression (everything after ``regex:``, colons included).
        mode: ``"fullmatch"`` (default: the whole completion must have the format), ``"match"`` (a prefix)
            or ``"search"`` (anywhere).
        flags: ``re`` flags, e.g. ``re.DOTALL | re.IGNORECASE``.
        name: The name the reward reports (set it to tell two regex rewards apart in a composite).
    """

    name = "regex"
    kind = "state"
    requires = ()

    def __init__(
        self,
        pattern: str | None = None,
        mode: Literal["fullmatch", "match", "search"] = "fullmatch",
        flags: int = 0,
        name: str | None = None,
    ) -> None:
        if pattern is None or not isinstance(pattern, str):
            raise ValueError(
                f"reward 'regex' needs a pattern string, e.g. 'regex:[A-Z].*\\.', got {pattern!r}"
            )
        if mode not in ("fullmatch", "match", "search"):
            raise ValueError(f"reward 'regex': mode must be 'fullmatch', 'match' or 'search', got {mode!r}")
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as e:
            raise ValueError(f"reward 'regex': invalid regular expression {pattern!r}: {e}") from e
        self.mode = mode
        self._match = getattr(self.pattern, mode)
        if name is not None:
            self.name = name

    def score(self, batch: RewardBatch) -> np.ndarray:
        return np.array([self._match(t) is not None for t in batch.completions], dtype=np.float32)


Scorer = Callable[[list[str], list[str]], Sequence[float]]


def _import_callable(spec: str) -> Callable[..., Any]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"reward 'fluency': scorer must be a callable or 'package.module:function', got {spec!r}"
        )
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as e:  # empty or relative names: ValueError
        raise ValueError(f"reward 'fluency': cannot import scorer {spec!r}: {e}") from e
    if not callable(fn):
        raise TypeError(f"reward 'fluency': {spec!r} is a {type(fn).__name__}, not a callable")
    return fn


@register_reward("fluency", takes_argument=True)
class FluencyReward(Reward):
    """Fluency: log-likelihood per token of the completion under a caller-supplied scorer callable.

    ``scorer(prompts, completions) -> list[float]`` returns, for each completion, its log-likelihood per
    token given the prompt (any model: an LM policy's frozen copy, an n-gram model, ...). text_env never
    imports a model itself; agents pass one in, e.g. ``make("fluency", scorer=lm.score)`` or
    ``"fluency:mypackage.lm:score"``. Values are not rescaled (higher, i.e. closer to 0, is more fluent);
    a scorer that raises, returns NaN or the wrong number of values raises :class:`RewardError`.

    Args:
        scorer: The callable, or ``"package.module:function"`` naming one.
    """

    name = "fluency"
    kind = "state"
    requires = ()

    def __init__(self, scorer: Scorer | str | None = None) -> None:
        if scorer is None:
            raise TypeError(
                "reward 'fluency' needs scorer=fn with fn(prompts, completions) -> list[float] "
                "(log-likelihood per token), or the spec 'fluency:package.module:function'"
            )
        self.scorer = _import_callable(scorer) if isinstance(scorer, str) else scorer
        if not callable(self.scorer):
            raise TypeError(
                f"reward 'fluency': scorer must be callable, got {type(scorer).__name__}: {scorer!r}"
            )

    def score(self, batch: RewardBatch) -> np.ndarray:
        # any sequence of floats: Reward.__call__ checks and converts what comes back
        return self.scorer(batch.prompts, list(batch.completions))  # type: ignore[return-value]
