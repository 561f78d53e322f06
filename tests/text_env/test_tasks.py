"""Tasks: the synthetic generators (disjoint deterministic splits, correct references, difficulty knobs),
tasks from files and iterables, the task registry, and bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from text_env.rewards import RewardBatch, make
from text_env.tasks import (
    Example,
    Task,
    arithmetic_task,
    copy_task,
    keyword_task,
    make_task,
    read_examples,
    register_task,
    reverse_task,
    sort_task,
)
from text_env.tokenizers import CharTokenizer

# uncached generators (the public ones are lru_cached, which would make a determinism test vacuous)
GENERATORS: dict[str, Callable[..., Task]] = {
    "copy": copy_task.__wrapped__,
    "reverse": reverse_task.__wrapped__,
    "sort": sort_task.__wrapped__,
    "arithmetic": arithmetic_task.__wrapped__,
    "keyword": keyword_task.__wrapped__,
}


def _key(e: Example) -> tuple[str, str | None]:
    # keyword prompts repeat by design (15 keywords), so an example is its prompt with its demonstration
    return (e.prompt, e.reference)


def _answer(task_name: str, prompt: str) -> str:
    """The correct answer, computed independently of the generator."""
    if task_name == "arithmetic":
        a, b = prompt[:-1].split("+")
        return str(int(a) + int(b))
    word, arg = prompt[:-1].split(" ")
    assert word == task_name
    return {"copy": arg, "reverse": arg[::-1], "sort": "".join(sorted(arg))}[task_name]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_synthetic_splits_are_disjoint_deterministic_and_correct(name: str) -> None:
    task = GENERATORS[name]()
    again = GENERATORS[name]()
    other_seed = GENERATORS[name](seed=1)
    keys = {s: [_key(e) for e in task.examples(s)] for s in ("train", "validation", "test")}
    for s, k in keys.items():
        assert len(k) > 0 and len(set(k)) == len(k), s
        assert [_key(e) for e in again.examples(s)] == k, s  # same arguments → the same splits
    assert not set(keys["train"]) & set(keys["validation"])
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["validation"]) & set(keys["test"])
    assert [_key(e) for e in other_seed.examples("test")] != keys["test"]
    sizes = task.split_sizes()
    assert sizes["train"] >= 8 * sizes["test"]
    if name == "keyword":
        batch = RewardBatch.from_texts(
            [e.prompt for e in task.examples("test")],
            [e.reference for e in task.examples("test")],
            metadata=[e.metadata for e in task.examples("test")],
        )
        assert (make("keyword")(batch) == 1.0).all()  # every demonstration earns the full reward
    else:
        for e in task.examples("train")[:500] + task.examples("test"):
            assert e.reference == _answer(name, e.prompt), e


def test_default_split_sizes() -> None:
    assert reverse_task().split_sizes() == {"train": 5000, "validation": 500, "test": 500}
    assert arithmetic_task().split_sizes() == {"train": 8000, "validation": 1000, "test": 1000}
    assert arithmetic_task(digits=1).split_sizes() == {"train": 80, "validation": 10, "test": 10}  # all 100


@pytest.mark.parametrize("factory", [copy_task, reverse_task, sort_task])
@pytest.mark.parametrize("length", [1, 4, 12])
def test_length_knob(factory: Callable[..., Task], length: int) -> None:
    task = factory(length=length)
    lengths = [len(e.prompt.split(" ")[1]) - 1 for s in ("train", "test") for e in task.examples(s)]
    assert max(lengths) == length and min(lengths) >= 1
    assert task.max_new_tokens == length + 1  # the answer, then EOS
    if length == 1:  # only 10 one-letter strings exist: every one is used, none twice
        assert task.split_sizes() == {"train": 8, "validation": 1, "test": 1}


@pytest.mark.parametrize(("digits", "budget"), [(1, 3), (2, 4), (3, 5)])
def test_digits_knob(digits: int, budget: int) -> None:
    task = arithmetic_task(digits=digits)
    operands = [int(x) for e in task.examples("train") for x in e.prompt[:-1].split("+")]
    assert max(operands) < 10**digits
    assert max(operands) >= 10 ** (digits - 1) * 9  # the top of the range is reached
    assert task.max_new_tokens == budget  # e.g. 99+99=198: three digits and EOS


def test_arithmetic_with_all_operators() -> None:
    task = arithmetic_task(digits=1, ops="+-*")
    ops_seen = set()
    for e in task.examples("train"):
        a, op, b = e.prompt[0], e.prompt[1], e.prompt[2:-1]
        ops_seen.add(op)
        assert e.reference == str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
    assert ops_seen == {"+", "-", "*"}
    assert "-" in task.allowed_completion_chars


def test_knob_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="length must be a positive int, got 0"):
        reverse_task(length=0)
    with pytest.raises(ValueError, match=r"digits must be an int in \[1, 6\], got 7"):
        arithmetic_task(digits=7)
    with pytest.raises(ValueError, match=r"ops must be .*got '/'"):
        arithmetic_task(ops="/")
    with pytest.raises(ValueError, match="only 2 distinct prompts"):
        reverse_task(length=1, alphabet="ab")


def test_action_mask_allows_the_answer_alphabet_and_eos() -> None:
    task = reverse_task(length=4)
    tok = task.tokenizer
    allowed = set(np.flatnonzero(task.action_mask))
    assert allowed == {*tok.encode("abcdefghij"), tok.eos_id}


# ---- tasks from files and iterables ------------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def test_task_from_jsonl(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}?", "reference": f"a{i}", "label": i % 2} for i in range(20)]
    rows.append({"prompt": "fixed?", "reference": ["yes", "y"], "split": "test"})
    task = Task.from_file(_write_jsonl(tmp_path / "qa.jsonl", rows))
    assert task.name == "qa"
    assert task.split_sizes() == {"train": 16, "validation": 2, "test": 3}
    test = {e.prompt: e for e in task.examples("test")}
    assert test["fixed?"].references == ("yes", "y")
    all_ex = [e for s in ("train", "validation", "test") for e in task.examples(s)]
    assert sorted(e.prompt for e in all_ex) == sorted(r["prompt"] for r in rows)
    by_prompt = {e.prompt: e for e in all_ex}
    assert by_prompt["q3?"].reference == "a3" and by_prompt["q3?"].label == 1
    assert task.reward == "exact_match" and task.success == "exact_match"
    again = Task.from_file(tmp_path / "qa.jsonl")  # the seeded shuffle is deterministic
    assert [e.prompt for e in again.examples("train")] == [e.prompt for e in task.examples("train")]


def test_task_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    lines = ["prompt,reference,label"] + [
        f'"review {i}, fine",ok{i},{"pos" if i % 2 else "neg"}' for i in range(10)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = Task.from_file(path)
    ex = {e.prompt: e for s in ("train", "validation", "test") for e in task.examples(s)}
    assert len(ex) == 10
    assert ex["review 3, fine"].reference == "ok3" and ex["review 3, fine"].label == "pos"
    assert task.split_sizes() == {"train": 8, "validation": 1, "test": 1}


def test_task_from_iterable_of_strings_needs_a_reward() -> None:
    with pytest.raises(ValueError, match="pass reward="):
        Task.from_examples(["hi", "yo", "ok"])

    def length_reward(prompts, completions, references):
        return [float(len(c)) for c in completions]

    task = Task.from_examples(iter(["hi", "yo", "ok"]), reward=length_reward, max_new_tokens=2)
    assert task.success is None
    env = gym.make("TextEnv/Custom-v0", task=task)
    env.reset(seed=0)
    _, r1, *_ = env.step(env.unwrapped.tokenizer.encode("o")[0])
    _, r2, _, truncated, info = env.step(env.unwrapped.tokenizer.encode("k")[0])
    assert (r1, r2, truncated) == (0.0, 2.0, True)
    assert "is_success" not in info  # no success test without references


def _shortness(prompts, completions, references):
    return [1.0 / (1 + len(c)) for c in completions]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_custom_id_loads_a_file_without_references_when_a_reward_is_given(
    tmp_path: Path, suffix: str
) -> None:
    # issue 13, item 9: the env's reward= reaches the task, so exact_match's need for references is moot
    path = tmp_path / f"prompts{suffix}"
    prompts = [f"say {w}:" for w in ("hi", "yo", "ok", "no", "go")]
    if suffix == ".csv":
        path.write_text("prompt\n" + "".join(f"{p}\n" for p in prompts), encoding="utf-8")
    else:
        _write_jsonl(path, [{"prompt": p} for p in prompts])
    for reward in ("length:2", _shortness, {"length:2": 0.5}):
        env = gym.make("TextEnv/Custom-v0", task=str(path), reward=reward)
        env.reset(seed=0)
        *_, info = env.step(env.unwrapped.tokenizer.eos_id)
        assert "is_success" not in info  # no references, no success test
    envs = gym.make_vec("TextEnv/Custom-v0", num_envs=2, task=str(path), reward=_shortness)
    envs.reset(seed=0)
    _, reward, terminated, _, _ = envs.step(np.full(2, envs.unwrapped.tokenizer.eos_id))
    assert terminated.all() and reward.tolist() == [1.0, 1.0]  # an empty completion: 1 / (1 + 0)
    env = gym.make("TextEnv/Custom-v0", task=[{"prompt": p} for p in prompts], reward=_shortness)
    assert env.unwrapped.task.reward is _shortness
    with pytest.raises(ValueError, match="pass reward="):  # and without a reward, the clear error
        gym.make("TextEnv/Custom-v0", task=str(path))


def test_task_save_load_keeps_data_and_tokenizer(tmp_path: Path) -> None:
    task = reverse_task(length=4)
    task.save(tmp_path / "rev")
    loaded = make_task(tmp_path / "rev")  # a saved-task directory is a task spec too
    assert loaded.tokenizer == task.tokenizer
    for s in ("train", "validation", "test"):
        assert loaded.examples(s) == task.examples(s)
    assert loaded.max_new_tokens == task.max_new_tokens and loaded.fingerprint() == task.fingerprint()


def test_options_given_with_a_saved_task_are_refused_not_dropped(tmp_path: Path) -> None:
    reverse_task(length=4).save(tmp_path / "rev")
    with pytest.raises(TypeError, match=r"task options \['length'\] given with the saved task"):
        gym.make("TextEnv/Custom-v0", task=str(tmp_path / "rev"), length=8)


def test_task_file_with_a_saved_tokenizer(tmp_path: Path, task_file: Path) -> None:
    CharTokenizer(list("0123456789+=xyz")).save(tmp_path / "tok.json")
    task = Task.from_file(task_file, tokenizer=tmp_path / "tok.json")
    assert task.tokenizer.vocab_size == 4 + 15


def test_register_task_and_custom_id(task_file: Path) -> None:
    env = gym.make("TextEnv/Custom-v0", task=str(task_file), reward="exact_match")
    _play_a_correct_answer(env)

    register_task("test-tiny-add", Task.from_file(task_file, name="tiny-add"), overwrite=True)
    env = gym.make("TextEnv/Custom-v0", task="test-tiny-add")
    assert env.unwrapped.task.name == "tiny-add"
    _play_a_correct_answer(env)
    with pytest.raises(ValueError, match="'test-tiny-add' is already registered"):
        register_task("test-tiny-add", lambda: None)


def _play_a_correct_answer(env: gym.Env) -> None:
    task = env.unwrapped.task
    example = task.examples("train")[0]
    _, info = env.reset(seed=0, options={"prompt_index": 0})
    assert info["prompt"] == example.prompt
    tok = env.unwrapped.tokenizer
    for a in [*tok.encode(example.reference), tok.eos_id]:
        _, reward, terminated, truncated, info = env.step(a)
    assert (reward, terminated, truncated, info["is_success"]) == (1.0, True, False, True)


def test_csv_quoted_fields_keep_their_newlines_and_errors_give_the_starting_line(tmp_path: Path) -> None:
    # issue 13, item 10: the csv module reads the file object (newline=""), not text.splitlines()
    path = tmp_path / "multi.csv"
    rows = [("line1\nline2", "ok\r\nthen"), ("plain", "x"), ("a, b", "y")]
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("prompt", "reference"), *rows])
    task = Task.from_file(path)
    got = {e.prompt: e.reference for s in ("train", "validation", "test") for e in task.examples(s)}
    assert got == dict(rows)
    path.write_text('prompt,reference\n"line1\nline2",ok\nfine,ok\na,b,c\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"multi\.csv'?, line 5: more fields than the header"):
        Task.from_file(path, reward="exact_match")


LINE_BREAKS = "\u2028\u2029\u0085\x1c\x1d\x1e\x0b\x0c\r"  # str.splitlines cuts at each of these


def test_unicode_line_breaks_inside_jsonl_strings_round_trip_through_save_and_load(tmp_path: Path) -> None:
    # issue 13, item 11: Task.save writes them raw (ensure_ascii=False); JSONL lines end at \n only
    rows = [{"prompt": f"say{ch}{i}=", "reference": f"{i}{ch}ok"} for i, ch in enumerate(LINE_BREAKS * 2)]
    task = Task.from_examples(rows, name="breaks")
    task.save(tmp_path / "breaks")
    loaded = Task.load(tmp_path / "breaks")
    for s in ("train", "validation", "test"):
        assert loaded.examples(s) == task.examples(s)
    raw = tmp_path / "raw.jsonl"  # a user's file with raw line breaks inside strings, and CRLF line ends
    raw.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode("utf-8"))
    got = Task.from_file(raw)
    prompts = sorted(e.prompt for s in ("train", "validation", "test") for e in got.examples(s))
    assert prompts == sorted(r["prompt"] for r in rows)


# ---- saving: lone surrogates, atomic directories, manifests (issue 13, item 12) ---------------------------
@pytest.mark.parametrize(
    ("row", "field"),
    [
        ('{"prompt": "a\\ud800b", "reference": "c"}', "prompt"),
        ('{"prompt": "ab", "reference": ["ok", "x\\udfff"]}', "reference"),
        ('{"prompt": "ab", "reference": "c", "label": "\\udc80"}', "label"),
        ('{"prompt": "ab", "reference": "c", "metadata": {"k": ["\\ud83d"]}}', "metadata.k"),
    ],
)
def test_a_lone_surrogate_is_refused_at_load_naming_file_line_and_field(
    tmp_path: Path, row: str, field: str
) -> None:
    path = tmp_path / "sur.jsonl"
    path.write_text('{"prompt": "fine", "reference": "ok"}\n' + row + "\n", encoding="ascii")
    with pytest.raises(ValueError, match=rf"sur\.jsonl'?, line 2: field '{field}' holds a lone surrogate"):
        Task.from_file(path)
    ok = tmp_path / "pair.jsonl"  # an escaped surrogate *pair* is one valid character
    ok.write_text('{"prompt": "smile \\ud83d\\ude00", "reference": "ok"}\n', encoding="ascii")
    assert [r["prompt"] for r in read_examples(ok)] == ["smile \U0001f600"]


def _no_debris(parent: Path) -> None:
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


def test_a_failed_save_leaves_no_partial_directory_and_keeps_the_previous_save(tmp_path: Path) -> None:
    good = reverse_task(length=4)
    bad = Task(
        "bad",
        {"train": [Example("a\ud800", ("b",))], "validation": [Example("c", ("d",))], "test": [Example("e")]},
    )
    with pytest.raises(ValueError, match=r"example 0 of split 'train' cannot be saved as UTF-8"):
        bad.save(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    _no_debris(tmp_path)
    good.save(tmp_path / "t")
    with pytest.raises(ValueError, match="cannot be saved"):
        bad.save(tmp_path / "t")  # over an earlier save: that one stays whole
    _no_debris(tmp_path)
    assert Task.load(tmp_path / "t").examples("train") == good.examples("train")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a saved task"):
        good.save(tmp_path / "other")  # a directory that is not a saved task is never replaced
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_load_verifies_the_manifest(tmp_path: Path) -> None:
    task = reverse_task(length=4)
    task.save(tmp_path / "t")
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["kind"] == "task" and set(manifest["files"]) == {
        "train.jsonl", "validation.jsonl", "test.jsonl", "tokenizer.json", "task.json"
    }  # fmt: skip
    train = tmp_path / "t" / "train.jsonl"
    data = train.read_bytes()
    train.write_bytes(data.replace(b"reverse", b"revers3", 1))  # same size, different bytes
    with pytest.raises(ValueError, match=r"train\.jsonl.*does not match the sha256"):
        Task.load(tmp_path / "t")
    train.write_bytes(data)
    (tmp_path / "t" / "extra.jsonl").write_text("{}")
    with pytest.raises(ValueError, match="does not list"):
        Task.load(tmp_path / "t")


def test_a_task_saved_without_a_manifest_still_loads_and_a_future_version_is_refused(tmp_path: Path) -> None:
    task = reverse_task(length=4)
    task.save(tmp_path / "old")
    # what the code before manifests wrote: no manifest.json, no format_version in task.json
    (tmp_path / "old" / "manifest.json").unlink()
    settings = json.loads((tmp_path / "old" / "task.json").read_text())
    settings.pop("format_version")
    (tmp_path / "old" / "task.json").write_text(json.dumps(settings))
    loaded = Task.load(tmp_path / "old")
    assert loaded.fingerprint() == task.fingerprint()
    settings["format_version"] = 2
    (tmp_path / "old" / "task.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"format_version 2 is not one this code reads.*newer"):
        Task.load(tmp_path / "old")


# ---- the rules for weak cases (issue 13, B) ----------------------------------------------------------------
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column_or_row(tmp_path: Path) -> None:
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(
        b"\xef\xbb\xbfprompt,reference\n" + b"".join(b"q%d?,a%d\n" % (i, i) for i in range(5))
    )
    assert sorted(r["prompt"] for r in read_examples(csv_path)) == [f"q{i}?" for i in range(5)]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(
        b"\xef\xbb\xbf" + b"".join(b'{"prompt": "q%d?", "reference": "a"}\n' % i for i in range(5))
    )
    assert [r["prompt"] for r in read_examples(jsonl)] == [f"q{i}?" for i in range(5)]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            "prompt,reference,label\na,b,c\nd,e\n",
            r"line 3: 2 fields where the header has 3 \(missing \['label'\]\)",
        ),
        (
            'prompt,reference\n"multi\nline",x\nd\n',
            r"line 4: 1 fields where the header has 2 \(missing \['reference'\]\)",
        ),
        ("prompt,reference,reference\na,b,c\n", r"line 1: the header names column 'reference' twice"),
        ("prompt,label,prompt\na,b,c\n", r"line 1: the header names column 'prompt' twice"),
    ],
)
def test_csv_missing_cells_and_duplicate_columns_are_errors_with_the_line(
    tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.csv'?, {match}"):
        Task.from_file(path, reward="exact_match")


def _saved(tmp_path: Path, **edits: object) -> Path:
    d = tmp_path / "task"
    if not d.exists():
        reverse_task(length=4).save(d)
    settings = json.loads((d / "task.json").read_text())
    settings.update(edits)
    (d / "task.json").write_text(json.dumps(settings))
    (d / "manifest.json").unlink(missing_ok=True)  # an edited file: test the settings, not the manifest
    return d


@pytest.mark.parametrize(
    ("edits", "match"),
    [
        ({"max_new_tokens": 3.0}, r"field 'max_new_tokens' must be a positive int, got 3\.0"),
        ({"max_new_tokens": True}, r"field 'max_new_tokens' must be a positive int, got True"),
        ({"max_new_tokens": -2}, r"field 'max_new_tokens' must be a positive int, got -2"),
        ({"success_threshold": "0.5"}, r"field 'success_threshold' must be a finite number, got '0\.5'"),
        ({"success_threshold": True}, r"field 'success_threshold' must be a finite number, got True"),
        ({"stop": "ab"}, r"field 'stop' must be a list of strings, got 'ab'"),
        ({"metrics": [1]}, r"field 'metrics' must be a list of strings; 1 is not one"),
        ({"allowed_completion_chars": 5}, r"field 'allowed_completion_chars' must be a string or null"),
        ({"description": None}, r"field 'description' must be a string, got None"),
        ({"format_version": True}, r"format_version True is not one this code reads"),
        ({"format_version": "1"}, r"format_version '1' is not one this code reads"),
        ({"format_version": 99}, r"format_version 99 is not one this code reads .*newer"),
        ({"max_new_token": 3}, r"unknown fields \['max_new_token'\]"),
        (
            {"reward": "os:system"},
            r"field 'reward': 'os:system' is not a registered reward .*never code to import",
        ),
        ({"reward": {"exact_match": True}}, r"weight of 'exact_match' must be a finite number, got True"),
        ({"reward": ["exact_match", 3]}, r"field 'reward' names rewards by string, got 3"),
        ({"success": "exact_match:x"}, r"reward 'exact_match' takes no ':' argument"),
        ({"name": ""}, r"must be an object with a 'name' string"),
    ],
)
def test_task_json_values_are_checked_where_they_are_read(tmp_path: Path, edits: dict, match: str) -> None:
    d = _saved(tmp_path, **edits)
    with pytest.raises(ValueError, match=match) as e:
        Task.load(d)
    assert "task.json" in str(e.value)


def test_a_module_spec_in_task_json_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evil_reward_module.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = _saved(tmp_path, reward="evil_reward_module:score")
    with pytest.raises(ValueError, match="not a registered reward"):
        Task.load(d)


def test_a_task_saved_with_a_python_reward_loads_without_one_and_asks_for_it(tmp_path: Path) -> None:
    task = Task.from_examples(
        [{"prompt": f"{i}+1=", "reference": str(i + 1)} for i in range(10)], reward=_shortness
    )
    task.save(tmp_path / "t")
    settings = json.loads((tmp_path / "t" / "task.json").read_text())
    assert settings["reward"] is None and settings["reward_not_saved"] == "_shortness"
    loaded = Task.load(tmp_path / "t")
    assert loaded.reward is None  # not silently exact_match
    with pytest.raises(ValueError, match=r"task 'custom' has no default reward.*pass reward="):
        gym.make("TextEnv/Custom-v0", task=loaded)
    env = gym.make("TextEnv/Custom-v0", task=loaded, reward=_shortness)
    env.reset(seed=0)
    assert env.step(env.unwrapped.tokenizer.eos_id)[1] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, r"seed must be an int ≥ 0, got -1"),
        ({"seed": 1.5}, r"seed must be an int ≥ 0, got 1\.5"),
        ({"fractions": (0.8, float("nan"), 0.1)}, r"fractions must be three non-negative finite numbers"),
        ({"fractions": (0.8, 0.1)}, r"fractions must be three"),
        ({"max_new_tokens": True}, r"max_new_tokens must be a positive int, got True"),
        ({"stop": "\n"}, r"stop must be a list of strings, got '\\n'"),
        ({"success_threshold": "1"}, r"success_threshold must be a finite number, got '1'"),
    ],
)
def test_task_arguments_are_refused_rather_than_coerced(task_file: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Task.from_file(task_file, **kwargs)


# ---- bad input ---------------------------------------------------------------------------------------------
def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, "", '{"prompt": "b"', {"prompt": "c"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl'?, line 3: not valid JSON"):
        Task.from_file(path, reward="exact_match")


def test_missing_prompt_field_names_file_and_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "noprompt.jsonl", [{"prompt": "a"}, {"question": "b"}])
    with pytest.raises(ValueError, match=r"noprompt\.jsonl'?, line 2: missing required field 'prompt'"):
        Task.from_file(path, reward="exact_match")
    path = _write_jsonl(tmp_path / "notobj.jsonl", [{"prompt": "a"}, "[1, 2]"])
    with pytest.raises(ValueError, match=r"line 2: expected an object with a 'prompt' field"):
        Task.from_file(path, reward="exact_match")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.jsonl", "", "has no rows"),
        ("blank.jsonl", "\n\n", "has no rows"),
        ("empty.csv", "prompt,reference\n", "has no rows"),
        ("cols.csv", "question,answer\nq,a\n", r"'prompt' column, got \['question', 'answer'\]"),
        ("extra.csv", "prompt,reference\na,b\nc,d,e\n", r"line 3: more fields than the header"),
        ("emptyprompt.jsonl", '{"prompt": ""}\n', r"line 1: field 'prompt' is empty"),
        ("split.jsonl", '{"prompt": "a", "reference": "b", "split": "dev"}\n', r"split 'dev' is not one of"),
    ],
)
def test_bad_task_files(tmp_path: Path, name: str, content: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        Task.from_file(path, reward="exact_match")


def test_missing_file_unknown_task_and_empty_prompt_sets(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        make_task(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"unknown task 'revers'; registered tasks: .*reverse"):
        make_task("revers")
    with pytest.raises(ValueError, match="has no prompts"):
        Task.from_examples([], reward="exact_match")
    with pytest.raises(ValueError, match="split 'test' has no prompts"):
        Task("t", {"train": [Example("a", ("b",))], "validation": [Example("c", ("d",))], "test": []})
    with pytest.raises(ValueError, match=r"lacks splits \['validation', 'test'\]"):
        Task("t", {"train": [Example("a", ("b",))]})
    with pytest.raises(ValueError, match="has no prompts"):
        gym.make("TextEnv/Custom-v0", task=[], reward="exact_match")
