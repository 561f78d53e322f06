"""Task: prompts with their references, labels and demonstrations, split train/validation/test, plus the
default reward, the success test and the tokenizer that every env built on the task uses.

A task is data, not an environment: ``TextGenEnv(task)`` turns it into one. Tasks come from the built-in
generators (``text_env.tasks.synthetic``), from a user's JSONL/CSV file (:meth:`Task.from_file`), or from
any iterable (:meth:`Task.from_examples`); :func:`register_task` gives one an id.

Example:
    >>> task = Task.from_examples([{"prompt": "2+2=", "reference": "4"}] * 10, name="tiny")
    >>> task.split_sizes()
    {'train': 8, 'validation': 1, 'test': 1}
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from text_env.io import atomic_write_json, read_json
from text_env.persistence import atomic_directory, has_manifest, verify_manifest
from text_env.tokenizers import CharTokenizer, Tokenizer, encode_flat, load_tokenizer, never_emitted_ids
from text_env.validate import (
    boolean,
    finite_number,
    fractions3,
    nonnegative_int,
    positive_int,
    string,
    strings,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
TASK_KIND = "task"  # the kind recorded in a saved task's manifest
TASK_FORMAT_VERSION = 1  # 1: task.json has format_version and the directory a manifest; 0: neither
DEFAULT_MAX_NEW_TOKENS = 32  # the budget of a task without references (with them: the longest + 1)
_WARNED: set[tuple[Any, ...]] = set()  # (task, split, tokenizer): prompts' unknown characters logged


def _unk_id(tokenizer: Any) -> int | None:
    """The id a tokenizer gives characters it lacks, if it has one (byte-level BPE has none)."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None:
        unk = getattr(getattr(tokenizer, "_tok", None), "unk_token_id", None)
    return None if unk is None else int(unk)


@dataclass(frozen=True, slots=True)  # slots: a task file of a million rows holds a million of these
class Example:
    """One prompt and what is known about its answer.

    Attributes:
        prompt: The text the policy continues.
        references: Correct completions (the first one is the demonstration); empty if unknown.
        label: A class label (e.g. a review's sentiment), if any.
        metadata: Task-specific fields a reward may read (e.g. ``{"keyword": "cat"}``).
    """

    prompt: str
    references: tuple[str, ...] = ()
    label: Any = None
    metadata: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Example.prompt must be str, got {type(self.prompt).__name__}: {self.prompt!r}")
        refs = self.references
        if isinstance(refs, str):
            object.__setattr__(self, "references", (refs,))
        elif not all(isinstance(r, str) for r in refs):
            raise TypeError(f"Example.references must be strings, got {refs!r}")
        else:
            object.__setattr__(self, "references", tuple(refs))

    @property
    def reference(self) -> str | None:
        return self.references[0] if self.references else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt": self.prompt}
        if self.references:
            d["reference"] = self.references[0] if len(self.references) == 1 else list(self.references)
        if self.label is not None:
            d["label"] = self.label
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d


@dataclass
class EncodedSplit:
    """A split's token ids, stored compactly: every prompt's ids concatenated into one int32 array with
    offsets (no padding to the longest prompt, no Python list per prompt), and the same for the first
    reference of each example. Environments gather the rows of N slots with :meth:`prompt_rows` /
    :meth:`reference_rows`; ``prompt_ids`` / ``reference_ids`` build the padded ``(n, P)`` matrices on first
    use for callers that want them.

    Attributes:
        prompt_tokens: ``(total,)`` int32, the prompts' ids (no BOS), one after the other.
        prompt_offsets: ``(n + 1,)`` int64: prompt ``i`` is
            ``prompt_tokens[prompt_offsets[i] : prompt_offsets[i + 1]]``.
        reference_tokens / reference_offsets: The same for each example's first reference; ``None`` unless
            every example has one.
        prompts / references / labels / metadata: ``(n,)`` object arrays of the texts and fields.
        pad_id: The id that pads gathered rows.
    """

    prompt_tokens: np.ndarray
    prompt_offsets: np.ndarray
    reference_tokens: np.ndarray | None
    reference_offsets: np.ndarray | None
    prompts: np.ndarray  # (n,) object: str
    references: np.ndarray  # (n,) object: tuple[str, ...] | None
    labels: np.ndarray  # (n,) object
    metadata: np.ndarray  # (n,) object: dict | None
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.prompt_offsets) - 1

    @cached_property
    def prompt_lengths(self) -> np.ndarray:
        """``(n,)`` int64: tokens per prompt."""
        return np.diff(self.prompt_offsets)

    @cached_property
    def reference_lengths(self) -> np.ndarray | None:
        return None if self.reference_offsets is None else np.diff(self.reference_offsets)

    @cached_property
    def prompt_width(self) -> int:
        """The longest prompt (at least 1): the width of ``prompt_ids``."""
        return max(int(self.prompt_lengths.max(initial=0)), 1)

    @cached_property
    def reference_width(self) -> int:
        lengths = self.reference_lengths
        return 1 if lengths is None else max(int(lengths.max(initial=0)), 1)

    def prompt_rows(self, idx: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)`` of prompts ``idx``: ``(len(idx), width)`` int64 right-padded with ``pad_id``
        (``width`` defaults to :attr:`prompt_width`, the shape ``prompt_ids[idx]`` has)."""
        return _gather_rows(
            self.prompt_tokens, self.prompt_offsets, idx, width or self.prompt_width, self.pad_id
        )

    def reference_rows(self, idx: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`prompt_rows`, for the first references (``ValueError`` if the split has none)."""
        if self.reference_tokens is None or self.reference_offsets is None:
            raise ValueError("this split has no references (some example lacks one)")
        return _gather_rows(
            self.reference_tokens, self.reference_offsets, idx, width or self.reference_width, self.pad_id
        )

    @cached_property
    def prompt_ids(self) -> np.ndarray:
        """``(n, P)`` int64, every prompt right-padded to the longest (built on first use and kept)."""
        return self.prompt_rows(np.arange(len(self)))[0]

    @cached_property
    def reference_ids(self) -> np.ndarray | None:
        if self.reference_tokens is None:
            return None
        return self.reference_rows(np.arange(len(self)))[0]


