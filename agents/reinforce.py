"""REINFORCE with a learned baseline (Williams 1992; Sutton & Barto §13.4).

Each token's advantage is its Monte-Carlo reward-to-go minus the value head's estimate, ``G_t − V(s_t)``;
the value head regresses on ``G_t``. One gradient step per batch of episodes.

Example:
    >>> agent = REINFORCE("transformer", "TextEnv/Reverse-L4-v0", n_envs=64).learn(20_000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from agents.common import OnPolicyAlgorithm, discounted_returns, masked_whiten
from agents.rollout import RolloutBatch


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with the value head as baseline.

    Args (beyond :class:`~agents.common.OnPolicyAlgorithm`'s):
        vf_coef: Weight of the baseline's regression loss.
        normalize_advantage: Whiten advantages over the batch's tokens.
    """

    algo_name = "reinforce"

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        vf_coef: float = 0.5,
        normalize_advantage: bool = True,
        learning_rate: float = 3e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.vf_coef = vf_coef
        self.normalize_advantage = normalize_advantage
        self.hparams.update(
            vf_coef=vf_coef, normalize_advantage=normalize_advantage, learning_rate=learning_rate
        )

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        rewards, kl = self.shaped_rewards(batch)
        b_returns = discounted_returns(rewards, batch.mask, self.gamma)  # G_t
        b_advantages = (b_returns - batch.values) * batch.mask  # G_t − V(s_t)
        if self.normalize_advantage:
            b_advantages = masked_whiten(b_advantages, batch.mask)
        stats = self.policy_gradient_step(batch, b_advantages, b_returns, self.vf_coef)
        self.kl.update(float(kl.mean()), batch.actions.shape[0])
        stats["charts/kl"] = float(kl.mean())
        return stats
