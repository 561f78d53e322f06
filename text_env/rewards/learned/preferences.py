"""Preference pairs: :class:`PreferencePair` (``chosen`` is better than ``rejected`` as a reply to ``prompt``)
and :func:`read_preferences`, the reader of the preferences JSONL that
:func:`~text_env.rewards.feedback.label_session` writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PreferencePair:
    """One human (or synthetic) judgement: ``chosen`` is better than ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str


def _pair_from(obj: Any, where: str) -> PreferencePair:
    if isinstance(obj, PreferencePair):
        return obj
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{where}: expected an object with 'prompt', 'chosen', 'rejected', got {type(obj).__name__}"
        )
    missing = [k for k in ("chosen", "rejected") if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; expected 'prompt', 'chosen', 'rejected'")
    vals = {k: obj.get(k, "") for k in ("prompt", "chosen", "rejected")}
    for k, v in vals.items():
        if not isinstance(v, str):
            raise ValueError(f"{where}: field {k!r} must be a string, got {type(v).__name__}: {v!r}")
    return PreferencePair(**vals)


def read_preferences(path: str | os.PathLike) -> list[PreferencePair]:
    """Read a preferences JSONL file: one ``{"prompt", "chosen", "rejected"}`` object per line.

    Lines marked ``"skip": true`` (pairs a person skipped in
    :func:`~text_env.rewards.feedback.label_session`) and blank lines are ignored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A line is not JSON or lacks a field; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preferences file {str(path)!r} does not exist")
    pairs: list[PreferencePair] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{str(path)!r}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}): {line[:80]!r}") from None
            if isinstance(obj, Mapping) and obj.get("skip"):
                continue
            pairs.append(_pair_from(obj, where))
    return pairs


def _as_pairs(data: str | os.PathLike | Iterable[PreferencePair | Mapping[str, Any]]) -> list[PreferencePair]:
    if isinstance(data, (str, os.PathLike)):
        return read_preferences(data)
    return [_pair_from(p, f"pair {i}") for i, p in enumerate(data)]


__all__ = ["PreferencePair", "read_preferences"]
