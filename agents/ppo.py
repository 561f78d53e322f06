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

import functools
from dataclasses import dataclass

import numpy as np
import torch

from agents.advantages import (
    check_group_size,
    compute_gae,
    masked_mean,
)
from agents.on_policy import OnPolicyAlgorithm, OnPolicyConfig, iteration_seed
from agents.rollout import RolloutBatch


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO's hyperparameters (beyond :class:`~agents.on_policy.OnPolicyConfig`'s)."""

    learning_rate: float = 2e-5
    """AdamW learning rate."""
    n_epochs: int = 2
    """Passes over each batch."""
    batch_size: int = 32
    """Episodes per minibatch (one full-sequence forward each)."""
    clip_range: float = 0.2
    """ε of the clipped probability ratio."""
    clip_range_vf: float | None = 0.2
    """Clip the value update to ± this around the rollout's values (none: no clipping)."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    gae_lambda: float = 0.95
    """λ of GAE."""
    normalize_advantage: bool = True
    """Whiten advantages over the batch's tokens."""
    max_approx_kl: float | None = 0.05
    """Stop the epochs early when the approximate KL to the rollout policy exceeds this (cleanrl's
    target_kl; here target_kl is the KL leash's target, as in TRL)."""
    k: int = 1
    """Completions per prompt: 1 uses GAE on the value head; k ≥ 2 (n_envs a multiple of k) uses the
    leave-one-out group baseline instead (GRPO-style; the value head is neither used nor trained)."""
    scale_by_std: bool = False
    """With k ≥ 2: divide each group's advantages by its standard deviation (GRPO's normalisation)."""

    def __post_init__(self) -> None:
        if (
            type(self.n_epochs) is not int
            or type(self.batch_size) is not int
            or self.n_epochs < 1
            or self.batch_size < 1
        ):
            raise ValueError(f"n_epochs and batch_size must be ≥ 1, got {self.n_epochs}, {self.batch_size}")
        clip = self.clip_range
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < 1:
            raise ValueError(f"clip_range must be in (0, 1), got {clip!r}")
        for name in ("clip_range_vf", "max_approx_kl"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")
            ):
                raise ValueError(f"{name} must be a number > 0 or None, got {v!r}")
        if (
            isinstance(self.gae_lambda, bool)
            or not isinstance(self.gae_lambda, (int, float))
            or not 0 <= self.gae_lambda <= 1
        ):
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda!r}")
        check_group_size(self.k, self.n_envs, minimum=1)
        super().__post_init__()


