"""Learned rewards: Bradley-Terry and classifier training, determinism, save/load (safetensors + JSON),
corruption errors, use as an env reward by object and by spec, and the two accuracy bars."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from text_env.persistence import write_manifest
from text_env.rewards import RewardBatch, make, make_composite
from text_env.rewards.feedback import SyntheticLabeller
from text_env.rewards.learned import (
    BradleyTerryRewardModel,
    ClassifierRewardModel,
    EncoderConfig,
    HashedNgramEncoder,
    PreferencePair,
    load_learned_reward,
    pairwise_accuracy,
    read_preferences,
    train_classifier_reward,
    train_reward_model,
)

SMALL = EncoderConfig(n_buckets=1 << 12, dim=4)
GOOD = ["lovely", "superb", "moving", "witty", "charming", "fresh"]
BAD = ["dull", "tedious", "clumsy", "stale", "hollow", "flat"]
NOUNS = ["film", "script", "cast", "plot", "ending", "score", "pacing", "story"]


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    adj = GOOD + BAD
    return [f"the {rng.choice(NOUNS)} was {rng.choice(adj)} and {rng.choice(adj)}" for _ in range(n)]


def _count_rule(prompt: str, text: str) -> float:
    words = text.split()
    return float(sum(w in GOOD for w in words) - sum(w in BAD for w in words))


@pytest.fixture(scope="module")
def toy_pairs() -> list[PreferencePair]:
    rng = np.random.default_rng(0)
    return SyntheticLabeller(_count_rule, noise=0.0, seed=0).label_pool(_sentences(rng, 300), 600)


@pytest.fixture(scope="module")
def toy_rm(toy_pairs) -> BradleyTerryRewardModel:
    rm, _ = train_reward_model(toy_pairs, epochs=3, seed=0, encoder=SMALL)
    return rm


@pytest.fixture(scope="module")
def toy_clf() -> ClassifierRewardModel:
    texts = [f"a {g} {n}" for g in GOOD for n in NOUNS] + [f"a {b} {n}" for b in BAD for n in NOUNS]
    labels = [1] * (len(GOOD) * len(NOUNS)) + [0] * (len(BAD) * len(NOUNS))
    clf, _ = train_classifier_reward(texts, labels, val_fraction=0.0, epochs=10, seed=0, encoder=SMALL)
    return clf


# -------------------------------------------------------------------------------------------- encoder


def test_encoder_features_are_stable_and_tfidf_normalized():
    enc = HashedNgramEncoder(SMALL)
    feats = enc.hashed_features("Good film")
    # word unigrams (2) + one bigram + char 3-5-grams of "<good>" (4+3+2) and "<film>" (4+3+2)
    assert len(feats) == 2 + 1 + 9 + 9
    assert feats == HashedNgramEncoder(SMALL).hashed_features("good film")  # lower-cased, no salted hash
    ids, w = enc.vectorize("good good film")
    assert np.isclose(np.linalg.norm(w), 1.0) and len(ids) == len(set(ids.tolist()))
    assert enc.vectorize("")[0].size == 0
    with pytest.raises(ValueError, match="n_buckets must be an integer >= 1"):
        EncoderConfig(n_buckets=0)
    with pytest.raises(ValueError, match="char n-grams"):
        EncoderConfig(char_ngram_min=4, char_ngram_max=3)


# ------------------------------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_learns_the_rule(toy_rm, toy_pairs):
    rng = np.random.default_rng(1)
    held = SyntheticLabeller(_count_rule, noise=0.0, seed=1).label_pool(_sentences(rng, 200), 300)
    assert pairwise_accuracy(toy_rm, held) >= 0.9
    s = toy_rm.score_texts(["the film was lovely and superb", "the film was dull and tedious"])
    assert s[0] > s[1]
    assert toy_rm.training["kind"] == "bradley_terry" and toy_rm.training["val_accuracy"] >= 0.9


def test_bradley_terry_loss_is_the_negative_log_sigmoid_of_the_margin(toy_pairs):
    rm, report = train_reward_model(toy_pairs[:64], epochs=1, val_fraction=0.5, seed=3, encoder=SMALL)
    # the held-out half is the first 32 of a permutation drawn with the seed; recompute its loss from the
    # model's own rewards: −mean log σ(r_chosen − r_rejected), with the centring shift cancelling out
    val = [toy_pairs[i] for i in np.sort(np.random.default_rng(3).permutation(64)[:32])]
    m = rm.score_texts([p.chosen for p in val]) - rm.score_texts([p.rejected for p in val])
    expected = float(-torch.nn.functional.logsigmoid(torch.from_numpy(m.astype(np.float64))).mean())
    assert report.n_val == 32 and report.val_loss == pytest.approx(expected, rel=1e-4)
    assert report.val_accuracy == pytest.approx(float(((m > 0) + 0.5 * (m == 0)).mean()))


def test_training_is_deterministic_given_a_seed(toy_pairs):
    global_state = torch.get_rng_state()
    a, _ = train_reward_model(toy_pairs, epochs=1, seed=5, encoder=SMALL)
    b, _ = train_reward_model(toy_pairs, epochs=1, seed=5, encoder=SMALL)
    c, _ = train_reward_model(toy_pairs, epochs=1, seed=6, encoder=SMALL)
    texts = [p.chosen for p in toy_pairs[:50]]
    np.testing.assert_array_equal(a.score_texts(texts), b.score_texts(texts))
    assert not np.array_equal(a.score_texts(texts), c.score_texts(texts))
    assert torch.equal(torch.get_rng_state(), global_state)  # the caller's RNG is untouched


def test_read_preferences_skips_skips_and_names_bad_lines(tmp_path: Path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
        + "\n\n"
        + json.dumps({"prompt": "p", "completion_a": "a", "completion_b": "b", "skip": True})
        + "\n"
    )
    assert read_preferences(path) == [PreferencePair("p", "a", "b")]
    path.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"line 1: missing field\(s\) \['rejected'\]"):
        read_preferences(path)
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"prefs\.jsonl', line 2: not valid JSON"):
        read_preferences(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_reward_model(tmp_path / "missing.jsonl")


def test_train_reward_model_from_a_jsonl_path(tmp_path: Path, toy_pairs):
    path = SyntheticLabeller(_count_rule, noise=0.0).write(toy_pairs, tmp_path / "prefs.jsonl")
    _, report = train_reward_model(path, epochs=1, encoder=SMALL)
    assert report.n_train + report.n_val == len(toy_pairs) and report.n_val == round(0.1 * len(toy_pairs))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="epochs must be"):
        train_reward_model([PreferencePair("", "a", "b")], epochs=0)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        train_reward_model([PreferencePair("", "a", "b")], val_fraction=1.0)
    with pytest.raises(ValueError, match="no preference pairs"):
        train_reward_model([])


# ---------------------------------------------------------------------------------------- classifier


def test_classifier_returns_positive_class_probability(toy_clf):
    p = toy_clf.score_texts(["a superb ending", "a tedious ending"])
    assert p[0] > 0.5 > p[1] and ((p >= 0) & (p <= 1)).all()
    assert toy_clf.accuracy(["a superb ending", "a tedious ending"], [1, 0]) == 1.0
    batch = RewardBatch.from_texts(["", ""], ["a superb ending", "a tedious ending"])
    np.testing.assert_allclose(toy_clf(batch), p)


@pytest.mark.parametrize("labels", [[1, 2], ["pos", "neg"], [0.5, 1.0], [1]])
def test_classifier_rejects_bad_labels(labels):
    with pytest.raises(ValueError, match="label"):
        train_classifier_reward(["a", "b"], labels)


# ----------------------------------------------------------------------------------------- save/load


def test_save_load_round_trip_by_object_and_by_spec(tmp_path: Path, toy_rm, toy_clf):
    texts = ["the plot was lovely and dull", "the cast was stale and flat", "", "unseen words entirely"]
    batch = RewardBatch.from_texts([""] * 4, texts)
    for model, spec in ((toy_rm, "reward_model"), (toy_clf, "classifier")):
        d = model.save(tmp_path / spec)
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
        loaded = type(model).load(d)
        np.testing.assert_array_equal(loaded.score_texts(texts), model.score_texts(texts))
        by_spec = make(f"{spec}:{d}")
        assert by_spec.name == spec
        np.testing.assert_array_equal(by_spec(batch), model(batch))
        assert type(load_learned_reward(d)) is type(model)
        assert loaded.training == model.training
    total, parts = make_composite({toy_rm: 1.0, toy_clf: 0.5}).score(batch, "state")
    np.testing.assert_allclose(total, toy_rm(batch) + 0.5 * toy_clf(batch), rtol=1e-6)
    assert set(parts) == {"reward_model", "classifier"}
    assert toy_rm.as_reward() is toy_rm


def test_loading_the_other_kind_or_nothing(tmp_path: Path, toy_rm):
    d = toy_rm.save(tmp_path / "rm")
    with pytest.raises(
        ValueError, match=r"holds a 'bradley_terry' model, not a 'classifier' one.*reward_model:<dir>"
    ):
        make(f"classifier:{d}")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        make(f"reward_model:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="needs the directory"):
        make("reward_model")


def _rehash(d: Path) -> None:
    """Make the manifest match the files again (as a careful editor would): the inner checks must hold."""
    write_manifest(d, "reward_model", 2)


def test_corrupt_files_raise_value_error_naming_the_file(tmp_path: Path, toy_rm):
    d = toy_rm.save(tmp_path / "rm")
    weights, config = d / "model.safetensors", d / "config.json"
    good_w, good_c = weights.read_bytes(), config.read_bytes()

    weights.write_bytes(good_w[: len(good_w) // 2])  # truncated
    with pytest.raises(ValueError, match=re.escape(str(weights))):
        BradleyTerryRewardModel.load(d)

    flipped = bytearray(good_w)
    flipped[-5] ^= 0xFF  # one weight changed: caught by the manifest, and by the config's SHA-256
    weights.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"model\.safetensors.*sha256"):
        BradleyTerryRewardModel.load(d)
    _rehash(d)
    with pytest.raises(ValueError, match="SHA-256"):
        BradleyTerryRewardModel.load(d)

    weights.write_bytes(b"\x00" * 16)  # garbage that is not safetensors, and no recorded hash
    cfg = json.loads(good_c)
    cfg["weights_sha256"] = None
    config.write_text(json.dumps(cfg))
    _rehash(d)
    with pytest.raises(ValueError, match="none was recorded"):  # the hash is mandatory now
        BradleyTerryRewardModel.load(d)

    weights.write_bytes(good_w)
    config.write_bytes(good_c[: len(good_c) // 2])  # truncated JSON
    _rehash(d)
    with pytest.raises(ValueError, match=re.escape(str(config))):
        BradleyTerryRewardModel.load(d)

    cfg = json.loads(good_c)
    cfg["encoder"]["dim"] = 5  # shapes no longer match the weights: refused before the weights are read
    config.write_text(json.dumps(cfg))
    _rehash(d)
    with pytest.raises(ValueError, match="does not match the model"):
        BradleyTerryRewardModel.load(d)


@pytest.mark.parametrize(
    "edit",
    [
        {"n_buckets": 1 << 40},
        {"dim": 1 << 20},
        {"n_buckets": 1 << 24, "dim": 4096},
        {"char_ngram_max": 10**6},
        {"lowercase": "yes"},
    ],
)
def test_an_edited_encoder_size_is_refused_before_allocating(tmp_path: Path, toy_rm, edit):
    d = toy_rm.save(tmp_path / "rm")
    cfg = json.loads((d / "config.json").read_text())
    cfg["encoder"].update(edit)
    (d / "config.json").write_text(json.dumps(cfg))
    _rehash(d)
    with pytest.raises(ValueError, match=r"config\.json.*invalid encoder settings"):
        BradleyTerryRewardModel.load(d)


def test_a_model_saved_by_text_env_0_1_is_refused_then_migrated(tmp_path: Path, toy_rm):
    from agents.cli import main as cli_main

    d = toy_rm.save(tmp_path / "rm")
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 1  # what 0.1 wrote: no manifest
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "manifest.json").unlink()
    with pytest.raises(ValueError, match="text-env migrate"):
        BradleyTerryRewardModel.load(d)
    assert cli_main(["migrate", str(d)]) == 0
    again = BradleyTerryRewardModel.load(d)
    texts = ["the plot was lovely", "flat"]
    assert np.array_equal(again.score_texts(texts), toy_rm.score_texts(texts))


def test_saved_files_hold_no_pickle(tmp_path: Path, toy_rm):
    d = toy_rm.save(tmp_path / "rm")
    header_len = int.from_bytes((d / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((d / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == {"encoder.bag.weight", "encoder.idf", "head.weight", "head.bias"}
    assert json.loads((d / "config.json").read_text())["type"] == "bradley_terry"


# --------------------------------------------------------------------------------------------- bars


def _rotten_tomatoes_or_skip():
    from text_env.data.rotten_tomatoes import MissingDataError, load_rotten_tomatoes

    try:
        train = load_rotten_tomatoes("train")
        held = load_rotten_tomatoes(["validation", "test"])
    except MissingDataError as e:
        pytest.skip(f"Rotten Tomatoes reviews not installed ({e})")
    return train, held


@pytest.mark.expensive
def test_bar_classifier_on_rotten_tomatoes_reaches_075():
    (tr, ytr), (va, yva) = _rotten_tomatoes_or_skip()
    clf, report = train_classifier_reward(tr, ytr, val_texts=va, val_labels=yva, seed=0)
    # measured: 0.770 (seed 0), 0.773 (seed 1); TF-IDF + logistic regression on the same split: 0.769
    assert report.n_train > 9000 and report.n_val > 2000
    assert report.val_accuracy >= 0.75
    assert clf.accuracy(va, yva) == pytest.approx(report.val_accuracy)


# The hidden rule of the Bradley-Terry bar: praise words minus criticism words in a real review. Pairs the
# rule ties are not labelled. (VADER's compound score as the rule reaches only ~0.74 on unseen reviews:
# 10k reviews do not cover its 7,500-word lexicon, and a ridge regression on the exact scores does no
# better than 0.80, so that rule tests the data, not the learner.)
PRAISE = frozenset(
    {
        *("best", "great", "good", "funny", "beautiful", "fun", "wonderful", "brilliant", "moving", "smart"),
        *("charming", "enjoyable", "entertaining", "fascinating", "powerful"),
    }
)
CRITICISM = frozenset(
    {
        *("bad", "dull", "boring", "worst", "mess", "tedious", "stupid", "flat", "predictable", "lame"),
        *("awful", "pointless", "unfunny", "tiresome", "waste"),
    }
)


def keyword_rule(prompt: str, review: str) -> float:
    words = re.findall(r"[a-z]+", review.lower())
    return float(sum(w in PRAISE for w in words) - sum(w in CRITICISM for w in words))


@pytest.mark.expensive
def test_bar_bradley_terry_with_10pct_noise_ranks_heldout_pairs_090(tmp_path: Path):
    (train_texts, _), (held_texts, _) = _rotten_tomatoes_or_skip()
    labeller = SyntheticLabeller(keyword_rule, noise=0.1, seed=0)
    path = labeller.write(labeller.label_pool(train_texts, 60000), tmp_path / "prefs.jsonl")
    assert labeller.n_flipped / labeller.n_labelled == pytest.approx(0.1, abs=0.01)
    rm, report = train_reward_model(path, seed=0)
    # held-out reviews (other movies), labelled without noise: agreement with the hidden rule itself
    truth = SyntheticLabeller(keyword_rule, noise=0.0, seed=1).label_pool(held_texts, 20000)
    acc = pairwise_accuracy(rm, truth)
    assert len(truth) > 5000
    assert acc >= 0.9, f"held-out pairwise accuracy {acc:.3f} (train report: {report})"
