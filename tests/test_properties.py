"""Property-based tests (hypothesis) over every input a user can reach (issue 8, item 4): the env API (any
action value and dtype, seeds, reset options), the vector env, reward inputs, task files and the CLI.

The property everywhere: a case either works (and its result is checked) or raises a clear
``ValueError``/``TypeError`` (``RewardError`` for a misbehaving reward, ``SystemExit`` from argparse) whose
message names the bad value. Nothing else may escape. Where it is cheap to say *which* inputs are valid, an
oracle decides, so a silently accepted bad value fails too.

Every generated case is counted; at the end of the session the fixture ``case_count`` checks that the
suites ran at least 1,000 of them, whatever order the tests ran in, and prints the number (``pytest
tests/test_properties.py -s``). Run time is ~30–60 s on two busy cores: every suite
has an explicit ``max_examples`` and no deadline (the machine is shared; hypothesis' deadline would flake).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import string
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from text_env.core import TextGenEnv
from text_env.rewards import RewardBatch, RewardError, make
from text_env.rewards.base import FunctionReward
from text_env.tasks.base import Task
from text_env.vector import TextGenVectorEnv

torch.set_num_threads(1)

# cases per suite; the total must stay ≥ 1,000 (checked at the end of the session by ``case_count``)
CASES: Counter[str] = Counter()
CLI_OUTCOMES: Counter[str] = Counter()  # exit code (or "SystemExit") per CLI case
SUITES = (
    "env_action",
    "env_action_sequence",
    "env_reset",
    "vector_action",
    "vector_reset",
    "reward_texts",
    "reward_user_fn",
    "reward_spec",
    "task_file",
    "cli",
)
# TEXT_ENV_PROPERTY_SCALE=10 runs ten times the cases (a deeper search, for a quiet machine)
SCALE = float(os.environ.get("TEXT_ENV_PROPERTY_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MIN_CASES = 1000


def check_case_count(cases: Counter[str]) -> str | None:
    """Fail unless the suites ran ≥ ``MIN_CASES`` cases in all; ``None`` (nothing to check) when only part
    of the file ran (a ``-k`` selection), else the line that reports the count."""
    if {s for s in SUITES if cases[s]} != set(SUITES):
        return None
    total = sum(cases.values())
    assert total >= MIN_CASES, f"only {total} generated cases ran (< {MIN_CASES}): {dict(cases)}"
    return f"hypothesis cases: {total} ({dict(cases)}); CLI outcomes: {dict(CLI_OUTCOMES)}"


@pytest.fixture(scope="session", autouse=True)
def case_count() -> Iterator[Counter[str]]:
    """Every test in this file adds its cases to ``CASES``; at the end of the session (after the last test,
    in whatever order they ran) the total must be ≥ 1,000, else the session ends with an error."""
    yield CASES
    line = check_case_count(CASES)
    if line is not None:
        print("\n" + line)


# ---- a tiny task shared by the env suites ------------------------------------------------------------------
# reverse every string over "ab" of length 1–3; vocabulary: 4 specials + "=ab" = 7 tokens
_STRINGS = ["".join(p) for n in (1, 2, 3) for p in itertools.product("ab", repeat=n)]
_ROWS = [
    {"prompt": s + "=", "reference": s[::-1], "split": sp}
    for sp in ("train", "validation", "test")
    for s in _STRINGS
]
TASK = Task.from_examples(_ROWS, name="prop-reverse", max_new_tokens=4)
VOCAB = TASK.tokenizer.vocab_size
N_SLOTS = 3


def renderings(value: Any) -> list[str]:
    """The ways an error message may name ``value`` (repr, str, the item of a 1-element array, ...)."""
    out = []
    for f in (repr, str):
        with contextlib.suppress(Exception):
            out.append(f(value))
    with contextlib.suppress(Exception):
        arr = np.asarray(value)
        out += [str(arr.shape), str(arr.dtype), repr(arr), str(arr)]
        if arr.size == 1 and arr.dtype != object:
            item = arr.reshape(-1)[0]
            out += [repr(item), str(item), repr(item.item()), str(item.item())]
            if arr.dtype.kind in "iuf" and np.isfinite(item) and item == round(float(item)):
                out.append(str(int(item)))
        elif 1 < arr.size <= 16 and arr.dtype.kind in "iuf":  # naming the offending element is enough
            out += [f"action {x} " for x in arr.reshape(-1).tolist()]
    return [s for s in out if s]


def assert_names(error: BaseException, value: Any, *also: str) -> None:
    msg = str(error)
    assert any(r[:200] in msg for r in renderings(value)) or any(a in msg for a in also), (
        f"{type(error).__name__} does not name the bad value {value!r}: {msg}"
    )


# ---- strategies --------------------------------------------------------------------------------------------
NUMERIC_DTYPES = [
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.bool_, np.complex64,
]  # fmt: skip


def numpy_scalars() -> st.SearchStrategy[Any]:
    return st.sampled_from(NUMERIC_DTYPES).flatmap(lambda dt: hnp.from_dtype(np.dtype(dt)).map(dt))


def junk_values() -> st.SearchStrategy[Any]:
    """Anything a confused caller might pass."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.binary(max_size=4),
        st.lists(st.integers(-3, 10), max_size=4),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        numpy_scalars(),
        st.just(object()),
        st.just(3 + 1j),
    )


