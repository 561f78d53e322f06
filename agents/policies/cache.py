"""KV caches of the LM policies: the per-slot bookkeeping both share (:class:`SlotCache`) and the preallocated
keys and values of :class:`~agents.policies.model.TransformerLM` (:class:`KVCache`, modelled on nanochat's
``engine.py``).

A rollout decodes ``B`` sequences (slots) with one forward per new token: every slot is written at one
shared index ``pos``, while each keeps its own key-validity mask and next position id, so left padding,
finished slots (:meth:`SlotCache.reset_slots`) and batch compaction (:meth:`SlotCache.select`) need no
Python loop over slots.

Shapes: ``B`` slots, ``T`` new tokens, ``S`` cache length, ``H`` heads, ``D`` head width, ``L`` layers.

Example:
    >>> cache = KVCache(n_layer=2, batch_size=3, n_head=4, head_dim=8, max_len=16)
    >>> cache.k.shape
    torch.Size([2, 3, 4, 16, 8])
    >>> cache.reset_slots(torch.tensor([False, True, False]))
"""

from __future__ import annotations

import numpy as np
import torch


class SlotCache:
    """Per-slot bookkeeping shared by :class:`KVCache` and the Hugging Face adapter's cache.

    Every slot (batch row) is written at the same index ``pos`` (one forward appends ``T`` columns to all
    slots), but each slot has its own key-validity mask and its own next position id, so left padding,
    finished slots and :meth:`reset_slots` need no Python loop over slots.

    Attributes:
        key_mask: ``(B, S)`` bool, True where a cached key may be attended to.
        next_pos: ``(B,)`` long, the position id the slot's next real token gets.
        pos: The shared write index: the number of columns written so far.
    """

    def __init__(self, batch_size: int, max_len: int, device: torch.device | str | None = None) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"cache needs batch_size >= 1 and max_len >= 1, got {batch_size} and {max_len}")
        self.key_mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # (B, S)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.key_mask.shape[0]

    @property
    def max_len(self) -> int:
        return self.key_mask.shape[1]

    @property
    def device(self) -> torch.device:
        return self.key_mask.device

    def reset(self) -> None:
        """Forget everything: every slot starts again at write index 0 and position 0."""
        self.pos = 0
        self.key_mask.zero_()
        self.next_pos.zero_()

    def reset_slots(self, mask: torch.Tensor | np.ndarray) -> None:
        """Make the slots where ``mask`` is True forget their past.

        Their cached keys are masked out and their next token gets position 0, while the other slots
        continue. The shared write index ``pos`` does not move (the forgotten columns stay allocated).

        Args:
            mask: ``(B,)`` bool tensor or numpy array.
        """
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool or mask.shape != (self.batch_size,):
            raise ValueError(
                f"reset_slots expects a ({self.batch_size},) bool mask, got {tuple(mask.shape)} {mask.dtype}"
            )
        self.key_mask.masked_fill_(mask[:, None], False)
        self.next_pos.masked_fill_(mask, 0)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the slots ``rows`` (a ``(B',)`` long index into the current slots), in that order: batch
        compaction, so that slots whose episodes ended stop costing compute. The write index ``pos`` stays.

        Example:
            >>> cache = SlotCache(batch_size=3, max_len=4)
            >>> cache.select(torch.tensor([0, 2]))
            >>> cache.batch_size
            2
        """
        rows = torch.as_tensor(rows, device=self.device)
        if rows.dim() != 1 or rows.dtype != torch.long:
            raise ValueError(f"select expects a (B',) long index, got {tuple(rows.shape)} {rows.dtype}")
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.batch_size):
            raise ValueError(f"select rows must lie in [0, {self.batch_size}), got {rows.tolist()}")
        self.key_mask = self.key_mask.index_select(0, rows)
        self.next_pos = self.next_pos.index_select(0, rows)

    def claim(self, num_tokens: int, attention_mask: torch.Tensor | None) -> tuple[int, torch.Tensor]:
        """Reserve ``num_tokens`` columns at ``pos`` for the next forward, record which are real tokens,
        and return ``(start, position_ids (B, T))``. The caller writes keys at ``[start, start + T)`` and
        then sets ``pos = start + T``."""
        start, end = self.pos, self.pos + num_tokens
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.pos} of {self.max_len} columns used, {num_tokens} more requested; "
                "make a larger cache (new_cache(batch_size, max_len=...)) or reset it"
            )
        if attention_mask is None:
            self.key_mask[:, start:end] = True
            pos_ids = self.next_pos[:, None] + torch.arange(num_tokens, device=self.device)  # (B, T)
            self.next_pos += num_tokens
        else:
            self.key_mask[:, start:end] = attention_mask
            # the k-th real token of the chunk gets next_pos + k; a pad borrows a neighbour's id (unread)
            pos_ids = (self.next_pos[:, None] + attention_mask.cumsum(1) - 1).clamp_(min=0)  # (B, T)
            self.next_pos += attention_mask.sum(1)
        return start, pos_ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, max_len={self.max_len}, pos={self.pos})"


class KVCache(SlotCache):
    """Preallocated keys and values of every layer for ``B`` slots, plus the per-slot state of
    :class:`SlotCache`. Modelled on nanochat's ``engine.py`` ``KVCache`` (``reset``, ``insert_kv``, ``pos``).

    Use it for inference (under ``torch.inference_mode()`` or ``torch.no_grad()``), and create and use it
    under the same mode: tensors made inside inference mode cannot be modified outside it.

    Example:
        >>> from agents.policies.model import TransformerConfig, TransformerLM
        >>> model = TransformerLM(TransformerConfig(vocab_size=10))
        >>> cache = model.new_cache(batch_size=2, max_len=16)
        >>> ids = torch.tensor([[1, 5], [0, 1]])  # the second prompt is left-padded
        >>> logits, values = model.prefill(ids, ids != 0, cache)
        >>> logits, values = model.decode_step(logits.argmax(-1), cache)
        >>> cache.pos
        3
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(batch_size, max_len, device)
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, S, D)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, S, D)

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        rows = torch.as_tensor(rows, device=self.device)
        self.k = self.k.index_select(1, rows)  # a fresh contiguous (L, B', H, S, D) buffer
        self.v = self.v.index_select(1, rows)

    def insert_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward's ``k, v (B, H, T, D)`` of ``layer`` at ``pos`` and return views of every key
        and value cached so far, ``(B, H, pos + T, D)``. ``pos`` advances once all layers are written."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


__all__ = ["KVCache", "SlotCache"]
