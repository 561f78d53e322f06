"""Rewards that compare a completion with its reference or check its form: exact match, partial
(positional) match, and keyword presence with a format rule.

Exact and partial match compare token ids with numpy when the batch carries reference ids (the env always
does), so the synthetic tasks never decode text to score an episode.
"""

from __future__ import annotations

import re

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


def _extra_refs_match(batch: RewardBatch, out: np.ndarray) -> np.ndarray:
    """Rows with several references also match (as text, surrounding whitespace ignored) any later one."""
    refs = batch.references
    multi = [i for i, r in enumerate(refs) if r is not None and len(r) > 1]
    if multi:
        texts = batch.completions
        for i in multi:
            if any(texts[i].strip() == r.strip() for r in refs[i] or ()):
                out[i] = 1.0
    return out


@register_reward("exact_match", requires=("reference",))
class ExactMatch(Reward):
    """1 if the completion equals a reference token for token, else 0."""

    name = "exact_match"
    kind = "state"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        cc, cl, rr, rl = _aligned(batch)
        rr = np.where(rr == -2, -1, rr)  # beyond-length positions compare equal once lengths match
        out = ((cl == rl) & (cc == rr).all(axis=1)).astype(np.float32)  # rl = -1: no reference, no match
        return _extra_refs_match(batch, out)


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