def actions(shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    """Token ids mostly near the vocabulary (valid and off-by-a-few), plus every kind of junk."""
    near = st.integers(min_value=-3, max_value=VOCAB + 3)
    arrays = hnp.arrays(
        dtype=st.sampled_from(NUMERIC_DTYPES),
        shape=st.one_of(st.just(shape), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)),
        elements=None,
    )
    near_arrays = hnp.arrays(dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.float64]), shape=shape,
                             elements=st.integers(0, VOCAB + 1))  # fmt: skip
    return st.one_of(near, near_arrays, arrays, junk_values(), near.map(float), near.map(np.int16))


def expected_valid_action(action: Any, shape: tuple[int, ...]) -> bool:
    """The oracle: integer-valued numbers (ints or integral floats, not bools) of the right shape, each in
    ``[0, VOCAB)``."""
    if isinstance(action, (bool, np.bool_)):
        return False
    try:
        arr = np.asarray(action)
    except Exception:
        return False
    if arr.dtype.kind not in "iuf" or arr.shape != shape:
        return False
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        return False
    return bool(((arr >= 0) & (arr < VOCAB)).all())


# ---- env API -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env() -> TextGenEnv:
    return TextGenEnv(TASK)


@settings(FAST, max_examples=scaled(250))
@given(action=actions(()))
def test_env_step_accepts_exactly_the_valid_actions(env, action) -> None:
    CASES["env_action"] += 1
    env.reset(seed=0)
    valid = expected_valid_action(action, ())
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except (ValueError, TypeError) as e:
        assert not valid, f"a valid action {action!r} was rejected: {e}"
        assert_names(e, action)
        # the episode survives a rejected action
        assert env.step(TASK.tokenizer.eos_id)[2] is True
        return
    assert valid, f"an invalid action {action!r} was accepted"
    assert env.observation_space.contains(obs)
    assert obs[-1] == int(np.asarray(action))
    assert isinstance(reward, float) and math.isfinite(reward)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info["completion"], str)


@settings(FAST, max_examples=scaled(100))
@given(seq=st.lists(st.integers(min_value=0, max_value=VOCAB - 1), min_size=1, max_size=12),
       seed=st.integers(0, 2**64))  # fmt: skip
def test_any_sequence_of_valid_tokens_plays_whole_episodes(env, seq, seed) -> None:
    CASES["env_action_sequence"] += 1
    obs, info = env.reset(seed=seed)
    steps = 0
    for a in seq:
        obs, reward, terminated, truncated, info = env.step(a)
        steps += 1
        assert env.observation_space.contains(obs) and math.isfinite(reward)
        assert 0.0 <= reward <= 1.0  # exact match: 0 or 1
        if terminated or truncated:
            assert steps <= TASK.max_new_tokens and truncated == (
                steps == TASK.max_new_tokens and not terminated
            )
            assert isinstance(info["is_success"], bool) and info["is_success"] == (reward == 1.0)
            with pytest.raises(RuntimeError, match="reset"):
                env.step(a)
            obs, info = env.reset()
            steps = 0


