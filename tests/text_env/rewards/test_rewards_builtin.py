"""Built-in rewards on hand-computed cases and against the metric libraries called directly; the registry,
composition, and the errors a user sees."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from text_env.rewards import (
    CompositeReward,
    RewardBatch,
    RewardError,
    available,
    make,
    make_composite,
)
from text_env.rewards.text_metrics import squad_normalize, token_f1

HYPS = [
    "The film is a gentle, funny portrait of a family in crisis.",
    "A dull thriller with a parting shot that misfires.",
    "It's always fascinating to watch the director at work.",
    "",
]
REFS = [
    "A gentle and funny portrait of a family coping with a crisis.",
    "A dark, dull thriller whose final twist misfires badly.",
    "Watching this director at work is always fascinating.",
    "Nothing at all.",
]


def texts(completions, references=None, **kw) -> RewardBatch:
    return RewardBatch.from_texts([""] * len(completions), completions, references=references, **kw)


# ------------------------------------------------------------------------------------------- registry


def test_at_least_ten_builtins_with_kinds_and_requirements():
    infos = {r.name: r for r in available()}
    expected = {
        "exact_match",
        "partial_match",
        "keyword",
        "token_f1",
        "rouge1",
        "rouge2",
        "rouge_l",
        "bleu",
        "chrf",
        "sentiment_vader",
        "embedding_similarity",
        "length",
        "repetition",
        "regex",
        "fluency",
        "reward_model",
        "classifier",
    }
    assert expected <= set(infos)
    assert infos["repetition"].kind == "action"
    assert infos["rouge_l"].kind == "state" and infos["rouge_l"].requires == ("reference",)
    assert infos["regex"].takes_argument and infos["reward_model"].takes_argument
    assert all(infos[n].description for n in expected)


def test_unknown_reward_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown reward 'rouge_x'") as e:
        make("rouge_x")
    for name in ("rouge_l", "bleu", "token_f1", "repetition"):
        assert name in str(e.value)


def test_argument_to_a_reward_that_takes_none():
    with pytest.raises(ValueError, match="takes no ':' argument"):
        make("bleu:13a")


# ----------------------------------------------------------------------------------------- token F1


def test_token_f1_hand_computed():
    assert squad_normalize("The  Cat's hat!") == "cats hat"
    # normalized: [cat, sat] vs [cat, sat, down] → P=1, R=2/3, F1=0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("the", "") == 1.0  # both normalize to nothing
    assert token_f1("cat", "") == 0.0
    # repeated tokens are clipped by the reference's counts: [cat, cat] vs [cat] → P=1/2, R=1 → 2/3
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    r = make("token_f1")(
        texts(["the cat sat", "Paris!", "x"], [["a cat sat down"], ["London", "paris"], "y"])
    )
    np.testing.assert_allclose(r, [0.8, 1.0, 0.0], rtol=1e-6)  # best of several references


def test_reference_reward_without_reference_names_reward_and_row():
    batch = RewardBatch.from_texts(["", ""], ["a", "b"], references=["a", None])
    with pytest.raises(RewardError, match=r"'token_f1'.*row 1"):
        make("token_f1")(batch)


# -------------------------------------------------------------------------------------------- ROUGE


def test_rouge_hand_computed():
    batch = texts(["the cat sat"], ["the cat sat on the mat"])
    # unigrams: P = 3/3, R = 3/6 → F = 2/3; bigrams (the cat)(cat sat): P = 1, R = 2/5 → F = 4/7; LCS = 3
    assert make("rouge1")(batch)[0] == pytest.approx(2 / 3, rel=1e-6)
    assert make("rouge2")(batch)[0] == pytest.approx(4 / 7, rel=1e-6)
    assert make("rouge_l")(batch)[0] == pytest.approx(2 / 3, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "rtype"), [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")]
)
def test_rouge_agrees_with_rouge_score(name, rtype):
    scorer = rouge_scorer.RougeScorer([rtype])
    expected = [scorer.score(r, h)[rtype].fmeasure for h, r in zip(HYPS, REFS)]
    np.testing.assert_allclose(make(name)(texts(HYPS, REFS)), expected, rtol=1e-6)
    # several references: the best F-measure (rouge-score's score_multi)
    multi = texts([HYPS[0]], [(REFS[1], REFS[0])])
    assert make(name)(multi)[0] == pytest.approx(
        max(expected[0], scorer.score(REFS[1], HYPS[0])[rtype].fmeasure)
    )


# ------------------------------------------------------------------------------------- BLEU and chrF


def test_bleu_and_chrf_hand_computed():
    batch = texts(["the cat sat on the mat", "w x y z"], ["the cat sat on the mat", "a b c d"])
    np.testing.assert_allclose(make("bleu")(batch), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(make("chrf")(batch), [1.0, 0.0], atol=1e-6)


def test_bleu_and_chrf_agree_with_sacrebleu():
    refs = [(r,) for r in REFS]
    refs[1] = (REFS[1], "A dull thriller with a final shot that misfires.")  # two references
    batch = texts(HYPS, refs)
    bleu = [sacrebleu.sentence_bleu(h, list(r)).score / 100 for h, r in zip(HYPS, refs)]
    chrf = [sacrebleu.sentence_chrf(h, list(r)).score / 100 for h, r in zip(HYPS, refs)]
    np.testing.assert_allclose(make("bleu")(batch), np.clip(bleu, 0, 1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(make("chrf")(batch), np.clip(chrf, 0, 1), rtol=1e-5, atol=1e-7)
    assert 0 < make("bleu")(batch)[1] < 1


# -------------------------------------------------------------------------------------------- VADER


def test_vader_hand_computed_and_against_library():
    batch = texts(["good", "", "This is a terrible, boring film."])
    # VADER: "good" has valence 1.9; compound = 1.9 / sqrt(1.9^2 + 15) = 0.4404 → (1 + 0.4404) / 2
    s = make("sentiment_vader")(batch)
    assert s[0] == pytest.approx((1 + 1.9 / math.sqrt(1.9**2 + 15)) / 2, abs=1e-4)
    assert s[1] == 0.5
    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(t)["compound"] for t in batch.completions])
    np.testing.assert_allclose(s, (compound + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(make("sentiment_vader", rescale=False)(batch), compound, rtol=1e-6)
    np.testing.assert_allclose(
        make("sentiment_vader", target="negative")(batch), (1 - compound) / 2, rtol=1e-6
    )
    with pytest.raises(ValueError, match="target must be"):
        make("sentiment_vader", target="happy")


# ------------------------------------------------------------------------------------------- length


def test_length_hand_computed():
    batch = texts(["one two three four", "one two", "", " ".join(["w"] * 10)])
    np.testing.assert_allclose(make("length:4")(batch), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(make("length", target=4, unit="chars")(texts(["abcd", "abcdef"])), [1.0, 0.5])


def test_length_target_from_metadata_reference_or_tokens():
    batch = texts(["x y", "x y"], ["a b c", "a"], metadata=[{"target_length": 4}, None])
    np.testing.assert_allclose(make("length")(batch), [0.5, 0.0])  # 1-|2-4|/4 ; 1-|2-1|/1
    # tokens: read from the id arrays (code points without a tokenizer), target = reference length in ids
    np.testing.assert_allclose(make("length", unit="tokens")(texts(["abc"], ["abcd"])), [0.75])
    with pytest.raises(RewardError, match="row 0 has no target"):
        make("length")(texts(["x"]))


@pytest.mark.parametrize("bad", ["0", "abc", "2.5"])
def test_length_rejects_bad_target(bad):
    with pytest.raises(ValueError, match="target must be an integer"):
        make(f"length:{bad}")


# --------------------------------------------------------------------------------------- repetition


def _id_batch(rows: list[list[int]], actions: list[int] | None) -> RewardBatch:
    width = max(len(r) for r in rows)
    ids = np.array([r + [0] * (width - len(r)) for r in rows])
    return RewardBatch(
        tokenizer=None,
        completion_ids=ids,
        completion_lengths=np.array([len(r) for r in rows]),
        actions=None if actions is None else np.array(actions),
    )


def test_repetition_penalty_hand_computed():
    rows = [
        [1, 2, 3, 1, 2, 3],  # last trigram (1,2,3) occurred at 0 → -1
        [1, 2, 3, 4, 5, 6, 7],  # no repeat
        [5, 5, 5, 5],  # overlapping: (5,5,5) at 0 and at 1 → -1
        [5, 5, 5],  # the only trigram is the last one → 0
        [1, 2],  # too short
        [7, 8, 9, 7, 8],  # last trigram (9,7,8) new → 0 (bigram (7,8) repeats)
    ]
    actions = [r[-1] for r in rows]
    rep = make("repetition")
    assert rep.kind == "action"
    np.testing.assert_array_equal(rep(_id_batch(rows, actions)), [-1, 0, -1, 0, 0, 0])
    np.testing.assert_array_equal(make("repetition:2")(_id_batch(rows, actions)), [-1, 0, -1, -1, 0, -1])
    np.testing.assert_array_equal(
        make("repetition", penalty=-0.5)(_id_batch(rows, None)), [-0.5, 0, -0.5, 0, 0, 0]
    )


def test_repetition_ignores_stop_actions_not_appended():
    # the env does not append a stop token: the last id is from the previous step, already judged
    batch = _id_batch([[1, 2, 3, 1, 2, 3]], actions=[99])
    assert make("repetition")(batch)[0] == 0.0


def test_repetition_matches_a_python_loop_on_random_ids():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 4, rng.integers(0, 12)).tolist() for _ in range(200)]
    rows = [r if r else [0] for r in rows]
    expected = []
    for r in rows:
        last = tuple(r[-3:])
        earlier = {tuple(r[j : j + 3]) for j in range(len(r) - 3)}
        expected.append(-1.0 if len(r) >= 4 and last in earlier else 0.0)
    np.testing.assert_array_equal(make("repetition")(_id_batch(rows, [r[-1] for r in rows])), expected)


# -------------------------------------------------------------------------------------------- regex


def test_regex_modes_and_colons_in_pattern():
    batch = texts(["Answer: 42", "the answer is 42", "42"])
    np.testing.assert_array_equal(make(r"regex:Answer: \d+")(batch), [1, 0, 0])  # a colon inside the pattern
    np.testing.assert_array_equal(make("regex", pattern=r"\d+", mode="search")(batch), [1, 1, 1])
    np.testing.assert_array_equal(make("regex", pattern=r"\d+", mode="match")(batch), [0, 0, 1])
    assert make("regex", pattern="a", flags=re.IGNORECASE)(texts(["A"]))[0] == 1.0


def test_regex_errors():
    with pytest.raises(ValueError, match="invalid regular expression"):
        make("regex:(unclosed")
    with pytest.raises(ValueError, match="needs a pattern"):
        make("regex")


# ------------------------------------------------------------------------------------------ fluency


def test_fluency_passes_prompts_and_completions_to_the_scorer():
    seen = {}

    def scorer(prompts, completions):
        seen["args"] = (prompts, completions)
        return [-0.5 * len(c) for c in completions]

    batch = RewardBatch.from_texts(["p1", "p2"], ["ab", "abcd"])
    np.testing.assert_allclose(make("fluency", scorer=scorer)(batch), [-1.0, -2.0])
    assert seen["args"] == (["p1", "p2"], ["ab", "abcd"])


@pytest.mark.parametrize(
    ("out", "match"),
    [([float("nan"), 0.0], "non-finite"), ([0.0], "returned 1 values for 2"), (None, "raised")],
)
def test_fluency_scorer_errors_name_the_reward(out, match):
    def scorer(prompts, completions):
        if out is None:
            raise RuntimeError("model crashed")
        return out

    with pytest.raises(RewardError, match=rf"'fluency'.*{match}|{match}.*'fluency'"):
        make("fluency", scorer=scorer)(texts(["a", "b"]))


def test_fluency_needs_a_scorer_and_imports_one_by_name(tmp_path: Path, monkeypatch):
    with pytest.raises(TypeError, match="needs scorer"):
        make("fluency")
    (tmp_path / "my_lm_scorer.py").write_text(
        "def score(prompts, completions):\n    return [-float(len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    np.testing.assert_allclose(make("fluency:my_lm_scorer:score")(texts(["abc"])), [-3.0])
    with pytest.raises(ValueError, match="cannot import scorer"):
        make("fluency:my_lm_scorer:nope")
    sys.modules.pop("my_lm_scorer", None)


# -------------------------------------------------------------------------------------- composition


def test_weighted_composition_of_state_and_action_rewards():
    comp = make_composite({"token_f1": 1.0, "length:4": 0.5, "repetition": 2.0})
    assert isinstance(comp, CompositeReward)
    batch = texts(["the cat sat", "the cat sat on"], ["a cat sat down", "the cat sat on"])
    total, parts = comp.score(batch, "state")
    f1 = make("token_f1")(batch)
    length = make("length:4")(batch)
    np.testing.assert_allclose(parts["token_f1"], f1)
    np.testing.assert_allclose(parts["length"], length)
    np.testing.assert_allclose(total, f1 + 0.5 * length, rtol=1e-6)
    assert set(parts) == {"token_f1", "length"}  # the action reward is scored per step, not here
    ids_batch = _id_batch([[1, 2, 3, 1, 2, 3]], [3])
    a_total, a_parts = comp.score(ids_batch, "action")
    assert set(a_parts) == {"repetition"} and a_total[0] == -2.0


def test_plain_callable_in_a_composite():
    def shortness(prompts, completions, references):
        return [1.0 / (1 + len(c)) for c in completions]

    total, parts = make_composite({shortness: 2.0, "exact_match": 1.0}).score(
        texts(["a", "bcd"], ["a", "x"]), "state"
    )
    np.testing.assert_allclose(parts["shortness"], [0.5, 0.25])
    np.testing.assert_allclose(total, [2.0, 0.5])


@pytest.mark.parametrize(
    ("fn_out", "match"),
    [
        (lambda n: [float("nan")] * n, "non-finite"),
        (lambda n: [0.0] * (n + 1), "returned 3 values for 2 completions"),
        (lambda n: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_misbehaving_user_callable_raises_reward_error_naming_it(fn_out, match):
    def my_reward(prompts, completions, references):
        return fn_out(len(completions))

    comp = make_composite({my_reward: 1.0, "exact_match": 1.0})
    with pytest.raises(RewardError, match=rf"'my_reward'.*{match}|{match}") as e:
        comp.score(texts(["a", "b"], ["a", "b"]), "state")
    assert "my_reward" in str(e.value)


# ------------------------------------------------------------------------- float32 range (issue 13, item 8)
def test_a_weight_beyond_float32_is_refused_naming_the_term():
    # 1e39 is a finite float64 but inf in float32, where rewards are summed: every reward would be NaN/inf
    with pytest.raises(ValueError, match=r"weight for 'exact_match' must be a finite float32.*1e\+39"):
        make_composite({"exact_match": 1e39})
    with pytest.raises(ValueError, match=r"weight for 'exact_match'"):
        make_composite({"exact_match": -3.5e38})
    make_composite({"exact_match": 3.4e38})  # the largest float32 weights still build


def test_a_weighted_value_that_overflows_float32_names_the_term_weight_and_value():
    def huge(prompts, completions, references):
        return [1e38] * len(completions)

    with pytest.raises(RewardError, match=r"row 0 overflows float32.*'huge' \(weight 10, value 1e\+38\)"):
        make_composite({huge: 10.0, "exact_match": 1.0}).score(texts(["a"], ["a"]), "state")


def test_a_sum_of_finite_weighted_values_that_overflows_names_every_term():
    def big(prompts, completions, references):
        return [3e38] * len(completions)

    def also_big(prompts, completions, references):
        return [3e38] * len(completions)

    with pytest.raises(RewardError, match=r"the weighted sum of 'big' \(weight 1.*'also_big' \(weight 1"):
        make_composite([big, also_big]).score(texts(["a"], ["a"]), "state")


def test_action_plus_state_reward_overflowing_in_the_env_is_an_error_naming_both():
    from text_env import TextGenEnv
    from text_env.rewards import FunctionReward

    def big_state(prompts, completions, references):
        return [3e38] * len(completions)

    big_action = FunctionReward(lambda b: np.full(len(b), 3e38), name="big_action", kind="action")
    env = TextGenEnv("reverse", length=4, reward={big_state: 1.0, big_action: 1.0})
    env.reset(seed=0)
    with pytest.raises(RewardError, match=r"'big_state'.*'big_action'|'big_action'.*'big_state'"):
        env.step(env.tokenizer.eos_id)
