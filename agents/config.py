"""Configs as dataclasses: strict validation from the type hints, round trips through JSON, and a command line
generated from the fields (cleanrl's ``Args`` + ``tyro.cli``, without the dependency).

Every learner's hyperparameters are one ``@dataclass`` (``PPOConfig``, ``RLOOConfig``, ...), each field
followed by a one-line docstring. This module turns such a class into:

- validation (:func:`check_fields`): each value must have its annotated type — an ``int`` field refuses
  ``True`` and ``3.0``, a ``float`` field refuses ``"0.1"``, NaN and inf, a ``bool`` field refuses ``"yes"``;
- a JSON round trip (:func:`config_to_dict` / :func:`config_from_dict`) that names unknown keys and the file;
- argparse options (:func:`add_config_arguments`): one ``--kebab-case`` flag per field, its docstring and
  default in ``--help``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     lr: float = 0.1
    ...     '''The learning rate.'''
    >>> field_docs(Demo)["lr"]
    'The learning rate.'
    >>> check_fields(Demo(lr=True))
    Traceback (most recent call last):
    ...
    ValueError: lr must be a number, got True
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring that follows each field in the class body (attribute-docstring style), for ``cls`` and
    its bases; a field without one maps to ``""``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # defined interactively: no source to read
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        stmts = body.body
        for i, node in enumerate(stmts):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                nxt = stmts[i + 1] if i + 1 < len(stmts) else None
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
                else:
                    docs.setdefault(node.target.id, "")
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(inner type, is_optional)`` for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def check_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` if it has type ``tp`` (strictly; see the module docstring), else ``ValueError`` naming it."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} must not be None")
    origin = typing.get_origin(inner) or inner
    if inner is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return value
    if inner is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must be an object with string keys, got {value!r}")
        return value
    if origin in (list, tuple, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(inner) or (Any,)
        return type(value)(check_value(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value))
    if typing.get_origin(inner) is typing.Literal:
        if value not in typing.get_args(inner):
            raise ValueError(f"{name} must be one of {list(typing.get_args(inner))}, got {value!r}")
        return value
    return value  # Any and other types: checked by the owner's __post_init__


def check_fields(config: Any) -> Any:
    """Type-check every field of a dataclass instance against its annotation; returns it."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        check_value(f.name, getattr(config, f.name), hints[f.name])
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """``asdict(config)``, checked to be JSON data (a callable or object in a field raises ``TypeError``)."""
    data = dataclasses.asdict(config)
    json.dumps(data)  # raise now, not halfway through writing a checkpoint
    return data


def config_from_dict(cls: type, data: Any, where: str = "config", **overrides: Any) -> Any:
    """Build ``cls`` from a JSON object (plus ``overrides``); unknown keys and bad values raise ``ValueError``
    naming ``where``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object of {cls.__name__} fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    merged = {**data, **overrides}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(names)}"
        )
    try:
        return cls(**merged)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


# ---- the command line -------------------------------------------------------------------------------------
def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _optional(parse: Any) -> Any:
    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    return parse_or_none


def _parser_for(tp: Any) -> tuple[Any, str]:
    """(argparse type callable, metavar) for a field type."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner) or inner
    if inner is bool:
        parse, metavar = _parse_bool, "BOOL"
    elif inner is int:
        parse, metavar = _parse_int, "INT"
    elif inner is float:
        parse, metavar = _parse_float, "FLOAT"
    elif origin in (dict, Mapping):
        parse, metavar = _parse_json_object, "JSON"
    elif typing.get_origin(inner) is typing.Literal:
        parse, metavar = str, "{" + ",".join(map(str, typing.get_args(inner))) + "}"
    else:
        parse, metavar = str, "STR"
    return (_optional(parse) if optional else parse), metavar + ("|none" if optional else "")


def _format_default(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return "none" if value is None else str(value)


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    classes: Mapping[str, type],
    skip: Iterable[str] = (),
    prefix: str = "",
) -> list[str]:
    """Add one ``--flag`` per field of the dataclasses ``classes`` (``{label: class}``, e.g.
    ``{"ppo": PPOConfig, "rloo": RLOOConfig}``); the union of their fields, each once.

    A flag left out sets nothing (``argparse.SUPPRESS``), so :func:`given_overrides` returns only what the
    user set and each class keeps its own default (``--target-kl none`` sets an optional field to None);
    ``--help`` shows each field's docstring and its default per class
    (``ppo: 2e-05; rloo: 3e-05``). With ``prefix`` (``"sft_"``) the flags and destinations are prefixed
    (``--sft-steps`` → ``sft_steps``). Returns the destinations added.
    """
    skip = set(skip)
    seen: dict[str, list[tuple[str, Any]]] = {}
    first: dict[str, tuple[type, dataclasses.Field]] = {}
    for label, cls in classes.items():
        instance_defaults = {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.init:
                continue
            seen.setdefault(f.name, []).append((label, instance_defaults.get(f.name, dataclasses.MISSING)))
            first.setdefault(f.name, (cls, f))
    for name, defaults in seen.items():
        cls, _f = first[name]
        parse, metavar = _parser_for(_hints(cls)[name])
        distinct = {_format_default(d) for _, d in defaults}
        if len(distinct) == 1:
            default_text = distinct.pop()
            owners = (
                "" if len(defaults) == len(classes) else f" ({', '.join(label for label, _ in defaults)})"
            )
        else:
            default_text = "; ".join(f"{label}: {_format_default(d)}" for label, d in defaults)
            owners = ""
        doc = field_docs(cls).get(name, "")
        parser.add_argument(
            flag_name(prefix + name),
            dest=prefix + name,
            type=parse,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{doc}{owners} [default: {default_text}]".replace("%", "%%"),
        )
    return [prefix + name for name in seen]


def given_overrides(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The fields among ``names`` the user set on the command line."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


__all__ = [
    "add_config_arguments",
    "check_fields",
    "check_value",
    "config_from_dict",
    "config_to_dict",
    "field_docs",
    "field_names",
    "flag_name",
    "given_overrides",
]