def seeds() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([np.int8, np.int64, np.uint32, np.uint64]).flatmap(
            lambda dt: hnp.from_dtype(np.dtype(dt)).map(dt)
        ),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.booleans(),
        st.lists(st.integers(0, 5), max_size=3),
    )


def expected_valid_seed(seed: Any) -> bool:
    if seed is None:
        return True
    return isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) and seed >= 0


OPTION_KEYS = ["prompt_index", "prompt", "reference", "reset_mask", "promt", ""]


def options() -> st.SearchStrategy[Any]:
    values = st.one_of(
        junk_values(),
        st.integers(-2, len(_STRINGS) + 2),
        st.sampled_from([s + "=" for s in _STRINGS] + ["zz=", "", "\x00", "\ud800", "é" * 50]),
        st.lists(st.integers(-1, len(_STRINGS)), max_size=4),
        st.lists(st.text(max_size=5), max_size=4),
        hnp.arrays(np.int64, st.integers(0, 4), elements=st.integers(-1, len(_STRINGS))),
        hnp.arrays(np.bool_, st.integers(0, 4)),
    )
    return st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(OPTION_KEYS), values, max_size=3),
        junk_values(),
    )


@settings(FAST, max_examples=scaled(200))
@given(seed=seeds(), opts=options())
def test_env_reset_with_any_seed_and_options(env, seed, opts) -> None:
    CASES["env_reset"] += 1
    try:
        obs, info = env.reset(seed=seed, options=opts)
    except (ValueError, TypeError) as e:
        assert not expected_valid_seed(seed) or opts, f"reset(seed={seed!r}) without options failed: {e}"
        assert names_seed_or_option(e, seed, opts), f"the error names neither {seed!r} nor {opts!r}: {e}"
        return
    assert expected_valid_seed(seed), f"reset accepted the bad seed {seed!r}"
    assert env.observation_space.contains(obs)
    assert isinstance(info["prompt"], str) and info["prompt"]
    if seed is not None:  # the same seed and options give the same start
        obs2, info2 = env.reset(seed=seed, options=opts)
        assert np.array_equal(obs, obs2) and info2["prompt"] == info["prompt"]


def names_seed_or_option(error: BaseException, seed: Any, opts: Any) -> bool:
    """The message names the seed, one of its entries, or one of the options (its key or its value)."""
    msg = str(error)
    candidates = [seed, *(seed if isinstance(seed, (list, tuple, np.ndarray)) else [])]
    if isinstance(opts, dict):
        candidates += list(opts.values())
        if any(f"options[{k!r}]" in msg or repr(k) in msg for k in opts):
            return True
    else:
        candidates.append(opts)
    return any(any(r[:200] in msg for r in renderings(c)) for c in candidates)


# ---- vector env --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vec_env() -> TextGenVectorEnv:
    return TextGenVectorEnv(TASK, num_envs=N_SLOTS)


@settings(FAST, max_examples=scaled(150))
@given(action=actions((N_SLOTS,)), junk=junk_values())
def test_vector_step_accepts_exactly_the_valid_actions(vec_env, action, junk) -> None:
    CASES["vector_action"] += 1
    vec_env.reset(seed=0)
    for a in (action, junk):
        valid = expected_valid_action(a, (N_SLOTS,))
        try:
            obs, rewards, terminated, truncated, _ = vec_env.step(a)
        except (ValueError, TypeError) as e:
            assert not valid, f"valid actions {a!r} were rejected: {e}"
            assert_names(e, a)
            continue
        assert valid, f"invalid actions {a!r} were accepted"
        assert vec_env.observation_space.contains(obs)
        assert rewards.shape == (N_SLOTS,) and np.isfinite(rewards).all()
        assert terminated.dtype == bool and truncated.dtype == bool
        vec_env.reset(seed=0)


def vector_seeds() -> st.SearchStrategy[Any]:
    return st.one_of(
        seeds(),
        st.lists(st.one_of(st.none(), st.integers(-5, 2**70)), min_size=N_SLOTS, max_size=N_SLOTS),
        hnp.arrays(np.int64, (N_SLOTS,), elements=st.integers(-2, 100)),
    )


