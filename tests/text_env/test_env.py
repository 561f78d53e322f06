"""TextGenEnv episode semantics, hand-checked on Reverse-L4 (``reverse abc=`` → ``cba``), and its errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from text_env import TextGenEnv
from text_env.rewards import FunctionReward, RewardError, register_reward

PROMPT = "reverse abc="  # in Reverse-L4's train split (asserted below); its answer is "cba"


def reverse_env(**kwargs) -> TextGenEnv:
    return TextGenEnv("reverse", length=4, **kwargs)


def play(env: gym.Env, text: str, eos: bool = True) -> list[tuple]:
    """Step the characters of ``text`` (then EOS); return every step's 5-tuple."""
    tok = env.unwrapped.tokenizer
    actions = [*tok.encode(text), *([tok.eos_id] if eos else [])]
    return [env.step(a) for a in actions]


def letter_a_bonus(batch) -> np.ndarray:
    """An action reward: 1 for each emitted 'a' token."""
    return (batch.actions == batch.tokenizer.encode("a")[0]).astype(np.float32)


register_reward(
    "test_letter_a",
    lambda: FunctionReward(letter_a_bonus, name="test_letter_a", kind="action"),
    kind="action",
    description="1 per emitted 'a' (tests only)",
    overwrite=True,
)


def test_pinned_prompt_is_in_the_train_split() -> None:
    env = reverse_env()
    prompts = [e.prompt for e in env.task.examples("train")]
    assert PROMPT in prompts
    assert env.task.examples("train")[prompts.index(PROMPT)].reference == "cba"


# ---- episode end and rewards -------------------------------------------------------------------------------
def test_correct_answer_then_eos_terminates_with_exact_match_one() -> None:
    env = gym.make("TextEnv/Reverse-L4-v0")
    _, info = env.reset(seed=0, options={"prompt": PROMPT})
    assert info["prompt"] == PROMPT and info["completion"] == ""
    steps = play(env, "cba")
    rewards = [s[1] for s in steps]
    assert rewards == [0.0, 0.0, 0.0, 1.0]
    assert [s[2] for s in steps] == [False, False, False, True]  # terminated only on EOS
    assert not any(s[3] for s in steps)
    info = steps[-1][4]
    assert info["completion"] == "cba"  # EOS is not part of the completion
    assert info["is_success"] is True
    assert info["reward_parts"] == {"exact_match": 1.0}
    assert info["reference"] == "cba"
    assert [s[4]["completion"] for s in steps[:-1]] == ["c", "cb", "cba"]
    assert "is_success" not in steps[0][4]  # only at the end


def test_wrong_answer_then_eos_scores_zero() -> None:
    env = reverse_env()
    env.reset(seed=0, options={"prompt": PROMPT})
    *_, (_, reward, terminated, truncated, info) = play(env, "ca")
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert info["completion"] == "ca" and info["is_success"] is False
    assert info["reward_parts"] == {"exact_match": 0.0}


def test_budget_truncates_and_pays_the_state_reward() -> None:
    env = reverse_env(reward="partial_match")  # budget = length + 1 = 5
    assert env.max_new_tokens == 5
    env.reset(seed=0, options={"prompt": PROMPT})
    steps = play(env, "cbaaa", eos=False)
    assert [s[2] for s in steps] == [False] * 5
    assert [s[3] for s in steps] == [False] * 4 + [True]
    # "cbaaa" vs "cba": 3 matching positions over the longer length 5 (partial credit, paid at truncation)
    assert [s[1] for s in steps] == [0.0] * 4 + [pytest.approx(3 / 5)]
    assert steps[-1][4]["is_success"] is False
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_correct_answer_cut_by_the_budget_still_gets_the_state_reward() -> None:
    with pytest.warns(UserWarning, match="longest reference is 4 tokens, more than max_new_tokens=3"):
        env = reverse_env(max_new_tokens=3)
    env.reset(seed=0, options={"prompt": PROMPT})
    *_, (_, reward, terminated, truncated, info) = play(env, "cba", eos=False)
    assert (reward, terminated, truncated) == (1.0, False, True)
    assert info["is_success"] is True


def test_gym_make_truncates_at_the_default_budget() -> None:
    env = gym.make("TextEnv/Reverse-L4-v0")
    env.reset(seed=0, options={"prompt": PROMPT})
    steps = play(env, "aaaaa", eos=False)
    assert [s[3] for s in steps] == [False] * 4 + [True]


