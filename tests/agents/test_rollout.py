"""Tests for agents.rollout: the batch layout, KV-cached log-probs and values against one full-sequence
forward, the reference's log-probs, greedy and seeded sampling, pinned prompts, and evaluate_policy against
a scripted oracle whose success rate is known exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import RolloutCollector, evaluate_policy, make_rollout_env
from agents.policies.transformer import KVCache, LMPolicyBase
from agents.rollout import action_logprobs
from text_env.tokenizers import never_emitted_ids
from text_env.vector import TextGenVectorEnv

ATOL = 1e-5


def length_plus_one(prompts, completions, references):
    """A state reward that is never 0, so the step that pays it is visible: len(completion) + 1."""
    return [len(c) + 1.0 for c in completions]


class ReverseOracle(LMPolicyBase):
    """A scripted policy for the ``tiny_reverse_task``: it reads each prompt (``ab=``) at prefill and then
    puts all its probability on the next token of the reversed string and EOS.

    With ``double_single=True`` it answers one-character prompts wrongly (``a=`` → ``aa``), so its exact
    success rate on the task's 14 prompts is 12/14. It speaks the collector's policy protocol (``new_cache``,
    ``prefill``, ``decode_step``; ``sample``/``log_probs`` come from ``LMPolicyBase``) with no network inside.
    """

    def __init__(self, tokenizer, double_single: bool = False) -> None:
        super().__init__(tokenizer, tokenizer.vocab_size)
        self.double_single = double_single
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the collector a device to read

    def new_cache(self, batch_size: int, max_len: int | None = None) -> dict:
        return {"plans": [], "t": 0}

    def _logits(self, cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.zeros(len(cache["plans"]), self.vocab_size)
        for i, plan in enumerate(cache["plans"]):
            logits[i, plan[min(cache["t"], len(plan) - 1)]] = 50.0
        return logits, torch.zeros(len(cache["plans"]))

    def prefill(self, input_ids, attention_mask, cache):
        tok = self.tokenizer
        for row, m in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = tok.decode([i for i, keep in zip(row, m, strict=True) if keep])  # "ab=" (BOS dropped)
            answer = text.rstrip("=")[::-1]
            if self.double_single and len(answer) == 1:
                answer *= 2
            cache["plans"].append([*tok.encode(answer), tok.eos_id])
        return self._logits(cache)

    def decode_step(self, tokens, cache):
        cache["t"] += 1
        return self._logits(cache)


def collect(policy, task, n: int = 16, seed: int = 0, reference=None, **kwargs):
    env = make_rollout_env(task, n, **({"reward": kwargs.pop("reward")} if "reward" in kwargs else {}))
    return RolloutCollector(policy, env, reference=reference).collect(seed=seed, **kwargs), env


# ---- layout ------------------------------------------------------------------------------------------------
def test_batch_layout_masks_lengths_rewards_and_completions(tiny_reverse_task, make_policy):
    task = tiny_reverse_task
    tok = task.tokenizer
    batch, _ = collect(make_policy(task), task, n=16, reward=length_plus_one)
    b, t = batch.actions.shape
    p = batch.prompt_width
    lengths = batch.lengths
    # a fresh policy over 7 tokens ends early often: the batch must hold ragged episodes for this to test much
    assert len(set(lengths.tolist())) > 1 and lengths.max() == t == task.max_new_tokens
    assert b == 16 and batch.input_ids.shape == batch.attention_mask.shape == (b, p + t)
    for name in ("mask", "logprobs", "values", "rewards"):
        assert getattr(batch, name).shape == (b, t), name
    assert batch.logprobs.dtype == batch.values.dtype == batch.rewards.dtype == torch.float32
    assert batch.mask.dtype == batch.attention_mask.dtype == torch.bool
    assert batch.action_logits_slice() == slice(p - 1, p - 1 + t)
    assert batch.num_tokens == int(lengths.sum())

    steps = torch.arange(t)
    expected_mask = steps[None, :] < torch.as_tensor(lengths)[:, None]  # a prefix of each row
    assert torch.equal(batch.mask, expected_mask)
    assert torch.equal(batch.attention_mask[:, p:], batch.mask)
    assert torch.equal(batch.input_ids[:, p:], batch.actions)
    assert (batch.actions[~batch.mask] == tok.pad_id).all()
    assert (batch.logprobs[~batch.mask] == 0).all() and (batch.values[~batch.mask] == 0).all()
    assert (batch.logprobs[batch.mask] < 0).all()

    prompts = task.encoded("train")
    for i in range(b):
        k = int(batch.prompt_index[i])
        n = int(prompts.prompt_lengths[k])
        window = batch.input_ids[i, :p][batch.attention_mask[i, :p]].tolist()
        assert window == [tok.bos_id, *prompts.prompt_ids[k, :n].tolist()]  # left-padded, BOS first
        acts = batch.actions[i, : lengths[i]].tolist()
        assert batch.completions[i] == tok.decode(acts)
        # an episode ends at its first EOS, or at the token budget
        assert tok.eos_id not in acts[:-1]
        assert acts[-1] == tok.eos_id or lengths[i] == task.max_new_tokens
        # the state reward is paid on the last valid step only
        r = batch.rewards[i].tolist()
        assert r[lengths[i] - 1] == len(batch.completions[i]) + 1.0
        assert all(v == 0 for j, v in enumerate(r) if j != lengths[i] - 1)
    np.testing.assert_allclose(batch.episode_returns, batch.rewards.sum(1).numpy())
    # success is still the task's own test (exact match), whatever reward is paid
    refs = task.encoded("train").references
    want = [float(c == refs[k][0]) for c, k in zip(batch.completions, batch.prompt_index, strict=True)]
    np.testing.assert_array_equal(batch.success, want)


def test_exact_match_reward_is_paid_on_the_last_step_and_equals_success(tiny_reverse_task):
    task = tiny_reverse_task
    oracle = ReverseOracle(task.tokenizer, double_single=True)
    batch, _ = collect(oracle, task, n=14, prompt_index=np.arange(14))
    refs = [r[0] for r in task.encoded("train").references]
    expected = np.array([float(len(ref) > 1) for ref in refs])
    np.testing.assert_array_equal(batch.success, expected)
    last = torch.as_tensor(batch.lengths - 1)
    paid = batch.rewards.gather(1, last[:, None]).squeeze(1)
    np.testing.assert_array_equal(paid.numpy(), expected)
    assert batch.rewards.sum().item() == expected.sum()  # nothing anywhere else
    for i, ref in enumerate(refs):
        want = ref * 2 if len(ref) == 1 else ref
        assert batch.completions[i] == want and batch.lengths[i] == len(want) + 1  # + EOS


# ---- log-probs and values: the cache against one full-sequence forward -------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_logprobs_and_values_equal_one_full_forward(tiny_reverse_task, make_policy, temperature):
    policy = make_policy(tiny_reverse_task, seed=1)
    policy.temperature = temperature
    batch, _ = collect(policy, tiny_reverse_task, n=16, seed=3)
    with torch.no_grad():
        lp, values, logp_all = action_logprobs(
            policy,
            batch.input_ids,
            batch.attention_mask,
            batch.actions,
            batch.prompt_width,
            return_values=True,
        )
    m = batch.mask
    torch.testing.assert_close(lp[m], batch.logprobs[m], atol=ATOL, rtol=0)
    torch.testing.assert_close(values[m], batch.values[m], atol=ATOL, rtol=0)
    # the full forward is the tempered distribution (the sampled one), not the raw softmax; pad, bos and
    # unk are never sampled, so they get no probability
    with torch.no_grad():
        raw = torch.log_softmax(policy(batch.input_ids, batch.attention_mask)[0], -1)[
            :, batch.action_logits_slice()
        ]
    never = torch.tensor(never_emitted_ids(policy.tokenizer))
    want = torch.log_softmax((raw / temperature).index_fill(-1, never, torch.finfo(raw.dtype).min), -1)
    torch.testing.assert_close(logp_all, want, atol=ATOL, rtol=0)
    assert torch.all(logp_all[..., never] < -1e30)


def test_reference_equal_to_policy_gives_equal_logprobs(tiny_reverse_task, make_policy):
    policy = make_policy(tiny_reverse_task)
    batch, _ = collect(policy, tiny_reverse_task, reference=policy.clone_frozen())
    m = batch.mask
    torch.testing.assert_close(batch.ref_logprobs[m], batch.logprobs[m], atol=ATOL, rtol=0)
    assert (batch.ref_logprobs[~m] == 0).all()
    # a different reference is really scored (not a copy of the policy's numbers)
    other, _ = collect(policy, tiny_reverse_task, reference=make_policy(tiny_reverse_task, seed=7))
    assert torch.equal(other.actions, batch.actions)
    assert (other.ref_logprobs[m] - other.logprobs[m]).abs().max() > 1e-3
    no_ref, _ = collect(policy, tiny_reverse_task)
    assert no_ref.ref_logprobs is None


def test_reference_is_scored_at_the_policys_sampling_temperature(tiny_reverse_task, make_policy):
    # a policy sampling at T = 0.7 against its own copy at T = 1: the leash must read KL = 0, not the
    # divergence between the two temperatures (TRL scores the reference at the sampling temperature too)
    policy = make_policy(tiny_reverse_task)
    reference = policy.clone_frozen()
    policy.temperature = 0.7
    batch, _ = collect(policy, tiny_reverse_task, reference=reference)
    m = batch.mask
    torch.testing.assert_close(batch.ref_logprobs[m], batch.logprobs[m], atol=ATOL, rtol=0)
    assert reference.temperature == 1.0  # restored


# ---- sampling ----------------------------------------------------------------------------------------------
def test_deterministic_collect_is_greedy_and_ignores_the_seed(tiny_reverse_task, make_policy):
    policy = make_policy(tiny_reverse_task, seed=2)
    idx = np.arange(14)
    batch, _ = collect(policy, tiny_reverse_task, n=14, seed=0, prompt_index=idx, deterministic=True)
    again, _ = collect(policy, tiny_reverse_task, n=14, seed=99, prompt_index=idx, deterministic=True)
    assert torch.equal(batch.actions, again.actions)
    with torch.no_grad():
        logits, _ = policy(batch.input_ids, batch.attention_mask)
    greedy = logits[:, batch.action_logits_slice()].argmax(-1)  # (B, T)
    m = batch.mask
    assert torch.equal(batch.actions[m], greedy[m])
    torch.testing.assert_close(
        batch.logprobs[m],
        policy.log_probs(logits[:, batch.action_logits_slice()]).max(-1).values[m],
        atol=ATOL,
        rtol=0,
    )


def test_compaction_drops_finished_slots_without_changing_greedy_episodes(
    tiny_reverse_task, make_policy, monkeypatch
):
    # a stronger EOS embedding makes this fresh policy end greedy episodes after 1, 2 or 4 steps, so the
    # cache is compacted during the rollout
    policy = make_policy(tiny_reverse_task, seed=0)
    with torch.no_grad():
        policy.model.wte.weight[tiny_reverse_task.tokenizer.eos_id] *= 5
    idx = np.arange(14)
    env = make_rollout_env(tiny_reverse_task, 14)
    calls = []
    real_select = KVCache.select

    def counting_select(self, rows):
        calls.append(len(rows))
        real_select(self, rows)

    monkeypatch.setattr(KVCache, "select", counting_select)
    on = RolloutCollector(policy, env).collect(prompt_index=idx, deterministic=True)
    assert calls and all(0 < c < 14 for c in calls), calls
    n_calls = len(calls)
    off = RolloutCollector(policy, env, compact=False).collect(prompt_index=idx, deterministic=True)
    assert len(calls) == n_calls  # compact=False never selects
    assert torch.equal(on.actions, off.actions) and torch.equal(on.mask, off.mask)
    assert on.completions == off.completions and np.array_equal(on.lengths, off.lengths)
    assert len(set(on.lengths.tolist())) > 1
    m = on.mask
    torch.testing.assert_close(on.logprobs[m], off.logprobs[m], atol=ATOL, rtol=0)
    torch.testing.assert_close(on.values[m], off.values[m], atol=ATOL, rtol=0)
    assert (on.logprobs[~m] == 0).all() and (on.values[~m] == 0).all()
    assert (on.actions[~m] == env.tokenizer.pad_id).all()


def test_same_seed_same_batch_and_different_seed_differs(tiny_reverse_task, make_policy):
    policy = make_policy(tiny_reverse_task)
    env = make_rollout_env(tiny_reverse_task, 16)
    collector = RolloutCollector(policy, env)
    a, b, c = collector.collect(seed=5), collector.collect(seed=5), collector.collect(seed=6)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.logprobs, b.logprobs)
    assert a.completions == b.completions and np.array_equal(a.prompt_index, b.prompt_index)
    assert not (np.array_equal(a.prompt_index, c.prompt_index) and a.completions == c.completions)


def test_pinned_prompt_index(tiny_reverse_task, make_policy):
    task = tiny_reverse_task
    idx = np.array([13, 13, 13, 0, 5, 0, 7, 2])
    batch, _ = collect(make_policy(task), task, n=8, prompt_index=idx)
    np.testing.assert_array_equal(batch.prompt_index, idx)
    enc = task.encoded("train")
    for i, k in enumerate(idx):
        row = batch.input_ids[i, : batch.prompt_width][batch.attention_mask[i, : batch.prompt_width]]
        assert row.tolist()[1:] == enc.prompt_ids[k, : enc.prompt_lengths[k]].tolist()
    # sampled, so the three copies of prompt 13 need not agree, but they share the prompt window
    assert torch.equal(batch.input_ids[0, : batch.prompt_width], batch.input_ids[2, : batch.prompt_width])


# ---- evaluation --------------------------------------------------------------------------------------------
def test_evaluate_policy_scores_a_perfect_oracle_1(tiny_reverse_task):
    out = evaluate_policy(ReverseOracle(tiny_reverse_task.tokenizer), tiny_reverse_task, n_episodes=100)
    # 14 test prompts: 2 of 1 char, 4 of 2, 8 of 3; each answer takes its length + EOS steps
    assert out == {"mean_return": 1.0, "success_rate": 1.0, "mean_length": 48 / 14, "episodes": 14}


@pytest.mark.parametrize("batch_size", [14, 5, 1])
def test_evaluate_policy_counts_each_prompt_once_whatever_the_batch_size(tiny_reverse_task, batch_size):
    oracle = ReverseOracle(tiny_reverse_task.tokenizer, double_single=True)  # wrong on the 2 one-char prompts
    out = evaluate_policy(oracle, tiny_reverse_task, n_episodes=14, batch_size=batch_size)
    assert out["success_rate"] == pytest.approx(12 / 14)
    assert out["mean_return"] == pytest.approx(12 / 14)
    assert out["mean_length"] == pytest.approx((2 * 3 + 4 * 3 + 8 * 4) / 14)  # "aa"+EOS for one-char prompts
    assert out["episodes"] == 14
    first = evaluate_policy(oracle, tiny_reverse_task, n_episodes=3)
    assert first["episodes"] == 3


# ---- construction ------------------------------------------------------------------------------------------
def test_make_rollout_env_wants_a_lockstep_env(tiny_reverse_task):
    env = make_rollout_env(tiny_reverse_task, 3)
    assert isinstance(env, TextGenVectorEnv) and env.num_envs == 3
    assert env.autoreset_mode == gym.vector.AutoresetMode.DISABLED
    assert make_rollout_env(env, 99) is env
    with pytest.raises(ValueError, match="lockstep"):
        make_rollout_env(TextGenVectorEnv(tiny_reverse_task, num_envs=2), 2)


def test_collector_rejects_a_policy_with_a_smaller_vocabulary(tiny_reverse_task, one_step_task, make_policy):
    small = make_policy(tiny_reverse_task)  # 7 tokens
    env = make_rollout_env(one_step_task, 2)  # 8 tokens
    with pytest.raises(ValueError, match="vocabulary"):
        RolloutCollector(small, env)


# ---- a shared prompt is prefilled once ---------------------------------------------------------------------
def _prefill_rows(policy, monkeypatch) -> list[int]:
    rows: list[int] = []
    real = type(policy).prefill

    def spy(self, input_ids, attention_mask, cache):
        rows.append(input_ids.shape[0])
        return real(self, input_ids, attention_mask, cache)

    monkeypatch.setattr(type(policy), "prefill", spy)
    return rows


def _shared_and_unshared(policy, env, idx, monkeypatch, **kwargs):
    rows = _prefill_rows(policy, monkeypatch)
    on = RolloutCollector(policy, env, **kwargs).collect(seed=3, prompt_index=idx)
    off = RolloutCollector(policy, env, share_prompts=False, **kwargs).collect(seed=3, prompt_index=idx)
    return on, off, rows


def _assert_same_episodes(on, off):
    assert torch.equal(on.input_ids, off.input_ids) and torch.equal(on.mask, off.mask)
    assert on.completions == off.completions
    m = on.mask
    torch.testing.assert_close(on.logprobs[m], off.logprobs[m], atol=ATOL, rtol=0)
    torch.testing.assert_close(on.values[m], off.values[m], atol=ATOL, rtol=0)


@pytest.mark.parametrize("compact", [True, False])
def test_slots_sharing_a_prompt_prefill_it_once_with_the_same_episodes(
    tiny_reverse_task, make_policy, monkeypatch, compact
):
    policy = make_policy(tiny_reverse_task, seed=1)
    idx = np.repeat([3, 9, 0, 13], 4)  # 4 prompts x 4 completions, as RLOO(k=4) pins them
    env = make_rollout_env(tiny_reverse_task, len(idx))
    on, off, rows = _shared_and_unshared(policy, env, idx, monkeypatch, compact=compact)
    assert rows == [4, 16]  # shared: one prefill row per distinct prompt; unshared: one per slot
    _assert_same_episodes(on, off)
    assert len(set(on.completions)) > 4  # the copies sample their own completions
    np.testing.assert_array_equal(on.prompt_index, idx)


def test_distinct_prompts_are_prefilled_row_by_row(tiny_reverse_task, make_policy, monkeypatch):
    policy = make_policy(tiny_reverse_task)
    env = make_rollout_env(tiny_reverse_task, 8)
    rows = _prefill_rows(policy, monkeypatch)
    RolloutCollector(policy, env).collect(seed=0, prompt_index=np.array([0, 1, 2, 3, 4, 5, 6, 6]))
    assert rows == [8]  # 7 distinct of 8: not worth sharing


@pytest.mark.parametrize("static", [True, False])
def test_an_hf_policy_shares_the_prefill_of_repeated_prompts(monkeypatch, static):
    from hf_fixtures import tiny_hf_policy

    policy = tiny_hf_policy(static_cache=static)
    idx = np.repeat([2, 7, 11], 3)
    env = make_rollout_env("TextEnv/Reverse-L4-v0", len(idx), policy_tokenizer=policy.tokenizer)
    on, off, rows = _shared_and_unshared(policy, env, idx, monkeypatch)
    assert rows == [3, 9]
    _assert_same_episodes(on, off)


def test_a_duck_typed_cache_without_select_prefills_every_slot(tiny_reverse_task, monkeypatch):
    oracle = ReverseOracle(tiny_reverse_task.tokenizer)
    rows = _prefill_rows(oracle, monkeypatch)
    idx = np.repeat([1, 4], 4)
    batch, _ = collect(oracle, tiny_reverse_task, n=len(idx), prompt_index=idx, deterministic=True)
    assert rows == [8]
    assert batch.success.tolist() == [1.0] * 8
