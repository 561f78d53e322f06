"""Advantage estimators and the masked statistics they use, for episodes laid out as ``(B, T)`` rows.

Each row is one episode (one completion) whose valid steps (``mask``) are a prefix. Everything here is a pure
function of tensors, tested against closed forms (tests/agents/test_algorithms.py), the way SB3 tests its GAE:

- :func:`compute_gae`: GAE(λ) from the value head (PPO, A2C);
- :func:`discounted_returns`: Monte-Carlo reward-to-go (REINFORCE);
- :func:`leave_one_out_advantages` / :func:`group_advantages`: the critic-free group baselines of RLOO and
  GRPO, shared by :class:`~agents.rloo.RLOO` and ``PPO(k=...)``;
- :func:`masked_mean`, :func:`masked_whiten`, :func:`explained_variance`.

Example:
    >>> r = torch.tensor([[0.0, 1.0]]); v = torch.zeros(1, 2); m = torch.ones(1, 2, dtype=torch.bool)
    >>> adv, ret = compute_gae(r, v, m, gamma=1.0, lam=1.0)
    >>> ret.tolist()
    [[1.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is true (0 if none).

    ``count`` replaces the local count of true positions as the divisor: a data-parallel rank passes
    (global count ÷ world size), so that the ranks' averaged results are the global mean (a per-rank mean
    would weight each rank's tokens by its own count)."""
    m = mask.to(x.dtype)
    if count is not None:
        return (x * m).sum() / max(float(count), 1e-12)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize ``x`` to zero mean, unit variance over the masked positions (masked-out entries → 0)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return torch.where(mask, (x - mean) / torch.sqrt(var + eps), torch.zeros_like(x))


def _discount_matrix(t: int, factor: float, device: torch.device) -> torch.Tensor:
    """``W[k, j] = factor ** (k - j)`` for ``k ≥ j`` else 0, so ``x @ W`` gives ``Σ_k factor^(k-j) x_k``."""
    k = torch.arange(t, device=device)
    exp = (k[:, None] - k[None, :]).float()
    return torch.where(exp >= 0, torch.pow(torch.tensor(factor, device=device), exp.clamp_min(0)), 0.0)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) for episodes laid out as ``(B, T)`` rows.

    The step after each row's last valid one is terminal (value 0). Truncation at the token budget is
    terminal too: the env pays the final state reward on that step and nothing follows, so there is nothing
    to bootstrap (unlike SB3's time limits).

    Vectorized over time with a discount matrix (``T`` is a few dozen tokens), no Python loop.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero where ``mask`` is false; ``returns = A + V``.
    """
    m = mask.to(values.dtype)
    v = values * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # (B, T); 0 past the end
    delta = (rewards + gamma * next_v - v) * m  # (B, T)
    adv = delta @ _discount_matrix(rewards.shape[1], gamma * lam, rewards.device)  # Σ_k (γλ)^(k-t) δ_k
    adv = adv * m
    return adv, (adv + v) * m


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = Σ_{k≥t} γ^(k-t) r_k`` per row (zero where ``mask`` is false)."""
    m = mask.to(rewards.dtype)
    return ((rewards * m) @ _discount_matrix(rewards.shape[1], gamma, rewards.device)) * m


def leave_one_out_advantages(returns: torch.Tensor, k: int, scale_by_std: bool = False) -> torch.Tensor:
    """Advantages for ``returns (G·k,)`` laid out group by group (``k`` consecutive rows per prompt).

    RLOO (Kool et al. 2019; Ahmadian et al. 2024): ``R_i − mean_{j≠i} R_j``. With ``scale_by_std`` (GRPO,
    Shao et al. 2024): ``(R_i − mean_j R_j) / (std_j R_j + ε)``.
    """
    if returns.numel() % k:
        raise ValueError(f"{returns.numel()} returns do not split into groups of k={k}")
    g = returns.view(-1, k)  # (G, k)
    if scale_by_std:
        return ((g - g.mean(1, keepdim=True)) / (g.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1)
    baseline = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - baseline).view(-1)


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, k: int, scale_by_std: bool = False
) -> torch.Tensor:
    """Per-token advantages ``(B, T)`` from a group baseline: each completion's (undiscounted) return is
    baselined by the other completions of its prompt (:func:`leave_one_out_advantages`), and every token of
    the completion shares that advantage. The estimator of RLOO and of ``PPO(k ≥ 2)``."""
    seq_returns = (rewards * mask).sum(dim=1)  # (B,)
    return leave_one_out_advantages(seq_returns, k, scale_by_std)[:, None] * mask


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[y_true - y_pred] / Var[y_true] over the masked positions (SB3's diagnostic); NaN if flat."""
    yt, yp = y_true[mask].double(), y_pred[mask].double()
    var = yt.var(unbiased=False) if yt.numel() > 1 else torch.tensor(0.0)
    if var.item() == 0:
        return float("nan")
    return float(1 - (yt - yp).var(unbiased=False) / var)


def check_group_size(k: Any, n_envs: Any, minimum: int) -> int:
    """``k`` completions per prompt, validated: an int ≥ ``minimum`` that divides ``n_envs`` (the rollout
    holds ``n_envs / k`` groups of ``k``). Raises ValueError naming the bad value."""
    if isinstance(k, bool) or not isinstance(k, int) or k < minimum:
        raise ValueError(f"k must be an int ≥ {minimum} (completions per prompt), got {k!r}")
    if n_envs % k:
        raise ValueError(f"n_envs ({n_envs}) must be a multiple of k ({k})")
    return k


__all__ = [
    "check_group_size",
    "compute_gae",
    "discounted_returns",
    "explained_variance",
    "group_advantages",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_whiten",
]
