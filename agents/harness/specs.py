"""Algorithm specs and env ids: parsing, resolution and validation, before any run starts.

A spec names one algorithm of the benchmark:

- ``ours:<name>`` / ``ours:<name>-scratch`` — a built-in agent of :data:`agents.ALGORITHMS`;
- ``sb3:<Class>`` / ``sb3_contrib:<Class>`` — a stable-baselines3 / sb3-contrib algorithm;
- ``package.module:attr`` — the user's own algorithm, imported with importlib (never ``eval``).

Where a user's module is looked up
    Only a ``package.module:attr`` spec imports from a place the user names, and it cannot shadow anything:
    while (and only while) its module is imported, the directories of ``import_path`` (default: the current
    directory) are *appended* to ``sys.path``, so every installed package and the standard library still
    win over a file of the same name there (a stray ``matplotlib.py`` or ``numpy.py`` in the working
    directory is never picked up). Nothing is added to ``sys.path`` for ``ours:`` or ``sb3:`` specs, and
    the harness never puts the working directory first. (``python -m agents.cli`` is the exception Python
    itself makes: ``-m`` puts the current directory first on ``sys.path``; the ``text-env`` command, or
    ``python -P -m``, does not.)

Example:
    >>> parse_algo_spec("ours:rloo-scratch")
    AlgoSpec(spec='ours:rloo-scratch', kind='ours', target='rloo', scratch=True)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

SPEC_HELP = "expected ours:<name>[-scratch], sb3:<Class>, sb3_contrib:<Class> or package.module:attr"
_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class AlgoSpec:
    """A parsed algorithm spec.

    Attributes:
        spec: The spec as given (``"ours:ppo"``, ``"sb3:PPO"``, ``"my_pkg.algo:Make"``).
        kind: ``"ours"``, ``"sb3"`` (SB3 and sb3-contrib) or ``"external"``.
        target: Our algorithm's name, the SB3 spec, or ``module:attr``.
        scratch: ``ours:<name>-scratch``: no supervised warm start.
    """

    spec: str
    kind: str
    target: str
    scratch: bool = False

    @property
    def slug(self) -> str:
        return slugify(self.spec)


def slugify(text: str) -> str:
    """A file-name-safe form of an env id or spec: ``"TextEnv/Copy-L4-v0"`` → ``"TextEnv-Copy-L4-v0"``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def parse_algo_spec(spec: str, import_path: Sequence[str] = ()) -> AlgoSpec:
    """Parse and resolve one spec; raises ``ValueError`` naming the spec if it is not usable.

    Resolution imports what the spec names (the SB3 class, the user's module), so a typo fails here, before
    any run starts. ``import_path`` is used for ``package.module:attr`` specs only (see
    :func:`resolve_external`).

    Example:
        >>> parse_algo_spec("ours:rloo-scratch")
        AlgoSpec(spec='ours:rloo-scratch', kind='ours', target='rloo', scratch=True)
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"bad algorithm spec {spec!r}: {SPEC_HELP}")
    prefix, _, name = spec.partition(":")
    if prefix == "ours":
        from agents import ALGORITHMS

        scratch = name.endswith("-scratch")
        base = name[: -len("-scratch")] if scratch else name
        if base not in ALGORITHMS:
            raise ValueError(
                f"bad algorithm spec {spec!r}: no built-in agent {base!r}; expected one of "
                f"{sorted(ALGORITHMS)} (optionally with -scratch)"
            )
        return AlgoSpec(spec, "ours", base, scratch)
    if prefix in ("sb3", "sb3_contrib"):
        from agents.sb3 import resolve_sb3_class

        try:
            resolve_sb3_class(spec)
        except (ValueError, ImportError) as e:
            raise ValueError(f"bad algorithm spec {spec!r}: {e}") from e
        return AlgoSpec(spec, "sb3", spec)
    resolve_external(spec, import_path)
    return AlgoSpec(spec, "external", spec)


@contextlib.contextmanager
def appended_to_sys_path(dirs: Sequence[str]) -> Iterator[list[str]]:
    """Append ``dirs`` (made absolute) to the *end* of ``sys.path`` for the duration of the block.

    Appended, never prepended: a module in ``dirs`` is found only if nothing installed has its name.
    Directories already on ``sys.path`` are left where they are; the ones added are removed afterwards.

    Example:
        >>> with appended_to_sys_path(["."]) as added:
        ...     sys.path[-len(added):] == added if added else True
        True
    """
    added = []
    for d in dirs:
        path = os.path.abspath(d)
        if path not in sys.path and path not in added:
            added.append(path)
    sys.path.extend(added)
    try:
        yield added
    finally:
        for path in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)


def resolve_external(spec: str, import_path: Sequence[str] = ()) -> Any:
    """Import ``package.module:attr`` (``attr`` may be dotted) and check it has a usable shape.

    The module is imported with the directories of ``import_path`` appended to ``sys.path`` for the import
    only (:func:`appended_to_sys_path`): an installed module of the same name always wins.

    Returns the class (with ``learn`` and ``predict``) or the function ``(env_id, budget, seed)``.
    """
    module_name, _, attr = spec.partition(":")
    if not _MODULE_RE.match(module_name) or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"bad algorithm spec {spec!r}: {SPEC_HELP}")
    try:
        with appended_to_sys_path(import_path):
            obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"bad algorithm spec {spec!r}: cannot import module {module_name!r} ({e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"bad algorithm spec {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj):
        missing = [m for m in ("learn", "predict") if not callable(getattr(obj, m, None))]
        if missing:
            raise ValueError(
                f"bad algorithm spec {spec!r}: class {obj.__name__} lacks {missing}; an algorithm class "
                "needs learn(total_timesteps) and predict(obs, deterministic=)"
            )
        return obj
    if callable(obj):
        try:
            inspect.signature(obj).bind("TextEnv/Copy-L4-v0", 1, 0)
        except TypeError as e:
            raise ValueError(
                f"bad algorithm spec {spec!r}: a function algorithm must accept (env_id, budget, seed): {e}"
            ) from e
        except ValueError:  # builtins without a signature: trust them
            pass
        return obj
    raise ValueError(f"bad algorithm spec {spec!r}: {attr!r} is neither a class nor a function")


def validate_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
    """Build the env once (train split) to catch unknown ids and missing data before any run starts."""
    import text_env  # noqa: F401  (registers the TextEnv ids)

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"bad env id {env_id!r}: expected a registered id like 'TextEnv/Reverse-v0'")
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        known = ", ".join(sorted(i for i in gym.registry if i.startswith("TextEnv/")))
        raise ValueError(f"bad env id {env_id!r}: not registered ({e}); TextEnv ids: {known}") from e
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except ImportError as e:
        raise ValueError(f"env {env_id!r} cannot be built: {e}") from e
    except (TypeError, ValueError, gym.error.Error) as e:
        raise ValueError(f"env {env_id!r} cannot be built with env_kwargs={env_kwargs!r}: {e}") from e
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(
                f"env {env_id!r} has action space {env.action_space}; the harness needs Discrete"
            )
        if not hasattr(env.unwrapped, "task"):
            raise ValueError(
                f"env {env_id!r} is not a text-env environment: the harness evaluates on a TextEnv task's "
                "held-out test split"
            )
        if len(env.unwrapped.task.encoded("test")) == 0:
            raise ValueError(f"env {env_id!r} has an empty test split: nothing to evaluate on")
    finally:
        env.close()
