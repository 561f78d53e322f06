"""A small decoder-only transformer LM with a value head and a KV cache, and the policy that samples from it.

The whole model is in this one file, in the spirit of nanoGPT's ``model.py``: a config dataclass, a
causal self-attention block, a pre-LN transformer, plus what RL fine-tuning needs on top of a plain LM:

- a scalar **value head** on the same trunk (``values`` beside ``logits`` from every forward), as in the
  RLHF setups of Ziegler et al. 2019 and Ouyang et al. 2022;
- **left padding** that is exact: padded keys are masked and position ids are counted per row from the
  attention mask, so a left-padded prompt gives the same logits for its real tokens as the unpadded prompt;
- a preallocated **KV cache** (:class:`KVCache`, modelled on nanochat's ``engine.py``) whose batch slots
  share one write index but can be reset one by one (:meth:`KVCache.reset_slots`), so a rollout decodes N
  sequences with one forward per new token;
- a **policy** (:class:`TransformerPolicy`) whose single :meth:`LMPolicy.log_probs` turns logits into the
  sampling distribution (temperature, optional action mask) and is used both to sample and to train, so
  the log-probs that are trained are exactly those of the distribution that was sampled.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` cache length, ``C`` embedding width, ``H`` heads, ``D = C / H``,
``V`` vocabulary, ``L`` layers.

Example:
    >>> from text_env.tokenizers import CharTokenizer
    >>> tok = CharTokenizer("abc")
    >>> policy = TransformerPolicy(TransformerLM(TransformerConfig(vocab_size=tok.vocab_size)), tok)
    >>> ids = torch.tensor([[tok.bos_id, *tok.encode("abc")]])
    >>> logits, values = policy(ids)
    >>> logits.shape, values.shape
    (torch.Size([1, 4, 7]), torch.Size([1, 4]))
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from text_env.io import atomic_write_bytes, atomic_write_json, read_json
from text_env.tokenizers import Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


# ---- config ------------------------------------------------------------------------------------------------
@dataclass
class TransformerConfig:
    """Hyperparameters of :class:`TransformerLM`.

    Example:
        >>> TransformerConfig(vocab_size=30, n_layer=1).to_dict()["n_layer"]
        1
    """

    vocab_size: int
    """Number of token ids (at least the tokenizer's ``vocab_size``)."""
    n_layer: int = 2
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide ``n_embd``."""
    n_embd: int = 128
    """Width of the residual stream."""
    max_seq_len: int = 128
    """Longest sequence the learned position embeddings cover (BOS + prompt + completion)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (0 for RL fine-tuning)."""
    bias: bool = True
    """Biases in the linear layers and LayerNorms (GPT-2 style)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
            setattr(self, name, int(value))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        self.bias = bool(self.bias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"TransformerConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig fields {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**data)


# ---- KV cache ----------------------------------------------------------------------------------------------
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


# ---- model -------------------------------------------------------------------------------------------------
def check_token_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``input_ids (B, T)`` and ``attention_mask (B, T)``; return them as long and bool."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a (B, T) tensor, got {getattr(input_ids, 'shape', input_ids)!r}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dtype != torch.long:
        input_ids = input_ids.long()
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != "
                f"input_ids shape {tuple(input_ids.shape)}"
            )
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask != 0
    return input_ids, attention_mask


def _whole_cache_decode(device: torch.device, matrices: int, used: int, max_len: int) -> bool:
    """Whether a decode step attends over the whole preallocated cache (see CausalSelfAttention) rather
    than the ``used`` columns: on CPU, with enough (batch × head) matrices for the strided-view penalty to
    matter (it is per matrix) and a cache at least a quarter used (else the unused columns cost more)."""
    return device.type == "cpu" and matrices >= 64 and 4 * used >= max_len


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.insert_kv(self.layer_idx, k, v)  # (B, H, S', D), S' = pos + T
        if cache is not None and attn_mask is not None and attn_mask.dtype != torch.bool:
            # A CPU decode step: one query per slot against the WHOLE preallocated cache, with the unwritten
            # columns masked by the additive bias (see _positions_and_mask). A prefix slice [:S'] of the
            # cache is not batch-contiguous, and CPU batched matmul on such views is several times slower
            # than on the contiguous buffer (measured: 256 matrices of 50 of 82 keys, 364 us sliced vs 62 us
            # contiguous), so attending to all max_len columns costs less than to the S' written ones. It is
            # exact: masked weights are exactly 0 and the buffer holds finite values. Plain matmuls also beat
            # SDPA's CPU kernels (built for long queries) here: 1.5x less attention time per decode step.
            k, v = cache.k[self.layer_idx], cache.v[self.layer_idx]  # (B, H, max_len, D), contiguous
            att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1])) + attn_mask
            att = F.dropout(att.softmax(dim=-1), self.dropout, self.training)  # (B, H, 1, max_len)
            y = torch.matmul(att, v)  # (B, H, 1, D)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,  # (B, 1, T, S') bool, True = attend; None = plain causal
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
        )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block (GPT-2): ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: TransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, cache)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class TransformerLM(nn.Module):
    """Decoder-only transformer language model with a scalar value head on the same trunk.

    Token + learned position embeddings, ``n_layer`` pre-LN blocks, a final LayerNorm, an LM head tied to
    the token embedding (Press & Wolf 2017) and a value head ``nn.Linear(n_embd, 1)``.

    Example:
        >>> model = TransformerLM(TransformerConfig(vocab_size=10, n_layer=1))
        >>> logits, values = model(torch.tensor([[1, 4, 5]]))
        >>> logits.shape, values.shape
        (torch.Size([1, 3, 10]), torch.Size([1, 3]))
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.value_grad_to_trunk = False  # see head()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.max_seq_len, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.value_head = nn.Linear(config.n_embd, 1)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            # GPT-2 paper: scale the init of residual projections by 1/sqrt(2 * n_layer) (as nanoGPT does)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # a small value head: initial values near 0, so early critic errors do not swamp the policy loss
        nn.init.normal_(self.value_head.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.value_head.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (the tied LM head is counted once); ``include_embeddings=False`` leaves out the
        token and position embeddings (Kaplan et al. 2020's ``N``)."""
        n = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            n -= self.wpe.weight.numel() + self.wte.weight.numel()
        return n

    # -- the trunk ------------------------------------------------------------------------------------------
    def _positions_and_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Position ids ``(B, T)`` and the attention mask: SDPA's boolean ``(B, 1, T, S')`` (None = plain
        causal), or for a CPU decode step over the whole cache an additive float bias ``(B, 1, 1, max_len)``
        (0 = attend; see :func:`_whole_cache_decode`)."""
        B, T = input_ids.shape
        device = input_ids.device
        max_len = self.config.max_seq_len
        if cache is None:
            if attention_mask is None:
                if max_len < T:
                    raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={max_len}")
                return torch.arange(T, device=device).expand(B, T), None  # fast path: is_causal SDPA
            pos_ids = (attention_mask.cumsum(1) - 1).clamp_(min=0)  # (B, T): first real token gets 0
            if max_len < T and int(pos_ids.max()) >= max_len:
                raise ValueError(f"a row has more than max_seq_len={max_len} real tokens")
            q_idx = k_idx = torch.arange(T, device=device)
            keys = attention_mask  # (B, S'), S' = T
            offset = 0
        else:
            if cache.batch_size != B:
                raise ValueError(f"input batch size {B} != cache batch size {cache.batch_size}")
            offset, pos_ids = cache.claim(T, attention_mask)
            if offset + T > max_len and int(cache.next_pos.max()) > max_len:  # only syncs past the table
                raise ValueError(f"a slot has more than max_seq_len={max_len} real tokens")
            keys = cache.key_mask[:, : offset + T]  # (B, S')
            if T == 1 and attention_mask is None:  # decode step: causality is implied
                if not _whole_cache_decode(device, B * self.config.n_head, offset + T, cache.max_len):
                    return pos_ids, keys[:, None, None, :]  # (B, 1, 1, S') bool, for SDPA
                # the attention runs as plain matmuls over the whole cache (see CausalSelfAttention): build
                # its additive bias over all max_len columns once for all layers (columns not yet written
                # are False in key_mask)
                dtype = self.wte.weight.dtype
                bias = torch.zeros(cache.key_mask.shape, dtype=dtype, device=device)  # (B, max_len)
                return pos_ids, bias.masked_fill_(~cache.key_mask, torch.finfo(dtype).min)[:, None, None, :]
            q_idx = torch.arange(offset, offset + T, device=device)
            k_idx = torch.arange(offset + T, device=device)
        mask = (k_idx[None, :] <= q_idx[:, None])[None] & keys[:, None, :]  # (B, T, S')
        # a left-pad query has no valid key; letting it see itself keeps SDPA from returning NaN there
        # (its output is never read, and pad keys stay masked for real queries)
        mask |= (k_idx[None, :] == q_idx[:, None])[None]
        return pos_ids, mask[:, None]  # (B, 1, T, S')

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final (post-LayerNorm) hidden states ``(B, T, C)``; appends to ``cache`` if one is given."""
        input_ids, attention_mask = check_token_inputs(input_ids, attention_mask)
        pos_ids, attn_mask = self._positions_and_mask(input_ids, attention_mask, cache)
        x = self.drop(self.wte(input_ids) + self.wpe(pos_ids))  # (B, T, C)
        for block in self.h:
            x = block(x, attn_mask, cache)
        if cache is not None:
            cache.pos += input_ids.shape[1]
        return self.ln_f(x)  # (B, T, C)

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(..., V)`` float32 and values ``(...)`` float32 from hidden states ``(..., C)``."""
        logits = F.linear(h, self.wte.weight)  # tied LM head
        # The value head reads the trunk's features but does not train them (stop-gradient) unless
        # value_grad_to_trunk is set: a fresh value head's large early errors otherwise rewrite the features
        # the policy relies on, and a warm-started policy lost 2-3 points of test success under PPO on
        # Reverse-v0 / Arithmetic-v0 (vf_coef 0.5 vs 0: 0.96 vs 0.975 greedy, 0.915 vs 0.945 sampled).
        values = self.value_head(h if self.value_grad_to_trunk else h.detach()).squeeze(-1)
        return logits.float(), values.float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values at every position.

        Args:
            input_ids: ``(B, T)`` long token ids, left-padded if rows differ in length.
            attention_mask: ``(B, T)`` bool, False at padding; None = every token is real.
            cache: If given, the tokens are appended to it (they continue what it holds).

        Returns:
            ``logits (B, T, V)`` float32 and ``values (B, T)`` float32.
        """
        return self.head(self.hidden_states(input_ids, attention_mask, cache))

    # -- decoding -------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` on the model's device and dtype (``max_len`` defaults to
        ``max_seq_len``; make it longer if prompts carry left padding beyond that)."""
        p = self.wte.weight
        c = self.config
        return KVCache(
            c.n_layer, batch_size, c.n_head, c.n_embd // c.n_head, max_len or c.max_seq_len, p.device, p.dtype
        )

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run left-padded prompts through ``cache``; return ``logits (B, V)`` and ``values (B,)`` at the
        last position (the distribution of each slot's first new token)."""
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "prefill expects left-padded prompts: attention_mask[:, -1] must be True in every row"
            )
        h = self.hidden_states(input_ids, attention_mask, cache)  # (B, T, C)
        return self.head(h[:, -1])  # (B, V), (B,)

    def decode_step(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token per slot (``tokens (B,)``) to ``cache``; return the next ``logits (B, V)`` and
        ``values (B,)``."""
        if tokens.dim() != 1:
            raise ValueError(f"decode_step expects tokens of shape (B,), got {tuple(tokens.shape)}")
        h = self.hidden_states(tokens[:, None], None, cache)  # (B, 1, C)
        return self.head(h[:, 0])  # (B, V), (B,)


# ---- policies ----------------------------------------------------------------------------------------------
def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs (B, V)`` (non-negative, rows need not sum to 1) by inverting the CDF: one
    uniform per row and a binary search of the running sum, so a token of probability 0 is never drawn.

    ``torch.multinomial`` draws V exponentials per row instead: 10.7 ms against 0.57 ms for 64 rows of a
    8192-token vocabulary on one CPU thread, which made sampling 61% of an English policy's rollout.

    Raises:
        ValueError: A row is not a finite, positive measure (NaN or inf logits: diverged or corrupt weights).

    Example:
        >>> sample_categorical(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])).tolist()
        [2, 0]
    """
    cdf = probs.cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    if not bool(((total > 0) & torch.isfinite(total)).all()):
        raise ValueError(
            "the policy's next-token distribution is not finite (NaN or inf logits): its weights "
            "diverged (e.g. a learning rate too large) or were loaded corrupt"
        )
    # u in (0, 1]: the first index whose running sum reaches u·total has probability > 0
    u = 1.0 - torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, u * total).clamp_(max=probs.shape[-1] - 1).squeeze(-1)  # (B,)


