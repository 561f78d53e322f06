"""The shipped pretrained policy ``english-small``: it loads, it speaks English (perplexity on unseen English
far below a uniform guess and below the same words shuffled; its samples are made of common English words,
unlike an untrained model's), missing files name the rebuild command, and its tokenizer is the tasks'."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import agents.pretrained as pretrained
from agents.policies import TransformerConfig, TransformerLM, TransformerPolicy
from agents.pretrained import available_pretrained, load_english_policy, load_pretrained, pretrained_dir

pytestmark = pytest.mark.skipif(
    "english-small" not in available_pretrained(),
    reason="agents/pretrained/english-small is not built (python examples/pretrain_english.py)",
)

# written for this test (not in any training corpus): news- and review-like English
HELDOUT = [
    "The government said on Tuesday that it would raise taxes on large companies next year.",
    "The film is a warm and funny portrait of a family, and the cast is excellent.",
    "Shares in the bank fell sharply after it reported a loss for the third quarter.",
    "It is a slow, confused story that never finds its way, despite a fine performance.",
    "The minister told reporters that the new plan would create thousands of jobs.",
    "Fans of the first film will enjoy the music, but the plot is thin and predictable.",
]
COMMON = set(
    [
        "the",
        "a",
        "an",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "it",
        "that",
        "for",
        "on",
        "with",
        "as",
        "by",
        "at",
        "from",
        "his",
        "her",
        "he",
        "she",
        "they",
        "this",
        "be",
        "are",
        "not",
        "but",
        "have",
        "has",
        "had",
        "which",
        "its",
        "their",
        "film",
        "one",
        "more",
        "than",
        "all",
        "who",
        "will",
        "would",
        "been",
        "about",
        "after",
        "new",
        "said",
        "year",
        "best",
        "also",
        "so",
        "like",
        "most",
        "can",
        "could",
        "or",
        "if",
        "into",
        "only",
        "story",
        "what",
        "there",
        "up",
        "out",
        "no",
        "just",
        "when",
        "them",
        "time",
    ]
)


def _perplexity(policy: TransformerPolicy, texts: list[str]) -> float:
    tok = policy.tokenizer
    nll, n = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tok.bos_id, *tok.encode(text), tok.eos_id]])
            logits, _ = policy(ids)
            logp = policy.log_probs(logits[:, :-1]).gather(-1, ids[:, 1:, None])
            nll -= float(logp.sum())
            n += ids.shape[1] - 1
    return math.exp(nll / n)


def _common_word_fraction(policy: TransformerPolicy, prompts: list[str], seed: int = 0) -> float:
    """Share of the sampled words (40 tokens after each prompt, T=1) that are among ~90 common English
    words: about 0.3-0.5 in English prose, a few percent in random word pieces."""
    tok = policy.tokenizer
    gen = torch.Generator().manual_seed(seed)
    words: list[str] = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([[tok.bos_id, *tok.encode(prompt)]])
            cache = policy.new_cache(1, ids.shape[1] + 40)
            logits, _ = policy.prefill(ids, None, cache)
            out = []
            for _ in range(40):
                token, _ = policy.sample(logits, gen)
                if int(token) == tok.eos_id:
                    break
                out.append(int(token))
                logits, _ = policy.decode_step(token, cache)
            words += re.findall(r"[a-z]+", tok.decode(out).lower())
    return sum(w in COMMON for w in words) / max(len(words), 1)


@pytest.fixture(scope="module")
def policy() -> TransformerPolicy:
    return load_english_policy()


def test_the_shipped_checkpoint_loads(policy: TransformerPolicy) -> None:
    c = policy.config
    assert isinstance(policy, TransformerPolicy) and not policy.training
    assert (c.vocab_size, c.n_layer, c.n_embd, c.max_seq_len) == (8192, 4, 128, 192)
    assert policy.tokenizer.vocab_size == 8192
    report = pretrained.pretraining_report()
    assert report["result"]["val_ppl_english"] < 8192 / 10
    # a fresh copy each call: training one leaves the next load untouched
    again = load_pretrained("english-small")
    with torch.no_grad():
        again.model.wte.weight.zero_()
    assert float(load_english_policy().model.wte.weight.detach().abs().sum()) > 0


def test_perplexity_on_unseen_english_is_far_below_uniform(policy: TransformerPolicy) -> None:
    ppl = _perplexity(policy, HELDOUT)
    assert ppl < 8192 / 20  # uniform guessing over the vocabulary scores 8192
    rng = torch.Generator().manual_seed(0)
    shuffled = [
        " ".join(w[i] for i in torch.randperm(len(w), generator=rng)) for w in map(str.split, HELDOUT)
    ]
    assert _perplexity(policy, shuffled) > 2 * ppl  # it knows word order, not just word frequencies


def test_samples_are_made_of_english_words(policy: TransformerPolicy) -> None:
    prompts = ["The film", "Shares in", "The government said", "This is a"]
    assert _common_word_fraction(policy, prompts) > 0.2
    config = TransformerConfig(**{**policy.config.to_dict()})
    torch.manual_seed(0)
    untrained = TransformerPolicy(TransformerLM(config), policy.tokenizer).eval()
    assert _common_word_fraction(untrained, prompts) < 0.1  # the test can fail


def test_the_shipped_checkpoint_carries_a_verified_manifest_over_the_original_weights() -> None:
    from text_env.persistence import verify_manifest

    manifest = verify_manifest(pretrained_dir(), kind="policy", max_format_version=2)
    assert manifest["format_version"] == 2
    assert sorted(manifest["files"]) == [
        "config.json",
        "model.safetensors",
        "pretraining.json",
        "tokenizer.json",
    ]
    # the weights and tokenizer trained by examples/pretrain_english.py, untouched by the move to format 2
    assert manifest["files"]["model.safetensors"]["sha256"] == (
        "9f697cc9143fdbf8c9be34d560437f122f429d3c4d5cb8958e5f0c03a098f1f6"
    )
    assert manifest["files"]["tokenizer.json"]["sha256"] == (
        "a567aaf21295eb266b6405497efa9a025cb5af74bbd09e081000331349a20926"
    )


def test_a_damaged_shipped_file_names_it_and_the_rebuild_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(pretrained_dir(), tmp_path / "english-small")
    monkeypatch.setattr(pretrained, "PRETRAINED_ROOT", tmp_path)
    weights = tmp_path / "english-small" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors.*python examples/pretrain_english\.py"):
        load_english_policy()


def test_missing_files_name_the_rebuild_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "PRETRAINED_ROOT", tmp_path)
    (tmp_path / "english-small").mkdir()
    (tmp_path / "english-small" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*python examples/pretrain_english\.py"):
        load_english_policy()
    assert available_pretrained() == []
    with pytest.raises(ValueError, match="unknown pretrained policy 'gpt-5'"):
        pretrained_dir("gpt-5")


@pytest.mark.expensive
def test_its_tokenizer_is_the_language_tasks_tokenizer(policy: TransformerPolicy) -> None:
    """The shipped tokenizer.json equals the shared BPE the tasks build (trained here in about 15 s)."""
    from text_env.data.english import default_tokenizer
    from text_env.data.sources import MissingDataError

    try:
        tok = default_tokenizer()
    except MissingDataError as e:
        pytest.skip(str(e))
    assert tok.to_dict() == policy.tokenizer.to_dict()