def expected_valid_vector_seed(seed: Any) -> bool:
    if isinstance(seed, (list, tuple, np.ndarray)):
        return len(seed) == N_SLOTS and all(expected_valid_seed(s) for s in seed)
    return expected_valid_seed(seed)


@settings(FAST, max_examples=scaled(100))
@given(seed=vector_seeds(), opts=options())
def test_vector_reset_with_any_seed_and_options(vec_env, seed, opts) -> None:
    CASES["vector_reset"] += 1
    try:
        obs, _ = vec_env.reset(seed=seed, options=opts)
    except (ValueError, TypeError) as e:
        assert not expected_valid_vector_seed(seed) or opts, (
            f"reset(seed={seed!r}) without options failed: {e}"
        )
        n_seeds = f"{len(seed)} seeds for" if isinstance(seed, (list, np.ndarray)) else "no seeds"
        assert names_seed_or_option(e, seed, opts) or n_seeds in str(e), str(e)
        return
    assert expected_valid_vector_seed(seed), f"reset accepted the bad seed {seed!r}"
    assert vec_env.observation_space.contains(obs)


# ---- rewards -----------------------------------------------------------------------------------------------
# every built-in reward that needs no model (embedding, learned and classifier ones have their own
# tests), each with the bounds its docstring promises
CHEAP_REWARDS: dict[str, tuple[float, float]] = {
    "exact_match": (0, 1), "partial_match": (0, 1), "token_f1": (0, 1), "rouge1": (0, 1), "rouge2": (0, 1),
    "rouge_l": (0, 1), "bleu": (0, 1), "chrf": (0, 1), "sentiment_vader": (0, 1), "length": (0, 1),
    "length:5": (0, 1), "regex:[a-z ]+": (0, 1), "keyword": (0, 1), "repetition": (-1, 0),
    "repetition:2": (-1, 0),
    "fluency": (-1, 0),
}  # fmt: skip


@pytest.fixture(scope="module")
def cheap_rewards() -> dict[str, Any]:
    from text_env.rewards.registry import available

    names = {r.name for r in available()}
    missing = {s.partition(":")[0] for s in CHEAP_REWARDS} - names
    assert not missing, f"rewards disappeared from the registry: {missing}"
    # fluency takes the scorer of the caller's language model: a toy one (log-likelihood per character)
    return {
        spec: make(spec, scorer=toy_scorer) if spec == "fluency" else make(spec) for spec in CHEAP_REWARDS
    }


def toy_scorer(prompts: list[str], completions: list[str]) -> list[float]:
    return [-sum(c.isupper() for c in text) / max(len(text), 1) for text in completions]


texts = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=string.ascii_lowercase + " .", max_size=30),
    st.sampled_from(["", " ", "\x00", "\ud800", "é👍🏽", "a" * 5000, "the cat sat. " * 300, "\n\t\r"]),
)


@st.composite
def reward_inputs(draw: Any) -> tuple[list[str], list[str], list[Any] | None, list[Any] | None]:
    n = draw(st.integers(0, 4))
    prompts = draw(st.lists(texts, min_size=n, max_size=n))
    completions = draw(st.lists(texts, min_size=n, max_size=n))
    refs = draw(st.one_of(
        st.none(),
        st.lists(st.one_of(texts, st.lists(texts, min_size=1, max_size=3), st.none()), min_size=n,
                 max_size=n),
    ))  # fmt: skip
    meta = draw(st.one_of(
        st.none(),
        st.lists(st.one_of(st.none(), st.fixed_dictionaries({"keyword": texts}),
                           st.dictionaries(st.text(max_size=3), junk_values(), max_size=2)),
                 min_size=n, max_size=n),
    ))  # fmt: skip
    if draw(st.booleans()):  # now and then a length that does not match
        which = draw(st.sampled_from(["prompts", "refs", "meta"]))
        extra = draw(st.lists(texts, min_size=1, max_size=2))
        if which == "prompts":
            prompts = prompts + extra
        elif which == "refs" and refs is not None:
            refs = refs + extra
        elif meta is not None:
            meta = [*meta, None]
    return prompts, completions, refs, meta