def test_action_rewards_are_paid_every_step_and_reported_in_parts() -> None:
    env = reverse_env(reward={"exact_match": 1.0, "test_letter_a": 0.5})
    env.reset(seed=0, options={"prompt": PROMPT})
    steps = play(env, "cba")
    assert [s[1] for s in steps] == [0.0, 0.0, 0.5, 1.0]
    parts = [s[4]["reward_parts"] for s in steps]
    assert parts[:3] == [{"test_letter_a": 0.0}, {"test_letter_a": 0.0}, {"test_letter_a": 1.0}]
    assert parts[3] == {"test_letter_a": 0.0, "exact_match": 1.0}  # unweighted values


def test_function_reward_of_action_kind_is_accepted_directly() -> None:
    step_cost = FunctionReward(lambda b: np.full(len(b), -1.0), name="step_cost", kind="action")
    env = reverse_env(reward={"exact_match": 1.0, step_cost: 0.25})
    env.reset(seed=0, options={"prompt": PROMPT})
    assert [s[1] for s in play(env, "cba")] == [-0.25, -0.25, -0.25, 0.75]


def test_obs_is_a_left_padded_window_of_bos_prompt_completion() -> None:
    env = reverse_env()
    tok = env.tokenizer
    obs, _ = env.reset(seed=0, options={"prompt": PROMPT})
    p = tok.encode(PROMPT)
    expect = [tok.pad_id] * (env.context_len - len(p) - 1) + [tok.bos_id, *p]
    assert obs.tolist() == expect
    assert obs.dtype == np.int64 and obs in env.observation_space
    obs, *_ = env.step(tok.encode("c")[0])
    assert obs.tolist() == [*expect[1:], tok.encode("c")[0]]
    assert tok.decode(obs) == PROMPT + "c"


def test_render_ansi_shows_prompt_and_completion() -> None:
    env = reverse_env(render_mode="ansi")
    env.reset(seed=0, options={"prompt": PROMPT})
    play(env, "cb", eos=False)
    text = env.render()
    assert PROMPT in text and text.endswith("cb")
    assert reverse_env().render() is None  # no render mode: nothing to render


# ---- reset options and seeding -----------------------------------------------------------------------------
def test_reset_pins_a_prompt_by_index_or_text() -> None:
    env = reverse_env()
    train = env.task.examples("train")
    _, info = env.reset(seed=0, options={"prompt_index": 7})
    assert info["prompt_index"] == 7 and info["prompt"] == train[7].prompt
    _, info = env.reset(options={"prompt": train[42].prompt})
    assert info["prompt_index"] == 42


def test_reset_accepts_an_unseen_prompt_text() -> None:
    env = reverse_env()
    n = len(env.task.examples("train"))
    obs, info = env.reset(seed=0, options={"prompt": "reverse abcdabcd="})  # 8 letters: not in an L4 split
    assert info["prompt"] == "reverse abcdabcd=" and info["prompt_index"] == n
    assert env.tokenizer.decode(obs) == "reverse abcdabcd="
    *_, (_, _, terminated, _, info) = play(env, "dcba")
    assert terminated and info["completion"] == "dcba" and info["reference"] is None
    _, info = env.reset(options={"prompt": "reverse abcdabcd="})  # the same text maps to the same index
    assert info["prompt_index"] == n


def test_unseen_prompt_without_reference_is_not_a_success_for_an_empty_answer() -> None:
    env = reverse_env()
    env.reset(seed=0, options={"prompt": "reverse abcdabcd="})
    _, reward, _, _, info = env.step(env.tokenizer.eos_id)
    assert reward == 0.0 and not info["is_success"]


def test_unseen_prompt_with_a_reference_option_is_scored_against_it() -> None:
    env = reverse_env(max_new_tokens=6)
    env.reset(seed=0, options={"prompt": "reverse abcde=", "reference": "edcba"})  # 5 letters: not in L4
    ids = [*env.tokenizer.encode("edcba"), env.tokenizer.eos_id]
    for a in ids:
        _, reward, terminated, _, info = env.step(a)
    assert terminated and reward == 1.0 and info["is_success"] and info["reference"] == "edcba"
    with pytest.raises(ValueError, match="reference"):
        env.reset(options={"reference": "abc"})
    # a reference the tokenizer cannot spell ("xyz" is all <unk> here) is refused, not matched by <unk>s
    with pytest.raises(ValueError, match=r"characters the tokenizer lacks: \['x', 'y', 'z'\]"):
        env.reset(options={"prompt": "reverse xyz=", "reference": "zyx"})


def _adhoc(i: int) -> tuple[str, str]:
    """A prompt text no Reverse-L4 split has (8+ letters), and its answer."""
    word = "".join("abcd"[int(d)] for d in np.base_repr(i, 4).zfill(8))
    return f"reverse {word}=", word[::-1]


