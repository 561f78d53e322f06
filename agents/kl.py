"""The KL leash: a per-token action reward ``-β (log π − log π_ref)`` toward a frozen reference policy, with a
fixed or adaptive β (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2).

Example:
    >>> kl = KLController(0.1, target=6.0, horizon=10_000)
    >>> kl.update(current_kl=12.0, n_episodes=1000)  # KL above target: β grows
    >>> round(kl.value, 4)
    0.102
"""

from __future__ import annotations

import math

import numpy as np
import torch


class KLController:
    """The KL leash's coefficient β: fixed, or adaptive toward a target KL:
    ``β ← β · (1 + clip(KL/target − 1, ±0.2) · n / horizon)``.

    Args:
        init: Initial β (``kl_coef``).
        target: Target per-episode KL in nats; None keeps β fixed.
        horizon: How many episodes the adaptation is spread over.
    """

    def __init__(self, init: float, target: float | None = None, horizon: int = 10_000) -> None:
        if not math.isfinite(init) or init < 0:
            raise ValueError(f"kl_coef must be a finite number ≥ 0, got {init!r}")
        if target is not None and not target > 0:
            raise ValueError(f"target_kl must be > 0 or None, got {target!r}")
        self.value = float(init)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_episodes: int) -> None:
        if self.target is None or not math.isfinite(current_kl):
            return
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_episodes / self.horizon


def kl_penalized_rewards(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Env rewards plus the per-token leash ``-β (log π − log π_ref)``, and each episode's KL ``(B,)``
    (zeros when there is no reference)."""
    if ref_logprobs is None:
        return rewards, torch.zeros(rewards.shape[0], device=rewards.device)
    kl = (logprobs - ref_logprobs) * mask  # (B, T)
    return rewards - beta * kl, kl.sum(dim=1)


__all__ = ["KLController", "kl_penalized_rewards"]
