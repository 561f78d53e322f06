"""Rewards that compare a completion's text with its references: SQuAD token F1, ROUGE-1/2/L
(``rouge-score``), and sentence-level BLEU and chrF (``sacrebleu``).

Every score lies in [0, 1] (sacrebleu's 0-100 scale is divided by 100). A row may carry several
references: token F1 and ROUGE take the best reference (``max``, as the SQuAD script and
``RougeScorer.score_multi`` do), BLEU and chrF use sacrebleu's own multi-reference statistics. A row
without a reference raises :class:`~text_env.rewards.base.RewardError`.

The metric libraries are imported when a reward is first built, not when the registry loads
(``rouge-score`` pulls in NLTK, about a second).

Example:
    >>> from text_env.rewards import RewardBatch, make
    >>> batch = RewardBatch.from_texts(["Q:"], ["the cat sat"], references=["a cat sat down"])
    >>> make("token_f1")(batch)  # normalized: ["cat", "sat"] vs ["cat", "sat", "down"]
    array([0.8], dtype=float32)
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np

from text_env.rewards.base import Reward, RewardBatch, RewardError
from text_env.rewards.registry import register_reward

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def references_of(batch: RewardBatch, reward: str) -> list[tuple[str, ...]]:
    """Every row's references; a row without one raises ``RewardError`` naming ``reward`` and the row."""
    refs = batch.references
    for i, r in enumerate(refs):
        if r is None:
            raise RewardError(f"reward {reward!r} needs a reference, but row {i} has none")
    return refs  # type: ignore[return-value]


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower-case, drop punctuation and the articles a/an/the, collapse
    whitespace (``normalize_answer`` of the official SQuAD v1.1/v2.0 evaluation script).

    Example:
        >>> squad_normalize("The  Cat's hat!")
        'cats hat'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two strings after :func:`squad_normalize`.

    As in the SQuAD v2.0 script, if either side normalizes to no tokens the score is 1 when both do and
    0 otherwise.

    Example:
        >>> token_f1("the cat sat", "a cat sat down")
        0.8
    """
    pred, gold = squad_normalize(prediction).split(), squad_normalize(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


@register_reward("token_f1", requires=("reference",))
class TokenF1(Reward):
    """SQuAD token F1 with the best of a row's references (normalized: case, punctuation, articles)."""

    name = "token_f1"
    kind = "state"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        refs = references_of(batch, self.name)
        return np.array(
            [max(token_f1(c, r) for r in rs) for c, rs in zip(batch.completions, refs, strict=True)],
            dtype=np.float32,
        )


class _Rouge(Reward):
    """ROUGE F-measure from Google's ``rouge-score`` (its tokenizer: lower-case, alphanumeric tokens).

    Args:
        use_stemmer: Porter-stem tokens before matching (``RougeScorer(use_stemmer=...)``); off by default,
            as in Hugging Face ``evaluate``'s rouge.
    """

    kind = "state"
    requires = ("reference",)
    rouge_type = "rouge1"

    def __init__(self, use_stemmer: bool = False) -> None:
        from rouge_score import rouge_scorer  # lazy: imports NLTK

        self.use_stemmer = use_stemmer
        self._scorer = rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=use_stemmer)

    def score(self, batch: RewardBatch) -> np.ndarray:
        refs = references_of(batch, self.name)
        out = np.empty(len(batch), dtype=np.float32)
        for i, (c, rs) in enumerate(zip(batch.completions, refs, strict=True)):
            # score_multi keeps the reference with the best F-measure
            out[i] = self._scorer.score_multi(list(rs), c)[self.rouge_type].fmeasure
        return out


@register_reward("rouge1", requires=("reference",))
class Rouge1(_Rouge):
    """ROUGE-1 F-measure (unigram overlap) with the best reference, via rouge-score."""

    name = "rouge1"
    rouge_type = "rouge1"


@register_reward("rouge2", requires=("reference",))
class Rouge2(_Rouge):
    """ROUGE-2 F-measure (bigram overlap) with the best reference, via rouge-score."""

    name = "rouge2"
    rouge_type = "rouge2"


@register_reward("rouge_l", requires=("reference",))
class RougeL(_Rouge):
    """ROUGE-L F-measure (longest common subsequence) with the best reference, via rouge-score."""

    name = "rouge_l"
    rouge_type = "rougeL"


@register_reward("bleu", requires=("reference",))
class SentenceBleu(Reward):
    """Sentence BLEU / 100 from sacrebleu (exponential smoothing, effective n-gram order), all references.

    ``effective_order=True`` is what ``sacrebleu.sentence_bleu`` uses: a short sentence is not zeroed for
    lacking 4-grams (sacrebleu's documentation recommends it for sentence-level scores).

    Args:
        tokenize: sacrebleu tokenizer name (``"13a"``, the WMT default; ``"char"``, ``"intl"``, ...).
        lowercase: Case-insensitive BLEU.
    """

    name = "bleu"
    kind = "state"
    requires = ("reference",)

    def __init__(self, tokenize: str = "13a", lowercase: bool = False) -> None:
        from sacrebleu.metrics import BLEU

        self._bleu = BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)

    def score(self, batch: RewardBatch) -> np.ndarray:
        refs = references_of(batch, self.name)
        s = [
            self._bleu.sentence_score(c, list(rs)).score
            for c, rs in zip(batch.completions, refs, strict=True)
        ]
        return np.clip(np.asarray(s, dtype=np.float32) / 100.0, 0.0, 1.0)  # 100.00000000000004 happens


@register_reward("chrf", requires=("reference",))
class SentenceChrF(Reward):
    """Sentence chrF / 100 from sacrebleu (character n-gram F-score, β=2), all references.

    Args:
        word_order: 0 for chrF, 2 for chrF++ (adds word bigrams).
    """

    name = "chrf"
    kind = "state"
    requires = ("reference",)

    def __init__(self, word_order: int = 0) -> None:
        from sacrebleu.metrics import CHRF

        self._chrf = CHRF(word_order=word_order)

    def score(self, batch: RewardBatch) -> np.ndarray:
        refs = references_of(batch, self.name)
        s = [
            self._chrf.sentence_score(c, list(rs)).score
            for c, rs in zip(batch.completions, refs, strict=True)
        ]
        return np.clip(np.asarray(s, dtype=np.float32) / 100.0, 0.0, 1.0)
