"""Tests for agents.policies: the transformer LM (KV cache, left padding, value head), the policy's
sampling distribution, persistence, and the Hugging Face adapter."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

from agents.policies import load_policy
from agents.policies.transformer import (
    KVCache,
    TransformerConfig,
    TransformerLM,
    TransformerPolicy,
)
from text_env.persistence import write_manifest
from text_env.tokenizers import CharTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ATOL = 1e-5
TOK = CharTokenizer("abcdefgh")  # ids: pad 0, bos 1, eos 2, unk 3, 'a'..'h' 4..11
V = TOK.vocab_size


def make_policy(seed: int = 0, **kwargs) -> TransformerPolicy:
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=V, n_layer=2, n_head=4, n_embd=32, max_seq_len=32)
    return TransformerPolicy(TransformerLM(config), TOK, **kwargs).eval()


def left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return ids, mask


PROMPTS = [[1, 4, 5], [1, 6, 7, 8, 9], [1], [1, 11, 10, 4]]


# ---- model: padding and cache ---------------------------------------------------------------------------
@torch.inference_mode()
def test_left_padded_logits_equal_unpadded_logits():
    policy = make_policy()
    ids, mask = left_pad(PROMPTS)
    logits, values = policy(ids, mask)
    assert logits.shape == (4, 5, V) and values.shape == (4, 5)
    assert logits.dtype == torch.float32 and values.dtype == torch.float32
    for i, row in enumerate(PROMPTS):
        ref_logits, ref_values = policy(torch.tensor([row]))
        n = len(row)
        torch.testing.assert_close(logits[i, -n:], ref_logits[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(values[i, -n:], ref_values[0], atol=ATOL, rtol=0)
    assert torch.isfinite(logits).all()  # pad positions too: no all-masked attention row gives NaN


@torch.inference_mode()
def test_cached_decoding_equals_uncached_forward_with_left_padding():
    policy = make_policy()
    ids, mask = left_pad(PROMPTS)
    cache = policy.new_cache(batch_size=4, max_len=16)
    logits, values = policy.prefill(ids, mask, cache)
    full_logits, full_values = policy(ids, mask)
    torch.testing.assert_close(logits, full_logits[:, -1], atol=ATOL, rtol=0)
    torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0)
    gen = torch.Generator().manual_seed(1)
    seq, seq_mask = ids, mask
    for step in range(5):
        tokens = torch.randint(4, V, (4,), generator=gen)
        logits, values = policy.decode_step(tokens, cache)
        seq = torch.cat([seq, tokens[:, None]], dim=1)
        seq_mask = torch.cat([seq_mask, torch.ones(4, 1, dtype=torch.bool)], dim=1)
        full_logits, full_values = policy(seq, seq_mask)
        torch.testing.assert_close(logits, full_logits[:, -1], atol=ATOL, rtol=0, msg=f"step {step}")
        torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0, msg=f"step {step}")
        for i, row in enumerate(PROMPTS):  # and each row equals its unpadded single-sequence run
            alone, _ = policy(torch.tensor([row + seq[i, ids.shape[1] :].tolist()]))
            torch.testing.assert_close(logits[i], alone[0, -1], atol=ATOL, rtol=0)
    assert cache.pos == ids.shape[1] + 5
    assert cache.next_pos.tolist() == [len(r) + 5 for r in PROMPTS]


def _check_select_keeps_the_chosen_slots_exact(policy) -> None:
    ids, mask = left_pad(PROMPTS)
    cache = policy.new_cache(batch_size=4, max_len=16)
    policy.prefill(ids, mask, cache)
    first = torch.tensor([7, 8, 9, 10])
    policy.decode_step(first, cache)
    keep = torch.tensor([3, 1])  # drop slots 0 and 2; the kept ones may come back in any order
    cache.select(keep)
    assert cache.batch_size == 2 and cache.pos == ids.shape[1] + 1
    seqs = {i: PROMPTS[i] + [int(first[i])] for i in keep.tolist()}
    for tokens in ([4, 5], [6, 7]):
        logits, values = policy.decode_step(torch.tensor(tokens), cache)
        for j, i in enumerate(keep.tolist()):
            seqs[i].append(tokens[j])
            alone, alone_values = policy(torch.tensor([seqs[i]]))
            torch.testing.assert_close(logits[j], alone[0, -1], atol=ATOL, rtol=0)
            torch.testing.assert_close(values[j], alone_values[0, -1], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="select rows must lie in"):
        cache.select(torch.tensor([2]))


@torch.inference_mode()
def test_cache_select_drops_slots_and_the_kept_ones_continue_exactly():
    _check_select_keeps_the_chosen_slots_exact(make_policy())


def _check_forward_actions_equals_the_full_forward(policy) -> None:
    ids, mask = left_pad(PROMPTS)
    full, full_values = policy(ids, mask)
    for p in (1, 2, ids.shape[1] - 1):
        logits, values = policy.forward_actions(ids, mask, p)
        assert logits.shape == (len(PROMPTS), ids.shape[1] - p, V)
        torch.testing.assert_close(logits, full[:, p - 1 : -1], atol=ATOL, rtol=0)
        torch.testing.assert_close(values, full_values[:, p - 1 : -1], atol=ATOL, rtol=0)


@torch.inference_mode()
def test_forward_actions_equals_the_full_forward_at_the_action_columns():
    _check_forward_actions_equals_the_full_forward(make_policy())


@torch.inference_mode()
def test_reset_slots_restarts_one_slot_while_others_continue():
    policy = make_policy()
    ids, mask = left_pad([[1, 4, 5], [1, 6]])
    cache = policy.new_cache(batch_size=2, max_len=16)
    policy.prefill(ids, mask, cache)
    policy.decode_step(torch.tensor([7, 8]), cache)
    slot1 = [1, 6, 8]
    cache.reset_slots(torch.tensor([True, False]))
    assert cache.next_pos.tolist() == [0, 3]
    # a new prompt for slot 0; slot 1 sits out these columns (mask False) and must be unaffected
    new_prompt = [1, 9, 10, 11]
    chunk = torch.tensor([new_prompt, [0] * 4])
    chunk_mask = torch.tensor([[True] * 4, [False] * 4])
    logits, _ = policy.model(chunk, chunk_mask, cache)
    fresh, _ = policy(torch.tensor([new_prompt]))
    torch.testing.assert_close(logits[0], fresh[0], atol=ATOL, rtol=0)
    for tokens in ([4, 5], [6, 7]):
        logits, _ = policy.decode_step(torch.tensor(tokens), cache)
        new_prompt.append(tokens[0])
        slot1.append(tokens[1])
        fresh0, _ = policy(torch.tensor([new_prompt]))
        fresh1, _ = policy(torch.tensor([slot1]))
        torch.testing.assert_close(logits[0], fresh0[0, -1], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], fresh1[0, -1], atol=ATOL, rtol=0)
    assert cache.next_pos.tolist() == [6, 5]


def test_cache_full_and_bad_inputs_raise_clear_errors():
    policy = make_policy()
    cache = policy.new_cache(batch_size=1, max_len=3)
    with torch.inference_mode():
        policy.prefill(torch.tensor([[1, 4, 5]]), None, cache)
        with pytest.raises(ValueError, match="KV cache is full"):
            policy.decode_step(torch.tensor([6]), cache)
        cache.reset()
        assert cache.pos == 0
        policy.decode_step(torch.tensor([6]), cache)  # usable again after reset
        with pytest.raises(ValueError, match="batch size 2 != cache batch size 1"):
            policy.decode_step(torch.tensor([6, 7]), cache)
        with pytest.raises(ValueError, match="left-padded"):
            policy.prefill(torch.tensor([[4, 0]]), torch.tensor([[True, False]]), policy.new_cache(1))
        with pytest.raises(ValueError, match="max_seq_len=32"):
            policy(torch.ones(1, 33, dtype=torch.long))
        with pytest.raises(TypeError, match="integer token ids"):
            policy(torch.ones(1, 3))
        with pytest.raises(ValueError, match=r"reset_slots expects a \(1,\) bool mask"):
            cache.reset_slots(torch.tensor([1, 0]))


def test_kv_cache_layout_is_preallocated():
    cache = KVCache(n_layer=2, batch_size=3, n_head=4, head_dim=8, max_len=10)
    assert cache.k.shape == cache.v.shape == (2, 3, 4, 10, 8)
    assert cache.key_mask.shape == (3, 10) and cache.next_pos.shape == (3,)
    k = torch.ones(3, 4, 2, 8)
    k_all, v_all = cache.insert_kv(1, k, 2 * k)
    assert k_all.shape == (3, 4, 2, 8) and float(v_all.sum()) == 2 * k.numel()
    assert k_all.data_ptr() == cache.k[1].data_ptr()  # a view into the preallocated tensor, not a copy


def test_training_forward_backpropagates_through_padding():
    policy = make_policy()
    policy.train()
    ids, mask = left_pad(PROMPTS)
    logits, values = policy(ids, mask)
    loss = logits[mask].logsumexp(-1).mean() + values[mask].pow(2).mean()
    loss.backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(policy.model.value_head.weight.grad.abs().sum()) > 0


# ---- policy: the sampling distribution -------------------------------------------------------------------
def test_log_probs_hand_computed_with_temperature_and_mask():
    mask = np.zeros(V, dtype=np.int8)
    mask[[4, 5]] = 1
    policy = make_policy(temperature=2.0, action_mask=mask)
    logits = torch.zeros(1, V)
    logits[0, 4] = 2.0  # /2 -> 1.0 vs 0.0 for token 5
    logp = policy.log_probs(logits)
    assert logp[0, 4].item() == pytest.approx(1 - math.log(math.e + 1), abs=1e-6)
    assert logp[0, 5].item() == pytest.approx(-math.log(math.e + 1), abs=1e-6)
    assert logp[0, 6].item() < -1e30 and torch.isfinite(logp).all()  # masked: ~0 prob, but never NaN/inf
    entropy = -(logp.exp() * logp).sum(-1)
    assert torch.isfinite(entropy).all()


def test_sampling_is_seed_deterministic_and_follows_the_distribution():
    policy = make_policy(temperature=0.8)
    logits = torch.randn(64, V, generator=torch.Generator().manual_seed(0))
    t1, lp1 = policy.sample(logits, torch.Generator().manual_seed(7))
    t2, lp2 = policy.sample(logits, torch.Generator().manual_seed(7))
    t3, _ = policy.sample(logits, torch.Generator().manual_seed(8))
    assert torch.equal(t1, t2) and torch.equal(lp1, lp2)
    assert not torch.equal(t1, t3)
    torch.testing.assert_close(lp1, policy.log_probs(logits).gather(-1, t1[:, None])[:, 0])
    # a near-one-hot distribution is followed
    peaked = torch.full((8, V), -50.0)
    peaked[:, 9] = 50.0
    tokens, logprobs = policy.sample(peaked, torch.Generator().manual_seed(0))
    assert tokens.tolist() == [9] * 8 and torch.allclose(logprobs, torch.zeros(8), atol=1e-6)


def test_deterministic_sampling_is_masked_argmax():
    mask = torch.zeros(V, dtype=torch.bool)
    mask[[2, 4, 5, 6]] = True
    policy = make_policy(action_mask=mask)
    logits = torch.randn(16, V, generator=torch.Generator().manual_seed(3))
    logits[:, 0] = 100.0  # the pad token is the raw argmax but is not allowed
    tokens, logprobs = policy.sample(logits, deterministic=True)
    expected = logits.masked_fill(~mask, -float("inf")).argmax(-1)
    assert torch.equal(tokens, expected)
    torch.testing.assert_close(logprobs, torch.log_softmax(logits[:, mask], -1).max(-1).values)


@torch.inference_mode()
def test_sampled_logprobs_equal_those_of_a_full_forward_no_drift():
    mask = np.zeros(V, dtype=np.int8)
    mask[[2, 4, 5, 6, 7]] = 1
    policy = make_policy(temperature=0.7, action_mask=mask)
    ids, attn = left_pad(PROMPTS)
    cache = policy.new_cache(batch_size=4, max_len=16)
    gen = torch.Generator().manual_seed(0)
    logits, _ = policy.prefill(ids, attn, cache)
    tokens_list, logp_list = [], []
    for _ in range(6):
        tokens, logp = policy.sample(logits, gen)
        tokens_list.append(tokens)
        logp_list.append(logp)
        logits, _ = policy.decode_step(tokens, cache)
    generated = torch.stack(tokens_list, 1)  # (B, 6)
    sampled_logp = torch.stack(logp_list, 1)  # (B, 6)
    assert bool(torch.from_numpy(mask).bool()[generated].all())  # only allowed tokens were drawn
    seq = torch.cat([ids, generated], 1)
    seq_mask = torch.cat([attn, torch.ones_like(generated, dtype=torch.bool)], 1)
    full_logits, _ = policy(seq, seq_mask)
    P = ids.shape[1]
    rescored = policy.log_probs(full_logits[:, P - 1 : -1]).gather(-1, generated[..., None])[..., 0]
    torch.testing.assert_close(rescored, sampled_logp, atol=ATOL, rtol=0)


def test_clone_frozen_shares_nothing_mutable():
    policy = make_policy()
    ref = policy.clone_frozen()
    assert not ref.training and all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in policy.parameters())
    ids = torch.tensor([[1, 4, 5]])
    before, _ = ref(ids)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    after, _ = ref(ids)
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    policy_ptrs = {p.data_ptr() for p in policy.parameters()}
    assert policy_ptrs.isdisjoint(p.data_ptr() for p in ref.parameters())


def test_for_task_sizes_policy_from_task():
    from text_env.tasks import reverse_task

    task = reverse_task()
    policy = TransformerPolicy.for_task(task, use_action_mask=True, seed=0, n_layer=1, n_embd=32)
    needed = 1 + task.max_prompt_tokens + task.max_new_tokens
    assert policy.config.vocab_size == task.tokenizer.vocab_size
    assert policy.config.max_seq_len >= needed
    assert torch.equal(policy.action_mask, torch.from_numpy(task.action_mask).bool())
    again = TransformerPolicy.for_task(task, use_action_mask=True, seed=0, n_layer=1, n_embd=32)
    torch.testing.assert_close(policy.state_dict(), again.state_dict(), atol=0, rtol=0)
    assert TransformerPolicy.for_task(task, n_layer=1, n_embd=32).action_mask is None
    with pytest.raises(ValueError, match="too short"):
        TransformerPolicy.for_task(task, max_seq_len=needed - 1)


def test_both_policies_speak_the_protocol_and_share_the_base():
    from agents.policies import LMPolicy, LMPolicyBase

    policy = make_policy()
    assert isinstance(policy, LMPolicy) and isinstance(policy, LMPolicyBase)
    assert not isinstance(torch.nn.Linear(2, 2), LMPolicy)
    if HAVE_TRANSFORMERS:
        hf = make_hf_policy()
        assert isinstance(hf, LMPolicy) and isinstance(hf, LMPolicyBase)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_state_shapes_are_those_of_the_built_model(bias, masked):
    config = TransformerConfig(vocab_size=V, n_layer=3, n_head=2, n_embd=16, max_seq_len=9, bias=bias)
    policy = TransformerPolicy(TransformerLM(config), TOK, action_mask=np.ones(V) if masked else None)
    real = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    assert TransformerPolicy.state_shapes(config, masked) == real


def test_the_policy_modules_docstring_examples_run():
    import doctest

    import agents.policies
    import agents.policies.base
    import agents.policies.cache
    import agents.policies.model
    import agents.policies.transformer

    for module in (
        agents.policies,
        agents.policies.base,
        agents.policies.cache,
        agents.policies.model,
        agents.policies.transformer,
    ):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_config_validation_and_round_trip():
    config = TransformerConfig(vocab_size=10, n_layer=3)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        TransformerConfig(vocab_size=0)
    with pytest.raises(ValueError, match=r"unknown TransformerConfig fields \['n_layers'\]"):
        TransformerConfig.from_dict({"vocab_size": 10, "n_layers": 2})
    with pytest.raises(ValueError, match="temperature"):
        make_policy(temperature=0.0)
    with pytest.raises(ValueError, match=r"action_mask must have shape \(12,\)"):
        make_policy(action_mask=np.ones(5))


# ---- persistence -------------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_logits(tmp_path):
    mask = np.ones(V, dtype=np.int8)
    mask[0] = 0
    policy = make_policy(temperature=0.5, action_mask=mask)
    policy.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    loaded = load_policy(tmp_path / "p").eval()
    assert isinstance(loaded, TransformerPolicy)
    assert loaded.temperature == 0.5 and loaded.tokenizer == TOK and loaded.config == policy.config
    assert torch.equal(loaded.action_mask, policy.action_mask)
    ids, attn = left_pad(PROMPTS)
    with torch.inference_mode():
        a, va = policy(ids, attn)
        b, vb = loaded(ids, attn)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(va, vb, atol=0, rtol=0)


def test_corrupt_files_raise_value_error_naming_the_file(tmp_path):
    make_policy().save(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        TransformerPolicy.load(tmp_path)
    weights.write_bytes(data)
    config = tmp_path / "config.json"
    config.write_text(config.read_text()[:20])
    with pytest.raises(ValueError, match=r"config\.json"):
        TransformerPolicy.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing config\.json"):
        TransformerPolicy.load(tmp_path / "nowhere")


def test_load_rejects_weights_that_do_not_match_the_config(tmp_path):
    make_policy().save(tmp_path / "p")
    other = TransformerPolicy(TransformerLM(TransformerConfig(vocab_size=V, n_layer=1, n_embd=32)), TOK)
    other.save(tmp_path / "other")
    weights = (tmp_path / "other" / "model.safetensors").read_bytes()
    (tmp_path / "p" / "model.safetensors").write_bytes(weights)
    with pytest.raises(ValueError, match=r"model\.safetensors.*manifest"):  # the manifest sees the swap
        TransformerPolicy.load(tmp_path / "p")
    write_manifest(tmp_path / "p", "policy", 2)  # and past a rewritten manifest, the header check does
    with pytest.raises(ValueError, match=r"model\.safetensors.*does not match"):
        TransformerPolicy.load(tmp_path / "p")


# ---- Hugging Face adapter ---------------------------------------------------------------------------------
try:
    import transformers  # noqa: F401

    HAVE_TRANSFORMERS = True
except ImportError:
    HAVE_TRANSFORMERS = False

needs_transformers = pytest.mark.skipif(
    not HAVE_TRANSFORMERS, reason="transformers is not installed (optional extra: pip install text-env[hf])"
)


def make_hf_policy(**kwargs):
    """A tiny random GPT-2 with a character-level fast tokenizer built in memory (no files, no hub)."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from agents.policies.hf import HFPolicy

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *"abcdefgh"])}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    rust.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=rust, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=len(vocab), n_positions=32, bos_token_id=1, eos_token_id=2
    )
    return HFPolicy(GPT2LMHeadModel(config).eval(), hf_tok, **kwargs).eval()


