"""Issue 16, item 4: correct scoring with any tokenizer — exact_match on normalised text, tokenizers that lack
characters of the data refused, and pad/bos/unk never sampled (action_space, action_masks, our policies)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from text_env import TextGenEnv, TextGenVectorEnv
from text_env.rewards import make_composite
from text_env.rewards.base import RewardBatch
from text_env.rewards.match import normalize_answer
from text_env.tasks.base import Task
from text_env.tokenizers import BPETokenizer, CharTokenizer, never_emitted_ids


def _em(completion_ids, reference: str | tuple[str, ...], tok) -> float:
    refs = (reference,) if isinstance(reference, str) else reference
    ref_ids = tok.encode(refs[0])
    batch = RewardBatch(
        tokenizer=tok,
        completion_ids=np.array([completion_ids], dtype=np.int64).reshape(1, -1),
        completion_lengths=np.array([len(completion_ids)]),
        prompts=["q"],
        references=[refs],
        reference_ids=np.array([ref_ids]),
        reference_lengths=np.array([len(ref_ids)]),
    )
    total, _ = make_composite("exact_match").score(batch, "state")
    return float(total[0])


def test_exact_match_compares_text_not_token_ids() -> None:
    """A BPE tokenizer spells "abc" as one token; the gold text typed one character per token is right."""
    tok = BPETokenizer.train(["abc abc abc cab cab"] * 50, vocab_size=300, min_frequency=1)
    whole = tok.encode("abc")
    chars = [tok.encode(c)[0] for c in "abc"]
    assert len(whole) == 1 and whole != chars  # two spellings of one text
    assert tok.decode(chars) == "abc"
    assert _em(chars, "abc", tok) == 1.0  # token ids differ: 0 before
    assert _em(whole, "abc", tok) == 1.0
    assert _em([tok.encode(c)[0] for c in "acb"], "abc", tok) == 0.0


def test_exact_match_normalises_whitespace_and_keeps_case() -> None:
    tok = CharTokenizer(list("abcABC "))
    assert normalize_answer("  a \n\t b  ") == "a b"
    assert _em(tok.encode(" abc "), "abc", tok) == 1.0  # surrounding whitespace: 0 before (ids differ)
    assert _em(tok.encode("a  b"), "a b", tok) == 1.0  # inner runs collapse
    assert _em(tok.encode("abc"), " abc", tok) == 1.0  # the reference is normalised too
    assert _em(tok.encode("ABC"), "abc", tok) == 0.0  # case is kept
    assert _em(tok.encode("ab"), "abc", tok) == 0.0
    assert _em(tok.encode(" cab"), ("abc", "cab"), tok) == 1.0  # every reference counts


def test_exact_match_fast_path_equals_the_text_comparison() -> None:
    """The ids shortcut (character tokenizer) gives what comparing decoded texts gives, on random rows."""
    tok = CharTokenizer(list("ab "))
    rng = np.random.default_rng(0)
    ids = [i for i in range(tok.vocab_size) if i not in (tok.eos_id,)]
    for _ in range(300):
        c = rng.choice(ids, size=rng.integers(0, 5)).tolist()
        ref = "".join(rng.choice(list("ab "), size=rng.integers(1, 4)))
        want = float(normalize_answer(tok.decode(c)) == normalize_answer(ref))
        assert _em(c, ref, tok) == want, (c, tok.decode(c), ref)


def test_a_tokenizer_lacking_characters_of_the_references_is_refused() -> None:
    tok = CharTokenizer(list("abc= q0123456789"))
    rows = [{"prompt": "q=", "reference": r} for r in ["Abc", "abc", "ébc"]]
    with pytest.raises(ValueError, match=r"lacks characters of the .* references: \['A', 'é'\]") as e:
        Task.from_examples(rows * 2, tokenizer=tok)
    assert "allow_unk=True" in str(e.value)
    # opted in: it builds, and a completion in <unk>s is no match for "Abc" (it was 1.0 as ids)
    task = Task.from_examples(rows * 2, tokenizer=tok, allow_unk=True)
    assert task.allow_unk
    unk_bc = [tok.unk_id, *tok.encode("bc")]
    assert _em(unk_bc, "Abc", tok) == 0.0
    # any tokenizer with an <unk> (byte-level BPE has none) is checked as its splits are encoded
    with pytest.raises(ValueError, match=r"lacks characters of the .* references: \['A', 'é'\]"):
        TextGenEnv(Task.from_examples(rows * 2, tokenizer=OtherTokenizer(tok)))


class OtherTokenizer:
    """A tokenizer that is not a CharTokenizer but has an ``unk_id`` (the generic check)."""

    def __init__(self, inner: CharTokenizer) -> None:
        self._inner = inner
        self.vocab_size = inner.vocab_size
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = inner.pad_id, inner.bos_id, inner.eos_id, 3

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)

    def decode(self, ids) -> str:
        return self._inner.decode(ids)

    def decode_batch(self, ids, lengths) -> list[str]:
        return self._inner.decode_batch(ids, lengths)

    def save(self, path) -> None:
        raise NotImplementedError


def test_sampling_never_emits_pad_bos_or_unk() -> None:
    env = gym.make("TextEnv/Reverse-v0")
    tok = env.unwrapped.tokenizer
    never = {tok.pad_id, tok.bos_id, tok.unk_id}
    assert set(never_emitted_ids(tok)) == never
    env.action_space.seed(0)
    drawn = {int(env.action_space.sample()) for _ in range(3000)}
    assert not drawn & never and tok.eos_id in drawn
    assert env.action_space == gym.spaces.Discrete(tok.vocab_size)  # a Discrete for every other purpose
    mask = env.unwrapped.action_masks()
    assert not mask[list(never)].any() and mask[tok.eos_id]
    envs = TextGenVectorEnv("reverse", num_envs=4)
    envs.action_space.seed(0)
    batch = np.stack([envs.action_space.sample() for _ in range(500)])
    assert not np.isin(batch, list(never)).any()
    assert not envs.action_masks()[:, list(never)].any()


def test_our_policies_never_sample_pad_bos_or_unk() -> None:
    from agents.policies.transformer import TransformerPolicy

    task = TextGenEnv("reverse", length=4).task
    policy = TransformerPolicy.for_task(task, seed=0)
    tok = task.tokenizer
    never = [tok.pad_id, tok.bos_id, tok.unk_id]
    logits = torch.zeros(4096, tok.vocab_size)
    logits[:, never] = 5.0  # even where the model favours them
    tokens, logp = policy.sample(logits, torch.Generator().manual_seed(0))
    assert not np.isin(tokens.numpy(), never).any()
    assert torch.isfinite(logp).all()
    greedy, _ = policy.sample(logits, deterministic=True)
    assert not np.isin(greedy.numpy(), never).any()
    # and the probability the learners train is the same distribution: none on those ids
    assert torch.all(policy.log_probs(logits)[:, never].exp() == 0)
