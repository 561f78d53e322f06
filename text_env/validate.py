"""Checks for values that come from users and files: each refuses rather than coerces, and its error names
the value, what it is (``where``: a file and line or field, an argument) and what was expected.

Refused everywhere: ``True``/``False`` where a number belongs (``bool`` is an ``int`` subclass, so a bare
``isinstance(x, int)`` lets ``max_new_tokens=True`` through as 1), floats where an int belongs (``3.0``),
strings where a number or a bool belongs (``"0.5"``, ``"false"``, which ``bool()`` would make true), and
negative counts. NumPy integers and floats are accepted as what they are and returned as Python values.

Example:
    >>> positive_int(3, "max_new_tokens")
    3
    >>> positive_int(True, "max_new_tokens")
    Traceback (most recent call last):
    ...
    ValueError: max_new_tokens must be a positive int, got True (a bool)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def _got(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"got {value!r} (a bool)"
    return f"got {value!r}"


def is_int(value: Any) -> bool:
    """An ``int`` or NumPy integer that is not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """An int or float (Python or NumPy) that is not a ``bool``."""
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    return numeric and not isinstance(value, (bool, np.bool_))


def int_at_least(value: Any, minimum: int, name: str, where: str | None = None) -> int:
    """``value`` as an ``int`` if it is an integer ≥ ``minimum``; else ``ValueError``."""
    if not is_int(value) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ValueError(f"{_prefix(where)}{name} must be {expected}, {_got(value)}")
    return int(value)


def positive_int(value: Any, name: str, where: str | None = None) -> int:
    """An integer ≥ 1 (``True`` and ``3.0`` are refused)."""
    return int_at_least(value, 1, name, where)


def nonnegative_int(value: Any, name: str, where: str | None = None) -> int:
    """An integer ≥ 0, e.g. a seed."""
    return int_at_least(value, 0, name, where)


def int_in(value: Any, low: int, high: int, name: str, where: str | None = None) -> int:
    """An integer in ``[low, high]``."""
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{_prefix(where)}{name} must be an int in [{low}, {high}], {_got(value)}")
    return int(value)


def finite_number(value: Any, name: str, where: str | None = None) -> float:
    """A finite real number (not a bool or a numeric string), as ``float``."""
    if not is_real(value) or not math.isfinite(float(value)):
        raise ValueError(f"{_prefix(where)}{name} must be a finite number, {_got(value)}")
    return float(value)


def boolean(value: Any, name: str, where: str | None = None) -> bool:
    """``True`` or ``False`` only (``"false"``, ``0`` and ``1`` are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{_prefix(where)}{name} must be true or false, {_got(value)}")
    return bool(value)


@overload
def string(value: Any, name: str, where: str | None = None, optional: Literal[False] = False) -> str: ...
@overload
def string(value: Any, name: str, where: str | None = None, *, optional: bool) -> str | None: ...
def string(value: Any, name: str, where: str | None = None, optional: bool = False) -> str | None:
    """A ``str`` (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        expected = "a string or null" if optional else "a string"
        raise ValueError(f"{_prefix(where)}{name} must be {expected}, {_got(value)}")
    return value


def strings(value: Any, name: str, where: str | None = None) -> tuple[str, ...]:
    """A list or tuple of strings (a bare string is refused: ``tuple("ab")`` would split it)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{_prefix(where)}{name} must be a list of strings, {_got(value)}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{_prefix(where)}{name} must be a list of strings; {bad[0]!r} is not one")
    return tuple(value)


def fractions3(value: Any, name: str = "fractions", where: str | None = None) -> tuple[float, float, float]:
    """Three finite non-negative numbers with a positive sum (train, validation, test shares)."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 3
        and all(is_real(f) and math.isfinite(float(f)) and f >= 0 for f in value)
        and sum(float(f) for f in value) > 0
    )
    if not ok:
        raise ValueError(
            f"{_prefix(where)}{name} must be three non-negative finite numbers with a positive sum, "
            f"{_got(value)}"
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def sizes3(value: Any, name: str = "sizes", where: str | None = None) -> tuple[int, int, int]:
    """Three positive ints (train, validation, test)."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 3
        or not all(is_int(v) and v >= 1 for v in value)
    ):
        raise ValueError(
            f"{_prefix(where)}{name} must be three positive ints (train, validation, test), {_got(value)}"
        )
    return (int(value[0]), int(value[1]), int(value[2]))


__all__ = [
    "boolean",
    "finite_number",
    "fractions3",
    "int_at_least",
    "int_in",
    "is_int",
    "is_real",
    "nonnegative_int",
    "positive_int",
    "sizes3",
    "string",
    "strings",
]
