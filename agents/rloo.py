"""RLOO: REINFORCE with a leave-one-out group baseline (Kool et al. 2019; Ahmadian et al. 2024, "Back to
Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs"), with the GRPO
variant (Shao et al. 2024) one flag away.

Each iteration draws ``n_envs / k`` prompts and samples ``k`` completions of each. A completion's advantage is
its return minus the mean return of the other ``k − 1`` completions of the same prompt (GRPO: minus the group
mean, divided by the group's standard deviation); every token of the completion gets that advantage. No
critic is needed. The KL leash enters each completion's return, as in the RLOO paper.

Example:
    >>> agent = RLOO(sft("TextEnv/Arithmetic-v0"), "TextEnv/Arithmetic-v0", n_envs=64, k=4)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from agents.common import OnPolicyAlgorithm, check_group_size, leave_one_out_advantages
from agents.rollout import RolloutBatch


class RLOO(OnPolicyAlgorithm):
    """k completions per prompt, each baselined by the others.

    Args (beyond :class:`~agents.common.OnPolicyAlgorithm`'s):
        k: Completions per prompt (``n_envs`` must be a multiple, k ≥ 2).
        scale_by_std: GRPO's normalization by the group's standard deviation.
    """

    algo_name = "rloo"
    uses_value_head = False

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        k: int = 4,
        scale_by_std: bool = False,
        learning_rate: float = 3e-5,
        **kwargs: Any,
    ) -> None:
        k = check_group_size(k, kwargs.get("n_envs", 64), minimum=2)
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.k = k
        self.scale_by_std = scale_by_std
        self.hparams.update(k=k, scale_by_std=scale_by_std, learning_rate=learning_rate)

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        rewards, kl = self.shaped_rewards(batch)
        seq_returns = (rewards * batch.mask).sum(dim=1)  # (B,)
        adv = leave_one_out_advantages(seq_returns, self.k, self.scale_by_std)  # (B,)
        b_advantages = adv[:, None] * batch.mask  # every token of a completion shares its advantage
        stats = self.policy_gradient_step(batch, b_advantages, None, 0.0)
        self.kl.update(float(kl.mean()), batch.actions.shape[0])
        stats["charts/kl"] = float(kl.mean())
        return stats
