"""``text-env benchmark``, and the small dataclass → argparse helper its flags are generated with.

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
import os
import shlex
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from agents.harness.config import DEFAULT_ALGOS, DEFAULT_ENVS, QUICK, BenchmarkConfig

# ---------------------------------------------------------------------------------------------------------
# dataclass → argparse

_NONE_WORDS = ("none", "null")
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence, set, frozenset)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def field_docstrings(cls: type) -> dict[str, str]:
    """The attribute docstrings of a class and its bases: ``{field: docstring}``, read with ``ast`` from the
    class source (nothing is executed); empty where the source is not available.

    Example:
        >>> field_docstrings(BenchmarkConfig)["seeds"]
        'Seeds per env and algorithm: 0 .. seeds-1.'
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
    return getattr(tp, "__name__", None) if get_origin(tp) is None and isinstance(tp, type) else str(tp)


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
        flag = _flag(f)
        tp, optional = _split_optional(hints[f.name])
        default = _default_of(f, defaults)
        doc = docs.get(f.name, "")
        shown = "required" if default is dataclasses.MISSING else f"default: {_show(default)}"
        help_text = (f"{doc} ({shown})" if doc else f"({shown})").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
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
            kwargs.update(type=_json_parser(hints[f.name], flag), metavar="JSON")
        else:
            parse, extra = _scalar_parser(tp, flag)
            if optional:
                parse = _optional(parse)
                if "metavar" in extra:
                    extra["metavar"] += "|none"
            kwargs.update(type=parse, **extra)
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        parser.add_argument(flag, **kwargs)


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
        >>> dataclass_to_argv(BenchmarkConfig(seeds=5, env_kwargs={"max_new_tokens": 6}))
        ['--seeds', '5', '--env-kwargs', '{"max_new_tokens": 6}']
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


# ---------------------------------------------------------------------------------------------------------
# text-env benchmark


def cli_defaults(quick: bool = False) -> dict[str, Any]:
    """Where the command line's defaults differ from :class:`BenchmarkConfig`'s: one worker per CPU core,
    and with ``--quick`` the smoke suite (:data:`agents.harness.config.QUICK`) written to its own directory.
    """
    defaults: dict[str, Any] = {"workers": max(1, os.cpu_count() or 1)}
    if quick:
        defaults.update(QUICK, out=BenchmarkConfig.out + "-quick")
    return defaults


def benchmark_command(config: BenchmarkConfig) -> str:
    """A ``text-env benchmark`` command line that reproduces ``config`` (``config.command`` if set): the
    flags of the fields that differ from the command line's defaults.

    Example:
        >>> benchmark_command(BenchmarkConfig(seeds=5, workers=os.cpu_count()))
        'text-env benchmark --seeds 5'
    """
    if config.command:
        return config.command
    return shlex.join(["text-env", "benchmark", *dataclass_to_argv(config, defaults=cli_defaults())])


def add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``text-env benchmark``: one flag per :class:`BenchmarkConfig` field, plus ``--quick``."""
    from agents.harness.specs import SPEC_HELP

    p = subparsers.add_parser(
        "benchmark",
        help="algorithms × envs × seeds at an equal token budget → table, CSV/JSON, report, plots",
        description=(
            "Benchmark algorithms on TextEnv ids at an equal budget of env steps (tokens). With no arguments "
            f"it runs the embedded default: {', '.join(DEFAULT_ALGOS)} on {', '.join(DEFAULT_ENVS)}, "
            f"{BenchmarkConfig.seeds} seeds, {BenchmarkConfig.budget} tokens per run. Algorithm specs: "
            f"{SPEC_HELP}."
        ),
    )
    add_dataclass_arguments(p, BenchmarkConfig, defaults=cli_defaults())
    p.add_argument(
        "--quick",
        action="store_true",
        help="a ~1 minute smoke version of the default suite (its own defaults; flags still override them)",
    )
    p.add_argument(
        "--aggregate",
        action="store_true",
        help="run nothing: summarize the run files already in --out (e.g. from --shard jobs) into the table, "
        "plots and report, and name the planned runs that are missing",
    )
    p.set_defaults(func=_run_benchmark_command)


def _run_benchmark_command(args: argparse.Namespace) -> int:
    from agents.harness.pool import aggregate_benchmark, run_benchmark
    from agents.harness.report import ci, format_table

    # nothing is put on sys.path here: a package.module:attr spec's module is looked up in --import-path
    # (default: the current directory) after every installed package, and only while it is imported
    config = dataclass_from_args(BenchmarkConfig, args, defaults=cli_defaults(args.quick))
    if args.aggregate and config.shard is not None:
        raise ValueError("--aggregate reads every shard's runs: leave out --shard")
    config.validate()  # every spec and env id, before anything runs
    n_runs = len(config.envs) * len(config.algos) * config.seeds

    def say(line: str) -> None:
        print(line, flush=True)

    if args.aggregate:
        result = aggregate_benchmark(config, progress=say)
    else:
        print(
            f"benchmark: {len(config.algos)} algorithms × {len(config.envs)} envs × {config.seeds} seeds = "
            f"{n_runs} runs, {config.budget} tokens each, "
            + (f"{config.workers} worker(s)" if config.executor == "process" else "on Ray")
            + f" → {config.out}",
            flush=True,
        )
        result = run_benchmark(config, progress=say)
    print()
    print(format_table(result.summary))
    print()
    agg = result.summary["aggregate"].get("success", {})
    if agg and result.wrote_outputs:
        print("IQM final success over the suite: " + ", ".join(f"{a} {ci(v['iqm'])}" for a, v in agg.items()))
    if result.wrote_outputs:
        print(f"wall time {result.wall_seconds:.0f} s; report: {result.report_path}")
    else:
        print(
            f"shard {config.shard}: {len(result.runs)} run(s) in {Path(config.out) / 'runs'}; when every "
            f"shard has finished: {benchmark_command(dataclasses.replace(config, shard=None))} --aggregate"
        )
    code = 0
    if result.failed:
        print(
            f"{len(result.failed)} run(s) failed (see the report); rerun the same command to retry them",
            file=sys.stderr,
        )
        code = 1
    if args.aggregate and result.missing:
        print(
            f"{len(result.missing)} of {n_runs} planned run(s) have no result: {', '.join(result.missing)}",
            file=sys.stderr,
        )
        code = 1
    return code
