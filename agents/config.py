"""Configs as dataclasses: strict validation from the type hints, round trips through JSON, and a command line
generated from the fields (cleanrl's ``Args`` + ``tyro.cli``, without the dependency).

Every learner's hyperparameters are one ``@dataclass`` (``PPOConfig``, ``RLOOConfig``, ...; the harness's
``BenchmarkConfig``), each field followed by a one-line docstring. This module turns such a class into:

- validation (:func:`check_fields`): each value must have its annotated type — an ``int`` field refuses
  ``True`` and ``3.0``, a ``float`` field refuses ``"0.1"``, NaN and inf, a ``bool`` field refuses ``"yes"``;
- a JSON round trip (:func:`config_to_dict` / :func:`config_from_dict`) that names unknown keys and the file;
- argparse options (:func:`add_dataclass_arguments` for one class, :func:`add_config_arguments` for the union
  of several): one ``--kebab-case`` flag per field, its docstring and default in ``--help``, and back
  (:func:`dataclass_from_args`, :func:`given_overrides`, :func:`dataclass_to_argv`).

The helper is general: any ``@dataclass`` whose fields carry attribute docstrings (a string literal right
after the field, as in :class:`agents.policies.transformer.TransformerConfig`) gets one flag per field, its
help the field's docstring and default:

- ``int``/``float``/``str``/``Path`` (and ``str | os.PathLike``): one value of that type;
- ``bool``: ``--flag`` / ``--no-flag``;
- ``X | None``: a value of ``X``, or the word ``none``;
- ``Literal[...]``: one of the choices;
- ``list[X]``/``Sequence[X]``/``tuple[X, ...]``: ``nargs="+"`` values of ``X`` (``metadata={"nargs": "*"}``
  allows an empty list);
- ``dict[...]`` (or any other JSON-shaped type): one JSON text, parsed with ``json.loads`` and checked
  against the annotation (never evaluated).

A field's ``metadata`` may rename its flag (``{"flag": "eval-episodes"}``), set ``nargs`` or ``metavar``, or
leave it off the command line (``{"cli": False}``).

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Args:
    ...     lr: float = 1e-3
    ...     '''Learning rate.'''
    ...     tags: list[str] | None = None
    ...     '''Free-form tags.'''
    ...     cuda: bool = True
    ...     '''Use the GPU.'''
    >>> p = argparse.ArgumentParser()
    >>> add_dataclass_arguments(p, Args)
    >>> dataclass_from_args(Args, p.parse_args(["--lr", "0.1", "--no-cuda", "--tags", "a", "b"]))
    Args(lr=0.1, tags=['a', 'b'], cuda=False)
    >>> dataclass_to_argv(Args(lr=0.1))
    ['--lr', '0.1']
    >>> check_fields(Args(lr=True))
    Traceback (most recent call last):
    ...
    ValueError: lr: expected float, got true
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import contextlib
import dataclasses
import enum
import inspect
import json
import math
import os
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

_NONE_WORDS = ("none", "null")
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence, set, frozenset)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


# ---- validation -------------------------------------------------------------------------------------------
def check_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` if it has type ``tp`` (strictly, as JSON types: an int is not a bool, a float is finite),
    else ``ValueError`` naming it."""
    check_json_type(value, tp, name)
    inner, _ = _split_optional(tp)
    if inner is float and value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def check_fields(config: Any) -> Any:
    """Type-check every field of a dataclass instance against its annotation; returns it."""
    hints = typing.get_type_hints(type(config))
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


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# ---- the command line -------------------------------------------------------------------------------------
def field_docstrings(cls: type) -> dict[str, str]:
    """The attribute docstrings of a class and its bases: ``{field: docstring}``, read with ``ast`` from the
    class source (nothing is executed); empty where the source is not available.

    Example:
        >>> from agents.ppo import PPOConfig
        >>> field_docstrings(PPOConfig)["n_epochs"]
        'Passes over each batch.'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # built in, or defined where no source file exists (a REPL)
            continue
        node = next((n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None)
        if node is None:
            continue
        for stmt, nxt in zip(node.body, node.body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _cli_fields(cls: type, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    skip = set(exclude)
    return [
        f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True) and f.name not in skip
    ]


def _flag(f: dataclasses.Field) -> str:
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def _default_of(f: dataclasses.Field, defaults: Mapping[str, Any] | None) -> Any:
    if defaults and f.name in defaults:
        return defaults[f.name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; a union of ``str`` and path types is read as ``str``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        if len(args) == 1:
            return args[0], optional
        if str in args and all(a is str or a is os.PathLike or a is Path for a in args):
            return str, optional
        return Union[tuple(args)], optional  # noqa: UP007  (a runtime-built union)
    return tp, False


def _is_json_type(tp: Any) -> bool:
    origin = get_origin(tp) or tp
    return origin in _MAPPINGS or tp is Any or get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return tp.__name__ if get_origin(tp) is None and isinstance(tp, type) else str(tp)


def check_json_type(value: Any, tp: Any, where: str = "value") -> None:
    """Raise ``ValueError`` if the JSON ``value`` does not have the annotated type ``tp``.

    Example:
        >>> check_json_type({"sb3:PPO": {"n_steps": 64}}, dict[str, dict[str, Any]])
        >>> check_json_type({"sb3:PPO": 64}, dict[str, dict[str, Any]], "--algo-kwargs")
        Traceback (most recent call last):
        ...
        ValueError: --algo-kwargs["sb3:PPO"]: expected a JSON object, got 64
    """
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return
    if origin in (Union, types.UnionType):
        for a in args:
            with contextlib.suppress(ValueError):
                check_json_type(value, a, where)
                return
        raise ValueError(f"{where}: expected {tp}, got {json.dumps(value)}")
    if tp is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {json.dumps(value)}")
        return
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {json.dumps(value)}")
        return
    if (origin or tp) in _MAPPINGS:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a JSON object, got {json.dumps(value)}")
        vt = args[1] if len(args) == 2 else Any
        for k, v in value.items():
            check_json_type(v, vt, f"{where}[{json.dumps(k)}]")
        return
    if (origin or tp) in _SEQUENCES:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a JSON array, got {json.dumps(value)}")
        items = [args[0]] * len(value) if args and (len(args) == 1 or args[-1] is Ellipsis) else list(args)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {json.dumps(value)}")
        for i, (v, t) in enumerate(zip(value, items or [Any] * len(value))):
            check_json_type(v, t, f"{where}[{i}]")
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(tp, type) and isinstance(value, tp)
    if not ok:
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {json.dumps(value)}")


def _json_parser(tp: Any, flag: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from e
        try:
            check_json_type(value, tp, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
        return value

    parse.__name__ = "JSON"
    return parse


def _scalar_parser(tp: Any, flag: str) -> tuple[Callable[[str], Any], dict[str, Any]]:
    """The argparse ``type`` (and ``choices``/``metavar``) for one value of ``tp``."""
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        kind = type(choices[0])
        return kind, {"choices": choices}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.name: m for m in tp}

        def parse_enum(text: str) -> Any:
            if text not in members:
                raise argparse.ArgumentTypeError(f"expected one of {list(members)}, got {text!r}")
            return members[text]

        return parse_enum, {"metavar": "{" + ",".join(members) + "}"}
    if tp in (int, float, str):
        return tp, {"metavar": tp.__name__.upper()}
    if tp is Path or tp is os.PathLike:
        return (Path if tp is Path else str), {"metavar": "PATH"}
    if tp is bool:  # a bool inside a list or an optional: spelled as JSON
        return _json_parser(bool, flag), {"metavar": "true|false"}
    return _json_parser(tp, flag), {"metavar": "JSON"}


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.lower() in _NONE_WORDS else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, enum.Enum):
        return value.name
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _argument_kwargs(cls: type, f: dataclasses.Field, hint: Any, help_text: str) -> dict[str, Any]:
    """The ``add_argument`` keywords of one field (its type's parser, nargs, choices, metavar)."""
    flag = _flag(f)
    tp, optional = _split_optional(hint)
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
    origin = get_origin(tp) or tp
    if tp is bool and not optional:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif (origin in _SEQUENCES and get_origin(tp) is not None) or tp in (list, tuple):
        args = get_args(tp)
        item = args[0] if args else str
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(set(args)) != 1:
                raise TypeError(f"{cls.__name__}.{f.name}: heterogeneous tuples {tp} have no CLI form")
            kwargs["nargs"] = len(args)
        else:
            kwargs["nargs"] = f.metadata.get("nargs", "+")
        parse, extra = _scalar_parser(item, flag)
        kwargs.update(type=parse, **extra)
    elif _is_json_type(tp) and get_origin(tp) is not Literal:
        kwargs.update(type=_json_parser(hint, flag), metavar="JSON")
    else:
        parse, extra = _scalar_parser(tp, flag)
        if optional:
            parse = _optional(parse)
            if "metavar" in extra:
                extra["metavar"] += "|none"
        kwargs.update(type=parse, **extra)
    if "metavar" in f.metadata:
        kwargs["metavar"] = f.metadata["metavar"]
    return kwargs


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    defaults: Mapping[str, Any] | None = None,
    exclude: Iterable[str] = (),
) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (see the module docstring for types).

    Flags are ``--field-name`` (``dest`` is the field name); each one's help is the field's docstring and
    its default. Unset flags stay out of the namespace (``argparse.SUPPRESS``), so that
    :func:`dataclass_from_args` can tell "not given" from "given the default".

    Args:
        parser: The parser (or argument group) to add to.
        cls: A dataclass type.
        defaults: Defaults that replace the class's own in the help (and, passed again to
            :func:`dataclass_from_args`, in the result): e.g. ``{"workers": os.cpu_count()}``.
        exclude: Fields to leave off.

    Raises:
        TypeError: a field's type has no command-line form.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docstrings(cls)
    for f in _cli_fields(cls, exclude):
        default = _default_of(f, defaults)
        doc = docs.get(f.name, "")
        shown = "required" if default is dataclasses.MISSING else f"default: {_show(default)}"
        help_text = (f"{doc} ({shown})" if doc else f"({shown})").replace("%", "%%")
        kwargs = _argument_kwargs(cls, f, hints[f.name], help_text)
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        parser.add_argument(_flag(f), **kwargs)


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    classes: Mapping[str, type],
    skip: Iterable[str] = (),
    prefix: str = "",
) -> list[str]:
    """Add one flag per field of several config classes at once (``{label: class}``, e.g.
    ``{"ppo": PPOConfig, "rloo": RLOOConfig}``): the union of their fields, each once, its help giving the
    default per class where they differ (``ppo: 2e-05; rloo: 3e-05``) and the classes it applies to where not
    all have it. With ``prefix`` (``"sft_"``) flags and destinations are prefixed (``--sft-steps`` →
    ``sft_steps``). As with :func:`add_dataclass_arguments`, a flag left out sets nothing, so
    :func:`given_overrides` returns only what the user set and each class keeps its own default. Returns
    the destinations added.
    """
    skip = set(skip)
    owners: dict[str, list[tuple[str, Any]]] = {}
    first: dict[str, tuple[type, dataclasses.Field]] = {}
    for label, cls in classes.items():
        for f in _cli_fields(cls, skip):
            owners.setdefault(f.name, []).append((label, _default_of(f, None)))
            first.setdefault(f.name, (cls, f))
    for name, defaults in owners.items():
        cls, f = first[name]
        distinct = {_show(d) for _, d in defaults}
        if len(distinct) == 1:
            default_text = distinct.pop()
            applies = (
                "" if len(defaults) == len(classes) else f" ({', '.join(label for label, _ in defaults)})"
            )
        else:
            default_text = "; ".join(f"{label}: {_show(d)}" for label, d in defaults)
            applies = ""
        doc = field_docstrings(cls).get(name, "")
        help_text = f"{doc}{applies} [default: {default_text}]".replace("%", "%%")
        kwargs = _argument_kwargs(cls, f, typing.get_type_hints(cls)[name], help_text)
        kwargs["dest"] = prefix + name
        parser.add_argument("--" + (prefix + name).replace("_", "-"), **kwargs)
    return [prefix + name for name in owners]


