"""The envs' action spaces: ``Discrete(vocab_size)`` whose ``sample()`` never draws a token a completion
cannot contain (``pad``, ``bos``, ``unk``; see :func:`text_env.tokenizers.never_emitted_ids`).

They are ``gymnasium.spaces.Discrete`` / ``MultiDiscrete`` in every other respect (equality, ``contains``,
batching, pickling into worker processes): every id stays a legal action, so an agent that emits ``pad`` gets
an episode as before, but random exploration (``action_space.sample()``, SB3's DQN ε-greedy) does not waste
steps on ids that decode to nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def _sample_mask(n: int, never: Any) -> np.ndarray:
    mask = np.ones(n, dtype=np.int8)
    mask[np.asarray(list(never), dtype=np.int64)] = 0
    return mask


class TokenSpace(spaces.Discrete):
    """``Discrete(n)`` whose ``sample()`` (without a ``mask`` or ``probability`` of the caller's) leaves out
    the ids ``never``.

    Example:
        >>> space = TokenSpace(6, never=(0, 1, 3), seed=0)
        >>> sorted({int(space.sample()) for _ in range(200)})
        [2, 4, 5]
    """

    def __init__(self, n: int, never: Any = (), seed: Any = None) -> None:
        super().__init__(n, seed=seed)
        self.never = tuple(int(i) for i in never)
        self.sample_mask = _sample_mask(int(n), self.never)

    def sample(self, mask: Any = None, probability: Any = None) -> np.int64:
        if mask is None and probability is None:
            mask = self.sample_mask
        return super().sample(mask=mask, probability=probability)


class TokenBatchSpace(spaces.MultiDiscrete):
    """``MultiDiscrete([n] * num_envs)`` (a vector env's actions) whose ``sample()`` leaves out ``never`` in
    every slot."""

    def __init__(self, n: int, num_envs: int, never: Any = (), seed: Any = None) -> None:
        super().__init__(np.full(num_envs, n, dtype=np.int64), seed=seed)
        self.never = tuple(int(i) for i in never)
        row = _sample_mask(int(n), self.never)
        self.sample_mask = tuple(row for _ in range(num_envs))

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        if mask is None and probability is None:
            mask = self.sample_mask
        return super().sample(mask=mask, probability=probability)