def test_pinned_new_prompts_reuse_a_bounded_set_of_rows() -> None:
    # issue 13, item 17: 30,000 pinned resets used to append 30,000 rows (and slowed every reset down)
    env = reverse_env(max_new_tokens=10)
    st = env.unwrapped._state
    n = len(env.task.examples("train"))
    for i in range(5000):
        prompt, answer = _adhoc(i)
        obs, info = env.reset(options={"prompt": prompt, "reference": answer})
        assert info["prompt"] == prompt and env.tokenizer.decode(obs) == prompt
        if i < 64:  # the first ad-hoc prompts (engine.ADHOC_ROWS) get the indices they always got
            assert info["prompt_index"] == n + i
        if i % 7 == 0:  # play the answer now and then: the reused row scores against its own reference
            *_, (_, reward, terminated, _, info) = play(env, answer)
            assert (reward, terminated, info["reference"], info["completion"]) == (1.0, True, answer, answer)
    assert st.num_prompts <= n + 64 and len(st.prompts) <= n + 64  # 5,000 texts, at most 64 extra rows
    # a split prompt pinned by text is still its split row, and a recent ad-hoc prompt keeps its row
    _, info = env.reset(options={"prompt": PROMPT})
    assert info["prompt_index"] < n
    recent, _ = _adhoc(4999)
    row = env.reset(options={"prompt": recent})[1]["prompt_index"]
    assert row >= n and env.reset(options={"prompt": recent})[1]["prompt_index"] == row


@pytest.mark.parametrize("context_len", [None, 6])  # 6: longer prompts keep their end, BOS drops out
def test_the_compact_split_gives_the_windows_and_rows_of_the_padded_one(context_len: int | None) -> None:
    # issue 13, B: prompts are int32 ids + offsets and a slot's window is built at reset; the padded (n, P)
    # matrices and per-prompt windows of the old layout are never built by the env
    from text_env.rewards.base import pad_ragged
    from text_env.tasks import reverse_task

    env = TextGenEnv(reverse_task.__wrapped__(length=4), context_len=context_len)  # a task of its own
    enc, st = env.task.encoded("train"), env._state
    assert enc.prompt_tokens.dtype == np.int32 and enc.prompt_offsets.shape == (len(enc) + 1,)
    for seed in range(20):
        env.reset(seed=seed)
        play(env, "ab")
    assert "prompt_ids" not in enc.__dict__ and "reference_ids" not in enc.__dict__  # nothing padded
    tok = env.tokenizer
    padded, lengths = pad_ragged(tok.encode_batch(list(enc.prompts)), pad=tok.pad_id)
    np.testing.assert_array_equal(enc.prompt_ids, padded)
    np.testing.assert_array_equal(enc.prompt_lengths, lengths)
    refs, ref_len = pad_ragged(tok.encode_batch([r[0] for r in enc.references]), pad=tok.pad_id)
    np.testing.assert_array_equal(enc.reference_ids, refs)
    np.testing.assert_array_equal(enc.reference_lengths, ref_len)
    idx = np.arange(len(enc))
    np.testing.assert_array_equal(st._split_windows(idx), st._windows(padded, lengths))  # the old algorithm


def test_a_pinned_prompt_does_not_change_later_draws() -> None:
    # draws come from the split only: an ad-hoc row never turns up in (or shifts) the random prompts
    pinned, plain = reverse_env(), reverse_env()
    pinned.reset(seed=5)
    plain.reset(seed=5)
    pinned.reset(options={"prompt": _adhoc(1)[0]})
    a = [pinned.reset()[1]["prompt_index"] for _ in range(300)]
    b = [plain.reset()[1]["prompt_index"] for _ in range(300)]
    assert a == b


def _prompt_sequence(env: TextGenEnv, seed: int, episodes: int = 8) -> tuple[list[int], list[list[int]]]:
    obs, info = env.reset(seed=seed)
    idx, obses = [info["prompt_index"]], [obs.tolist()]
    for _ in range(episodes - 1):
        obs, info = env.reset()
        idx.append(info["prompt_index"])
        obses.append(obs.tolist())
    return idx, obses


def test_same_seed_same_prompts_different_seed_different_prompts() -> None:
    a, b = reverse_env(), reverse_env()
    seq_a = _prompt_sequence(a, seed=123)
    assert _prompt_sequence(b, seed=123) == seq_a
    assert _prompt_sequence(a, seed=123) == seq_a  # reseeding restarts the sequence
    assert _prompt_sequence(b, seed=124)[0] != seq_a[0]
    assert len(set(seq_a[0])) > 1  # the sequence really samples


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (-1, ValueError, r"action -1 .*\[0, 19\)"),
        (19, ValueError, r"action 19 .*\[0, 19\)"),
        (1.5, ValueError, r"non-integer values 1\.5"),
        ("a", TypeError, r"integer token ids.*'a'"),
        (None, TypeError, r"integer token ids.*None"),
        (np.array([4, 5]), ValueError, r"shape \(\).*shape \(2,\)"),
    ],
)
def test_bad_actions_are_rejected_with_the_value(action, error, match) -> None:
    env = reverse_env()
    assert env.action_space.n == 19
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)
    env.step(np.int64(5))  # the episode is intact: a valid action still works


