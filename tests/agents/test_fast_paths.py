"""Tests for the speed paths measured by benchmarks/: the CPU decode step that attends over the whole
preallocated KV cache (it must give exactly what the uncached forward gives, stale cache columns included),
and the collector's torch thread policy (set during a rollout, restored after)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.policies.model import _whole_cache_decode
from agents.policies.transformer import TransformerConfig, TransformerLM, TransformerPolicy
from agents.rollout import RolloutCollector, auto_num_threads, make_rollout_env, torch_threads
from text_env.tokenizers import CharTokenizer

ATOL = 1e-5
TOK = CharTokenizer("abcdefgh")  # ids: pad 0, bos 1, eos 2, unk 3, 'a'..'h' 4..11
V = TOK.vocab_size
B = 16  # 16 slots x 4 heads = 64 (slot, head) matrices: enough for the whole-cache path


def make_policy() -> TransformerPolicy:
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=V, n_layer=2, n_head=4, n_embd=32, max_seq_len=32)
    return TransformerPolicy(TransformerLM(config), TOK).eval()


def prompts(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """B left-padded prompts ``[BOS] + 1..6 letters``."""
    rng = np.random.default_rng(seed)
    rows = [[1, *rng.integers(4, V, size=int(rng.integers(1, 7))).tolist()] for _ in range(B)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return ids, mask, rows


def no_sdpa() -> Any:
    """Within the block, a call of SDPA fails the test."""
    return mock.patch.object(F, "scaled_dot_product_attention", side_effect=AssertionError("SDPA was used"))


def test_the_whole_cache_path_is_chosen_only_where_it_pays():
    cpu = torch.device("cpu")
    assert _whole_cache_decode(cpu, matrices=64, used=8, max_len=32)
    assert not _whole_cache_decode(cpu, matrices=64, used=7, max_len=32)  # under a quarter used
    assert not _whole_cache_decode(cpu, matrices=8, used=30, max_len=32)  # few matrices: slicing is cheap
    assert not _whole_cache_decode(torch.device("meta"), matrices=64, used=30, max_len=32)  # CPU only


@torch.inference_mode()
def test_the_model_hands_the_attention_an_explicit_whole_cache_mask():
    """The path is chosen by the mask's type (WholeCacheDecode), not by a float dtype of a plain tensor."""
    from agents.policies.model import WholeCacheDecode

    model = make_policy().model
    ids, mask, _ = prompts()
    tight = model.new_cache(B, max_len=ids.shape[1] + 2)
    model.prefill(ids, mask, tight)
    _, attn = model._positions_and_mask(torch.full((B, 1), 5), None, tight)
    assert isinstance(attn, WholeCacheDecode) and attn.bias.shape == (B, 1, 1, tight.max_len)
    assert attn.bias.dtype == torch.float32 and bool((attn.bias[:, 0, 0] == 0).eq(tight.key_mask).all())
    roomy = model.new_cache(B, max_len=8 * ids.shape[1])
    model.prefill(ids, mask, roomy)
    _, attn = model._positions_and_mask(torch.full((B, 1), 5), None, roomy)
    assert isinstance(attn, torch.Tensor) and attn.dtype == torch.bool  # SDPA's boolean mask
    # a float tensor is SDPA's additive mask like any other, never taken for the whole-cache path
    x = torch.randn(B, 1, 32)
    float_mask = torch.zeros(B, 1, 1, roomy.pos + 1)
    with no_sdpa(), pytest.raises(AssertionError, match="SDPA was used"):
        model.h[0].attn(x, float_mask, roomy)


