"""The text encoder of the learned rewards: hashed word and character n-grams, TF-IDF weighted, through an
``nn.EmbeddingBag`` (see :mod:`text_env.rewards.learned` for why), and :class:`TextScorer`, the encoder plus a
linear head."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD_CACHE_LIMIT = 500_000


# upper bounds for a saved config (defaults: 2^18 buckets × 8 dims); a file asking for more is refused
ENCODER_LIMITS = {"n_buckets": 1 << 24, "dim": 4096, "word_ngrams": 8, "char_ngram": 16, "table": 1 << 28}


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of :class:`HashedNgramEncoder` (saved in ``config.json``).

    Attributes:
        n_buckets: Size of the hashed feature space (rows of the embedding table).
        dim: Width of the text vector fed to the head.
        word_ngrams: Longest word n-gram (1: words only; 2: words and bigrams).
        char_ngram_min: Shortest character n-gram of a word (with ``<``/``>`` boundary marks).
        char_ngram_max: Longest character n-gram; 0 disables character features.
        lowercase: Lower-case the text before extracting features.
    """

    n_buckets: int = 1 << 18
    dim: int = 8
    word_ngrams: int = 2
    char_ngram_min: int = 3
    char_ngram_max: int = 5
    lowercase: bool = True

    def __post_init__(self) -> None:
        for f in ("n_buckets", "dim", "word_ngrams"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EncoderConfig.{f} must be an integer >= 1, got {v!r}")
            if v > ENCODER_LIMITS[f]:  # one edited number must not allocate gigabytes (issue 13, item 6)
                raise ValueError(f"EncoderConfig.{f} must be at most {ENCODER_LIMITS[f]}, got {v!r}")
        if self.n_buckets * self.dim > ENCODER_LIMITS["table"]:
            raise ValueError(
                f"EncoderConfig n_buckets × dim = {self.n_buckets * self.dim} exceeds "
                f"{ENCODER_LIMITS['table']} table entries"
            )
        if not isinstance(self.lowercase, bool):
            raise ValueError(f"EncoderConfig.lowercase must be true or false, got {self.lowercase!r}")
        lo, hi = self.char_ngram_min, self.char_ngram_max
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or (
            hi != 0 and not 1 <= lo <= hi <= ENCODER_LIMITS["char_ngram"]
        ):
            raise ValueError(
                f"EncoderConfig char n-grams must satisfy 1 <= char_ngram_min <= char_ngram_max (or "
                f"char_ngram_max=0 to disable), got min={lo!r} max={hi!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown encoder settings {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        return cls(**data)


class HashedNgramEncoder(nn.Module):
    """Text → ``(B, dim)``: hashed word and character n-grams, TF-IDF weighted, through an EmbeddingBag.

    Features are hashed with CRC-32 (stable across processes and machines, unlike Python's salted
    ``hash``) into ``n_buckets``; collisions are the usual price of the hashing trick (Weinberger et al.,
    2009). The IDF buffer is fitted on the training texts (:meth:`fit_idf`) and saved with the weights.
    The embedding table has sparse gradients, so an epoch touches only the rows its texts use.
    """

    idf: torch.Tensor  # a registered buffer: saved with the weights

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.bag = nn.EmbeddingBag(self.config.n_buckets, self.config.dim, mode="sum", sparse=True)
        nn.init.normal_(self.bag.weight, std=0.01)
        self.register_buffer("idf", torch.ones(self.config.n_buckets))
        self._idf_np = np.ones(self.config.n_buckets, dtype=np.float64)
        self._word_cache: dict[str, list[int]] = {}

    def _hash(self, feature: str) -> int:
        return zlib.crc32(feature.encode("utf-8")) % self.config.n_buckets

    def _word_features(self, word: str) -> list[int]:
        feats = self._word_cache.get(word)
        if feats is None:
            c = self.config
            feats = [self._hash("w\x00" + word)]
            if c.char_ngram_max:
                marked = f"<{word}>"
                for n in range(c.char_ngram_min, c.char_ngram_max + 1):
                    feats.extend(self._hash("c\x00" + marked[i : i + n]) for i in range(len(marked) - n + 1))
            if len(self._word_cache) >= _WORD_CACHE_LIMIT:
                self._word_cache.clear()
            self._word_cache[word] = feats
        return feats

    def hashed_features(self, text: str) -> list[int]:
        """Every feature id of ``text``, repeated as often as it occurs."""
        tokens = _TOKEN.findall(text.lower() if self.config.lowercase else text)
        out: list[int] = []
        for t in tokens:
            out.extend(self._word_features(t))
        for n in range(2, self.config.word_ngrams + 1):
            out.extend(
                self._hash(f"{n}\x00" + " ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)
            )
        return out

    def feature_counts(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(distinct feature ids, their counts)`` of one text."""
        return np.unique(np.asarray(self.hashed_features(text), dtype=np.int64), return_counts=True)

    def fit_idf(self, counts: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Set the IDF of every bucket from the :meth:`feature_counts` of the training texts.

        ``idf = ln((1 + n) / (1 + df)) + 1``, scikit-learn's smoothed IDF: unseen buckets get the largest
        weight rather than a division by zero.
        """
        df = np.zeros(self.config.n_buckets, dtype=np.float64)
        for ids, _ in counts:
            df[ids] += 1.0
        self.set_idf(np.log((1.0 + len(counts)) / (1.0 + df)) + 1.0)

    def set_idf(self, idf: np.ndarray | torch.Tensor) -> None:
        t = torch.as_tensor(np.asarray(idf, dtype=np.float32))
        self.idf.copy_(t)
        self._idf_np = t.double().numpy()

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._idf_np = self.idf.double().numpy()

    def vectorize(
        self, text: str, counts: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(feature ids, weights)`` of one text: sublinear TF (``1 + ln tf``) x IDF, L2-normalized."""
        ids, c = self.feature_counts(text) if counts is None else counts
        w = (1.0 + np.log(c)) * self._idf_np[ids]
        norm = math.sqrt(float(w @ w))
        return ids, (w / norm if norm > 0 else w).astype(np.float32)

    @staticmethod
    def pack(vectors: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
        """Concatenate per-text vectors into EmbeddingBag's ``(indices, offsets, per_sample_weights)``."""
        lengths = np.fromiter((len(v[0]) for v in vectors), dtype=np.int64, count=len(vectors))
        offsets = np.zeros(len(vectors), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        if lengths.sum():
            ids = np.concatenate([v[0] for v in vectors])
            w = np.concatenate([v[1] for v in vectors])
        else:
            ids, w = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(w)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.bag(indices, offsets, per_sample_weights=weights)  # (B, dim)


class TextScorer(nn.Module):
    """Encoder + linear head: texts → one logit (classifier) or reward (Bradley-Terry) each."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.encoder = HashedNgramEncoder(config)
        self.head = nn.Linear(self.encoder.config.dim, 1)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(indices, offsets, weights)).squeeze(-1)  # (B,)

    def score_vectors(self, vectors: Sequence[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
        return self(*self.encoder.pack(vectors))

    @torch.no_grad()
    def collapsed(self) -> tuple[np.ndarray, float]:
        """``(v, b)`` with ``v = table @ head.weight`` (one number per bucket) and ``b`` the head's bias.

        Encoder and head are both linear, so a text's score is ``sum_j weight_j * v[id_j] + b``: inference
        is a numpy gather and sum, with no torch call (and no intra-op threads) per batch.
        """
        v = (self.encoder.bag.weight.double() @ self.head.weight.double().reshape(-1)).numpy()
        return v, float(self.head.bias.double())

    def score_texts(
        self, texts: Sequence[str], collapsed: tuple[np.ndarray, float] | None = None
    ) -> np.ndarray:
        """Scores of ``texts`` (float32), computed in numpy from :meth:`collapsed`."""
        v, b = self.collapsed() if collapsed is None else collapsed
        vecs = [self.encoder.vectorize(t) for t in texts]
        if not vecs:
            return np.zeros(0, dtype=np.float32)
        ids = np.concatenate([x[0] for x in vecs])
        w = np.concatenate([x[1] for x in vecs]).astype(np.float64)
        row = np.repeat(np.arange(len(vecs)), [len(x[0]) for x in vecs])
        return (np.bincount(row, weights=w * v[ids], minlength=len(vecs)) + b).astype(np.float32)


__all__ = ["EncoderConfig", "HashedNgramEncoder", "TextScorer"]
