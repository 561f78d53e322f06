"""TextGenVectorEnv: equal to N single envs under Gymnasium's SyncVectorEnv, each autoreset mode's semantics
hand-checked on Reverse-L4, batched reward calls, seeding and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from text_env import TextGenEnv, TextGenVectorEnv
from text_env.rewards import FunctionReward, RewardError

N = 4
# Reverse-L4 train prompts with their answers: "reverse ab=" → "ba", "reverse abc=" → "cba"
P2, P3 = "reverse ab=", "reverse abc="


def letter_a_bonus(batch) -> np.ndarray:
    return (batch.actions == batch.tokenizer.encode("a")[0]).astype(np.float32)


# a state reward, a partial-credit state reward and an action reward: every reward path is compared
REWARD = {
    "exact_match": 1.0,
    "partial_match": 0.5,
    FunctionReward(letter_a_bonus, name="letter_a", kind="action"): 0.1,
}
REWARD_NAMES = ("exact_match", "partial_match", "letter_a")


def vec_env(num_envs: int = N, **kwargs) -> TextGenVectorEnv:
    return TextGenVectorEnv("reverse", num_envs=num_envs, length=4, **kwargs)


def encode(env, text: str) -> list[int]:
    return env.unwrapped.tokenizer.encode(text)


def noisy_oracle(venv: TextGenVectorEnv, rng: np.random.Generator) -> np.ndarray:
    """Per slot: the correct next token (EOS once the answer is complete) with probability 0.6, else a random
    token, so that runs mix correct answers, wrong answers, early EOS and truncations."""
    tok = venv.tokenizer
    train = venv.task.examples("train")
    actions = rng.integers(0, tok.vocab_size, size=venv.num_envs)
    for i, (idx, done_so_far) in enumerate(zip(venv.prompt_index, venv.completions(), strict=True)):
        ref = train[idx].reference
        if rng.random() < 0.6 and ref.startswith(done_so_far):
            rest = ref[len(done_so_far) :]
            actions[i] = tok.encode(rest[0])[0] if rest else tok.eos_id
    return actions


def _parts(info: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask, values) of one reward's entry in ``info["reward_parts"]`` (all-False where it is absent)."""
    parts = info.get("reward_parts", {})
    if name not in parts:
        return np.zeros(N, dtype=bool), np.zeros(N)
    return parts[f"_{name}"], parts[name]


def _assert_info_equal(vi: dict, si: dict, mask: np.ndarray, keys: tuple[str, ...]) -> None:
    """The two infos agree at the ``mask`` slots on ``keys`` (present there in both) and on reward_parts."""
    for k in keys:
        assert vi[f"_{k}"][mask].all(), k
        assert si[f"_{k}"][mask].all(), k
        assert list(vi[k][mask]) == list(si[k][mask]), k
    for name in REWARD_NAMES:
        (vm, vv), (sm, sv) = _parts(vi, name), _parts(si, name)
        np.testing.assert_array_equal(vm[mask], sm[mask], err_msg=name)
        np.testing.assert_allclose(vv[mask & vm], sv[mask & sm], err_msg=name)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_equals_sync_vector_env_of_single_envs(mode: AutoresetMode) -> None:
    venv = vec_env(reward=REWARD, autoreset_mode=mode)
    senv = SyncVectorEnv([lambda: TextGenEnv("reverse", length=4, reward=REWARD)] * N, autoreset_mode=mode)
    vo, vi = venv.reset(seed=11)
    so, si = senv.reset(seed=11)
    np.testing.assert_array_equal(vo, so)
    _assert_info_equal(vi, si, np.ones(N, bool), ("prompt", "prompt_index"))

    rng = np.random.default_rng(0)
    counts = dict(terminated=0, truncated=0, success=0, autoreset=0)
    prev_done = np.zeros(N, dtype=bool)
    for _ in range(120):
        actions = noisy_oracle(venv, rng)
        vo, vr, vterm, vtrunc, vi = venv.step(actions)
        so, sr, sterm, strunc, si = senv.step(actions)
        np.testing.assert_array_equal(vo, so)
        np.testing.assert_array_equal(vr, sr)
        np.testing.assert_array_equal(vterm, sterm)
        np.testing.assert_array_equal(vtrunc, strunc)
        assert vr.dtype == np.float64 and vterm.dtype == bool and vo.dtype == np.int64
        done = vterm | vtrunc
        _assert_info_equal(vi, si, np.ones(N, dtype=bool), ())  # every slot's reward parts, every step
        if mode == AutoresetMode.NEXT_STEP:
            if done.any():
                _assert_info_equal(vi, si, done, ("prompt", "completion", "reference", "is_success"))
            if prev_done.any():  # the autoreset step: reward 0, the new episode's prompt
                assert (vr[prev_done] == 0).all() and not done[prev_done].any()
                _assert_info_equal(vi, si, prev_done, ("prompt", "prompt_index"))
                counts["autoreset"] += int(prev_done.sum())
            prev_done = done
        elif done.any():
            assert vi["_final_obs"].tolist() == si["_final_obs"].tolist() == done.tolist()
            for i in np.flatnonzero(done):
                np.testing.assert_array_equal(vi["final_obs"][i], si["final_obs"][i])
            keys = ("prompt", "completion", "reference", "is_success", "prompt_index")
            _assert_info_equal(vi["final_info"], si["final_info"], done, keys)
            _assert_info_equal(vi, si, done, ("prompt", "prompt_index"))  # the new episode's
        counts["terminated"] += int(vterm.sum())
        counts["truncated"] += int(vtrunc.sum())
        counts["success"] += int((vr >= 1.0).sum())
    # the run really spans many episodes of every kind
    assert counts["terminated"] >= 10 and counts["truncated"] >= 5 and counts["success"] >= 5, counts
    if mode == AutoresetMode.NEXT_STEP:
        assert counts["autoreset"] >= 15, counts


