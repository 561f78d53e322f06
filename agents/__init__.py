"""Agents that learn in text-env environments: LM policies, batched KV-cached rollouts, the supervised
stage, and the policy-gradient learners, all with one SB3-shaped API:
``Algo(policy, env, ...)``, ``.learn(total_timesteps, callback=None)``, ``.predict(obs, deterministic=)``,
``.save(path)``, ``Algo.load(path)``.

Example:
    >>> from agents import PPO, sft
    >>> policy = sft("TextEnv/Reverse-v0", steps=2000)                      # doctest: +SKIP
    >>> agent = PPO(policy, "TextEnv/Reverse-v0", n_envs=64, kl_coef=0.05)  # doctest: +SKIP
    >>> agent.learn(total_timesteps=100_000)                                 # doctest: +SKIP
"""

from agents.actor_critic import A2C, A2CConfig
from agents.callbacks import BaseCallback, CallbackList, CheckpointCallback, ProgressBarCallback
from agents.evaluation import evaluate_policy
from agents.on_policy import OnPolicyAlgorithm, OnPolicyConfig
from agents.policies import TransformerConfig, TransformerPolicy, load_policy
from agents.ppo import PPO, PPOConfig
from agents.reinforce import REINFORCE, REINFORCEConfig
from agents.rloo import RLOO, RLOOConfig
from agents.rollout import RolloutBatch, RolloutCollector, make_rollout_env
from agents.sft import sft

ALGORITHMS: dict[str, type[OnPolicyAlgorithm]] = {
    "ppo": PPO,
    "rloo": RLOO,
    "reinforce": REINFORCE,
    "a2c": A2C,
}

__all__ = [
    "A2C",
    "ALGORITHMS",
    "PPO",
    "REINFORCE",
    "RLOO",
    "A2CConfig",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "OnPolicyAlgorithm",
    "OnPolicyConfig",
    "PPOConfig",
    "ProgressBarCallback",
    "REINFORCEConfig",
    "RLOOConfig",
    "RolloutBatch",
    "RolloutCollector",
    "TransformerConfig",
    "TransformerPolicy",
    "evaluate_policy",
    "load_policy",
    "make_rollout_env",
    "sft",
]