def _gather_rows(
    tokens: np.ndarray, offsets: np.ndarray, idx: np.ndarray, width: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(idx, dtype=np.int64)
    starts = offsets[idx]
    lengths = np.minimum(offsets[idx + 1] - starts, width)
    out = np.full((len(idx), width), pad, dtype=np.int64)
    j = np.arange(width)
    valid = j[None, :] < lengths[:, None]
    out[valid] = tokens[(starts[:, None] + j[None, :])[valid]]
    return out, offsets[idx + 1] - starts


def encode_split(tokenizer: Any, texts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int32 ids, int64 offsets)`` of ``texts``, encoded a chunk at a time (see :func:`encode_flat`)."""
    ids, lengths = encode_flat(tokenizer, texts)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ids, offsets


class _PromptEncoder:
    """A tokenizer's ``encode_prompts`` as the ``encode_batch`` that :func:`encode_split` calls."""

    def __init__(self, tokenizer: Any) -> None:
        self.encode_batch = tokenizer.encode_prompts


class Task:
    """Prompts (+ references, labels, demonstrations) split train/validation/test, with a tokenizer and a
    default reward.

    Args:
        name: A short identifier (used in cache keys and env ids).
        splits: ``{"train": [...], "validation": [...], "test": [...]}`` of :class:`Example` (or dicts).
            Every split must be non-empty.
        tokenizer: Encodes prompts and completions. ``None`` builds a :class:`CharTokenizer` over every
            character in the task's texts.
        reward: The default reward spec (see :mod:`text_env.rewards.registry`). ``None``: the task has no
            default (e.g. it was saved with a Python function, which a file cannot hold); an env on it must
            then be given ``reward=``.
        success: A reward spec; an episode whose value is ≥ ``success_threshold`` succeeds
            (``info["is_success"]``). ``None`` reports no success.
        success_threshold: See ``success``.
        max_new_tokens: The completion budget: reaching it truncates the episode. ``None`` (the default):
            room for the longest reference and EOS (its length in tokens + 1), or 32 without references.
        stop: Extra strings (single tokens) that end the episode like EOS, e.g. ``("\\n",)``.
        allowed_completion_chars: If set, the characters a correct completion can use; with EOS they form
            the env's ``action_masks()`` (for MaskablePPO). ``None`` allows every token.
        metrics: Names of rewards reported as evaluation metrics.
        description: One line for listings.
        corpus: Extra unlabelled text for the supervised stage (a callable, evaluated lazily).
        allow_unk: Let references hold characters the tokenizer lacks (they encode to ``<unk>``). By default
            such a task is refused, naming the characters: a reference in ``<unk>`` s cannot be written by any
            agent, and scored as ids it would match garbage. Prompts with such characters only warn.
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Sequence[Example | Mapping[str, Any]]],
        tokenizer: Tokenizer | None = None,
        reward: Any = "exact_match",
        success: Any = "exact_match",
        success_threshold: float = 1.0,
        max_new_tokens: int | None = None,
        stop: Sequence[str] = (),
        allowed_completion_chars: str | None = None,
        metrics: Sequence[str] = (),
        description: str = "",
        corpus: Callable[[], Iterable[str]] | None = None,
        allow_unk: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a task's name must be a non-empty string, got {name!r}")
        where = f"task {name!r}"
        # settings first (they may come from a task.json): refused, never coerced
        self.success_threshold = finite_number(success_threshold, "success_threshold", where)
        if max_new_tokens is not None:
            max_new_tokens = positive_int(max_new_tokens, "max_new_tokens", where)
        self.allow_unk = boolean(allow_unk, "allow_unk", where)
        self.stop = strings(stop, "stop", where)
        self.allowed_completion_chars = string(
            allowed_completion_chars, "allowed_completion_chars", where, optional=True
        )
        self.metrics = strings(metrics, "metrics", where)
        self.description = string(description, "description", where)
        if corpus is not None and not callable(corpus):
            raise ValueError(f"{where}: corpus must be a callable returning texts, got {corpus!r}")
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError(f"task {name!r} lacks splits {missing}; expected {list(SPLITS)}")
        self.name = name
        self.splits: dict[str, list[Example]] = {}
        for s in SPLITS:
            exs = [
                e if isinstance(e, Example) else example_from_dict(e, where=f"{name}/{s}") for e in splits[s]
            ]
            if not exs:
                raise ValueError(f"task {name!r}: split {s!r} has no prompts; every split needs at least one")
            self.splits[s] = exs
        if tokenizer is None:
            extra = [allowed_completion_chars or "", "".join(stop)]
            tokenizer = CharTokenizer.from_texts([*_all_texts(self.splits.values()), *extra])
        self.tokenizer = tokenizer
        self.reward = reward
        self.success = success
        self.corpus = corpus
        self._check_reference_characters()
        if max_new_tokens is None:
            longest = self.longest_reference_tokens
            max_new_tokens = DEFAULT_MAX_NEW_TOKENS if longest is None else longest + 1
        self.max_new_tokens = max_new_tokens

    # ---- access -------------------------------------------------------------------------------------
    def examples(self, split: str = "train") -> list[Example]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return self.splits[split]

    def split_sizes(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.splits.items()}

    def demonstrations(self, split: str = "train") -> list[tuple[str, str]]:
        """(prompt, completion) pairs for supervised training: each example's first reference."""
        return [(e.prompt, e.references[0]) for e in self.examples(split) if e.references]

    @cached_property
    def stop_ids(self) -> np.ndarray:
        """Token ids that end an episode: EOS plus each stop string that is a single token."""
        # every id a tokenizer stops on (an HF model's eos_token_id may be a list)
        ids = {self.tokenizer.eos_id, *(int(i) for i in getattr(self.tokenizer, "stop_ids", ()))}
        for s in self.stop:
            enc = self.tokenizer.encode(s)
            if len(enc) != 1:
                raise ValueError(f"task {self.name!r}: stop string {s!r} is {len(enc)} tokens; expected one")
            ids.add(enc[0])
        return np.array(sorted(ids), dtype=np.int64)

    @cached_property
    def action_mask(self) -> np.ndarray:
        """``(vocab_size,)`` int8: 1 for tokens a completion may use (always the stop tokens), 0 for the rest:
        never ``pad``, ``bos`` or ``unk`` (:func:`~text_env.tokenizers.never_emitted_ids`), and with
        ``allowed_completion_chars`` only those characters' tokens."""
        v = self.tokenizer.vocab_size
        if self.allowed_completion_chars is None:
            mask = np.ones(v, dtype=np.int8)
        else:
            mask = np.zeros(v, dtype=np.int8)
            for ch in self.allowed_completion_chars:
                for i in self.tokenizer.encode(ch):
                    mask[i] = 1
        mask[list(never_emitted_ids(self.tokenizer))] = 0
        mask[self.stop_ids] = 1
        return mask

    def encoded(self, split: str) -> EncodedSplit:
        """The split encoded once and cached (``EncodedSplit``)."""
        cache = self.__dict__.setdefault("_encoded", {})
        if split not in cache:
            exs = self.examples(split)
            tok = self.tokenizer
            prompts = _object_array([e.prompt for e in exs])
            # an HF tokenizer's prompts are the ids its model reads before a completion (encode_prompt)
            prompt_tok = _PromptEncoder(tok) if hasattr(tok, "encode_prompts") else tok
            p_tokens, p_offsets = encode_split(prompt_tok, prompts)
            r_tokens = r_offsets = None
            if all(e.references for e in exs):
                r_tokens, r_offsets = encode_split(tok, [e.references[0] for e in exs])
            unk = _unk_id(tok)
            if unk is not None:
                if r_tokens is not None and not self.allow_unk and bool((r_tokens == unk).any()):
                    self._refuse_unknown(split, [e.references[0] for e in exs])
                if bool((p_tokens == unk).any()):
                    self._warn_unknown_prompts(split, [e.prompt for e in exs])
            cache[split] = EncodedSplit(
                prompt_tokens=p_tokens,
                prompt_offsets=p_offsets,
                reference_tokens=r_tokens,
                reference_offsets=r_offsets,
                prompts=prompts,
                references=_object_array([e.references or None for e in exs]),
                labels=_object_array([e.label for e in exs]),
                metadata=_object_array([e.metadata for e in exs]),
                pad_id=int(tok.pad_id),
            )
        return cache[split]

    @cached_property
    def longest_reference_tokens(self) -> int | None:
        """The longest first reference over every split, in tokens (``None`` if a split lacks references)."""
        lengths = [self.encoded(s).reference_lengths for s in SPLITS]
        found = [n for n in lengths if n is not None]
        if len(found) < len(lengths):
            return None
        return max(int(n.max(initial=0)) for n in found)

    def _check_reference_characters(self) -> None:
        """With a character tokenizer, refuse (unless ``allow_unk``) references, first or not, in any split
        that hold characters outside its alphabet: one pass over the text, before anything is encoded."""
        tok = self.tokenizer
        if self.allow_unk or not isinstance(tok, CharTokenizer):
            return  # other tokenizers are checked as each split is encoded
        known = set(tok.alphabet)
        for split, exs in self.splits.items():
            refs = [r for e in exs for r in e.references]
            if set("".join(refs)) - known:
                self._refuse_unknown(split, refs)

    def _missing_chars(self, texts: Sequence[str]) -> tuple[list[str], str]:
        """The characters of ``texts`` the tokenizer encodes to ``<unk>`` (at most 20), and one such text."""
        tok, unk = self.tokenizer, _unk_id(self.tokenizer)
        missing: set[str] = set()
        example = ""
        for t in texts:
            if unk not in tok.encode(t):
                continue
            found = {c for c in set(t) if unk in tok.encode(c)}
            if found and not example:
                example = t
            missing |= found
            if len(missing) >= 20:
                break
        return sorted(missing)[:20], example

    def _refuse_unknown(self, split: str, texts: Sequence[str]) -> None:
        chars, example = self._missing_chars(texts)
        raise ValueError(
            f"task {self.name!r}: the tokenizer {self.tokenizer!r} lacks characters of the {split!r} split's "
            f"references: {chars} (e.g. in {example[:80]!r}); they would encode to <unk>, which no agent can "
            "write and which would score garbage as a match. Use a tokenizer that covers the data (the "
            "default: tokenizer=None builds one over every text), or pass allow_unk=True to let them "
            "encode to <unk>"
        )

    def _warn_unknown_prompts(self, split: str, texts: Sequence[str]) -> None:
        key = (self.name, split, id(self.tokenizer))
        if key in _WARNED:
            return
        _WARNED.add(key)
        chars, example = self._missing_chars(texts)
        logger.warning(
            "task %r: the tokenizer %r lacks characters of the %r split's prompts: %s (e.g. in %r); the "
            "agent sees them as <unk>", self.name, self.tokenizer, split, chars, example[:80],
        )  # fmt: skip

    @cached_property
    def max_prompt_tokens(self) -> int:
        return max(int(self.encoded(s).prompt_lengths.max()) for s in SPLITS)

    def fingerprint(self) -> str:
        """A short hash of the data and tokenizer: cache keys (e.g. for SFT checkpoints) use it."""
        h = hashlib.sha256()
        h.update(json.dumps(self.tokenizer.to_dict(), sort_keys=True).encode())  # type: ignore[attr-defined]
        for s in SPLITS:
            for e in self.splits[s]:
                h.update(json.dumps(e.to_dict(), sort_keys=True, default=str).encode())
        h.update(str(self.max_new_tokens).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Task({self.name!r}, splits={self.split_sizes()}, vocab={self.tokenizer.vocab_size})"

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_examples(
        cls,
        examples: Iterable[Example | Mapping[str, Any] | str],
        name: str = "custom",
        seed: int = 0,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        **kwargs: Any,
    ) -> Task:
        """A task from any iterable of Examples, dicts (``prompt``, optional ``reference``/``label``/
        ``split``) or bare prompt strings. Rows with a ``split`` field go there; the rest are shuffled with
        ``seed`` and divided by ``fractions``. Without references the default reward must be given."""
        rows: list[tuple[Example, str | None]] = []
        for i, e in enumerate(examples):
            where = f"task {name!r}, row {i + 1}"
            if isinstance(e, str):
                e = {"prompt": e}
            if isinstance(e, Example):
                rows.append((e, None))
            else:
                split = e.get("split") if isinstance(e, Mapping) else None
                ex = example_from_dict(e, where=where)
                rows.append((ex, None if split is None else _row_split(split, where)))
        return cls._from_rows(rows, name, seed, fractions, **kwargs)

    @classmethod
    def _from_rows(
        cls,
        rows: list[tuple[Example, str | None]],
        name: str,
        seed: int,
        fractions: tuple[float, float, float],
        **kwargs: Any,
    ) -> Task:
        """A task from validated ``(example, split or None)`` rows (see :meth:`from_examples`)."""
        if not rows:
            raise ValueError(f"task {name!r} has no prompts; expected at least one example")
        fixed: dict[str, list[Example]] = {s: [] for s in SPLITS}
        free = []
        for ex, split in rows:
            if split is None:
                free.append(ex)
            else:
                fixed[split].append(ex)
        for s, part in zip(SPLITS, split_indices(len(free), seed, fractions), strict=True):
            fixed[s].extend(free[j] for j in part)
        empty = [s for s in SPLITS if not fixed[s]]
        if empty:
            raise ValueError(
                f"task {name!r} has {len(rows)} rows ({len(free)} without a split), which leaves the "
                f"{' and '.join(map(repr, empty))} split{'s' if len(empty) > 1 else ''} empty; every split "
                f"(train, validation, test) needs at least one prompt: give at least 3 rows, or a 'split' "
                "field (a JSONL key or CSV column: 'train', 'validation' or 'test') placing rows in each"
            )
        has_refs = all(ex.references for ex, _ in rows)
        if not has_refs:
            kwargs.setdefault("success", None)
            if "reward" not in kwargs:
                raise ValueError(
                    f"task {name!r}: some prompts have no reference, so 'exact_match' cannot score them; "
                    "pass reward=... (e.g. a reward model or a plain function)"
                )
        return cls(name, fixed, **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None, **kwargs: Any) -> Task:
        """A task from a JSONL file (one ``{"prompt": ..., "reference": ..., "label": ...}`` per line) or a
        CSV file with a header naming those columns. A malformed row raises ``ValueError`` naming the file
        and line."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"task file {str(path)!r} does not exist")
        rows = list(_read_rows(path))
        if not rows:
            raise ValueError(f"task file {str(path)!r} has no rows; expected at least one prompt")
        if isinstance(kwargs.get("tokenizer"), (str, os.PathLike)):
            kwargs["tokenizer"] = load_tokenizer(kwargs["tokenizer"])
        seed = kwargs.pop("seed", 0)
        fractions = kwargs.pop("fractions", (0.8, 0.1, 0.1))
        return cls._from_rows(rows, name or path.stem, seed, fractions, **kwargs)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the task into ``directory``: one JSONL file of examples per split, ``tokenizer.json``,
        ``task.json`` (the settings, with ``format_version``) and ``manifest.json`` (the sha256 and size of
        every file, which :meth:`load` verifies).

        The directory is written whole or not at all: into a temporary sibling that is renamed into place
        (:func:`text_env.persistence.atomic_directory`), so an error midway (a text that cannot be encoded,
        a full disk) leaves no partial directory, and an earlier save under the same name stays as it was.
        An existing directory that is not a saved task is never replaced.

        Raises:
            FileExistsError: ``directory`` exists and holds something other than a saved task.
            ValueError: An example holds text that UTF-8 cannot encode (a lone surrogate); the message names
                the split and the example.

        Example:
            >>> task.save("runs/my-task")  # doctest: +SKIP
            >>> Task.load("runs/my-task")  # doctest: +SKIP
        """
        d = Path(directory)
        if d.exists() and not (d.is_dir() and (not any(d.iterdir()) or (d / "task.json").is_file())):
            raise FileExistsError(
                f"{str(d)!r} exists and is not a saved task (no task.json); refusing to replace it"
            )
        reward, success = _file_spec(self.reward), _file_spec(self.success)
        settings = {
            "format_version": TASK_FORMAT_VERSION,
            "name": self.name,
            "reward": reward,
            "success": success,
            "success_threshold": self.success_threshold,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "allowed_completion_chars": self.allowed_completion_chars,
            "metrics": list(self.metrics),
            "description": self.description,
        }
        if self.allow_unk:
            settings["allow_unk"] = True
        # a Python function cannot go into a file: say what it was, so that load can ask for it again
        for key, spec, saved in (("reward", self.reward, reward), ("success", self.success, success)):
            if saved is None and spec is not None:
                settings[f"{key}_not_saved"] = _spec_name(spec)
                logger.warning(
                    "task %r: its %s %s cannot be saved to a file; pass it again after Task.load",
                    self.name, key, settings[f"{key}_not_saved"],
                )  # fmt: skip
        with atomic_directory(d, kind=TASK_KIND, format_version=TASK_FORMAT_VERSION) as tmp:
            for s in SPLITS:
                with open(tmp / f"{s}.jsonl", "wb") as f:
                    for i, e in enumerate(self.splits[s]):
                        line = json.dumps(e.to_dict(), ensure_ascii=False) + "\n"
                        try:
                            f.write(line.encode("utf-8"))
                        except UnicodeEncodeError as err:
                            raise ValueError(
                                f"task {self.name!r}: example {i} of split {s!r} cannot be saved as UTF-8 "
                                f"({err.reason} at {line[err.start : err.end]!r}; a lone surrogate?): "
                                f"{line[:80]!r}"
                            ) from None
            self.tokenizer.save(tmp / "tokenizer.json")
            atomic_write_json(tmp / "task.json", settings, indent=1)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Task:
        """Load a task written by :meth:`save`.

        The directory's ``manifest.json`` is verified first (every file's size and sha256; a missing, extra
        or altered file raises). A directory saved before manifests existed (no ``manifest.json``) still
        loads, unverified.

        Raises:
            FileNotFoundError: A file is missing.
            ValueError: The manifest does not match (:class:`~text_env.persistence.IntegrityError`), a file is
                malformed, or ``format_version`` is newer than this code reads; the message names the file.
        """
        d = Path(directory)
        if has_manifest(d):
            verify_manifest(d, kind=TASK_KIND, max_format_version=TASK_FORMAT_VERSION)
        else:
            logger.info("%s has no manifest (saved by an older text-env); loading it unverified", d)
        path = d / "task.json"
        kwargs = _read_settings(path)
        splits = {s: [ex for ex, _ in _read_rows(d / f"{s}.jsonl")] for s in SPLITS}
        tok = load_tokenizer(d / "tokenizer.json")
        name = kwargs.pop("name")
        try:
            return cls(name, splits, tokenizer=tok, **kwargs)
        except (TypeError, ValueError) as e:  # an emptied split, a stop string of two tokens: edited files
            raise ValueError(f"the task saved in {str(d)!r} is invalid (task.json, *.jsonl): {e}") from e


_SETTINGS = (
    "format_version", "name", "reward", "success", "success_threshold", "max_new_tokens", "stop",
    "allowed_completion_chars", "metrics", "description", "reward_not_saved", "success_not_saved",
    "allow_unk",
)  # fmt: skip


def _read_settings(path: Path) -> dict[str, Any]:
    """The ``Task`` arguments in a saved ``task.json``, each checked for type and range (errors name the
    file and the field); reward specs must be registered names (a file never names code to import)."""
    settings = read_json(path, what="task settings")
    where = f"task settings {str(path)!r}"
    if not isinstance(settings, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}; expected a subset of {list(_SETTINGS)}")
    version = settings.get("format_version", 0)  # absent: written before task.json had a version
    if type(version) is not int or not 0 <= version <= TASK_FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {version!r} is not one this code reads (0 to {TASK_FORMAT_VERSION}); "
            "was it saved by a newer text-env?"
        )
    if not isinstance(settings.get("name"), str) or not settings["name"]:
        raise ValueError(f"{where} must be an object with a 'name' string, got {settings.get('name')!r}")
    kwargs: dict[str, Any] = {"name": settings["name"]}
    checks = {
        "success_threshold": lambda v, f: finite_number(v, f, where),
        "max_new_tokens": lambda v, f: positive_int(v, f, where),
        "stop": lambda v, f: strings(v, f, where),
        "allowed_completion_chars": lambda v, f: string(v, f, where, optional=True),
        "metrics": lambda v, f: strings(v, f, where),
        "description": lambda v, f: string(v, f, where),
        "allow_unk": lambda v, f: boolean(v, f, where),
    }
    for key, check in checks.items():
        if key in settings:
            kwargs[key] = check(settings[key], f"field {key!r}")
    for key in ("reward", "success"):
        if key not in settings:
            continue  # a task.json that never had it: the Task default
        spec = _check_file_spec(settings[key], where, key)
        if spec is None and key == "reward":
            lost = settings.get("reward_not_saved")
            logger.warning(
                "%s: the task's reward%s was not saved; an env on it needs reward=...",
                where, f" ({lost})" if isinstance(lost, str) else "",
            )  # fmt: skip
        kwargs[key] = spec
    return kwargs


def _file_spec(spec: Any) -> Any:
    """``spec`` if a JSON file can hold it (a name, ``{name: weight}``, a list of names), else ``None``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (list, tuple)) and all(isinstance(x, str) for x in spec):
        return list(spec)
    if isinstance(spec, Mapping) and all(
        isinstance(k, str) and isinstance(w, (int, float)) and not isinstance(w, bool)
        for k, w in spec.items()
    ):
        return dict(spec)
    return None


def _spec_name(spec: Any) -> str:
    if isinstance(spec, Mapping):
        return "{" + ", ".join(f"{_spec_name(k)}: {w!r}" for k, w in spec.items()) + "}"
    if isinstance(spec, (list, tuple)):
        return "[" + ", ".join(_spec_name(x) for x in spec) + "]"
    return (
        repr(spec)
        if isinstance(spec, str)
        else str(getattr(spec, "name", None) or getattr(spec, "__name__", type(spec).__name__))
    )


def _check_file_spec(spec: Any, where: str, field: str) -> Any:
    """A reward spec read from a file: ``None``, a registered reward name (with its ``:argument`` if it
    takes one), a list of them, or ``{name: finite weight}``. ``"package.module:attr"`` specs are refused:
    nothing read from a file is imported."""
    from text_env.rewards.registry import available

    if spec is None:
        return None
    registry = {r.name: r for r in available()}

    def check_name(name: Any) -> str:
        if not isinstance(name, str):
            raise ValueError(f"{where}: field {field!r} names rewards by string, got {name!r}")
        base, sep, _ = name.partition(":")
        info = registry.get(base)
        if info is None:
            raise ValueError(
                f"{where}: field {field!r}: {name!r} is not a registered reward (a saved task names rewards, "
                f"never code to import); registered: {', '.join(sorted(registry))}"
            )
        if sep and not info.takes_argument:
            raise ValueError(f"{where}: field {field!r}: reward {base!r} takes no ':' argument, got {name!r}")
        return name

    if isinstance(spec, str):
        return check_name(spec)
    if isinstance(spec, list):
        return [check_name(x) for x in spec]
    if isinstance(spec, dict):
        return {
            check_name(k): finite_number(w, f"field {field!r}, weight of {k!r}", where)
            for k, w in spec.items()
        }
    raise ValueError(
        f"{where}: field {field!r} must be a reward name, a list of names or {{name: weight}}, got {spec!r}"
    )


# ---- helpers ---------------------------------------------------------------------------------------------
def split_indices(n: int, seed: int, fractions: tuple[float, float, float]) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it by ``fractions``; each part gets at least one index
    when ``n >= 3``."""
    fractions = fractions3(fractions)
    perm = np.random.default_rng(nonnegative_int(seed, "seed")).permutation(n)
    fr = np.asarray(fractions, dtype=float) / sum(fractions)
    n_val = round(n * fr[1])
    n_test = round(n * fr[2])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = n - n_val - n_test
    return [perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]]


