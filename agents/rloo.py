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

from dataclasses import dataclass

import torch

from agents.advantages import check_group_size
from agents.on_policy import OnPolicyAlgorithm, OnPolicyConfig
from agents.rollout import RolloutBatch


@dataclass
class RLOOConfig(OnPolicyConfig):
    """RLOO's hyperparameters (beyond :class:`~agents.on_policy.OnPolicyConfig`'s)."""

    learning_rate: float = 3e-5
    """AdamW learning rate."""
    k: int = 4
    """Completions per prompt (n_envs must be a multiple; k ≥ 2)."""
    scale_by_std: bool = False
    """GRPO's normalisation: divide each group's advantages by its standard deviation."""

    def __post_init__(self) -> None:
        check_group_size(self.k, self.n_envs, minimum=2)
        super().__post_init__()


class RLOO(OnPolicyAlgorithm):
    """k completions per prompt, each baselined by the others; hyperparameters in :class:`RLOOConfig`."""

    algo_name = "rloo"
    config_class = RLOOConfig
    config: RLOOConfig
    uses_value_head = False

    def train(self, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        b_advantages = self.group_advantages(rewards, batch.mask)  # every token of a completion shares it
        return self.policy_gradient_step(batch, b_advantages, None, 0.0)
