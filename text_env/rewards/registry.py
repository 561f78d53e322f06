"""Reward registry: names → factories, composition from specs, and the listing users browse.

A reward *spec* is any of:

- a registered name: ``"exact_match"``; with an argument after a colon where the factory takes one:
  ``"reward_model:runs/rm"``;
- an explicit ``"package.module:attr"`` naming a callable or a Reward (imported, never ``eval``'d);
- a :class:`~text_env.rewards.base.Reward` instance, or any callable (see ``FunctionReward``);
- a dict ``{spec: weight}`` or a list of specs (weight 1 each) for a weighted sum.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from text_env.rewards.base import CompositeReward, FunctionReward, Reward, RewardKind, RewardTerm
from text_env.validate import is_real


@dataclass(frozen=True)
class RewardInfo:
    """One registry entry, as ``available()`` lists it."""

    name: str
    kind: RewardKind
    requires: tuple[str, ...]
    description: str
    factory: Callable[..., Reward]
    takes_argument: bool = False


_REGISTRY: dict[str, RewardInfo] = {}


def register_reward(
    name: str,
    factory: Callable[..., Reward] | None = None,
    *,
    kind: RewardKind = "state",
    requires: tuple[str, ...] = (),
    description: str = "",
    takes_argument: bool = False,
    overwrite: bool = False,
) -> Any:
    """Register a reward factory under ``name``; usable as a decorator.

    Args:
        name: The name users pass to ``make`` / ``gym.make(..., reward=name)``.
        factory: A callable returning a :class:`Reward` (a Reward subclass works).
        kind: ``"state"`` or ``"action"``.
        requires: What the reward needs from a task, e.g. ``("reference",)`` or ``("label",)``.
        description: One line for ``available()``.
        takes_argument: The factory accepts the text after ``name:`` as its first argument.
        overwrite: Replace an existing entry instead of raising.

    Example:
        >>> @register_reward("shout", description="fraction of upper-case letters")
        ... class Shout(Reward):
        ...     name = "shout"
        ...     def score(self, batch):
        ...         return [sum(c.isupper() for c in t) / max(len(t), 1) for t in batch.completions]
    """
    if kind not in ("state", "action"):
        raise ValueError(f"reward kind must be 'state' or 'action', got {kind!r}")

    def add(f: Callable[..., Reward]) -> Callable[..., Reward]:
        if name in _REGISTRY and not overwrite:
            raise ValueError(
                f"a reward named {name!r} is already registered; pass overwrite=True to replace it"
            )
        desc = description or ((getattr(f, "__doc__", None) or "").strip().splitlines() or [""])[0]
        _REGISTRY[name] = RewardInfo(name, kind, tuple(requires), desc, f, takes_argument)
        return f

    return add if factory is None else add(factory)


def available() -> list[RewardInfo]:
    """Every registered reward: name, kind (state/action), what it requires, a one-line description."""
    _ensure_builtins()
    return sorted(_REGISTRY.values(), key=lambda r: r.name)


def make(spec: Any, **kwargs: Any) -> Reward:
    """Build one reward from a spec (see the module docstring). A dict or list spec returns a composite
    wrapped as a single state reward only if all parts are state rewards; prefer :func:`make_composite`."""
    _ensure_builtins()
    if isinstance(spec, Reward):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} given with an already built reward {spec!r}")
        return spec
    if isinstance(spec, str):
        return _make_from_name(spec, **kwargs)
    if callable(spec):
        return FunctionReward(spec, **kwargs)
    raise TypeError(
        f"cannot build a reward from {type(spec).__name__} {spec!r}; expected a registered name, "
        "'module:attr', a callable, a Reward, or a dict of {spec: weight}"
    )


def make_composite(spec: Any) -> CompositeReward:
    """Normalize any reward spec to a :class:`CompositeReward` (what environments hold)."""
    if isinstance(spec, CompositeReward):
        return spec
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = [(s, 1.0) for s in spec]
    else:
        items = [(spec, 1.0)]
    if not items:
        raise ValueError("an empty reward spec; expected at least one reward")
    terms = []
    for s, w in items:
        # a number, not something float() can turn into one: True would weigh 1, "2" would weigh 2
        if not is_real(w):
            raise ValueError(f"reward weight for {s!r} must be a number, got {type(w).__name__}: {w!r}")
        weight = float(w)
        r = make(s)
        terms.append(RewardTerm(r.name, weight, r))
    return CompositeReward(terms)


def _make_from_name(spec: str, **kwargs: Any) -> Reward:
    name, sep, arg = spec.partition(":")
    info = _REGISTRY.get(name)
    if info is not None:
        if sep:
            if not info.takes_argument:
                raise ValueError(f"reward {name!r} takes no ':' argument, got {spec!r}")
            return info.factory(arg, **kwargs)
        return info.factory(**kwargs)
    if sep:
        return _import_reward(name, arg, spec, **kwargs)
    names = ", ".join(sorted(_REGISTRY))
    raise ValueError(f"unknown reward {spec!r}; available rewards: {names} (or 'package.module:attr')")


def _import_reward(module: str, attr: str, spec: str, **kwargs: Any) -> Reward:
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as e:  # empty or relative names: ValueError
        names = ", ".join(sorted(_REGISTRY))
        raise ValueError(
            f"unknown reward {spec!r}: not a registered name and {module}:{attr} cannot be imported ({e}); "
            f"available rewards: {names}"
        ) from e
    if isinstance(obj, Reward):
        return obj
    if isinstance(obj, type) and issubclass(obj, Reward):
        return obj(**kwargs)
    if callable(obj):
        return FunctionReward(obj, **kwargs)
    raise TypeError(f"{spec!r} is a {type(obj).__name__}, not a reward or callable")


_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("text_env.rewards.builtin")
