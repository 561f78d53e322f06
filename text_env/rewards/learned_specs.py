"""Registry entries of the learned rewards: ``"reward_model:<dir>"`` and ``"classifier:<dir>"``.

They live apart from :mod:`text_env.rewards.learned` so that listing or building the other rewards does not
import torch; the model module is imported when one of these specs is built.

Example:
    >>> from text_env.rewards import make
    >>> rm = make("reward_model:runs/rm")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from text_env.rewards.base import Reward
from text_env.rewards.registry import register_reward


def _directory(spec: str, directory: str | os.PathLike | None) -> str | os.PathLike:
    if directory is None or (isinstance(directory, str) and not directory.strip()):
        raise ValueError(f"reward {spec!r} needs the directory of a saved model, e.g. '{spec}:runs/my_model'")
    return directory


@register_reward(
    "reward_model",
    takes_argument=True,
    description="Bradley-Terry reward model learned from preferences, from a directory: 'reward_model:<dir>'",
)
def reward_model(directory: str | os.PathLike | None = None, **kwargs: Any) -> Reward:
    """Load a :class:`~text_env.rewards.learned.BradleyTerryRewardModel` saved in ``directory``."""
    from text_env.rewards.learned import BradleyTerryRewardModel

    if kwargs:
        raise TypeError(
            f"reward 'reward_model' takes only a directory, got keyword arguments {sorted(kwargs)}"
        )
    return BradleyTerryRewardModel.load(_directory("reward_model", directory))


@register_reward(
    "classifier",
    takes_argument=True,
    description="positive-class probability of a text classifier, from a directory: 'classifier:<dir>'",
)
def classifier(directory: str | os.PathLike | None = None, **kwargs: Any) -> Reward:
    """Load a :class:`~text_env.rewards.learned.ClassifierRewardModel` saved in ``directory``."""
    from text_env.rewards.learned import ClassifierRewardModel

    if kwargs:
        raise TypeError(f"reward 'classifier' takes only a directory, got keyword arguments {sorted(kwargs)}")
    return ClassifierRewardModel.load(_directory("classifier", directory))
