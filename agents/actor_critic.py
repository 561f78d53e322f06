"""Advantage actor-critic (A2C; Mnih et al. 2016) with GAE(λ) advantages (Schulman et al. 2016).

The critic is the value head on the policy's trunk; advantages bootstrap from it, so variance is lower than
REINFORCE's at the price of the critic's bias. One synchronous gradient step per batch of episodes.

Example:
    >>> agent = A2C("transformer", "TextEnv/Reverse-L4-v0", n_envs=64).learn(20_000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from agents.common import OnPolicyAlgorithm, compute_gae, masked_whiten
from agents.rollout import RolloutBatch


class A2C(OnPolicyAlgorithm):
    """Synchronous advantage actor-critic.

    Args (beyond :class:`~agents.common.OnPolicyAlgorithm`'s):
        gae_lambda: λ of GAE (1.0 = Monte-Carlo returns minus the value).
        vf_coef: Weight of the critic's loss.
        normalize_advantage: Whiten advantages over the batch's tokens.
    """

    algo_name = "a2c"

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        gae_lambda: float = 0.95,
        vf_coef: float = 0.5,
        normalize_advantage: bool = True,
        learning_rate: float = 3e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.gae_lambda = gae_lambda
        self.vf_coef = vf_coef
        self.normalize_advantage = normalize_advantage
        self.hparams.update(
            gae_lambda=gae_lambda, vf_coef=vf_coef, normalize_advantage=normalize_advantage,
            learning_rate=learning_rate,
        )  # fmt: skip

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        rewards, kl = self.shaped_rewards(batch)
        b_advantages, b_returns = compute_gae(rewards, batch.values, batch.mask, self.gamma, self.gae_lambda)
        if self.normalize_advantage:
            b_advantages = masked_whiten(b_advantages, batch.mask)
        stats = self.policy_gradient_step(batch, b_advantages, b_returns, self.vf_coef)
        self.kl.update(float(kl.mean()), batch.actions.shape[0])
        stats["charts/kl"] = float(kl.mean())
        return stats
