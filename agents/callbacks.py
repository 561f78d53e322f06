"""Callbacks, shaped like stable-baselines3's (``stable_baselines3/common/callbacks.py``): a public
``on_step`` calls the subclass's ``_on_step``; returning False stops training.

``on_step`` runs once per *iteration* of an on-policy learner (one rollout of ``n_envs`` episodes and one
update), after the iteration's scalars are logged. ``self.locals`` then holds ``batch`` (the
:class:`~agents.rollout.RolloutBatch`) and ``stats`` (the logged scalars).

The loop itself uses two built-in callbacks: :class:`CheckpointCallback` (``checkpoint_dir`` /
``checkpoint_every``) and :class:`ProgressBarCallback` (``learn(progress_bar=True)``).

Example:
    >>> class StopAtReturn(BaseCallback):
    ...     def _on_step(self) -> bool:
    ...         return self.locals["stats"]["charts/episodic_return"] < 0.9
    >>> agent.learn(100_000, callback=StopAtReturn())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class BaseCallback:
    """SB3-shaped callback: subclass and implement ``_on_step`` (return False to stop training).

    ``self.model`` is the algorithm, ``self.locals`` the loop's variables (``batch``, ``stats``),
    ``self.num_timesteps`` the env steps so far. ``on_step`` runs once per iteration (rollout + update).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.model: Any = None
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.n_calls = 0
        self.num_timesteps = 0

    def init_callback(self, model: Any) -> None:
        self.model = model
        self._init_callback()

    def _init_callback(self) -> None:
        pass

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.locals, self.globals = locals_, globals_
        self._on_training_start()

    def _on_training_start(self) -> None:
        pass

    def on_step(self) -> bool:
        self.n_calls += 1
        self.num_timesteps = self.model.num_timesteps
        return bool(self._on_step())

    def _on_step(self) -> bool:
        return True

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_end(self) -> None:
        pass


class CallbackList(BaseCallback):
    """Several callbacks run in order; training stops if any returns False (all of them still run)."""

    def __init__(self, callbacks: list[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = callbacks

    def init_callback(self, model: Any) -> None:
        super().init_callback(model)
        for c in self.callbacks:
            c.init_callback(model)

    def on_training_start(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_training_start(locals_, globals_)

    def update_locals(self, locals_: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.update_locals(locals_)

    def _on_step(self) -> bool:
        return all([c.on_step() for c in self.callbacks])  # every callback runs, even after a False

    def on_training_end(self) -> None:
        for c in self.callbacks:
            c.on_training_end()


class FunctionCallback(BaseCallback):
    """Wraps ``fn(locals_, globals_) -> bool | None`` (SB3's old callable style); ``None`` means go on."""

    def __init__(self, fn: Callable[[dict[str, Any], dict[str, Any]], Any]) -> None:
        super().__init__()
        self.fn = fn

    def _on_step(self) -> bool:
        out = self.fn(self.locals, self.globals)
        return True if out is None else bool(out)


class CheckpointCallback(BaseCallback):
    """Save the agent to ``save_path`` every ``save_freq`` iterations (``agent.save(save_path)``: a new
    ``ckpt-<iteration>`` directory, ``latest.json`` moved to it once it is complete).

    Args:
        save_path: The run directory.
        save_freq: Iterations between checkpoints.
    """

    def __init__(self, save_path: str | os.PathLike, save_freq: int) -> None:
        super().__init__()
        if type(save_freq) is not int or save_freq < 1:
            raise ValueError(f"save_freq must be a positive int, got {save_freq!r}")
        self.save_path = Path(save_path)
        self.save_freq = save_freq

    def _on_step(self) -> bool:
        if self.model.iteration % self.save_freq == 0:
            self.model.save(self.save_path)
        return True


class ProgressBarCallback(BaseCallback):
    """A tqdm bar over the run's token budget, with the latest mean return as its postfix."""

    def __init__(self, total: int, desc: str = "") -> None:
        super().__init__()
        self.total = int(total)
        self.desc = desc
        self.bar: Any = None
        self._start = 0

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self._start = self.model.num_timesteps
        self.bar = tqdm(total=self.total, unit="tok", desc=self.desc)

    def _on_step(self) -> bool:
        done = min(self.model.num_timesteps - self._start, self.total)
        self.bar.update(done - self.bar.n)
        stats = self.locals.get("stats") or {}
        if "charts/episodic_return" in stats:
            self.bar.set_postfix(ret=f"{stats['charts/episodic_return']:.3f}")
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_callback(callback: Any) -> BaseCallback:
    """A :class:`BaseCallback` from None, a callback, a callable, or a list of them."""
    if callback is None:
        return CallbackList([])
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList([make_callback(c) for c in callback])
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(f"callback must be a BaseCallback, a callable or a list of them, got {callback!r}")


__all__ = [
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "FunctionCallback",
    "ProgressBarCallback",
    "make_callback",
]