# ---- autoreset semantics, by hand --------------------------------------------------------------------------
def _pin(env: TextGenVectorEnv, prompts: list[str]) -> np.ndarray:
    obs, info = env.reset(seed=0, options={"prompt": prompts})
    assert list(info["prompt"]) == prompts
    return obs


def test_next_step_ignores_the_action_after_done_and_returns_the_reset_obs() -> None:
    env = vec_env(2, autoreset_mode=AutoresetMode.NEXT_STEP)
    tok, eos = env.tokenizer, env.tokenizer.eos_id
    b, a, c = (encode(env, x)[0] for x in "bac")
    _pin(env, [P2, P3])
    env.step([b, c])
    env.step([a, b])
    obs, reward, term, trunc, info = env.step([eos, a])  # slot 0: "ba" + EOS is correct
    assert reward.tolist() == [1.0, 0.0] and term.tolist() == [True, False] and not trunc.any()
    assert tok.decode(obs[0]) == P2 + "ba"  # the final observation (EOS is the last token of the window)
    assert obs[0, -1] == eos
    assert info["completion"][0] == "ba" and info["is_success"][0] and info["_is_success"].tolist() == [1, 0]
    obs, reward, term, trunc, info = env.step([c, eos])  # slot 0's action is ignored; slot 1 "cba" + EOS
    assert reward.tolist() == [0.0, 1.0] and term.tolist() == [False, True]
    new_prompt = info["prompt"][0]
    assert info["_prompt"].tolist() == [True, True] and info["completion"][0] is None
    assert tok.decode(obs[0]) == new_prompt  # a fresh window: the 'c' was not appended
    assert env.prompt_index[0] == info["prompt_index"][0]
    obs, reward, *_ = env.step([c, c])  # slot 0 runs its new episode, slot 1 resets
    assert tok.decode(obs[0]) == new_prompt + "c" and reward[1] == 0.0


def test_same_step_returns_the_reset_obs_and_the_final_obs() -> None:
    env = vec_env(2, autoreset_mode=AutoresetMode.SAME_STEP)
    tok, eos = env.tokenizer, env.tokenizer.eos_id
    b, a, c = (encode(env, x)[0] for x in "bac")
    _pin(env, [P2, P3])
    env.step([b, c])
    env.step([a, b])
    obs, reward, term, trunc, info = env.step([eos, a])
    assert reward.tolist() == [1.0, 0.0] and term.tolist() == [True, False] and not trunc.any()
    assert info["_final_obs"].tolist() == [True, False] and info["final_obs"][1] is None
    assert tok.decode(info["final_obs"][0]) == P2 + "ba" and info["final_obs"][0][-1] == eos
    final = info["final_info"]
    assert final["completion"][0] == "ba" and final["is_success"][0] and final["prompt"][0] == P2
    assert final["reward_parts"]["exact_match"][0] == 1.0
    assert tok.decode(obs[0]) == info["prompt"][0]  # already the next episode's first observation
    assert tok.decode(obs[1]) == P3 + "cba"
    obs, reward, term, *_ = env.step([c, eos])  # slot 0's new episode takes the action
    assert tok.decode(obs[0]) == info["prompt"][0] + "c"
    assert reward.tolist() == [0.0, 1.0] and term.tolist() == [False, True]


