"""Rewards that compare a completion with its reference or check its form: exact match, partial
(positional) match, and keyword presence with a format rule.

Exact match compares normalised text (:func:`normalize_answer`), settling with numpy on the token ids every
row where that gives the same answer, so the synthetic tasks rarely decode; partial match compares token ids
position by position.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

from text_env.rewards.base import Reward, RewardBatch, RewardError
from text_env.rewards.registry import register_reward


def _aligned(batch: RewardBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Completion and reference ids padded to one width, positions past each row's length set to -1/-2."""
    if batch.reference_ids is None or batch.reference_lengths is None:
        raise RewardError(
            "this reward needs references, but the batch has none (does the task have references?)"
        )
    c, r = batch.completion_ids, batch.reference_ids
    width = max(c.shape[1], r.shape[1])
    cl, rl = batch.completion_lengths, batch.reference_lengths
    pos = np.arange(width)
    cc = np.full((len(c), width), -1, dtype=np.int64)
    rr = np.full((len(r), width), -2, dtype=np.int64)
    cc[:, : c.shape[1]] = c
    rr[:, : r.shape[1]] = r
    cc[pos[None, :] >= cl[:, None]] = -1
    rr[pos[None, :] >= rl[:, None]] = -2
    if batch._references is not None:
        # a row without any reference (e.g. a pinned ad-hoc prompt) matches nothing
        missing = np.fromiter((r is None for r in batch._references), dtype=bool, count=len(batch))
        rl = np.where(missing, -1, rl)
    return cc, cl, rr, rl


