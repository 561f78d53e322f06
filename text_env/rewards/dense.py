"""Dense partial credit for the reference tasks: a reward per emitted token (``position_match``) and one
for ending at the reference's length (``stop_match``).

Exact match pays 1 for a whole correct answer and 0 otherwise, so an agent that starts from scratch sees
nothing but zeros until it guesses a whole answer by chance (a 4-letter reversal from 8 letters: 1 in 4096).
Together they pay for every token that is right *where it stands*, on the step that emits it, and for
ending at the right length:

- ``position_match`` (an action reward): a token appended at position ``t`` earns
  ``1 / (len(reference) + 1)`` if it equals the reference's token ``t`` (a token past the reference's end, or
  the stop action, earns nothing);
- ``stop_match`` (a state reward, paid on the step that ends the episode): ``1 / (len(reference) + 1)`` if
  the finished completion has exactly the reference's length.

The ``-Dense`` ids (``TextEnv/Reverse-Dense-v0``, ...) use the sum of the two, so an episode's return is
``(matching positions + [right length]) / (len(ref) + 1)``:
1 exactly when the completion equals the reference token for token, and in between a per-position
character-match credit, paid as it is earned (credit assignment a from-scratch learner can use). Only the
first reference counts; a row without a reference earns 0. The ids are compared with numpy; no text is
decoded.

Example:
    >>> import gymnasium as gym, text_env
    >>> env = gym.make("TextEnv/Reverse-L4-Dense-v0")
    >>> obs, info = env.reset(seed=0)
    >>> info["prompt"]
    'reverse gcgf='
    >>> tok = env.unwrapped.tokenizer
    >>> [round(float(env.step(tok.encode(c)[0])[1]), 2) for c in "fgxg"]  # the reference is 'fgcg'
    [0.2, 0.2, 0.0, 0.2]
    >>> round(float(env.step(tok.eos_id)[1]), 2)  # stopping after 4 tokens, the reference's length
    0.2
"""

from __future__ import annotations

import numpy as np

from text_env.rewards.base import Reward, RewardBatch, RewardError
from text_env.rewards.registry import register_reward


def _check(batch: RewardBatch, name: str) -> None:
    if batch.reference_ids is None or batch.reference_lengths is None:
        raise RewardError(
            f"reward {name!r} needs references, but the batch has none (does the task have references?)"
        )


def _unreferenced(batch: RewardBatch, out: np.ndarray) -> np.ndarray:
    """Rows without any reference (a pinned ad-hoc prompt) earn 0."""
    if batch._references is not None:
        missing = np.fromiter((r is None for r in batch._references), dtype=bool, count=len(batch))
        out[missing] = 0.0
    return out.astype(np.float32)


@register_reward("position_match", kind="action", requires=("reference",))
class PositionMatch(Reward):
    """Per-token partial credit: ``1/(len(ref)+1)`` for each emitted token equal to the reference's token at
    its position (see the module docstring). An action reward; pair it with ``stop_match``."""

    name = "position_match"
    kind = "action"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        _check(batch, self.name)
        if batch.actions is None:
            raise RewardError(
                "reward 'position_match' scores the token just emitted, but the batch has no actions "
                "(it is an action reward: score it once per step)"
            )
        n = len(batch)
        actions = np.asarray(batch.actions, dtype=np.int64).reshape(n)
        cl = np.asarray(batch.completion_lengths, dtype=np.int64)
        rl = np.asarray(batch.reference_lengths, dtype=np.int64)
        ref, comp = np.asarray(batch.reference_ids), np.asarray(batch.completion_ids)
        # the env appends a token before scoring it, at position cl - 1; a stop action is not appended, so
        # the last id then differs from the action (or there is none)
        t = cl - 1
        width = min(comp.shape[1], ref.shape[1])
        hit = np.zeros(n, dtype=bool)
        if width:
            rows, tt = np.arange(n), np.clip(t, 0, width - 1)
            last = comp[rows, tt]
            hit = (t >= 0) & (t < rl) & (t < width) & (last == actions) & (last == ref[rows, tt])
        return _unreferenced(batch, np.where(hit, 1.0 / (rl + 1), 0.0))


@register_reward("stop_match", requires=("reference",))
class StopMatch(Reward):
    """``1/(len(ref)+1)`` when the finished completion has the reference's length, else 0: the length half
    of the ``-Dense`` ids' credit (see the module docstring). A state reward."""

    name = "stop_match"
    kind = "state"
    requires = ("reference",)

    def score(self, batch: RewardBatch) -> np.ndarray:
        _check(batch, self.name)
        cl = np.asarray(batch.completion_lengths, dtype=np.int64)
        rl = np.asarray(batch.reference_lengths, dtype=np.int64)
        return _unreferenced(batch, np.where(cl == rl, 1.0 / (rl + 1), 0.0))


# The reward of the -Dense ids (text_env.registration): per-token credit plus the length credit.
DENSE_REWARD = {"position_match": 1.0, "stop_match": 1.0}
