"""Sentiment of the completion from the VADER lexicon (``vaderSentiment``; Hutto & Gilbert, ICWSM 2014).

VADER's *compound* score is a normalized sum of word valences with its rules for negation, intensifiers,
"but" and punctuation, in [-1, 1]. The reward rescales it to [0, 1] by default (``(compound + 1) / 2``,
so a neutral text scores 0.5 and the reward has the same range as the match and overlap rewards);
``rescale=False`` returns the compound score as it is. ``target="negative"`` rewards negative text
instead (the score is mirrored: ``1 - s``, or ``-compound``).

The lexicon is read once per process, on first use.

Example:
    >>> from text_env.rewards import RewardBatch, make
    >>> batch = RewardBatch.from_texts(["", ""], ["What a great film!", "A dull, awful mess."])
    >>> s = make("sentiment_vader")(batch)
    >>> bool(s[0] > 0.5 > s[1])
    True
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import numpy as np

from text_env.rewards.base import Reward, RewardBatch
from text_env.rewards.registry import register_reward

_ANALYZER: Any = None
_LOCK = threading.Lock()


def vader_analyzer() -> Any:
    """The process-wide ``vaderSentiment.SentimentIntensityAnalyzer`` (built once: it parses its lexicon)."""
    global _ANALYZER
    with _LOCK:
        if _ANALYZER is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            _ANALYZER = SentimentIntensityAnalyzer()
    return _ANALYZER


def vader_compound(texts: list[str]) -> np.ndarray:
    """VADER compound scores in [-1, 1], one per text (float64)."""
    analyzer = vader_analyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


@register_reward("sentiment_vader")
class VaderSentiment(Reward):
    """Positive sentiment of the completion (VADER compound, rescaled to [0, 1] by default).

    Args:
        rescale: Map the compound score from [-1, 1] to [0, 1] (default), else return it as is.
        target: ``"positive"`` (default) rewards positive text; ``"negative"`` mirrors the score.
    """

    name = "sentiment_vader"
    kind = "state"
    requires = ()

    def __init__(self, rescale: bool = True, target: Literal["positive", "negative"] = "positive") -> None:
        if target not in ("positive", "negative"):
            raise ValueError(f"sentiment_vader: target must be 'positive' or 'negative', got {target!r}")
        self.rescale = bool(rescale)
        self.target = target
        vader_analyzer()  # fail (missing package) when the reward is built, not mid-episode

    def score(self, batch: RewardBatch) -> np.ndarray:
        c = vader_compound(batch.completions)
        if self.target == "negative":
            c = -c
        return ((c + 1.0) / 2.0 if self.rescale else c).astype(np.float32)
