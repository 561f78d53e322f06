"""Tiny Hugging Face models and tokenizers built in memory (no files, no hub) for the HF policy tests."""

from __future__ import annotations

import torch

CHARS = "abcdefghimnorstuy =|"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<s>' + m['role'] + '|' + m['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant|' }}{% endif %}"
)


def char_tokenizer(bos: bool = False, pad_is_eos: bool = False):
    """A character-level fast tokenizer: ``<unk>`` 0, ``<s>`` 1 (BOS), ``</s>`` 2 (EOS), ``<pad>`` 3,
    ``<end>`` 4 (a second stop token), then :data:`CHARS`. ``bos=True``: ``tokenizer(text)`` prepends BOS."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "<end>", *CHARS])}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    rust.decoder = decoders.Fuse()
    rust.add_special_tokens(["<unk>", "<s>", "</s>", "<pad>", "<end>"])  # matched whole inside a text
    if bos:
        rust.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>" if pad_is_eos else "<pad>", additional_special_tokens=["<end>"],
    )  # fmt: skip
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 5 + len(CHARS), seed: int = 0, eos=(2, 4)):
    """A 2-layer Llama with grouped-query attention (4 query heads, 2 key/value heads), random weights."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
        eos_token_id=list(eos), pad_token_id=3, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=list(eos), bos_token_id=1, pad_token_id=3)
    return model


def tiny_hf_policy(seed: int = 0, **kwargs):
    from agents.policies.hf import HFPolicy

    tok_kwargs = {k: kwargs.pop(k) for k in ("bos", "pad_is_eos") if k in kwargs}
    return HFPolicy(tiny_llama(seed=seed), char_tokenizer(**tok_kwargs), **kwargs).eval()