def given_overrides(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The fields among ``names`` the user set on the command line."""
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


def _coerce(value: Any, tp: Any) -> Any:
    """A parsed sequence as the container its field declares (list for ``list``/``Sequence``)."""
    tp, _ = _split_optional(tp)
    origin = get_origin(tp) or tp
    if isinstance(value, (list, tuple)) and origin in _SEQUENCES:
        if origin in (tuple, set, frozenset):
            return origin(value)
        return list(value)
    return value


def dataclass_from_args(
    cls: type, args: argparse.Namespace, *, defaults: Mapping[str, Any] | None = None, **overrides: Any
) -> Any:
    """The ``cls`` instance that parsed ``args`` describe: given flags, else ``defaults``, else the class's
    defaults (sequences as the container the field declares); ``overrides`` win over all three (and may set
    fields that have no flag)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in _cli_fields(cls):
        value = getattr(args, f.name) if hasattr(args, f.name) else _default_of(f, defaults)
        if (
            value is not dataclasses.MISSING
        ):  # coerced, so that a default tuple and a given list compare equal
            kwargs[f.name] = _coerce(value, hints[f.name])
    kwargs.update(overrides)
    return cls(**kwargs)


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_normal(v) for v in value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _arg_text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(_normal(value))
    if isinstance(value, enum.Enum):
        return value.name
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def dataclass_to_argv(
    obj: Any, *, defaults: Mapping[str, Any] | None = None, exclude: Iterable[str] = ()
) -> list[str]:
    """The flags that rebuild ``obj`` with :func:`add_dataclass_arguments`: one per field that differs from
    its default (``defaults``, else the class's own).

    Example:
        >>> from agents.ppo import PPOConfig
        >>> dataclass_to_argv(PPOConfig(n_epochs=4, env_kwargs={"max_new_tokens": 6}))
        ['--env-kwargs', '{"max_new_tokens": 6}', '--n-epochs', '4']
    """
    hints = typing.get_type_hints(type(obj))
    argv: list[str] = []
    for f in _cli_fields(type(obj), exclude):
        value = getattr(obj, f.name)
        default = _default_of(f, defaults)
        if default is not dataclasses.MISSING and _normal(value) == _normal(default):
            continue
        flag = _flag(f)
        tp, _ = _split_optional(hints[f.name])
        origin = get_origin(tp) or tp
        if isinstance(value, bool) and tp is bool:
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            argv += [flag, "none"]
        elif origin in _SEQUENCES and isinstance(value, (list, tuple, set, frozenset)):
            argv += [flag, *(_arg_text(v) if not isinstance(v, str) else v for v in _normal(value))]
        else:
            argv += [flag, _arg_text(value)]
    return argv


__all__ = [
    "add_config_arguments",
    "add_dataclass_arguments",
    "check_fields",
    "check_json_type",
    "check_value",
    "config_from_dict",
    "config_to_dict",
    "dataclass_from_args",
    "dataclass_to_argv",
    "field_docstrings",
    "field_names",
    "given_overrides",
]