def test_lockstep_mode_freezes_finished_slots_until_reset() -> None:
    env = vec_env(3, autoreset_mode="Disabled")
    assert env.autoreset_mode == AutoresetMode.DISABLED
    assert env.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    tok, eos = env.tokenizer, env.tokenizer.eos_id
    b, a, c = (encode(env, x)[0] for x in "bac")
    _pin(env, [P2, P3, P3])
    env.step([b, c, a])
    env.step([a, b, eos])  # slot 2: "a" + EOS is wrong
    obs_before = env.step([eos, a, c])[0]  # slot 0 correct
    assert env.finished.tolist() == [True, False, True]
    obs, reward, term, trunc, info = env.step([c, eos, b])  # slots 0 and 2 ignore their actions
    assert reward.tolist() == [0.0, 1.0, 0.0]
    assert term.tolist() == [False, True, False] and not trunc.any()
    np.testing.assert_array_equal(obs[[0, 2]], obs_before[[0, 2]])
    assert tok.decode(obs[0]) == P2 + "ba"
    assert env.finished.all()
    with pytest.raises(RuntimeError, match="every slot has finished"):
        env.step([c, c, c])
    obs2, info = env.reset(options={"reset_mask": np.array([True, False, False])})
    assert env.finished.tolist() == [False, True, True]
    assert info["_prompt"].tolist() == [True, False, False]
    np.testing.assert_array_equal(obs2[1:], obs[1:])
    assert tok.decode(obs2[0]) == info["prompt"][0]
    obs3, reward, term, trunc, _ = env.step([c, c, c])
    assert tok.decode(obs3[0]) == info["prompt"][0] + "c"
    np.testing.assert_array_equal(obs3[1:], obs[1:])
    assert reward.tolist() == [0.0, 0.0, 0.0] and not (term | trunc).any()
    env.reset()
    assert not env.finished.any()


def test_truncation_in_the_vector_env() -> None:
    env = vec_env(2, reward="partial_match")
    _pin(env, [P2, P3])
    a = encode(env, "a")[0]
    for _ in range(4):
        _, reward, term, trunc, _ = env.step([a, a])
        assert not (term | trunc).any() and not reward.any()
    _, reward, term, trunc, info = env.step([a, a])
    assert trunc.tolist() == [True, True] and not term.any()
    # "aaaaa" vs "ba": one match ("a" at position 1) over 5; vs "cba": one match ("a" at position 2) over 5
    np.testing.assert_allclose(reward, [0.2, 0.2])
    assert info["completion"].tolist() == ["aaaaa", "aaaaa"]


def test_infos_are_dicts_of_arrays_with_masks() -> None:
    env = vec_env(3)
    _, info = env.reset(seed=0)
    assert info["prompt"].shape == (3,) and info["_prompt"].dtype == bool
    _, _, _, _, info = env.step([encode(env, "a")[0]] * 3)
    assert info == {}  # nothing ended, no action rewards: nothing to report
    _, _, term, _, info = env.step([env.tokenizer.eos_id, encode(env, "a")[0], env.tokenizer.eos_id])
    assert term.tolist() == [True, False, True]
    for key in ("prompt", "completion", "reference", "is_success", "prompt_index"):
        assert info[f"_{key}"].tolist() == [True, False, True], key
    assert info["completion"].tolist() == ["a", None, "a"]
    assert info["reward_parts"]["_exact_match"].tolist() == [True, False, True]


# ---- batched rewards ---------------------------------------------------------------------------------------
def test_rewards_are_computed_once_per_step_for_the_whole_batch() -> None:
    calls: dict[str, list[int]] = {"state": [], "action": []}

    def state(batch):
        calls["state"].append(len(batch))
        return np.zeros(len(batch))

    def action(batch):
        calls["action"].append(len(batch))
        return np.zeros(len(batch))

    reward = {FunctionReward(state, name="s"): 1.0, FunctionReward(action, name="a", kind="action"): 1.0}
    env = vec_env(8, reward=reward)
    eos, x = env.tokenizer.eos_id, encode(env, "a")[0]
    env.reset(seed=0)
    env.step([x] * 8)
    env.step([eos] * 3 + [x] * 5)
    env.step([x] * 8)  # the three finished slots reset (NEXT_STEP): five slots act
    assert calls == {"state": [3], "action": [8, 8, 5]}


# ---- seeding -----------------------------------------------------------------------------------------------
def test_slot_i_is_seeded_like_a_single_env_with_seed_plus_i() -> None:
    env = vec_env(3)
    _, info = env.reset(seed=100)
    single = TextGenEnv("reverse", length=4)
    expect = [single.reset(seed=100 + i)[1]["prompt_index"] for i in range(3)]
    assert info["prompt_index"].tolist() == expect
    _, info = env.reset(seed=[100, 101, 102])
    assert info["prompt_index"].tolist() == expect
    _, info = env.reset(seed=200)
    assert info["prompt_index"].tolist() != expect