@needs_transformers
@torch.inference_mode()
def test_hf_policy_cached_equals_uncached_and_left_padding_is_exact():
    policy = make_hf_policy()
    assert policy.tokenizer.encode("abc") == [4, 5, 6] and policy.vocab_size == V
    ids, attn = left_pad(PROMPTS)
    full, full_values = policy(ids, attn)
    assert full.shape == (4, 5, V) and full_values.shape == (4, 5) and full.dtype == torch.float32
    for i, row in enumerate(PROMPTS):
        alone, _ = policy(torch.tensor([row]))
        torch.testing.assert_close(full[i, -len(row) :], alone[0], atol=ATOL, rtol=0)
    cache = policy.new_cache(batch_size=4, max_len=16)
    logits, values = policy.prefill(ids, attn, cache)
    torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
    torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0)
    seq, seq_mask = ids, attn
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        tokens, _ = policy.sample(logits, gen)
        logits, values = policy.decode_step(tokens, cache)
        seq = torch.cat([seq, tokens[:, None]], 1)
        seq_mask = torch.cat([seq_mask, torch.ones(4, 1, dtype=torch.bool)], 1)
        full, full_values = policy(seq, seq_mask)
        torch.testing.assert_close(logits, full[:, -1], atol=ATOL, rtol=0)
        torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0)
    # reset one slot: it restarts from position 0 like a fresh sequence
    cache.reset_slots(torch.tensor([False, False, True, False]))
    logits, _ = policy.decode_step(torch.tensor([4, 4, 1, 4]), cache)
    fresh, _ = policy(torch.tensor([[1]]))
    torch.testing.assert_close(logits[2], fresh[0, -1], atol=ATOL, rtol=0)


