"""REINFORCE with a learned baseline (Williams 1992; Sutton & Barto §13.4).

Each token's advantage is its Monte-Carlo reward-to-go minus the value head's estimate, ``G_t − V(s_t)``;
the value head regresses on ``G_t``. One gradient step per batch of episodes.

Example:
    >>> agent = REINFORCE("transformer", "TextEnv/Reverse-L4-v0", n_envs=64).learn(20_000)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.advantages import discounted_returns
from agents.on_policy import OnPolicyAlgorithm, OnPolicyConfig
from agents.rollout import RolloutBatch


@dataclass
class REINFORCEConfig(OnPolicyConfig):
    """REINFORCE's hyperparameters (beyond :class:`~agents.on_policy.OnPolicyConfig`'s)."""

    learning_rate: float = 3e-5
    """AdamW learning rate."""
    vf_coef: float = 0.5
    """Weight of the baseline's regression loss."""
    normalize_advantage: bool = True
    """Whiten advantages over the batch's tokens."""


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with the value head as baseline; hyperparameters in
    :class:`REINFORCEConfig`."""

    algo_name = "reinforce"
    config_class = REINFORCEConfig
    config: REINFORCEConfig

    def train(self, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        b_returns = discounted_returns(rewards, batch.mask, self.config.gamma)  # G_t
        b_advantages = (b_returns - batch.values) * batch.mask  # G_t − V(s_t)
        if self.config.normalize_advantage:
            b_advantages = self.whiten(b_advantages, batch.mask)  # over every rank's tokens
        return self.policy_gradient_step(batch, b_advantages, b_returns, self.config.vf_coef)