def example_from_dict(row: Mapping[str, Any], where: str = "row", check_text: bool = True) -> Example:
    """Validate one data row: ``prompt`` required; optional ``reference`` (str or list), ``label``,
    ``metadata``. Strings holding a lone surrogate are refused (``check_text=False`` skips that check, for
    callers that know the row cannot hold one)."""
    if not isinstance(row, Mapping):
        raise ValueError(
            f"{where}: expected an object with a 'prompt' field, got {type(row).__name__}: {row!r}"
        )
    if "prompt" not in row:
        raise ValueError(f"{where}: missing required field 'prompt' (fields present: {sorted(row)})")
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: field 'prompt' must be a string, got {type(prompt).__name__}: {prompt!r}")
    if prompt == "":
        raise ValueError(f"{where}: field 'prompt' is empty; expected a non-empty string")
    ref = row.get("reference", row.get("references"))
    if ref is None or ref == "":
        refs: tuple[str, ...] = ()
    elif isinstance(ref, str):
        refs = (ref,)
    elif isinstance(ref, list) and ref and all(isinstance(r, str) for r in ref):
        refs = tuple(ref)
    else:
        raise ValueError(f"{where}: field 'reference' must be a string or a list of strings, got {ref!r}")
    meta = row.get("metadata")
    if meta is not None and not isinstance(meta, Mapping):
        raise ValueError(f"{where}: field 'metadata' must be an object, got {type(meta).__name__}")
    label = row.get("label")
    # a JSON escape such as "\ud800" without its pair decodes to a lone surrogate, which no UTF-8 file can
    # hold: refuse it here, with the line, rather than let Task.save fail on it later
    if check_text:
        _check_encodable(prompt, where, "prompt")
        for r in refs:
            _check_encodable(r, where, "reference")
        _check_encodable(label, where, "label")
        _check_encodable(meta, where, "metadata")
    return Example(prompt, refs, label, meta)


