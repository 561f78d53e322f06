"""Rewards: the protocol, the registry, composition and the built-in rewards.

Example:
    >>> from text_env import rewards
    >>> [r.name for r in rewards.available()][:2]  # doctest: +SKIP
    >>> r = rewards.make_composite({"exact_match": 1.0, "partial_match": 0.5})
"""

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

__all__ = [
    "CompositeReward",
    "FunctionReward",
    "Reward",
    "RewardBatch",
    "RewardError",
    "RewardInfo",
    "RewardTerm",
    "available",
    "check_reward_output",
    "make",
    "make_composite",
    "pad_ragged",
    "register_reward",
]
