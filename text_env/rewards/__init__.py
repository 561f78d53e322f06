"""Rewards: the protocol, the registry, composition, the built-in rewards, learned reward models and
preference feedback.

The learned models (:mod:`text_env.rewards.learned`, torch) and the feedback tools
(:mod:`text_env.rewards.feedback`) are imported on first use of one of their names, so ``import text_env``
stays light.

Example:
    >>> from text_env import rewards
    >>> [r.name for r in rewards.available()][:2]  # doctest: +SKIP
    >>> r = rewards.make_composite({"exact_match": 1.0, "partial_match": 0.5})
    >>> rm, report = rewards.train_reward_model("prefs.jsonl")  # doctest: +SKIP
"""

import importlib
from typing import Any

from text_env.rewards.base import (
    CompositeReward,
    FunctionReward,
    Reward,
    RewardBatch,
    RewardError,
    RewardTerm,
    check_reward_output,
    pad_ragged,
)
from text_env.rewards.registry import RewardInfo, available, make, make_composite, register_reward

_LAZY = {
    "BradleyTerryRewardModel": "text_env.rewards.learned",
    "ClassifierRewardModel": "text_env.rewards.learned",
    "EncoderConfig": "text_env.rewards.learned",
    "PreferencePair": "text_env.rewards.learned",
    "TrainReport": "text_env.rewards.learned",
    "load_learned_reward": "text_env.rewards.learned",
    "pairwise_accuracy": "text_env.rewards.learned",
    "read_preferences": "text_env.rewards.learned",
    "train_classifier_reward": "text_env.rewards.learned",
    "train_reward_model": "text_env.rewards.learned",
    "SyntheticLabeller": "text_env.rewards.feedback",
    "add_label_command": "text_env.rewards.feedback",
    "label_session": "text_env.rewards.feedback",
    "write_preferences": "text_env.rewards.feedback",
}


def __getattr__(name: str) -> Any:  # PEP 562: import torch-backed modules only when used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'text_env.rewards' has no attribute {name!r}")


__all__ = [
    "BradleyTerryRewardModel",
    "ClassifierRewardModel",
    "CompositeReward",
    "EncoderConfig",
    "FunctionReward",
    "PreferencePair",
    "Reward",
    "RewardBatch",
    "RewardError",
    "RewardInfo",
    "RewardTerm",
    "SyntheticLabeller",
    "TrainReport",
    "add_label_command",
    "available",
    "check_reward_output",
    "label_session",
    "load_learned_reward",
    "make",
    "make_composite",
    "pad_ragged",
    "pairwise_accuracy",
    "read_preferences",
    "register_reward",
    "train_classifier_reward",
    "train_reward_model",
    "write_preferences",
]