def clipped_surrogate(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    count: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped objective as a loss: ``mean(max(-A·r, -A·clip(r, 1±ε)))`` over valid tokens.

    Returns ``(loss, approx_kl, clipfrac)``; approx_kl is the low-variance estimator ``E[(r − 1) − log r]``
    (Schulman's "Approximating KL divergence" note, as cleanrl logs it). ``count`` divides the sums instead
    of the local token count (a data-parallel rank's share, see :func:`~agents.advantages.masked_mean`).
    """
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask, count)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask, count)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip).float(), mask, count)
    return loss, approx_kl, clipfrac


class PPO(OnPolicyAlgorithm):
    """Proximal Policy Optimization over whole episodes of tokens; hyperparameters in :class:`PPOConfig`.

    Example:
        >>> agent = PPO("transformer", "TextEnv/Reverse-L4-v0", n_envs=16, n_epochs=1)  # doctest: +SKIP
        >>> agent.config.clip_range                                                    # doctest: +SKIP
        0.2
    """

    algo_name = "ppo"
    config_class = PPOConfig
    config: PPOConfig

    @property
    def uses_value_head(self) -> bool:  # type: ignore[override]
        return self.config.k == 1

    def train(self, batch: RolloutBatch, rewards: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        b_mask = batch.mask
        b_values = batch.values
        if cfg.k == 1:
            b_advantages, b_returns = compute_gae(rewards, b_values, b_mask, cfg.gamma, cfg.gae_lambda)
        else:  # the group baseline: every token of a completion shares its leave-one-out advantage
            b_advantages, b_returns = self.group_advantages(rewards, b_mask), None
        if cfg.normalize_advantage:
            b_advantages = self.whiten(b_advantages, b_mask)

        world = self.world
        # a data-parallel rank shuffles the global batch as a single process would, and trains on its own
        # rows of each minibatch (the loss terms divided by the minibatch's global token count ÷ world size)
        n = cfg.n_envs if world.is_distributed else batch.actions.shape[0]
        lo = self._shard.start
        n_local = batch.actions.shape[0]
        rng = np.random.default_rng(iteration_seed(cfg.seed, self.iteration) ^ 0x5EED)
        pg_losses, v_losses, entropies, approx_kls, clipfracs = [], [], [], [], []
        names = ("pg", "v", "ent", "kl", "clip")
        stopped_early = False
        for _epoch in range(cfg.n_epochs):
            perm = torch.as_tensor(rng.permutation(n), device=self.device)
            for start in range(0, n, cfg.batch_size):
                mb = perm[start : start + cfg.batch_size]
                if world.is_distributed:
                    count = self.loss_count(b_mask, mb)
                    mb = mb[(mb >= lo) & (mb < lo + n_local)] - lo  # none of them here: a zero gradient
                else:
                    count = self.loss_count(b_mask[mb])
                loss_fn = functools.partial(self._minibatch_loss, batch, b_advantages, b_returns, count)
                # on several ranks the scalars are the global minibatch's, so every rank stops early together
                _, s = self.step_on_rows(mb, len(mb), loss_fn, names)
                pg_losses.append(s["pg"])
                v_losses.append(s["v"])
                entropies.append(s["ent"])
                approx_kls.append(s["kl"])
                clipfracs.append(s["clip"])
            if cfg.max_approx_kl is not None and approx_kls[-1] > cfg.max_approx_kl:
                stopped_early = True
                break

        return {
            "losses/policy_loss": float(np.mean(pg_losses)),
            "losses/value_loss": float(np.mean(v_losses)),
            "losses/entropy": float(np.mean(entropies)),
            "losses/approx_kl": float(np.mean(approx_kls)),
            "losses/clipfrac": float(np.mean(clipfracs)),
            "losses/explained_variance": (
                float("nan")
                if b_returns is None
                else self.batch_explained_variance(b_values, b_returns, b_mask)
            ),
            "losses/stopped_early": float(stopped_early),
        }

    def _minibatch_loss(
        self,
        batch: RolloutBatch,
        b_advantages: torch.Tensor,
        b_returns: torch.Tensor | None,
        count: float,
        idx: torch.Tensor | slice,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The clipped loss of rows ``idx`` of a minibatch, every term divided by the minibatch's ``count``
        (so the micro-batches' terms add up, see :meth:`step_on_rows`)."""
        cfg = self.config
        m = batch.mask[idx]
        new_logp, new_values, entropy = self.forward_batch(batch, idx)
        pg_loss, approx_kl, clipfrac = clipped_surrogate(
            new_logp, batch.logprobs[idx], b_advantages[idx], m, cfg.clip_range, count
        )
        if b_returns is None:  # no critic
            v_loss = torch.zeros((), device=pg_loss.device)
        elif cfg.clip_range_vf is None:
            v_loss = 0.5 * masked_mean((new_values - b_returns[idx]) ** 2, m, count)
        else:  # PPO2's clipped value loss
            old_values = batch.values[idx]
            vf = cfg.clip_range_vf
            v_clipped = old_values + torch.clamp(new_values - old_values, -vf, vf)
            v_err = torch.maximum((new_values - b_returns[idx]) ** 2, (v_clipped - b_returns[idx]) ** 2)
            v_loss = 0.5 * masked_mean(v_err, m, count)
        ent = masked_mean(entropy, m, count)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
        return loss, {"pg": pg_loss, "v": v_loss, "ent": ent, "kl": approx_kl, "clip": clipfrac}
