"""Tokenizers: a small protocol, a character tokenizer, a locally trained BPE tokenizer, and an adapter
for any Hugging Face tokenizer.

Every tokenizer reserves three special ids that the environments rely on:

- ``pad_id``: fills the left of an observation window; never a meaningful action.
- ``bos_id``: starts every context (the env puts it before the prompt).
- ``eos_id``: the action that ends an episode (``terminated=True``).

Tokenizers are saved as one JSON file (``save(path)``) and restored with :func:`load_tokenizer`, which
dispatches on the ``"type"`` field. Nothing here unpickles anything.

Example:
    >>> tok = CharTokenizer.from_texts(["abc", "cab"])
    >>> tok.decode(tok.encode("cab"))
    'cab'
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from text_env.io import atomic_write_json as _atomic_write_json
from text_env.validate import boolean, string

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


@runtime_checkable
class Tokenizer(Protocol):
    """What the environments and agents need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def save(self, path: str | os.PathLike) -> None: ...
    # batch forms (``_TokenizerBase`` provides both from encode/decode)
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...
    def decode_batch(self, ids: np.ndarray, lengths: np.ndarray) -> list[str]: ...


class _TokenizerBase:
    """Shared helpers: batch decoding of padded id arrays, special-id handling."""

    pad_id: int
    bos_id: int
    eos_id: int

    if TYPE_CHECKING:  # what each subclass defines

        def encode(self, text: str) -> list[int]: ...
        def decode(self, ids: Iterable[int]) -> str: ...

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset({self.pad_id, self.bos_id, self.eos_id})

    def decode_batch(self, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
        """Decode row ``i`` of a padded ``(N, T)`` id array up to ``lengths[i]``."""
        return [self.decode(row[:n].tolist()) for row, n in zip(ids, lengths, strict=True)]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids concatenated, as ``(int32 ids, int64 lengths)``: the compact form a task's
        splits are stored in (no per-text Python lists kept, no padding)."""
        return encode_flat(self, texts)


ENCODE_CHUNK = 4096  # texts encoded per call when a whole split is encoded


def encode_flat(tokenizer: Any, texts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, lengths)`` of ``texts`` under any tokenizer: its own ``encode_flat`` if it has one, else its
    ``encode_batch`` (or ``encode``) a chunk at a time, so at most one chunk of id lists is alive at once.

    Example:
        >>> ids, lengths = encode_flat(CharTokenizer.from_texts(["ab", "c"]), ["ab", "c"])
        >>> ids.tolist(), lengths.tolist()
        ([4, 5, 6], [2, 1])
    """
    own = getattr(tokenizer, "encode_flat", None)
    if own is not None and getattr(own, "__func__", None) is not _TokenizerBase.encode_flat:
        return own(texts)
    batch = getattr(tokenizer, "encode_batch", None) or (lambda ts: [tokenizer.encode(t) for t in ts])
    ids: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), ENCODE_CHUNK):
        rows = batch(list(texts[start : start + ENCODE_CHUNK]))
        lengths[start : start + len(rows)] = [len(r) for r in rows]
        ids.append(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32))
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    return flat, lengths


