"""PPO with a KL leash for language-model policies (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al.
2022), in the cleanrl style: the update reads top to bottom like the paper's pseudocode.

Per iteration: roll out ``n_envs`` episodes with the KV cache → shape rewards with ``-β (log π − log π_ref)``
per token → GAE advantages from the value head → ``n_epochs`` passes over minibatches of whole episodes, each
one full-sequence forward, with the clipped surrogate, a (clipped) value loss and an entropy bonus, stopping
early when the approximate KL to the rollout policy exceeds ``max_approx_kl``.

With ``k ≥ 2`` the critic is replaced by a group baseline, as GRPO (Shao et al. 2024) and TRL's RLOO trainer
do: each rollout samples ``k`` completions of ``n_envs / k`` prompts, and a completion's advantage, shared by
all its tokens, is its return minus the mean return of the other ``k − 1``; the update is the same clipped
multi-epoch one. Use it where a value head cannot predict the return (its explained variance, logged as
``losses/explained_variance``, stays ≤ 0): on the language tasks the value head — a linear probe on the
frozen trunk — reached −0.3 to −4 (Translate-v0) and −0.3 to −10 (Summarize-v0), its advantages were noisier
than none, and PPO lost to its SFT start on some seeds where ``k=4`` gained on every seed tried
(examples/eval_language.py records the runs).

Example:
    >>> from agents import PPO, sft
    >>> policy = sft("TextEnv/Reverse-v0", steps=500)                            # doctest: +SKIP
    >>> agent = PPO(policy, "TextEnv/Reverse-v0", n_envs=64, kl_coef=0.05)     # doctest: +SKIP
    >>> agent.learn(total_timesteps=50_000)                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.common import (
    OnPolicyAlgorithm,
    check_group_size,
    compute_gae,
    explained_variance,
    iteration_seed,
    leave_one_out_advantages,
    masked_mean,
    masked_whiten,
)
from agents.rollout import RolloutBatch


def clipped_surrogate(
    new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective as a loss: ``mean(max(-A·r, -A·clip(r, 1±ε)))`` over valid tokens.

    Returns ``(loss, approx_kl, clipfrac)``; approx_kl is the low-variance estimator ``E[(r − 1) − log r]``
    (Schulman's "Approximating KL divergence" note, as cleanrl logs it).
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip).float(), mask)
    return loss, approx_kl, clipfrac


class PPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization over whole episodes of tokens.

    Args (beyond :class:`~agents.common.OnPolicyAlgorithm`'s):
        n_epochs: Passes over each batch.
        batch_size: Episodes per minibatch (one full-sequence forward each).
        clip_range: ε of the clipped ratio.
        clip_range_vf: Clip the value update to ±this around the rollout's values (None: no clipping).
        vf_coef: Value-loss weight.
        gae_lambda: λ of GAE.
        normalize_advantage: Whiten advantages over the batch's tokens.
        max_approx_kl: Stop the epochs early when the approximate KL to the rollout policy exceeds it
            (cleanrl's ``target_kl``; here ``target_kl`` is the KL leash's target, as in TRL).
        k: Completions per prompt. 1 (default): GAE advantages from the value head. k ≥ 2 (``n_envs`` a
            multiple of k): leave-one-out group advantages, the value head neither used nor trained.
    """

    algo_name = "ppo"

    def __init__(
        self,
        policy: Any = "transformer",
        env: Any = "TextEnv/Reverse-v0",
        *,
        n_epochs: int = 2,
        batch_size: int = 32,
        clip_range: float = 0.2,
        clip_range_vf: float | None = 0.2,
        vf_coef: float = 0.5,
        gae_lambda: float = 0.95,
        normalize_advantage: bool = True,
        max_approx_kl: float | None = 0.05,
        k: int = 1,
        learning_rate: float = 2e-5,
        **kwargs: Any,
    ) -> None:
        if n_epochs < 1 or batch_size < 1:
            raise ValueError(f"n_epochs and batch_size must be ≥ 1, got {n_epochs}, {batch_size}")
        if not 0 < clip_range < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {clip_range!r}")
        k = check_group_size(k, kwargs.get("n_envs", 64), minimum=1)
        super().__init__(policy, env, learning_rate=learning_rate, **kwargs)
        self.k = k
        self.uses_value_head = k == 1
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.vf_coef = vf_coef
        self.gae_lambda = gae_lambda
        self.normalize_advantage = normalize_advantage
        self.max_approx_kl = max_approx_kl
        self.hparams.update(
            n_epochs=n_epochs, batch_size=batch_size, clip_range=clip_range, clip_range_vf=clip_range_vf,
            vf_coef=vf_coef, gae_lambda=gae_lambda, normalize_advantage=normalize_advantage,
            max_approx_kl=max_approx_kl, k=k, learning_rate=learning_rate,
        )  # fmt: skip

    def train(self, batch: RolloutBatch) -> dict[str, float]:
        rewards, kl = self.shaped_rewards(batch)
        b_mask = batch.mask
        b_values = batch.values
        if self.k == 1:
            b_advantages, b_returns = compute_gae(rewards, b_values, b_mask, self.gamma, self.gae_lambda)
        else:  # the group baseline: every token of a completion shares its leave-one-out advantage
            seq_returns = (rewards * b_mask).sum(dim=1)  # (B,)
            b_advantages = leave_one_out_advantages(seq_returns, self.k)[:, None] * b_mask
            b_returns = None
        if self.normalize_advantage:
            b_advantages = masked_whiten(b_advantages, b_mask)

        n = batch.actions.shape[0]
        rng = np.random.default_rng(iteration_seed(self.seed, self.iteration) ^ 0x5EED)
        pg_losses, v_losses, entropies, approx_kls, clipfracs = [], [], [], [], []
        stopped_early = False
        for _epoch in range(self.n_epochs):
            perm = torch.as_tensor(rng.permutation(n), device=self.device)
            for start in range(0, n, self.batch_size):
                mb = perm[start : start + self.batch_size]
                m = b_mask[mb]
                new_logp, new_values, entropy = self.forward_batch(batch, mb)
                pg_loss, approx_kl, clipfrac = clipped_surrogate(
                    new_logp, batch.logprobs[mb], b_advantages[mb], m, self.clip_range
                )
                if b_returns is None:  # no critic
                    v_loss = torch.zeros((), device=pg_loss.device)
                elif self.clip_range_vf is None:
                    v_loss = 0.5 * masked_mean((new_values - b_returns[mb]) ** 2, m)
                else:  # PPO2's clipped value loss
                    v_clipped = b_values[mb] + torch.clamp(
                        new_values - b_values[mb], -self.clip_range_vf, self.clip_range_vf
                    )
                    v_loss = 0.5 * masked_mean(
                        torch.maximum((new_values - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2), m
                    )
                ent = masked_mean(entropy, m)
                loss = pg_loss + self.vf_coef * v_loss - self.ent_coef * ent
                self.optimizer_step(loss)
                pg_losses.append(pg_loss.item())
                v_losses.append(v_loss.item())
                entropies.append(ent.item())
                approx_kls.append(approx_kl.item())
                clipfracs.append(clipfrac.item())
            if self.max_approx_kl is not None and approx_kls[-1] > self.max_approx_kl:
                stopped_early = True
                break

        self.kl.update(float(kl.mean()), n)
        return {
            "losses/policy_loss": float(np.mean(pg_losses)),
            "losses/value_loss": float(np.mean(v_losses)),
            "losses/entropy": float(np.mean(entropies)),
            "losses/approx_kl": float(np.mean(approx_kls)),
            "losses/clipfrac": float(np.mean(clipfracs)),
            "losses/explained_variance": (
                float("nan") if b_returns is None else explained_variance(b_values, b_returns, b_mask)
            ),
            "losses/stopped_early": float(stopped_early),
            "charts/kl": float(kl.mean()),
        }