def needs_reference(spec: str) -> bool:
    return spec in {
        "exact_match",
        "partial_match",
        "token_f1",
        "rouge1",
        "rouge2",
        "rouge_l",
        "bleu",
        "chrf",
        "length",
    }


@settings(FAST, max_examples=scaled(120))
@given(data=reward_inputs(), action_seed=st.integers(0, 2**32 - 1))
def test_every_cheap_reward_scores_any_texts_or_fails_clearly(cheap_rewards, data, action_seed) -> None:
    CASES["reward_texts"] += 1
    prompts, completions, refs, meta = data
    try:
        batch = RewardBatch.from_texts(prompts, completions, references=refs, metadata=meta)
    except (ValueError, TypeError) as e:
        mismatched = len(prompts) != len(completions) or (refs is not None and len(refs) != len(completions))
        empty_ref = refs is not None and any(isinstance(r, list) and not r for r in refs)
        assert mismatched or empty_ref, f"from_texts rejected good input: {e}"
        assert str(len(completions)) in str(e) or "reference" in str(e)
        return
    n = len(completions)
    if meta is not None and len(meta) != n:
        batch.metadata = meta  # a caller-built batch with a bad metadata column: the reward must say so
    batch.actions = np.random.default_rng(action_seed).integers(0, 200, size=n)
    for spec, (lo, hi) in CHEAP_REWARDS.items():
        reward = cheap_rewards[spec]
        try:
            out = reward(batch)
        except RewardError as e:
            assert reward.name in str(e), f"{spec}: error does not name the reward: {e}"
            has_all_refs = refs is not None and all(r is not None for r in refs)
            has_keywords = meta is not None and len(meta) == n and all(m and "keyword" in m for m in meta)
            if spec == "keyword":
                assert not has_keywords, f"{spec} failed on rows that all have a keyword: {e}"
            elif needs_reference(spec):
                assert not has_all_refs, f"{spec} failed on rows that all have references: {e}"
            else:
                raise AssertionError(f"{spec} needs nothing from the batch but failed: {e}") from e
            continue
        assert out.dtype == np.float32 and out.shape == (n,), spec
        assert np.isfinite(out).all() and (out >= lo).all() and (out <= hi).all(), (spec, out)


def nasty_outputs() -> st.SearchStrategy[Any]:
    n_floats = st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)), max_size=5
    )
    return st.one_of(
        n_floats,
        n_floats.map(np.array),
        st.just(None),
        st.text(max_size=3),
        st.lists(st.text(max_size=2), max_size=3),
        st.just({"a": 1}),
        st.just(KeyError("boom")),  # raised, not returned
        st.just(ZeroDivisionError("x")),
    )


@settings(FAST, max_examples=scaled(120))
@given(out=nasty_outputs(), n=st.integers(1, 4), plain=st.booleans(), name=st.text(min_size=1, max_size=8))
def test_a_misbehaving_user_reward_raises_reward_error_naming_it(out, n, plain, name) -> None:
    CASES["reward_user_fn"] += 1

    def plain_fn(prompts, completions, references):
        if isinstance(out, Exception):
            raise out
        return out

    def batch_fn(batch):
        return plain_fn(None, None, None)

    reward = FunctionReward(plain_fn if plain else batch_fn, name=name)
    batch = RewardBatch.from_texts(["p"] * n, ["c"] * n, references=["r"] * n)
    try:
        values = reward(batch)
    except RewardError as e:
        assert repr(name) in str(e), str(e)
        return
    arr = np.asarray(out, dtype=np.float64).reshape(-1)  # it worked: the output was n finite numbers
    assert arr.shape == (n,) and np.isfinite(arr).all()
    np.testing.assert_allclose(values, arr.astype(np.float32))


