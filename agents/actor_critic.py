"""Advantage actor-critic (A2C; Mnih et al. 2016) with GAE(λ) advantages (Schulman et al. 2016).

The critic is the value head on the policy's trunk; advantages bootstrap from it, so variance is lower than
REINFORCE's at the price of the critic's bias. One synchronous gradient step per batch of episodes.

Example:
    >>> agent = A2C("transformer", "TextEnv/Reverse-L4-v0", n_envs=64).learn(20_000)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.advantages import compute_gae
from agents.on_policy import OnPolicyAlgorithm, OnPolicyConfig
from agents.rollout import RolloutBatch


@dataclass
class A2CConfig(OnPolicyConfig):
    """A2C's hyperparameters (beyond :class:`~agents.on_policy.OnPolicyConfig`'s)."""

    learning_rate: float = 3e-5
    """AdamW learning rate."""
    gae_lambda: float = 0.95
    """λ of GAE (1.0 = Monte-Carlo returns minus the value)."""
    vf_coef: float = 0.5
    """Weight of the critic's loss."""
    normalize_advantage: bool = True
    """Whiten advantages over the batch's tokens."""


class A2C(OnPolicyAlgorithm):
    """Synchronous advantage actor-critic; hyperparameters in :class:`A2CConfig`."""

    algo_name = "a2c"
    config_class = A2CConfig
    config: A2CConfig

    def train(self, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        b_advantages, b_returns = compute_gae(rewards, batch.values, batch.mask, cfg.gamma, cfg.gae_lambda)
        if cfg.normalize_advantage:
            b_advantages = self.whiten(b_advantages, batch.mask)  # over every rank's tokens
        return self.policy_gradient_step(batch, b_advantages, b_returns, cfg.vf_coef)