def test_same_seed_same_rollout() -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        env = vec_env(5)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(20):
            out.append(env.step(env.action_space.sample())[0])
        return out

    a, b = rollout(3), rollout(3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any((x != y).any() for x, y in zip(a, rollout(4), strict=True))


def test_pinned_new_prompts_in_the_vector_env_never_overwrite_a_running_episode() -> None:
    # issue 13, item 17: ad-hoc rows are bounded and reused, but never while a slot's episode refers to one
    env = vec_env(2, autoreset_mode=AutoresetMode.DISABLED, max_new_tokens=12)
    st = env._state
    tok = env.tokenizer

    def adhoc(i: int) -> tuple[str, str]:
        word = "".join("abcd"[int(d)] for d in np.base_repr(i, 4).zfill(9))
        return f"reverse {word}=", word[::-1]

    keep, keep_answer = adhoc(0)
    env.reset(seed=0, options={"prompt": [keep, adhoc(1)[0]], "reference": [keep_answer, adhoc(1)[1]]})
    env.step(np.array(tok.encode(keep_answer[0]) * 2))  # slot 0 is mid-episode on its ad-hoc row
    for i in range(2, 1000):  # slot 1 restarts on a new text every time
        prompt, answer = adhoc(i)
        obs, info = env.reset(
            options={
                "prompt": [keep, prompt],
                "reference": [keep_answer, answer],
                "reset_mask": np.array([0, 1], bool),
            }
        )
        assert tok.decode(obs[1]) == prompt and info["prompt"][1] == prompt
    assert st.num_prompts <= len(env.task.examples("train")) + 64  # 1,000 texts, at most 64 extra rows
    for ch in keep_answer[1:]:
        env.step(np.array([tok.encode(ch)[0], tok.eos_id]))
    _, reward, terminated, _, info = env.step(np.array([tok.eos_id, tok.eos_id]))
    assert (
        terminated[0]
        and reward[0] == 1.0
        and info["prompt"][0] == keep
        and info["reference"][0] == keep_answer
    )


# ---- registration, helpers ---------------------------------------------------------------------------------
def test_make_vec_passes_the_autoreset_mode_and_budget() -> None:
    envs = gym.make_vec(
        "TextEnv/Reverse-L4-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.unwrapped.max_new_tokens == 5


def test_render_action_masks_and_single_env() -> None:
    env = vec_env(2, render_mode="ansi")
    _pin(env, [P2, P3])
    env.step(encode(env, "bc"))
    assert env.render() == (P2 + "\u2502b", P3 + "\u2502c")
    masks = env.action_masks()
    assert masks.shape == (2, env.tokenizer.vocab_size) and masks.dtype == bool
    allowed = {env.tokenizer.decode([i]) for i in np.flatnonzero(masks[0]) if i != env.tokenizer.eos_id}
    assert allowed == set("abcdefghij") and masks[0, env.tokenizer.eos_id]
    single = env.single_env()
    assert single.observation_space == env.single_observation_space
    assert single.max_new_tokens == env.max_new_tokens


# ---- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        ([4, 5, 6], ValueError, r"shape \(2,\), got shape \(3,\)"),
        (4, ValueError, r"shape \(2,\), got shape \(\)"),
        ([4, 19], ValueError, r"action 19 .*\[0, 19\)"),
        ([-1, 4], ValueError, r"action -1 "),
        ([4.5, 4], ValueError, r"non-integer"),
        (["a", "b"], TypeError, r"integer token ids"),
    ],
)
def test_bad_vector_actions(actions, error, match) -> None:
    env = vec_env(2)
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(actions)


def test_bad_vector_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs must be a positive int, got 0"):
        vec_env(0)
    with pytest.raises(ValueError, match="unknown autoreset_mode 'sometimes'"):
        vec_env(2, autoreset_mode="sometimes")
    env = vec_env(2)
    with pytest.raises(ValueError, match=r"reset_mask'\] must be a bool array of shape \(2,\)"):
        env.reset(options={"reset_mask": [1, 0]})
    with pytest.raises(ValueError, match="3 seeds for 2 envs"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"unknown reset options \['bogus'\]"):
        env.reset(options={"bogus": 1})
    with pytest.raises(RuntimeError, match="reset"):
        vec_env(2).step([4, 4])


def test_broken_user_reward_raises_reward_error_from_vector_step() -> None:
    def half_nan(prompts, completions, references):
        return [float("nan") if i % 2 else 0.0 for i in range(len(completions))]

    env = vec_env(2, reward=half_nan)
    env.reset(seed=0)
    with pytest.raises(RewardError, match=r"reward 'half_nan' returned a non-finite value \(nan\) at row 1"):
        env.step([env.tokenizer.eos_id] * 2)