@settings(FAST, max_examples=scaled(80))
@given(spec=st.one_of(
    st.text(max_size=12).filter(lambda s: ":" not in s),
    st.builds(lambda a, b: f"zz_no_such_module_{a}:{b}", st.text(string.ascii_lowercase, max_size=4),
              st.text(max_size=4)),
    st.sampled_from(["length:0", "length:-3", "length:x", "length:1.5", "repetition:0", "regex:(", "regex:",
                     "exact_match:x", "text_env.rewards.base:RewardBatch", "text_env.rewards:make",
                     "math:pi", ":", ":x", ".relative:x"]),
    junk_values().filter(lambda v: not isinstance(v, str)),
    st.dictionaries(st.sampled_from(["exact_match", "nope", "length:2", ":"]), junk_values(), min_size=1,
                    max_size=2),
))  # fmt: skip
def test_reward_specs_build_or_fail_clearly(spec) -> None:
    CASES["reward_spec"] += 1
    from text_env.rewards.registry import make_composite

    try:
        composite = make_composite(spec)
    except (ValueError, TypeError) as e:
        values = list(spec.items()) if isinstance(spec, dict) else [spec]
        flat = [x for kv in values for x in (kv if isinstance(kv, tuple) else (kv,))]
        assert any(any(r[:100] in str(e) for r in renderings(v)) for v in flat) or "reward" in str(e), str(e)
        return
    assert composite.terms and all(math.isfinite(t.weight) for t in composite.terms)


# ---- task files --------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
              st.text(max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=6,
)  # fmt: skip
row_values = {
    "prompt": st.one_of(st.text(min_size=1, max_size=10), json_values),
    "reference": st.one_of(st.text(max_size=10), st.lists(st.text(max_size=4), max_size=3), json_values),
    "references": st.one_of(st.lists(st.text(max_size=4), max_size=3), json_values),
    "label": json_values,
    "split": st.one_of(st.sampled_from(["train", "validation", "test", "dev", ""]), json_values),
    "metadata": st.one_of(st.dictionaries(st.text(max_size=3), json_values, max_size=2), json_values),
}
rows = st.one_of(
    st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=10),
                           "reference": st.text(min_size=1, max_size=6)}),
    st.fixed_dictionaries({}, optional=row_values),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    json_values,
)  # fmt: skip


