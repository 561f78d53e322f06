"""Feedback sources: the synthetic labeller (hidden rule + label noise) and the terminal labelling session
(scripted input), including the guarantee that earlier labels are never lost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from text_env.rewards.feedback import (
    Candidate,
    SyntheticLabeller,
    add_label_command,
    label_session,
    read_candidates,
)
from text_env.rewards.learned import PreferencePair, read_preferences


def length_rule(prompt: str, text: str) -> float:
    return float(len(text.split()))


# ------------------------------------------------------------------------------------------ synthetic


def test_labeller_without_noise_follows_the_rule_and_drops_ties():
    lab = SyntheticLabeller(length_rule, noise=0.0)
    pairs = lab.label(
        [
            ("p", "a b c", "a"),
            Candidate("q", "x", "x y"),
            {"prompt": "r", "completion_a": "u", "completion_b": "v"},
        ]
    )
    assert pairs == [PreferencePair("p", "a b c", "a"), PreferencePair("q", "x y", "x")]
    assert (lab.n_labelled, lab.n_flipped, lab.n_ties) == (2, 0, 1)
    assert lab.true_preference("", "a", "a b") == 1


def test_label_noise_flips_the_stated_fraction_and_is_seeded():
    texts = [" ".join(["w"] * n) for n in range(1, 41)]
    lab = SyntheticLabeller(length_rule, noise=0.2, seed=0)
    pairs = lab.label_pool(texts, 4000)
    wrong = sum(length_rule("", p.chosen) < length_rule("", p.rejected) for p in pairs)
    assert wrong == lab.n_flipped
    assert wrong / len(pairs) == pytest.approx(0.2, abs=0.02)  # 4000 draws: sd ≈ 0.0063
    again = SyntheticLabeller(length_rule, noise=0.2, seed=0).label_pool(texts, 4000)
    assert again == pairs
    assert all(p.chosen != p.rejected for p in pairs)


def test_labeller_writes_jsonl_that_training_reads(tmp_path: Path):
    lab = SyntheticLabeller(length_rule, noise=0.0)
    pairs = lab.label([("p", "a b", "a"), ("p", "a", "a b c")])
    path = lab.write(pairs, tmp_path / "prefs.jsonl")
    assert read_preferences(path) == pairs
    assert json.loads(path.read_text().splitlines()[0]) == {
        "prompt": "p",
        "chosen": "a b",
        "rejected": "a",
    }


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"noise": 0.5}, "noise must be"),
        ({"noise": -0.1}, "noise must be"),
        ({"min_margin": -1}, "min_margin"),
    ],
)
def test_labeller_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticLabeller(length_rule, **kw)


def test_labeller_rejects_a_rule_returning_nan():
    with pytest.raises(ValueError, match="returned nan"):
        SyntheticLabeller(lambda p, c: float("nan")).label([("p", "a", "b")])


# ---------------------------------------------------------------------------------------- the session

CANDIDATES = [
    {"prompt": "Describe the film.", "completion_a": "A delight.", "completion_b": "A chore."},
    {"prompt": "Describe the cast.", "completion_a": "Wooden.", "completion_b": "Luminous."},
    {"prompt": "Describe the plot.", "completion_a": "Twisty.", "completion_b": "Thin."},
    {"prompt": "Describe the score.", "completion_a": "Lush.", "completion_b": "Loud."},
]


def scripted(*answers: str):
    it = iter(answers)
    asked: list[str] = []

    def input_fn(prompt: str) -> str:
        asked.append(prompt)
        answer = next(it)
        if answer == "^C":
            raise KeyboardInterrupt
        return answer

    input_fn.asked = asked  # type: ignore[attr-defined]
    return input_fn


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_session_records_choices_skips_and_quit(tmp_path: Path):
    out = tmp_path / "prefs.jsonl"
    shown: list[str] = []
    ask = scripted("1", "maybe", "2", "s", "q")
    result = label_session(
        CANDIDATES, out, input_fn=ask, print_fn=lambda *a: shown.append(" ".join(map(str, a)))
    )
    assert (result.labelled, result.skipped, result.remaining, result.stopped) == (2, 1, 1, True)
    assert lines(out) == [
        {"prompt": "Describe the film.", "chosen": "A delight.", "rejected": "A chore."},
        {"prompt": "Describe the cast.", "chosen": "Luminous.", "rejected": "Wooden."},
        {"prompt": "Describe the plot.", "completion_a": "Twisty.", "completion_b": "Thin.", "skip": True},
    ]
    text = "\n".join(shown)
    assert "[1] A delight." in text and "[2] A chore." in text and "'maybe' is not an answer" in text
    assert len(ask.asked) == 5
    assert read_preferences(out) == [
        PreferencePair("Describe the film.", "A delight.", "A chore."),
        PreferencePair("Describe the cast.", "Luminous.", "Wooden."),
    ]


def test_ctrl_c_keeps_every_earlier_label_and_a_rerun_resumes(tmp_path: Path):
    out = tmp_path / "prefs.jsonl"
    out.write_text(json.dumps({"prompt": "old", "chosen": "x", "rejected": "y"}) + "\n", encoding="utf-8")
    before = out.read_bytes()
    r1 = label_session(CANDIDATES, out, input_fn=scripted("2", "^C"), print_fn=lambda *a: None)
    assert r1.stopped and r1.labelled == 1
    after_first = out.read_bytes()
    assert after_first.startswith(before)  # appended, never rewritten
    r2 = label_session(CANDIDATES, out, input_fn=scripted("1", "1", "2"), print_fn=lambda *a: None)
    assert (r2.already_done, r2.labelled, r2.stopped) == (1, 3, False)
    assert out.read_bytes().startswith(after_first)
    prefs = read_preferences(out)
    assert [p.prompt for p in prefs] == ["old"] + [c["prompt"] for c in CANDIDATES]
    assert prefs[1].chosen == "A chore."  # the "2" of the first session


def test_end_of_input_quits_and_a_torn_last_line_is_not_glued(tmp_path: Path):
    out = tmp_path / "prefs.jsonl"
    out.write_text('{"prompt": "old", "chosen": "x", "rejected": "y"}', encoding="utf-8")  # no newline

    def eof(_: str) -> str:
        raise EOFError

    r = label_session(CANDIDATES, out, input_fn=eof, print_fn=lambda *a: None)
    assert r.stopped and r.labelled == 0 and r.remaining == len(CANDIDATES)
    label_session(CANDIDATES[:1], out, input_fn=scripted("1"), print_fn=lambda *a: None)
    assert [x["prompt"] for x in lines(out)] == ["old", "Describe the film."]


def test_shuffle_records_the_choice_not_the_position(tmp_path: Path):
    out = tmp_path / "prefs.jsonl"
    shown: list[str] = []
    label_session(CANDIDATES, out, input_fn=scripted(*["1"] * 4), print_fn=shown.append, shuffle=True, seed=0)
    firsts = [s[5:] for s in shown if s.startswith("\n[1] ")]
    assert [x["chosen"] for x in lines(out)] == firsts
    assert firsts != [c["completion_a"] for c in CANDIDATES]  # seed 0 swaps at least one of four


def test_session_accepts_a_generator(tmp_path: Path):
    gen = ((f"prompt {i}", f"a{i}", f"b{i}") for i in range(3))
    r = label_session(gen, tmp_path / "p.jsonl", input_fn=scripted("1", "2", "q"), print_fn=lambda *a: None)
    assert (r.labelled, r.remaining) == (2, 1)


# -------------------------------------------------------------------------------------------- the CLI


def test_label_subcommand(tmp_path: Path):
    cands = tmp_path / "candidates.jsonl"
    cands.write_text("".join(json.dumps(c) + "\n" for c in CANDIDATES[:2]), encoding="utf-8")
    parser = argparse.ArgumentParser(prog="text-env")
    sub = parser.add_subparsers(dest="command")
    add_label_command(sub)
    out = tmp_path / "prefs.jsonl"
    args = parser.parse_args(["label", str(cands), "--out", str(out)])
    printed: list[str] = []
    assert args.func(args, input_fn=scripted("2", "1"), print_fn=printed.append) == 0
    assert [x["chosen"] for x in lines(out)] == ["A chore.", "Wooden."]
    assert "2 labelled" in printed[-1]
    bad = parser.parse_args(["label", str(tmp_path / "missing.jsonl")])
    assert bad.func(bad, input_fn=scripted(), print_fn=printed.append) == 2
    assert "does not exist" in printed[-1]


def test_read_candidates_names_bad_lines(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion_a": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: missing field\(s\) \['completion_b'\]"):
        read_candidates(path)
    path.write_text(
        json.dumps(CANDIDATES[0]) + "\n" + json.dumps({"prompt": 1, "completion_a": "a", "completion_b": "b"})
    )
    with pytest.raises(ValueError, match="line 2: prompt must be a string"):
        read_candidates(path)