def normalize_answer(text: str) -> str:
    """What ``exact_match`` compares: Unicode NFC, surrounding whitespace stripped, every run of whitespace
    inside made one space. Case and punctuation are kept (``"Abc"`` ≠ ``"abc"``, ``"4."`` ≠ ``"4"``).

    Example:
        >>> normalize_answer("  the   cat\\n sat ")
        'the cat sat'
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


_UNSAFE_CACHE: dict[int, tuple[Any, np.ndarray]] = {}


def _text_unsafe_ids(tokenizer: Any) -> np.ndarray | None:
    """For a one-character-per-token tokenizer: ``(V,)`` bool of the ids whose text normalisation can touch
    (specials, which decode to nothing; whitespace; combining marks; characters NFC changes). Two id rows
    free of them have equal normalised texts exactly when the ids are equal, so such rows are compared as
    ids, without decoding. ``None`` for other tokenizers (one text has many tokenisations there)."""
    if type(tokenizer).__name__ != "CharTokenizer":
        return None
    hit = _UNSAFE_CACHE.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    unsafe = np.zeros(tokenizer.vocab_size, dtype=bool)
    unsafe[[tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id]] = True
    for i, c in zip(tokenizer.token_ids(tokenizer.alphabet), tokenizer.alphabet, strict=True):
        if c.isspace() or unicodedata.combining(c) or unicodedata.normalize("NFC", c) != c:
            unsafe[i] = True
    if len(_UNSAFE_CACHE) > 64:
        _UNSAFE_CACHE.clear()
    _UNSAFE_CACHE[id(tokenizer)] = (tokenizer, unsafe)
    return unsafe


@register_reward("exact_match", requires=("reference",))
class ExactMatch(Reward):
    """1 if the completion's text equals a reference's after :func:`normalize_answer` (NFC, whitespace
    stripped and collapsed; case kept), else 0. Every reference of a row counts.

    Texts are compared, not token ids: a model's tokenizer may spell the gold text in other tokens than its
    own encoding of the reference (one character per token, say) and that is still the right answer; and a
    reference the tokenizer could not encode never matches garbage. Rows whose ids equal the reference's are
    matches without decoding; with a one-character-per-token tokenizer, rows whose ids contain no token that
    normalisation could change are settled as ids too (the same result, for speed).
    """

    name = "exact_match"
    kind = "state"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        cc, cl, rr, rl = _aligned(batch)
        rr = np.where(rr == -2, -1, rr)  # beyond-length positions compare equal once lengths match
        out = ((cl == rl) & (cc == rr).all(axis=1)).astype(np.float32)  # rl = -1: no reference, no match
        if batch._references is None:
            return out  # ids only (a batch built without reference texts)
        unk = getattr(batch.tokenizer, "unk_id", None)
        if unk is not None:  # a reference in <unk>s (allow_unk=True) is matched by its text, never its ids
            out[(rr == unk).any(axis=1)] = 0.0
        refs = batch.references
        todo = (out == 0) & (rl >= 0)
        unsafe = _text_unsafe_ids(batch.tokenizer)
        if unsafe is not None and todo.any():
            # rows free of normalisation-sensitive ids (both sides) with one reference are settled as ids
            c_bad = (unsafe[np.clip(cc, 0, None)] & (cc >= 0)).any(axis=1)
            r_bad = (unsafe[np.clip(rr, 0, None)] & (rr >= 0)).any(axis=1)
            single = np.fromiter((r is not None and len(r) == 1 for r in refs), dtype=bool, count=len(out))
            todo &= c_bad | r_bad | ~single
        idx = np.flatnonzero(todo)
        if len(idx):
            texts = batch.completions
            for i in idx:
                got = normalize_answer(texts[i])
                if any(got == normalize_answer(r) for r in refs[i] or ()):
                    out[i] = 1.0
        return out


@register_reward("partial_match", requires=("reference",))
class PartialMatch(Reward):
    """Fraction of positions where the completion's token equals the reference's, over the longer length.

    Partial credit for the synthetic tasks: ``"cbx"`` against ``"cba"`` scores 2/3, ``"cbaa"`` scores 3/4,
    an empty completion scores 0 (1 if the reference is empty too).
    """

    name = "partial_match"
    kind = "state"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        cc, cl, rr, rl = _aligned(batch)
        hits = (cc == rr).sum(axis=1)
        denom = np.maximum(cl, rl)
        out = np.where(denom == 0, 1.0, hits / np.maximum(denom, 1))
        return np.where(rl < 0, 0.0, out).astype(np.float32)


@register_reward("keyword", requires=("metadata.keyword",))
class KeywordReward(Reward):
    """Checks that the completion uses a keyword as a whole word, and optionally a format regex.

    Score = 0.5·[keyword present] + 0.5·[completion matches ``pattern``] (1.0 for both). The keyword comes
    from the row's ``metadata["keyword"]`` (the Keyword task sets it) or the fixed ``keyword`` argument.

    Args:
        keyword: A fixed keyword for every row (else read from metadata).
        pattern: A regular expression the whole completion must match (``re.fullmatch``); ``None`` drops
            the format half and the keyword alone scores 1.
    """

    name = "keyword"
    kind = "state"
    requires = ("metadata.keyword",)

    def __init__(self, keyword: str | None = None, pattern: str | None = r"[a-z]+( [a-z]+){2,}\.") -> None:
        self.keyword = keyword
        try:
            self.pattern = None if pattern is None else re.compile(pattern)
        except re.error as e:
            raise ValueError(f"keyword reward: invalid regular expression {pattern!r}: {e}") from e

    def _keywords(self, batch: RewardBatch) -> list[str]:
        if self.keyword is not None:
            return [self.keyword] * len(batch)
        if batch.metadata is None:
            raise RewardError("reward 'keyword' needs metadata['keyword'] per row or a fixed keyword=...")
        kws = []
        for i, m in enumerate(batch.metadata):
            if not m or "keyword" not in m:
                raise RewardError(f"reward 'keyword': row {i} has no metadata['keyword']")
            kws.append(str(m["keyword"]))
        return kws

    def score(self, batch: RewardBatch) -> np.ndarray:
        out = np.zeros(len(batch), dtype=np.float32)
        for i, (text, kw) in enumerate(zip(batch.completions, self._keywords(batch), strict=True)):
            has_kw = re.search(rf"\b{re.escape(kw)}\b", text) is not None
            if self.pattern is None:
                out[i] = float(has_kw)
            else:
                out[i] = 0.5 * has_kw + 0.5 * (self.pattern.fullmatch(text) is not None)
        return out