def _check_encodable(value: Any, where: str, field: str) -> None:
    """Raise ``ValueError`` if a string in ``value`` (nested in lists and objects too) is not valid UTF-8
    text, i.e. holds a lone surrogate."""
    if isinstance(value, str):
        if value.isascii():
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{where}: field {field!r} holds a lone surrogate {value[e.start : e.end]!r} at character "
                f"{e.start}; expected valid Unicode text (a \\ud800-\\udfff escape without its pair?)"
            ) from None
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_encodable(k, where, f"{field} key")
            _check_encodable(v, where, f"{field}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_encodable(v, where, field)


def read_examples(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield validated rows (as dicts) from a JSONL or CSV file; errors name the file and line.

    The file is streamed, never read whole. JSONL lines end at ``\\n`` only (``\\r\\n`` too): a raw U+2028,
    U+0085 or other Unicode line break inside a string (which ``json.dumps(..., ensure_ascii=False)`` writes
    as is) stays in its string. CSV is parsed by the :mod:`csv` module over the file (``newline=""``), so a
    quoted field may hold newlines; a row's line number is the line it starts on.
    """
    for ex, split in _read_rows(Path(path)):
        yield {**ex.to_dict(), **({"split": split} if split is not None else {})}


def _read_rows(path: Path) -> Iterator[tuple[Example, str | None]]:
    """``(example, split or None)`` per data row of a task file (see :func:`read_examples`)."""
    if path.suffix.lower() == ".csv":
        yield from _read_csv_rows(path)
    else:
        yield from _read_jsonl_rows(path)


def _not_utf8(path: Path, where: str, e: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{str(path)!r}{where} is not UTF-8 text: {e}")


def _read_jsonl_rows(path: Path) -> Iterator[tuple[Example, str | None]]:
    with open(path, "rb") as f:  # binary lines end at b"\n" only, whatever Unicode line breaks the text holds
        for lineno, raw in enumerate(f, start=1):
            where = f"{str(path)!r}, line {lineno}"
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):  # a byte-order mark is not JSON
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, f", line {lineno},", e) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}): {line[:80]!r}") from None
            # strict UTF-8 decoding admits no surrogate: only a \\uD800-\\uDFFF escape can make one
            escapes = b"\\ud" in raw or b"\\uD" in raw
            ex = example_from_dict(row, where=where, check_text=escapes)
            split = row.get("split")
            yield ex, None if split is None else _row_split(split, where)


def _read_csv_rows(path: Path) -> Iterator[tuple[Example, str | None]]:
    # newline="": quoted fields keep their newlines; utf-8-sig: a byte-order mark (Excel writes one) is not
    # part of the first column's name
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        end = 0  # the last physical line of the previous record
        try:
            header = next(reader, None)
            end = reader.line_num
            if header is None or "prompt" not in header:
                raise ValueError(f"{str(path)!r}: CSV header must have a 'prompt' column, got {header}")
            seen: set[str] = set()
            for name in header:
                if name in seen:
                    raise ValueError(
                        f"{str(path)!r}, line {end}: the header names column {name!r} twice; each column "
                        f"needs its own name, got {header}"
                    )
                seen.add(name)
            for cells in reader:
                lineno, end = end + 1, reader.line_num
                if not cells:  # a blank line
                    continue
                if len(cells) > len(header):
                    raise ValueError(f"{str(path)!r}, line {lineno}: more fields than the header has")
                if len(cells) < len(header):
                    missing = header[len(cells) :]
                    raise ValueError(
                        f"{str(path)!r}, line {lineno}: {len(cells)} fields where the header has "
                        f"{len(header)} (missing {missing}); leave a field empty (,,) rather than out"
                    )
                row = dict(zip(header, cells))
                clean = {k: v for k, v in row.items() if v != "" or k == "prompt"}
                where = f"{str(path)!r}, line {lineno}"
                ex = example_from_dict(clean, where=where)
                yield ex, _row_split(row["split"], where) if row.get("split") else None
        except UnicodeDecodeError as e:
            raise _not_utf8(path, f", near line {end + 1},", e) from None
        except csv.Error as e:
            raise ValueError(f"{str(path)!r}, line {reader.line_num}: malformed CSV: {e}") from None


def _row_split(split: Any, where: str) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"{where}: split {split!r} is not one of {list(SPLITS)}")
    return split


def _all_texts(splits: Iterable[list[Example]]) -> Iterable[str]:
    for exs in splits:
        for e in exs:
            yield e.prompt
            yield from e.references


def _object_array(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


# ---- registry ----------------------------------------------------------------------------------------------
_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(
    name: str, factory: Callable[..., Task] | Task | None = None, overwrite: bool = False
) -> Any:
    """Give a task (or a factory ``(**kwargs) -> Task``) a name usable as ``TextGenEnv(task=name)``.

    Example:
        >>> register_task("tiny-add", lambda: Task.from_examples([{"prompt": "1+1=", "reference": "2"}] * 5))
        ... # doctest: +SKIP
    """

    def add(f: Callable[..., Task] | Task) -> Callable[..., Task] | Task:
        if name in _TASKS and not overwrite:
            raise ValueError(
                f"a task named {name!r} is already registered; pass overwrite=True to replace it"
            )
        _TASKS[name] = (lambda **kw: f) if isinstance(f, Task) else f
        return f

    return add if factory is None else add(factory)


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def make_task(
    spec: Task | str | os.PathLike | Iterable[Any], *, env_reward: Any = None, **kwargs: Any
) -> Task:
    """A Task from a Task, a registered name, a ``.jsonl``/``.csv`` path, a saved-task directory, or an
    iterable of examples.

    Args:
        spec: See above.
        env_reward: The reward spec an env was given (``gym.make(..., reward=...)``). A task built here from
            rows (a file or an iterable) takes it as its default reward unless ``kwargs`` has ``reward``, so a
            file without references (which ``exact_match`` cannot score) loads when the env says how to
            score it. Ignored for registered names and saved tasks, whose own default the env overrides.
        **kwargs: Passed to the task factory or to :meth:`Task.from_file` / :meth:`Task.from_examples`.

    Example:
        >>> make_task("prompts.jsonl", env_reward="length")  # doctest: +SKIP
    """
    if isinstance(spec, Task):
        if kwargs:
            raise TypeError(f"task options {sorted(kwargs)} given with an already built task {spec!r}")
        return spec
    if env_reward is not None and "reward" not in kwargs:
        rows_kwargs = {**kwargs, "reward": env_reward}
    else:
        rows_kwargs = kwargs
    if isinstance(spec, (str, os.PathLike)):
        s = str(spec)
        if s in _TASKS:
            return _TASKS[s](**kwargs)
        p = Path(s)
        if p.suffix.lower() in (".jsonl", ".json", ".csv") or p.exists():
            if p.is_dir():
                if kwargs:  # a saved task is built already: options would be dropped, not applied
                    raise TypeError(
                        f"task options {sorted(kwargs)} given with the saved task {s!r}; it takes none"
                    )
                return Task.load(p)
            return Task.from_file(p, **rows_kwargs)
        raise ValueError(
            f"unknown task {s!r}; registered tasks: {', '.join(available_tasks())} "
            "(or a path to a .jsonl/.csv file)"
        )
    if isinstance(spec, Iterable):
        return Task.from_examples(spec, **rows_kwargs)
    raise TypeError(f"cannot make a task from {type(spec).__name__}: {spec!r}")


__all__ = [
    "SPLITS",
    "EncodedSplit",
    "Example",
    "Task",
    "available_tasks",
    "example_from_dict",
    "make_task",
    "read_examples",
    "register_task",
    "split_indices",
]