@needs_transformers
@torch.inference_mode()
def test_hf_cache_select_drops_slots_and_the_kept_ones_continue_exactly():
    _check_select_keeps_the_chosen_slots_exact(make_hf_policy())


@needs_transformers
@torch.inference_mode()
def test_hf_forward_actions_equals_the_full_forward_at_the_action_columns():
    _check_forward_actions_equals_the_full_forward(make_hf_policy())


@needs_transformers
def test_hf_policy_save_load_round_trip(tmp_path):
    mask = torch.ones(V, dtype=torch.bool)
    mask[0] = False
    policy = make_hf_policy(temperature=0.9, action_mask=mask)
    policy.save(tmp_path)
    loaded = load_policy(tmp_path).eval()
    assert type(loaded).__name__ == "HFPolicy" and loaded.temperature == 0.9
    assert torch.equal(loaded.action_mask, mask)
    assert loaded.tokenizer.encode("hag") == [11, 4, 10]
    ids, attn = left_pad(PROMPTS)
    with torch.inference_mode():
        a, va = policy(ids, attn)
        b, vb = loaded(ids, attn)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(va, vb, atol=0, rtol=0)
    head = tmp_path / "value_head.safetensors"
    head_bytes = head.read_bytes()
    head.write_bytes(head_bytes[:10])
    with pytest.raises(ValueError, match=r"value_head\.safetensors"):
        load_policy(tmp_path)
    write_manifest(tmp_path, "policy", 2)  # past a rewritten manifest, the header check names it too
    with pytest.raises(ValueError, match=r"value_head\.safetensors.*truncated"):
        load_policy(tmp_path)
    head.write_bytes(head_bytes)
    write_manifest(tmp_path, "policy", 2)
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model/model\.safetensors"):
        load_policy(tmp_path)
    write_manifest(tmp_path, "policy", 2)
    with pytest.raises(ValueError, match=r"model/model\.safetensors.*truncated"):
        load_policy(tmp_path)


def test_hf_policy_without_transformers_names_the_pip_command(monkeypatch):
    from agents.policies.hf import HFPolicy

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(ImportError, match=r"pip install text-env\[hf\]"):
        HFPolicy(torch.nn.Linear(2, 2), TOK)