def _as_action_mask(action_mask: Any, vocab_size: int) -> torch.Tensor | None:
    if action_mask is None:
        return None
    mask = torch.as_tensor(
        np.asarray(action_mask) if not isinstance(action_mask, torch.Tensor) else action_mask
    )
    if mask.shape != (vocab_size,):
        raise ValueError(f"action_mask must have shape ({vocab_size},), got {tuple(mask.shape)}")
    mask = mask.bool() if mask.dtype != torch.bool else mask
    if not bool(mask.any()):
        raise ValueError("action_mask allows no token; at least one entry must be True/1")
    return mask.clone()


class LMPolicy(nn.Module):
    """What every LM policy shares: the sampling distribution (temperature + action mask), sampling, and
    the frozen reference copy. Subclasses provide ``forward`` / ``prefill`` / ``decode_step`` /
    ``new_cache`` / ``save`` / ``load``.

    Args:
        tokenizer: A text_env tokenizer (treated as immutable).
        vocab_size: Width of the logits.
        temperature: Logits are divided by it, when sampling and when training alike.
        action_mask: ``(V,)`` bool (or 0/1) of the tokens the policy may emit; None allows all.
    """

    action_mask: torch.Tensor | None

    def __init__(
        self, tokenizer: Tokenizer, vocab_size: int, temperature: float = 1.0, action_mask: Any = None
    ):
        super().__init__()
        if tokenizer.vocab_size > vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has "
                f"only {vocab_size}"
            )
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.temperature = temperature
        self.register_buffer("action_mask", _as_action_mask(action_mask, self.vocab_size))

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"temperature must be a positive finite number, got {value!r}")
        self._temperature = float(value)

    def set_action_mask(self, action_mask: Any) -> None:
        """Replace (or with None, remove) the action mask."""
        mask = _as_action_mask(action_mask, self.vocab_size)
        device = next(self.parameters()).device
        self.action_mask = None if mask is None else mask.to(device)

    def log_probs(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``log_softmax(masked logits / temperature)`` over the last axis, float32, shape of ``logits``.

        The one definition of the policy's distribution: :meth:`sample` draws from it and the learners
        train it, so no top-k / min-length rule makes the scored distribution differ from the sampled
        one (the source of "negative KL" in RLHF). Disallowed tokens get the most negative finite float
        rather than -inf, so ``p * log p`` (entropy) and ``log π - log π_ref`` stay finite (0, not NaN).
        ``temperature`` overrides the policy's own (e.g. to score a reference at another policy's).
        """
        logits = logits.float()
        temperature = self._temperature if temperature is None else float(temperature)
        if temperature != 1.0:
            logits = logits / temperature
        if self.action_mask is not None:
            logits = logits.masked_fill(~self.action_mask, torch.finfo(logits.dtype).min)
        return F.log_softmax(logits, dim=-1)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one token per row from :meth:`log_probs` of ``logits (B, V)``.

        Args:
            logits: ``(B, V)`` raw logits (e.g. from :meth:`decode_step`).
            generator: Source of randomness (on the logits' device) for reproducible rollouts.
            deterministic: Take the most probable allowed token instead of sampling.

        Returns:
            ``tokens (B,)`` long and their ``logprobs (B,)`` float32 under the sampling distribution.

        Example:
            >>> from text_env.tokenizers import CharTokenizer
            >>> tok = CharTokenizer("ab")
            >>> policy = TransformerPolicy(TransformerLM(TransformerConfig(vocab_size=6, n_layer=1)), tok)
            >>> tokens, logprobs = policy.sample(torch.tensor([[0.0, 0, 0, 0, 9, 0]]), deterministic=True)
            >>> tokens.tolist()
            [4]
        """
        if logits.dim() != 2:
            raise ValueError(f"sample expects logits of shape (B, V), got {tuple(logits.shape)}")
        logp = self.log_probs(logits)  # (B, V)
        if deterministic:
            tokens = logp.argmax(dim=-1)  # (B,)
        else:
            tokens = sample_categorical(logp.exp(), generator)  # (B,)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)

    def forward_actions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, T, V)`` and values ``(B, T)`` at the positions that score the ``T = width - P``
        actions after a ``P``-column prompt (columns ``P - 1 … width - 2``), from one full-sequence forward.

        Subclasses run the LM head on those columns only (the prompt's logits are never read); this
        fallback slices a full :meth:`forward`.
        """
        logits, values = self(input_ids, attention_mask)
        cols = slice(prompt_width - 1, input_ids.shape[1] - 1)
        return logits[:, cols], values[:, cols]

    def clone_frozen(self) -> LMPolicy:
        """A deep copy in eval mode with ``requires_grad=False``: the KL reference. It shares no tensor
        with this policy (only the immutable tokenizer)."""
        ref = copy.deepcopy(self, memo={id(self.tokenizer): self.tokenizer})
        ref.requires_grad_(False)
        return ref.eval()

    def _save_meta(self, directory: Path, extra: dict[str, Any]) -> None:
        self.tokenizer.save(directory / "tokenizer.json")
        meta = {
            "policy_class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "temperature": self.temperature,
            "has_action_mask": self.action_mask is not None,
            **extra,
        }
        # written last: a directory whose config.json exists holds a complete save
        atomic_write_json(directory / "config.json", meta, indent=1)

    @classmethod
    def _load_meta(cls, directory: Path) -> dict[str, Any]:
        path = directory / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no saved policy in {str(directory)!r} (missing config.json)")
        meta = read_json(path, what="policy config")
        if not isinstance(meta, dict) or meta.get("policy_class") != cls.__name__:
            found = meta.get("policy_class") if isinstance(meta, dict) else meta
            raise ValueError(f"{str(path)!r} describes a {found!r}, not a {cls.__name__}")
        if not isinstance(meta.get("format_version", 0), int):
            raise ValueError(f"{str(path)!r} has format_version {meta['format_version']!r}; expected an int")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} has format_version {meta['format_version']}; this code reads ≤ 1"
            )
        return meta


def read_safetensors(
    path: str | os.PathLike, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a truncated or corrupt file raises ``ValueError`` naming it."""
    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = _safetensors_load(data)
    except SafetensorError as e:
        raise ValueError(f"weights file {str(path)!r} is truncated or corrupt: {e}") from e
    # Fresh allocations, not views into the file's bytes: those are not 64-byte aligned, and CPU GEMM
    # kernels round differently on unaligned operands (a loaded checkpoint scored 2e-7 off its original)
    tensors = {k: v.clone() for k, v in tensors.items()}
    return tensors if device is None else {k: v.to(device) for k, v in tensors.items()}


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors, atomically (see :mod:`text_env.io`)."""
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, _safetensors_save(payload, metadata={"format": "pt"}))


class TransformerPolicy(LMPolicy):
    """A :class:`TransformerLM` with a tokenizer and a sampling distribution: what the learners train.

    Args:
        model: The language model (with its value head).
        tokenizer: A text_env tokenizer whose ids the model reads.
        temperature: Divides the logits, when sampling and when training alike.
        action_mask: ``(V,)`` bool (or a task's int8 ``action_mask``) of allowed tokens; None allows all.

    Example:
        >>> from text_env.tasks import reverse_task
        >>> policy = TransformerPolicy.for_task(reverse_task(), n_layer=1, n_embd=32)
        >>> cache = policy.new_cache(batch_size=1)
        >>> ids = torch.tensor([[policy.tokenizer.bos_id, *policy.tokenizer.encode("reverse ab=")]])
        >>> logits, values = policy.prefill(ids, None, cache)
        >>> tokens, logprobs = policy.sample(logits, torch.Generator().manual_seed(0))
    """

    def __init__(
        self, model: TransformerLM, tokenizer: Tokenizer, temperature: float = 1.0, action_mask: Any = None
    ) -> None:
        super().__init__(tokenizer, model.config.vocab_size, temperature, action_mask)
        self.model = model

    @property
    def config(self) -> TransformerConfig:
        return self.model.config

    @classmethod
    def for_task(
        cls,
        task: Any,
        use_action_mask: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
        **config_overrides: Any,
    ) -> TransformerPolicy:
        """A default-sized policy for a text_env ``Task``.

        The vocabulary comes from ``task.tokenizer``; ``max_seq_len`` defaults to the larger of 128 and
        what the task needs (BOS + longest prompt + ``max_new_tokens``).

        Args:
            task: A ``text_env.tasks.Task``.
            use_action_mask: Restrict sampling to ``task.action_mask`` (the completion's characters + EOS).
            temperature: See :class:`TransformerPolicy`.
            seed: Seeds the weight init (without touching the global RNG); None uses the global RNG.
            **config_overrides: Any :class:`TransformerConfig` field.
        """
        needed = 1 + task.max_prompt_tokens + task.max_new_tokens
        config_overrides.setdefault("max_seq_len", max(TransformerConfig.max_seq_len, needed))
        if config_overrides["max_seq_len"] < needed:
            raise ValueError(
                f"max_seq_len={config_overrides['max_seq_len']} is too short for task {task.name!r}: "
                f"it needs {needed} (1 BOS + {task.max_prompt_tokens} prompt + {task.max_new_tokens} new)"
            )
        config_overrides.setdefault("vocab_size", task.tokenizer.vocab_size)
        config = TransformerConfig(**config_overrides)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = TransformerLM(config)
        return cls(model, task.tokenizer, temperature, task.action_mask if use_action_mask else None)

    # -- pass-throughs -------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logits (B, T, V)`` (raw: apply :meth:`log_probs`) and ``values (B, T)``; see
        :meth:`TransformerLM.forward`."""
        return self.model(input_ids, attention_mask, cache)

    def forward_actions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`LMPolicy.forward_actions`: the trunk over every column, the head over the action
        columns only."""
        h = self.model.hidden_states(input_ids, attention_mask)  # (B, W, C)
        # contiguous: on a strided view CPU GEMM's rounding depended on where the weights lie in memory
        # (a checkpoint's reference scored 3e-8 off its in-memory twin), breaking bit-exact resumes
        return self.model.head(h[:, prompt_width - 1 : input_ids.shape[1] - 1].contiguous())

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`TransformerLM.prefill`."""
        return self.model.prefill(input_ids, attention_mask, cache)

    def decode_step(self, tokens: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`TransformerLM.decode_step`."""
        return self.model.decode_step(tokens, cache)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """See :meth:`TransformerLM.new_cache`."""
        return self.model.new_cache(batch_size, max_len)

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``model.safetensors``, ``tokenizer.json`` and ``config.json`` (model config, temperature,
        policy class) into ``directory``, each atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_safetensors(d / "model.safetensors", self.state_dict())
        self._save_meta(d, {"config": self.config.to_dict()})

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: torch.device | str | None = None
    ) -> TransformerPolicy:
        """Restore a policy written by :meth:`save` (safetensors and JSON only; nothing is unpickled).

        The policy comes back in training mode, like a freshly built one. A truncated or corrupt file
        raises ``ValueError`` naming it.
        """
        d = Path(directory)
        meta = cls._load_meta(d)
        try:
            config = TransformerConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{str(d / 'config.json')!r} holds no valid model config: {e}") from e
        tokenizer = load_tokenizer(d / "tokenizer.json")
        weights_path = d / "model.safetensors"
        tensors = read_safetensors(weights_path, device)
        # build on the meta device (no init work) and take the loaded tensors as they are
        with torch.device("meta"):
            model = TransformerLM(config)
        mask = torch.ones(config.vocab_size, dtype=torch.bool) if meta.get("has_action_mask") else None
        try:
            policy = cls(model, tokenizer, float(meta.get("temperature", 1.0)), mask)
        except (TypeError, ValueError) as e:  # e.g. a tampered temperature, a tokenizer of another vocabulary
            raise ValueError(f"{str(d / 'config.json')!r} or its tokenizer.json is invalid: {e}") from e
        try:
            policy.load_state_dict(tensors, strict=True, assign=True)
        except RuntimeError as e:
            raise ValueError(f"weights file {str(weights_path)!r} does not match its config: {e}") from e
        return policy

    def __repr__(self) -> str:
        c = self.config
        return (
            f"TransformerPolicy(n_layer={c.n_layer}, n_embd={c.n_embd}, vocab={c.vocab_size}, "
            f"params={self.model.num_params():,}, temperature={self.temperature}, "
            f"action_mask={self.action_mask is not None})"
        )


__all__ = [
    "KVCache",
    "LMPolicy",
    "SlotCache",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "check_token_inputs",
    "read_safetensors",
    "write_safetensors",
]