class CharTokenizer(_TokenizerBase):
    """One token per character, over a fixed alphabet, after the four special tokens.

    Characters outside the alphabet encode to ``<unk>`` (or raise, with ``strict=True``).

    Args:
        alphabet: The characters, in id order. Duplicates are an error.
        strict: Raise ``ValueError`` on an unknown character instead of mapping it to ``<unk>``.
    """

    def __init__(self, alphabet: Sequence[str], strict: bool = False) -> None:
        alphabet = list(alphabet)
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"CharTokenizer alphabet has duplicate characters: {alphabet!r}")
        if any(len(c) != 1 for c in alphabet):
            raise ValueError("CharTokenizer alphabet entries must be single characters")
        self.alphabet = alphabet
        self.strict = strict
        self._itos = list(SPECIAL_TOKENS) + alphabet
        self._stoi = {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(alphabet)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        # decode lookup: specials decode to "" so generated text never shows them
        self._decode_table = np.array(["", "", "", "\ufffd", *alphabet], dtype=object)

    @classmethod
    def from_texts(cls, texts: Iterable[str], strict: bool = False) -> CharTokenizer:
        """Build the alphabet from every character that occurs in ``texts`` (sorted, deterministic)."""
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(sorted(chars), strict=strict)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}: {text!r}")
        if self.strict:
            bad = [c for c in text if c not in self._stoi]
            if bad:
                raise ValueError(f"characters {sorted(set(bad))!r} are not in the tokenizer's alphabet")
        return [self._stoi.get(c, self.unk_id) for c in text]

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` of every text, vectorized: one table lookup over the code points of a chunk of
        texts (the ids are the ones ``encode`` gives; a strict tokenizer raises the same error)."""
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode expects str, got {type(t).__name__}: {t!r}")
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        table = self._code_point_table()
        flat = np.empty(int(lengths.sum()), dtype=np.int32)
        pos = 0
        for start in range(0, len(texts), ENCODE_CHUNK):
            joined = "".join(texts[start : start + ENCODE_CHUNK])
            # UTF-32 gives one code point per character, as len() counts them (a lone surrogate included)
            cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            flat[pos : pos + len(cps)] = table[np.minimum(cps, len(table) - 1)]
            pos += len(cps)
        if self.strict and (flat == self.unk_id).any():
            for t in texts:  # the first text with an unknown character raises encode's own error
                self.encode(t)
        return flat, lengths

    def _code_point_table(self) -> np.ndarray:
        """Code point → id (``unk_id`` beyond the alphabet); the last entry stands for every larger code
        point."""
        table = self.__dict__.get("_cp_table")
        if table is None:
            top = max((ord(c) for c in self.alphabet), default=0) + 2
            table = np.full(top, self.unk_id, dtype=np.int32)
            for c, i in self._stoi.items():
                table[ord(c)] = i
            self.__dict__["_cp_table"] = table
        return table

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < 0 or i >= len(self._itos):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self._itos)})")
            if i >= len(SPECIAL_TOKENS):
                out.append(self._itos[i])
            elif i == self.unk_id:
                out.append("\ufffd")
        return "".join(out)

    def decode_batch(self, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
        """Decode padded rows with one table lookup per batch (the vector env's hot path)."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self._itos)):
            bad = ids[(ids < 0) | (ids >= len(self._itos))][0]
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {len(self._itos)})")
        chars = self._decode_table[ids]  # (N, T) object
        return ["".join(row[:n]) for row, n in zip(chars, lengths)]

    def token_ids(self, chars: Iterable[str]) -> list[int]:
        """Ids of the given characters (used for action masks: the tokens a task allows)."""
        return [self._stoi[c] for c in chars if c in self._stoi]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "alphabet": "".join(self.alphabet), "strict": self.strict}

    def save(self, path: str | os.PathLike) -> None:
        _atomic_write_json(path, self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.alphabet == self.alphabet

    def __hash__(self) -> int:
        return hash(tuple(self.alphabet))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer(_TokenizerBase):
    """Byte-level BPE trained locally with the Hugging Face ``tokenizers`` library.

    Example:
        >>> tok = BPETokenizer.train(["the cat sat", "the dog ran"] * 50, vocab_size=300)
        >>> tok.decode(tok.encode("the cat ran"))
        'the cat ran'
    """

    def __init__(self, hf_tokenizer: Any) -> None:
        self._tok = hf_tokenizer
        ids = [hf_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise ValueError(f"BPE tokenizer lacks the special tokens {SPECIAL_TOKENS}")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> BPETokenizer:
        """Train a byte-level BPE on ``texts``; deterministic for the same input order."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTok(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}: {text!r}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        for i in ids:
            if i < 0 or i >= self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=True)

    def decode_batch(self, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
        rows = [row[:n].tolist() for row, n in zip(ids, lengths, strict=True)]
        return self._tok.decode_batch(rows, skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bpe", "tokenizer": json.loads(self._tok.to_str())}

    def save(self, path: str | os.PathLike) -> None:
        _atomic_write_json(path, self.to_dict())

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


class HFTokenizer(_TokenizerBase):
    """Adapter for a ``transformers`` tokenizer (``PreTrainedTokenizerBase``).

    Special ids:

    - ``eos_id`` is the tokenizer's EOS; ``eos_ids`` adds every id the model stops on (a model's
      ``eos_token_id`` may be a list, in its config and its ``generation_config``): the env ends an episode on
      any of them (:attr:`stop_ids`).
    - ``pad_id`` is the tokenizer's pad token (EOS if it has none, as GPT-2-style models do), unless the chat
      template writes it inside every prompt (SmolLM2 pads with its EOS ``<|im_end|>``, which its template
      closes each turn with): then the unknown token. The env masks the observation by ``obs != pad_id``,
      so the pad must never occur inside a prompt.
    - ``bos_id`` is the tokenizer's BOS (its EOS if it has none). The env does not force it before prompts:
      :meth:`encode_prompt` gives the ids the model reads before its completion, with BOS only where the
      tokenizer adds one (the ids of ``tokenizer(text)``), or the chat template's.

    Args:
        hf_tokenizer: The ``transformers`` tokenizer.
        directory: Where it was loaded from (informational).
        chat_template: Prompts go through ``apply_chat_template([{"role": "user", "content": prompt}],
            add_generation_prompt=True)`` (instruction-tuned models expect it).
        eos_ids: Extra ids that end a completion besides the tokenizer's EOS (e.g. the model's
            ``generation_config.eos_token_id``).

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = HFTokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True), chat_template=True)
        ... # doctest: +SKIP
        >>> tok.encode_prompt("Hi")[-3:] == tok.encode("<|im_start|>assistant\\n")  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        hf_tokenizer: Any,
        directory: str | os.PathLike | None = None,
        chat_template: bool = False,
        eos_ids: Iterable[int] = (),
    ) -> None:
        self._tok = hf_tokenizer
        self.directory = None if directory is None else str(directory)
        eos = hf_tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the Hugging Face tokenizer has no eos_token_id; set one before wrapping it")
        self.eos_id = int(eos)
        extra = [eos_ids] if isinstance(eos_ids, (int, np.integer)) else list(eos_ids)
        for i in extra:
            if (
                isinstance(i, (bool, np.bool_))
                or not isinstance(i, (int, np.integer))
                or not 0 <= i < len(self)
            ):
                raise ValueError(f"eos_ids must be token ids in [0, {len(self)}), got {i!r}")
        self.eos_ids: tuple[int, ...] = tuple(sorted({self.eos_id, *(int(i) for i in extra)}))
        self.bos_id = int(hf_tokenizer.bos_token_id) if hf_tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = int(hf_tokenizer.pad_token_id) if hf_tokenizer.pad_token_id is not None else self.eos_id
        if not isinstance(chat_template, bool):
            raise ValueError(f"chat_template must be a bool, got {chat_template!r}")
        self.chat_template = chat_template
        if chat_template:
            if not getattr(hf_tokenizer, "chat_template", None):
                raise ValueError(
                    f"chat_template=True, but the tokenizer {type(hf_tokenizer).__name__} has no chat "
                    "template"
                )
            probe = self.encode_prompt("")  # the template's own tokens
            unk = getattr(hf_tokenizer, "unk_token_id", None)
            if self.pad_id in probe and unk is not None and unk not in probe and unk not in self.eos_ids:
                self.pad_id = int(unk)  # SmolLM2 pads with <|im_end|>, which its template writes
            if self.pad_id in probe:
                raise ValueError(
                    f"the chat template writes the pad id {self.pad_id} inside prompts; the env could not "
                    "tell prompt tokens from padding (give the tokenizer a pad token of its own)"
                )

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def __len__(self) -> int:
        return len(self._tok)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Every id that ends a completion (``eos_ids``)."""
        return self.eos_ids

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}: {text!r}")
        return list(self._tok.encode(text, add_special_tokens=False))

    def encode_prompt(self, text: str) -> list[int]:
        """The ids the model reads before it writes a completion of ``text``: the chat template's (with the
        generation prompt) if enabled, else those of ``tokenizer(text)`` (BOS only where the tokenizer adds
        one; an EOS it appends is dropped, since the completion follows)."""
        if not isinstance(text, str):
            raise TypeError(f"encode_prompt expects str, got {type(text).__name__}: {text!r}")
        if self.chat_template:
            out = self._tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            ids = out["input_ids"] if hasattr(out, "keys") else out
            return [int(i) for i in ids]
        ids = [int(i) for i in self._tok(text, add_special_tokens=True)["input_ids"]]
        plain = self.encode(text)
        if len(ids) > len(plain) and ids[-1] in self.eos_ids and ids[-1:] != plain[-1:]:
            ids = ids[:-1]  # an EOS the tokenizer appends (the text's own last token is kept)
        return ids

    def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode_prompt(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        """A description for fingerprints and equality (the vocabulary by its sha256; ``save`` writes the
        files themselves)."""
        import hashlib

        backend = getattr(self._tok, "backend_tokenizer", None)
        if backend is not None:
            body = backend.to_str()
        else:  # a slow tokenizer: its vocabulary stands for it
            body = json.dumps(sorted(self._tok.get_vocab().items()))
        return {
            "type": "hf",
            "class": type(self._tok).__name__,
            "sha256": hashlib.sha256(body.encode()).hexdigest(),
            "chat_template": self.chat_template,
            "template": getattr(self._tok, "chat_template", None) if self.chat_template else None,
            "eos_ids": list(self.eos_ids),
            "special": [self.pad_id, self.bos_id, self.eos_id],
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HFTokenizer) and (other is self or other.to_dict() == self.to_dict())

    def __hash__(self) -> int:
        return hash((type(self._tok).__name__, len(self), self.eos_ids))

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        hf_dir = path.with_suffix(".hf")
        self._tok.save_pretrained(hf_dir)
        data: dict[str, Any] = {"type": "hf", "directory": hf_dir.name}
        if self.chat_template:
            data["chat_template"] = True
        extra = [i for i in self.eos_ids if i != self.eos_id]
        if extra:
            data["eos_ids"] = extra
        _atomic_write_json(path, data)

    def __repr__(self) -> str:
        return (
            f"HFTokenizer({type(self._tok).__name__}, vocab_size={self.vocab_size}, "
            f"eos_ids={list(self.eos_ids)}, chat_template={self.chat_template})"
        )


def never_emitted_ids(tokenizer: Any) -> tuple[int, ...]:
    """The ids no completion should contain: ``pad``, ``bos`` and ``unk`` (where the tokenizer has one), less
    any id that ends an episode (an HF tokenizer may pad with its EOS). The env's ``action_masks()``, its
    ``action_space.sample()`` and the built-in policies' sampling all leave these out.

    Example:
        >>> never_emitted_ids(CharTokenizer("ab"))
        (0, 1, 3)
    """
    ids = {int(tokenizer.pad_id), int(tokenizer.bos_id)}
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None:
        unk = getattr(getattr(tokenizer, "_tok", None), "unk_token_id", None)
    if unk is not None:
        ids.add(int(unk))
    stops = {int(tokenizer.eos_id), *(int(i) for i in getattr(tokenizer, "stop_ids", ()))}
    return tuple(sorted(i for i in ids - stops if 0 <= i < tokenizer.vocab_size))


def tokenizer_from_dict(data: dict[str, Any], base_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` form (the JSON written by ``save``)."""
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"not a tokenizer description (no 'type' field): {str(data)[:80]!r}")
    kind = data["type"]
    if kind == "char":
        # the alphabet is one string of distinct characters; "strict" a real bool ("false" is not False)
        alphabet = string(data.get("alphabet"), "field 'alphabet'")
        return CharTokenizer(list(alphabet), strict=boolean(data.get("strict", False), "field 'strict'"))
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTok

        if not isinstance(data.get("tokenizer"), dict):
            raise ValueError(
                f"field 'tokenizer' must be the BPE tokenizer's JSON object, got {data.get('tokenizer')!r}"
            )
        return BPETokenizer(HFTok.from_str(json.dumps(data["tokenizer"])))
    if kind == "hf":
        from text_env.persistence import resolve_inside

        # the directory is read from the file: it must stay beside it (no absolute path, '..' or symlink)
        directory = resolve_inside(base_dir or ".", data.get("directory"), what="hf tokenizer directory")
        from transformers import AutoTokenizer

        unknown = sorted(set(data) - {"type", "directory", "chat_template", "eos_ids"})
        chat, eos_ids = data.get("chat_template", False), data.get("eos_ids", [])
        if unknown or not isinstance(chat, bool) or not isinstance(eos_ids, list):
            raise ValueError(
                "an hf tokenizer description has 'directory', an optional bool 'chat_template' and an "
                f"optional list 'eos_ids'; got unknown fields {unknown}, chat_template={chat!r}, "
                f"eos_ids={eos_ids!r}"
            )
        hf_tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return HFTokenizer(hf_tok, directory, chat_template=chat, eos_ids=eos_ids)
    raise ValueError(f"unknown tokenizer type {kind!r}; expected one of 'char', 'bpe', 'hf'")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved with ``save(path)``; a corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return tokenizer_from_dict(data, base_dir=path.parent)
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, Exception) as e:
        raise ValueError(f"cannot load tokenizer from {str(path)!r}: {type(e).__name__}: {e}") from e