def jsonl_text(items: list[Any], junk_line: str | None) -> str:
    lines = [json.dumps(r, ensure_ascii=False) for r in items]
    if junk_line is not None:
        lines.insert(len(lines) // 2, junk_line)
    return "\n".join(lines) + "\n"


def csv_text(header: list[str], cells: list[list[str]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(cells)
    return buf.getvalue()


csv_cells = st.text(max_size=8)
task_contents = st.one_of(
    st.builds(jsonl_text, st.lists(rows, max_size=12), st.one_of(st.none(), st.text(max_size=10))),
    st.builds(
        csv_text,
        st.one_of(st.just(["prompt", "reference"]), st.just(["prompt", "reference", "split", "label"]),
                  st.lists(st.sampled_from(["prompt", "reference", "split", "label", "x", ""]), max_size=4)),
        st.lists(st.lists(csv_cells, max_size=5), max_size=12),
    ),
    st.binary(max_size=64),
    st.text(max_size=64),
    st.just(""),
)  # fmt: skip

_TMP = tempfile.TemporaryDirectory(prefix="text_env_props_")
_file_counter = itertools.count()


@settings(FAST, max_examples=scaled(200))
@given(content=task_contents, suffix=st.sampled_from([".jsonl", ".csv", ".json", ".txt"]))
def test_task_files_load_or_fail_naming_the_file(content, suffix) -> None:
    CASES["task_file"] += 1
    path = Path(_TMP.name) / f"taskfile{next(_file_counter)}{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        task = Task.from_file(path)
    except (ValueError, TypeError, FileNotFoundError) as e:
        assert path.name in str(e) or path.stem in str(e), f"error does not name the file: {e}"
        return
    sizes = task.split_sizes()
    assert all(v >= 1 for v in sizes.values())
    # a task that loads is a task an env can run
    env = TextGenEnv(task)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.step(task.tokenizer.eos_id)[2] is True


# ---- the CLI -----------------------------------------------------------------------------------------------
def not_a_positive_int(s: str) -> bool:
    try:
        return int(s) < 1
    except ValueError:
        return True


JUNK_ARGS = st.one_of(
    st.text(max_size=10).filter(lambda s: "\x00" not in s),
    st.sampled_from(["-1", "0", "1", "2", "1e3", "nan", "inf", "-inf", "999999999999999999999", "", "--",
                     "-", "{}", "[]", '{"a": 1}', "null", "TextEnv/Nope-v0", "TextEnv/Reverse-L4-v0", "ppo",
                     "rloo", "sb3:PPO", "../../etc", "é", "cpu", "cuda", "cuda:7", "meta", "--help-me"]),
)  # fmt: skip
NONPOS = JUNK_ARGS.filter(not_a_positive_int)
COMMANDS = ("envs", "demo", "train", "eval", "benchmark", "label")


def values(*choices: str) -> st.SearchStrategy[str]:
    """Mostly the given (valid and boundary) values, sometimes junk."""
    return st.one_of(st.sampled_from(choices), st.sampled_from(choices), JUNK_ARGS)


TRAIN_FLAGS = {
    "--algo": values("ppo", "rloo", "reinforce", "a2c", "PPO", "sac"),
    "--k": values("1", "2", "0", "3"),
    "--learning-rate": values("1e-3", "0", "-1", "nan", "inf", "1e308"),
    "--kl-coef": values("0", "0.1", "-1", "nan", "inf"),
    "--target-kl": values("1", "0", "-1", "nan", "inf"),
    "--seed": values("0", "1", "-1", "99999999999999999999"),
    "--device": values("cpu", "auto", "cuda", "cuda:7", "tpu", "meta"),
    "--checkpoint-every": values("1", "0", "-1", "1000"),
}
EVAL_FLAGS = {
    "--env": values("TextEnv/Reverse-L4-v0", "TextEnv/Copy-L4-v0", "TextEnv/Nope-v0"),
    "--split": values("train", "validation", "test", "dev"),
    "--samples": values("0", "1", "-1"),
}
BENCH_FLAGS = {
    "--envs": values("TextEnv/Reverse-L4-v0", "TextEnv/Nope-v0"),
    "--seeds": values("1", "0", "-1"),
    "--budget": values("8", "0", "-1"),
    "--eval-every": values("4", "0", "-1"),
    "--eval-episodes": values("1", "0", "-1"),
    "--sft-steps": values("0", "-1"),
    "--env-kwargs": values("{}", "[]", '{"task": 3}', '{"max_new_tokens": 0}', "{"),
    "--algo-kwargs": values("{}", "[]", '{"ours:ppo": 1}', "{"),
    "--reps": values("10", "0", "-1"),
}


def flag_pairs(flags: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[str]]:
    pair = st.sampled_from(sorted(flags)).flatmap(lambda f: flags[f].map(lambda v: [f, v]))
    return st.lists(pair, max_size=4).map(lambda ps: [x for p in ps for x in p])


@st.composite
def argvs(draw: Any) -> list[str]:
    tmp = Path(_TMP.name)
    cmd = draw(st.sampled_from(["envs", "demo", "train", "eval", "benchmark", "label", "junk", "none"]))
    pre = draw(st.sampled_from([[], ["-v"], ["--verbose"]]))
    if cmd == "none":
        return pre
    if cmd == "junk":
        return pre + draw(st.lists(JUNK_ARGS, min_size=1, max_size=4))
    if cmd == "envs":  # building every env takes ~20 s: only the listing
        return [*pre, "envs", "--no-build", *draw(st.lists(JUNK_ARGS, max_size=1))]
    if cmd == "demo":  # a valid --episodes would play every env: keep it invalid (appended last: it wins)
        flags = draw(flag_pairs({"--seed": values("0", "-1"), "--episodes": NONPOS}))
        return [*pre, "demo", *flags, "--episodes", draw(NONPOS)]
    if cmd == "label":  # a valid candidates file would wait for a person: never give one
        name = draw(st.sampled_from(["missing.jsonl", "junk.jsonl", "emptydir"]))
        flags = draw(flag_pairs({"--out": JUNK_ARGS, "--seed": values("0", "-1")}))
        shuffle = draw(st.sampled_from([[], ["--shuffle"]]))
        return [*pre, "label", str(tmp / name), *flags, *shuffle, "--out", str(tmp / "prefs.jsonl")]
    if cmd == "benchmark":  # an unknown algorithm spec always fails validation before any run
        algo = "zz_no_such_module_" + draw(st.text(string.ascii_lowercase, max_size=4)) + ":Algo"
        return [*pre, "benchmark", *draw(flag_pairs(BENCH_FLAGS)), "--algos", algo,
                "--out", str(tmp / "bench"), "--workers", "1"]  # fmt: skip
    if cmd == "eval":
        path = draw(st.sampled_from(["agent", "agent", "missing", "junkdir", "junk.jsonl"]))
        return [*pre, "eval", str(tmp / path), *draw(flag_pairs(EVAL_FLAGS)),
                "--episodes", draw(st.sampled_from(["1", "2", "0", "-1", "x"])),
                *draw(st.sampled_from([[], ["--sample"]])),
                "--json", str(tmp / draw(st.sampled_from(["report.json", "report.json", "emptydir",
                                                          "missing/x.json"])))]  # fmt: skip
    # train: the budget, warm start, env and output are pinned to tiny or invalid values (appended last)
    env = draw(
        st.sampled_from(["TextEnv/Reverse-L4-v0", "TextEnv/Reverse-L4-v0", "TextEnv/Nope-v0", "reverse"])
    )
    out = draw(st.sampled_from(["run", "run2", "junk.jsonl", "missing/deeper/run"]))
    return [*pre, "train", *draw(flag_pairs(TRAIN_FLAGS)), *draw(st.sampled_from([[], ["--resume"]])),
            "--no-progress",
            "--total-timesteps", draw(st.sampled_from(["0", "4", "8", "-1"])),
            "--sft-steps", draw(st.sampled_from(["0", "0", "-1"])),
            "--n-envs", draw(st.sampled_from(["1", "2", "2", "0"])),
            "--eval-episodes", draw(st.sampled_from(["1", "1", "0", "-1"])),
            "--env", env, "--out", str(tmp / out)]  # fmt: skip


@pytest.fixture(scope="module")
def cli_files() -> Path:
    """A saved tiny agent (``agent/``), a junk file, an empty directory and a junk run directory."""
    from agents import PPO

    tmp = Path(_TMP.name)
    agent = PPO("transformer", "TextEnv/Reverse-L4-v0", n_envs=2, device="cpu",
                policy_kwargs={"n_layer": 1, "n_embd": 32, "n_head": 2})  # fmt: skip
    agent.learn(4)
    agent.save(tmp / "agent")
    (tmp / "junk.jsonl").write_bytes(b"\xff\xfe{not json\x00")
    (tmp / "emptydir").mkdir(exist_ok=True)
    (tmp / "junkdir").mkdir(exist_ok=True)
    (tmp / "junkdir" / "latest.json").write_text("[1, 2")
    return tmp


@settings(FAST, max_examples=scaled(120))
@given(argv=argvs())
def test_cli_never_raises_a_traceback(cli_files, argv) -> None:
    CASES["cli"] += 1
    from agents.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            os.chdir(cli_files)  # a relative default path (e.g. runs/) lands in the temporary directory
            rc = main(argv)
    except SystemExit as e:
        CLI_OUTCOMES["SystemExit"] += 1
        assert e.code is None or isinstance(e.code, (int, str)), e.code
        return
    finally:
        os.chdir(cwd)
    assert isinstance(rc, int) and rc in (0, 1, 2), (argv, rc)
    command = next((a for a in argv if a in COMMANDS), "-")
    CLI_OUTCOMES[f"{command} rc={rc}"] += 1
    if rc == 2:
        # one clear line on stderr (or the usage text, for no command at all)
        assert "error" in err.getvalue() + out.getvalue() or "usage" in out.getvalue(), (argv, err.getvalue())


# ---- the count ---------------------------------------------------------------------------------------------
def test_the_case_count_check_fails_below_1000_and_skips_a_partial_run() -> None:
    # the real count is checked by ``case_count`` at the end of the session; this tests the check itself
    with pytest.raises(AssertionError, match="only 10 generated cases ran"):
        check_case_count(Counter(dict.fromkeys(SUITES, 1)))
    assert check_case_count(Counter({"env_action": 5000})) is None  # a -k run of one suite: nothing to check
    assert "hypothesis cases: 1000" in str(check_case_count(Counter(dict.fromkeys(SUITES, 100))))