def test_out_of_range_action_through_gym_make() -> None:
    env = gym.make("TextEnv/Reverse-L4-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 19 "):
        env.step(19)


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        reverse_env().step(4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"promt": "reverse ab="}, r"unknown reset options \['promt'\]"),
        ({"prompt_index": 10**6}, r"prompt_index 1000000 is out of range"),
        ({"prompt_index": -1}, r"prompt_index -1 is out of range"),
        ({"prompt": ""}, r"non-empty string, got ''"),
    ],
)
def test_bad_reset_options(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        reverse_env().reset(seed=0, options=options)


def test_unknown_task_reward_and_arguments_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'revrese'.*reverse"):
        TextGenEnv("revrese")
    with pytest.raises(ValueError, match=r"unknown reward 'exact_mtch'; available rewards: .*exact_match"):
        reverse_env(reward="exact_mtch")
    with pytest.raises(ValueError, match=r"unknown reward 'nope'.*partial_match"):
        gym.make("TextEnv/Reverse-v0", reward="nope")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        reverse_env(max_new_tokens=0)
    with pytest.raises(ValueError, match="render_mode 'rgb'"):
        reverse_env(render_mode="rgb")
    with pytest.raises(TypeError, match="lenght"):
        TextGenEnv("reverse", lenght=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": True}, r"max_new_tokens must be a positive int, got True \(a bool\)"),
        ({"max_new_tokens": 3.0}, r"max_new_tokens must be a positive int, got 3\.0"),
        ({"max_new_tokens": "3"}, r"max_new_tokens must be a positive int, got '3'"),
        ({"context_len": True}, r"context_len must be an int ≥ 2, got True"),
        ({"context_len": 8.0}, r"context_len must be an int ≥ 2, got 8\.0"),
        ({"reward": {"exact_match": True}}, r"weight for 'exact_match' must be a number, got bool"),
        ({"reward": {"exact_match": "2"}}, r"weight for 'exact_match' must be a number, got str"),
        ({"length": True}, r"length must be a positive int, got True"),
        ({"length": 4, "seed": -1}, r"seed must be an int ≥ 0, got -1"),
        ({"length": 4, "sizes": (10, True, 5)}, r"sizes must be three positive ints"),
    ],
)
def test_env_arguments_are_refused_rather_than_coerced(kwargs: dict, match: str) -> None:
    # issue 13, B: True is an int subclass and float("2") a number, but neither is what the caller meant
    with pytest.raises(ValueError, match=match):
        TextGenEnv("reverse", **{"length": 4, **kwargs})


def test_vector_env_refuses_a_bool_num_envs() -> None:
    from text_env import TextGenVectorEnv

    with pytest.raises(ValueError, match=r"num_envs must be a positive int, got True"):
        TextGenVectorEnv("reverse", num_envs=True, length=4)


# ---- misbehaving user rewards ------------------------------------------------------------------------------
def none_reward(prompts, completions, references):
    return [None] * len(completions)


def forgot_return_reward(prompts, completions, references):
    [float(len(c)) for c in completions]


def nan_reward(prompts, completions, references):
    return [float("nan")] * len(completions)


def long_reward(prompts, completions, references):
    return [0.0] * (len(completions) + 1)


def raising_reward(prompts, completions, references):
    raise KeyError("boom")


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (nan_reward, r"reward 'nan_reward' returned a non-finite value \(nan\)"),
        (none_reward, r"reward 'none_reward' returned None for completion 0 \(of 1\)"),
        (forgot_return_reward, r"reward 'forgot_return_reward' returned None; expected 1 floats"),
        (long_reward, r"reward 'long_reward' returned 2 values for 1 completions"),
        (raising_reward, r"reward 'raising_reward' raised KeyError: 'boom'"),
    ],
)
def test_broken_user_reward_raises_reward_error_from_step(fn, match) -> None:
    env = reverse_env(reward=fn)
    env.reset(seed=0, options={"prompt": PROMPT})
    env.step(env.tokenizer.encode("c")[0])  # a state reward is not called before the episode ends
    with pytest.raises(RewardError, match=match):
        env.step(env.tokenizer.eos_id)


def test_broken_action_reward_raises_on_the_first_step() -> None:
    bad = FunctionReward(lambda b: np.full(len(b), np.inf), name="inf_step", kind="action")
    env = reverse_env(reward={"exact_match": 1.0, bad: 1.0})
    env.reset(seed=0)
    with pytest.raises(RewardError, match="reward 'inf_step' returned a non-finite value"):
        env.step(4)
