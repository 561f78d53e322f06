"""Tokenizers: hand-checked char ids, BPE trained on a small corpus, the HF adapter, save/load round trips,
and corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from text_env.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer, Tokenizer, load_tokenizer

CORPUS = ["the cat sat on the mat", "the dog ran to the park", "a cat and a dog met"] * 30
TEXTS = ["the cat", "the dog sat on a mat", "zebra!", "héllo wörld ✓", "  two  spaces ", ""]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=300)


# ---- CharTokenizer -----------------------------------------------------------------------------------------
def test_char_tokenizer_ids_by_hand() -> None:
    tok = CharTokenizer.from_texts(["cab", "bad"])
    assert tok.alphabet == ["a", "b", "c", "d"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 8
    assert tok.encode("cab") == [6, 4, 5]
    assert tok.decode([1, 6, 4, 5, 2, 0, 0]) == "cab"  # special tokens decode to nothing
    assert tok.encode("cz") == [6, 3]  # unknown character → <unk>
    assert tok.decode([6, 3]) == "c\ufffd"
    assert tok.decode_batch(np.array([[6, 4, 0], [7, 7, 7]]), np.array([2, 3])) == ["ca", "ddd"]
    assert isinstance(tok, Tokenizer)


@pytest.mark.parametrize("text", ["", "a", "abcabc", "dad bad cab"])
def test_char_round_trip(text: str) -> None:
    tok = CharTokenizer.from_texts(["abcd "])
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"characters \['z'\] are not in the tokenizer's alphabet"):
        CharTokenizer.from_texts(["abc"], strict=True).encode("abz")
    with pytest.raises(ValueError, match=r"token id 99 is outside the vocabulary \[0, 7\)"):
        CharTokenizer.from_texts(["abc"]).decode([4, 99])
    with pytest.raises(ValueError, match="duplicate characters"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(TypeError, match="encode expects str, got int"):
        CharTokenizer.from_texts(["abc"]).encode(5)


# ---- BPETokenizer ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", TEXTS)
def test_bpe_round_trip(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text  # byte-level: even unseen characters survive


def test_bpe_learns_merges_and_reserves_special_ids(bpe: BPETokenizer) -> None:
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id, bpe.unk_id) == (0, 1, 2, 3)
    assert 256 + 4 < bpe.vocab_size <= 300  # 256 byte tokens + 4 specials + merges
    assert len(bpe.encode("the cat sat on the mat")) < len("the cat sat on the mat") // 2
    assert bpe.decode([bpe.bos_id, *bpe.encode("the cat"), bpe.eos_id]) == "the cat"
    assert isinstance(bpe, Tokenizer)
    ids = bpe.encode_batch(["the cat", "a dog"])
    arr = np.zeros((2, 8), dtype=np.int64)
    for i, row in enumerate(ids):
        arr[i, : len(row)] = row
    assert bpe.decode_batch(arr, np.array([len(r) for r in ids])) == ["the cat", "a dog"]


def test_bpe_training_is_deterministic(bpe: BPETokenizer) -> None:
    again = BPETokenizer.train(CORPUS, vocab_size=300)
    assert [again.encode(t) for t in TEXTS] == [bpe.encode(t) for t in TEXTS]


def test_bpe_decode_rejects_out_of_range_ids(bpe: BPETokenizer) -> None:
    with pytest.raises(ValueError, match=rf"token id {bpe.vocab_size} is outside"):
        bpe.decode([5, bpe.vocab_size])


# ---- save / load -------------------------------------------------------------------------------------------
def test_char_save_load(tmp_path: Path) -> None:
    tok = CharTokenizer.from_texts(["hello world"], strict=True)
    tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(loaded, CharTokenizer) and loaded == tok and loaded.strict
    assert loaded.encode("hello") == tok.encode("hello")


def test_bpe_save_load(tmp_path: Path, bpe: BPETokenizer) -> None:
    bpe.save(tmp_path / "bpe.json")
    loaded = load_tokenizer(tmp_path / "bpe.json")
    assert isinstance(loaded, BPETokenizer)
    assert loaded.vocab_size == bpe.vocab_size
    assert [loaded.encode(t) for t in TEXTS] == [bpe.encode(t) for t in TEXTS]
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (bpe.pad_id, bpe.bos_id, bpe.eos_id)


@pytest.mark.expensive  # importing transformers takes ~2 s
def test_hf_adapter_round_trip_and_save_load(tmp_path: Path, bpe: BPETokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    tok = HFTokenizer(hf)
    assert tok.pad_id == tok.eos_id == bpe.eos_id  # no pad token: GPT-2 style, EOS pads
    assert tok.bos_id == bpe.bos_id
    assert tok.decode(tok.encode("the dog ran")) == "the dog ran"
    tok.save(tmp_path / "hf.json")
    assert json.loads((tmp_path / "hf.json").read_text()) == {"type": "hf", "directory": "hf.hf"}
    loaded = load_tokenizer(tmp_path / "hf.json")  # reads local files only (HF_HUB_OFFLINE in conftest)
    assert isinstance(loaded, HFTokenizer)
    assert loaded.encode("the dog ran") == tok.encode("the dog ran")
    assert loaded.eos_id == tok.eos_id and loaded.vocab_size == tok.vocab_size


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "JSONDecodeError"),
        ('{"alphabet": "abc"}', "no 'type' field"),
        ('{"type": "wordpiece"}', "unknown tokenizer type 'wordpiece'"),
        ('{"type": "bpe", "tokenizer": {"model": 1}}', "cannot load tokenizer"),
        ('{"type": "char", "alphabet": "aba"}', "duplicate characters"),
        # issue 13, B: refused rather than coerced (bool("false") is True; list(123) is not an alphabet)
        ('{"type": "char", "alphabet": "abc", "strict": "false"}', r"field 'strict' must be true or false"),
        ('{"type": "char", "alphabet": "abc", "strict": 0}', r"field 'strict' must be true or false"),
        ('{"type": "char", "alphabet": ["a", "b"]}', r"field 'alphabet' must be a string"),
        ('{"type": "bpe", "tokenizer": "x"}', r"field 'tokenizer' must be the BPE tokenizer's JSON object"),
        ('{"type": "hf", "directory": "/etc"}', r"hf tokenizer directory '/etc' .* must be a path inside"),
        ('{"type": "hf", "directory": "../x"}', r"hf tokenizer directory '../x' .* must be a path inside"),
    ],
)
def test_corrupt_tokenizer_file_is_a_value_error_naming_the_file(
    tmp_path: Path, content: str, match: str
) -> None:
    path = tmp_path / "broken_tok.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as err:
        load_tokenizer(path)
    assert "broken_tok.json" in str(err.value)


def test_missing_tokenizer_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nope.json")


# ---- the compact split encoding (issue 13, B) ------------------------------------------------------------
@pytest.mark.parametrize("strict", [False, True])
def test_char_encode_flat_equals_encode_of_every_text(strict: bool) -> None:
    texts = ["héllo wörld ✓", "", "a", "\U0001f600 emoji", "tab\there", "x" * 5000, "ü\u2028line"]
    tok = CharTokenizer.from_texts(texts, strict=strict)
    ids, lengths = tok.encode_flat(texts * 3)
    assert ids.dtype == np.int32 and lengths.dtype == np.int64
    assert ids.tolist() == [i for t in texts * 3 for i in tok.encode(t)]
    assert lengths.tolist() == [len(tok.encode(t)) for t in texts * 3]
    unknown = ["zz", "héllo ∞"]
    if strict:
        with pytest.raises(ValueError, match=r"characters \['z'\] are not in the tokenizer's alphabet"):
            tok.encode_flat(unknown)
    else:
        assert tok.encode_flat(unknown)[0].tolist() == [i for t in unknown for i in tok.encode(t)]


def test_encode_flat_of_any_tokenizer_equals_its_encode(bpe: BPETokenizer) -> None:
    from text_env.tokenizers import encode_flat

    class PlainTokenizer:  # only the protocol: no encode_batch, no encode_flat
        vocab_size, pad_id, bos_id, eos_id = 300, 0, 1, 2

        def encode(self, text: str) -> list[int]:
            return [3 + ord(c) % 200 for c in text]

    for tok in (bpe, PlainTokenizer()):
        ids, lengths = encode_flat(tok, TEXTS * 2000)  # several chunks
        assert ids.tolist() == [i for t in TEXTS * 2000 for i in tok.encode(t)]
        assert lengths.tolist() == [len(tok.encode(t)) for t in TEXTS * 2000]