@torch.inference_mode()
def test_whole_cache_decoding_equals_the_uncached_forward():
    policy = make_policy()
    ids, mask, rows = prompts()
    cache = policy.new_cache(B, max_len=ids.shape[1] + 6)
    policy.prefill(ids, mask, cache)
    gen = torch.Generator().manual_seed(1)
    seq, seq_mask = ids, mask
    for step in range(6):
        tokens = torch.randint(4, V, (B,), generator=gen)
        with no_sdpa():  # the path under test is the plain-matmul one
            logits, values = policy.decode_step(tokens, cache)
        seq = torch.cat([seq, tokens[:, None]], dim=1)
        seq_mask = torch.cat([seq_mask, torch.ones(B, 1, dtype=torch.bool)], dim=1)
        full_logits, full_values = policy(seq, seq_mask)
        torch.testing.assert_close(logits, full_logits[:, -1], atol=ATOL, rtol=0, msg=f"step {step}")
        torch.testing.assert_close(values, full_values[:, -1], atol=ATOL, rtol=0, msg=f"step {step}")
    for i in (0, B - 1):  # and a row equals its unpadded single-sequence run
        alone, _ = policy(torch.tensor([rows[i] + seq[i, ids.shape[1] :].tolist()]))
        torch.testing.assert_close(logits[i], alone[0, -1], atol=ATOL, rtol=0)


@torch.inference_mode()
def test_whole_cache_decoding_ignores_the_stale_columns_of_a_reset_slot():
    policy = make_policy()
    ids, mask, rows = prompts(seed=1)
    cache = policy.new_cache(B, max_len=ids.shape[1] + 8)
    policy.prefill(ids, mask, cache)
    policy.decode_step(torch.full((B,), 5), cache)
    reset = torch.zeros(B, dtype=torch.bool)
    reset[3] = True
    cache.reset_slots(reset)  # slot 3's cached keys stay in the buffer, masked
    continued = rows[0] + [5]
    restarted: list[int] = []
    for token in (6, 7, 8):
        with no_sdpa():
            logits, _ = policy.decode_step(torch.full((B,), token), cache)
        continued.append(token)
        restarted.append(token)
        fresh0, _ = policy(torch.tensor([continued]))
        fresh3, _ = policy(torch.tensor([restarted]))
        torch.testing.assert_close(logits[0], fresh0[0, -1], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[3], fresh3[0, -1], atol=ATOL, rtol=0)


@torch.inference_mode()
def test_whole_cache_and_sliced_decoding_agree():
    """The same decode through a tight cache (whole-cache path) and a roomy one (sliced SDPA path)."""
    policy = make_policy()
    ids, mask, _ = prompts(seed=2)
    tight = policy.new_cache(B, max_len=ids.shape[1] + 4)
    roomy = policy.new_cache(B, max_len=4 * (ids.shape[1] + 4) + 4)
    policy.prefill(ids, mask, tight)
    policy.prefill(ids, mask, roomy)
    for token in (4, 9, 11, 6):
        a, va = policy.decode_step(torch.full((B,), token), tight)
        b, vb = policy.decode_step(torch.full((B,), token), roomy)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
        torch.testing.assert_close(va, vb, atol=ATOL, rtol=0)


# ---- threads ---------------------------------------------------------------------------------------------
def test_auto_num_threads_is_one_for_small_models_on_cpu_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    small = torch.nn.Linear(128, 128)
    big = torch.nn.Linear(5000, 4001, device="meta")  # 20M parameters, no memory
    monkeypatch.setattr("agents.rollout._usable_cores", lambda: 16)
    assert auto_num_threads(small) == 1
    assert auto_num_threads(small, "cuda") is None
    assert auto_num_threads(big) is None
    monkeypatch.setattr("agents.rollout._usable_cores", lambda: 2)  # a 100M-class model on 2 cores: 1 too
    assert auto_num_threads(big) == 1 and auto_num_threads(big, "cuda") is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert auto_num_threads(small) is None  # the user's explicit choice wins


def test_torch_threads_sets_and_restores_the_count():
    previous = torch.get_num_threads()
    target = 1 if previous != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == previous
    with torch_threads(None):
        assert torch.get_num_threads() == previous


def test_collector_runs_its_rollout_at_its_thread_count_and_restores_it(tiny_reverse_task, make_policy):
    policy = make_policy(tiny_reverse_task)
    env = make_rollout_env(tiny_reverse_task, 4)
    seen: list[int] = []
    decode = policy.decode_step

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return decode(*args, **kwargs)

    policy.decode_step = spy
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        RolloutCollector(policy, env, num_threads=1).collect(seed=0)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ValueError, match="num_threads must be 'auto', None or a positive int"):
        RolloutCollector(policy, env, num_threads=0)
