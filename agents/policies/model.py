"""A small decoder-only transformer LM with a value head, in the spirit of nanoGPT's ``model.py``: a config
dataclass, causal self-attention, an MLP, a pre-LN block and the model, plus what RL fine-tuning needs on top
of a plain LM:

- a scalar **value head** on the same trunk (``values`` beside ``logits`` from every forward), as in the
  RLHF setups of Ziegler et al. 2019 and Ouyang et al. 2022;
- **left padding** that is exact: padded keys are masked and position ids are counted per row from the
  attention mask, so a left-padded prompt gives the same logits for its real tokens as the unpadded prompt;
- decoding through a preallocated :class:`~agents.policies.cache.KVCache`, one forward per new token for
  every slot at once.

The policy that samples from it is :class:`~agents.policies.transformer.TransformerPolicy`.

Shapes: ``B`` batch, ``T`` new tokens, ``S`` cache length, ``C`` embedding width, ``H`` heads, ``D = C / H``,
``V`` vocabulary, ``L`` layers.

Example:
    >>> model = TransformerLM(TransformerConfig(vocab_size=10, n_layer=1))
    >>> logits, values = model(torch.tensor([[1, 4, 5]]))
    >>> logits.shape, values.shape
    (torch.Size([1, 3, 10]), torch.Size([1, 3]))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from agents.policies.base import check_token_inputs
from agents.policies.cache import KVCache

# Upper bounds of every TransformerConfig (checked on construction, hence on every load): far above anything
# this package trains (english-small: 8192 tokens, 4 layers, 4 heads, 128 wide, 192 positions) and above the
# largest released dense LMs (Llama 3.1 405B: 128k vocabulary, 126 layers, 128 heads, 16384 wide), so they
# refuse only a typo or a tampered config.json, before anything is built: ``n_layer: 100000`` in a config.json
# kept PPO.load busy for minutes at 5 GB (issue 14). The sizes of the weights themselves are bounded by the
# weights file, whose header is checked against the config before it is read (TransformerPolicy.load).
CONFIG_LIMITS: dict[str, int] = {
    "vocab_size": 1 << 20,
    "n_layer": 256,
    "n_head": 256,
    "n_embd": 1 << 15,
    "max_seq_len": 1 << 20,
}


# ---- config ------------------------------------------------------------------------------------------------
@dataclass
class TransformerConfig:
    """Hyperparameters of :class:`TransformerLM`.

    Every field is checked on construction (hence on every load), never coerced: the sizes must be ints
    (not floats or bools) between 1 and :data:`CONFIG_LIMITS`, ``dropout`` a number in [0, 1) and ``bias``
    a bool; a bad value raises ``ValueError`` naming the field.

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
        for name, limit in CONFIG_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
            if not 1 <= value <= limit:
                raise ValueError(
                    f"TransformerConfig.{name} must be a positive int of at most {limit:,}, got {value!r}"
                )
            setattr(self, name, int(value))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        dropout = self.dropout
        if (
            isinstance(dropout, (bool, np.bool_))
            or not isinstance(dropout, (int, float, np.integer, np.floating))
            or not 0.0 <= float(dropout) < 1.0  # NaN fails this too
        ):
            raise ValueError(f"TransformerConfig.dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if not isinstance(self.bias, (bool, np.bool_)):  # "false" would read as True
            raise ValueError(f"TransformerConfig.bias must be a bool, got {self.bias!r}")
        self.bias = bool(self.bias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys, a missing ``vocab_size`` or a bad value raise
        ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"TransformerConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown TransformerConfig fields {unknown}; expected a subset of {sorted(known)}"
            )
        if "vocab_size" not in data:
            raise ValueError("TransformerConfig needs a vocab_size")
        return cls(**data)


# ---- attention -------------------------------------------------------------------------------------------
class WholeCacheDecode(NamedTuple):
    """The attention mask of a decode step that attends over the WHOLE preallocated cache with plain
    matmuls instead of SDPA over the written columns (chosen by :func:`_whole_cache_decode`; see
    :class:`CausalSelfAttention` for why it is faster on CPU, and exact).

    Made once per decode step by :meth:`TransformerLM._positions_and_mask` for all layers.
    """

    bias: torch.Tensor
    """``(B, 1, 1, max_len)`` additive bias in the model's dtype: 0 where a key may be attended to, the most
    negative finite value at masked keys and at columns not yet written."""


AttentionMask = torch.Tensor | WholeCacheDecode | None
"""What the model hands every attention layer: SDPA's boolean ``(B, 1, T, S')`` mask (True = attend), None
(plain causal attention over the ``T`` new tokens, no cache), or a :class:`WholeCacheDecode`."""


def _whole_cache_decode(device: torch.device, matrices: int, used: int, max_len: int) -> bool:
    """Whether a decode step attends over the whole preallocated cache (see CausalSelfAttention) rather
    than the ``used`` columns: on CPU, with enough (batch × head) matrices for the strided-view penalty to
    matter (it is per matrix) and a cache at least a quarter used (else the unused columns cost more)."""
    return device.type == "cpu" and matrices >= 64 and 4 * used >= max_len


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, appending its keys and values to the cache when one is given.

    The mask says which attention runs (:data:`AttentionMask`): SDPA with a boolean mask or plain causal
    SDPA, or for a :class:`WholeCacheDecode` two plain matmuls over the whole preallocated cache.
    """

    def __init__(self, config: TransformerConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: AttentionMask, cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.insert_kv(self.layer_idx, k, v)  # (B, H, S', D), S' = pos + T
        if isinstance(attn_mask, WholeCacheDecode):
            if cache is None:
                raise ValueError("a WholeCacheDecode mask needs the KV cache it was made for")
            # A CPU decode step: one query per slot against the WHOLE preallocated cache, with the unwritten
            # columns masked by the additive bias (see _positions_and_mask). A prefix slice [:S'] of the
            # cache is not batch-contiguous, and CPU batched matmul on such views is several times slower
            # than on the contiguous buffer (measured: 256 matrices of 50 of 82 keys, 364 us sliced vs 62 us
            # contiguous), so attending to all max_len columns costs less than to the S' written ones. It is
            # exact: masked weights are exactly 0 and the buffer holds finite values. Plain matmuls also beat
            # SDPA's CPU kernels (built for long queries) here: 1.5x less attention time per decode step.
            k, v = cache.k[self.layer_idx], cache.v[self.layer_idx]  # (B, H, max_len, D), contiguous
            att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1])) + attn_mask.bias
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

    def forward(self, x: torch.Tensor, attn_mask: AttentionMask, cache: KVCache | None) -> torch.Tensor:
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

    @staticmethod
    def state_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor of ``TransformerLM(config).state_dict()``, computed without building the
        model: what a weights file for ``config`` must hold, checked against the file's header before anything
        is allocated.

        Example:
            >>> shapes = TransformerLM.state_shapes(TransformerConfig(vocab_size=10, n_layer=1, n_embd=8))
            >>> shapes["wte.weight"], shapes["h.0.mlp.c_fc.weight"], len(shapes)
            ((10, 8), (32, 8), 18)
        """
        C = config.n_embd
        shapes: dict[str, tuple[int, ...]] = {
            "wte.weight": (config.vocab_size, C),  # also the tied LM head
            "wpe.weight": (config.max_seq_len, C),
        }

        def add(name: str, weight: tuple[int, ...], bias: bool = config.bias) -> None:
            shapes[f"{name}.weight"] = weight
            if bias:
                shapes[f"{name}.bias"] = weight[:1]

        for i in range(config.n_layer):
            add(f"h.{i}.ln_1", (C,))
            add(f"h.{i}.attn.c_attn", (3 * C, C))
            add(f"h.{i}.attn.c_proj", (C, C))
            add(f"h.{i}.ln_2", (C,))
            add(f"h.{i}.mlp.c_fc", (4 * C, C))
            add(f"h.{i}.mlp.c_proj", (C, 4 * C))
        add("ln_f", (C,))
        add("value_head", (1, C), bias=True)  # the value head always has a bias
        return shapes

    # -- the trunk ------------------------------------------------------------------------------------------
    def _positions_and_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, AttentionMask]:
        """Position ids ``(B, T)`` and the attention mask: SDPA's boolean ``(B, 1, T, S')`` (None = plain
        causal), or for a CPU decode step over the whole cache a :class:`WholeCacheDecode` holding an additive
        bias ``(B, 1, 1, max_len)`` (0 = attend; see :func:`_whole_cache_decode`)."""
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
                bias.masked_fill_(~cache.key_mask, torch.finfo(dtype).min)
                return pos_ids, WholeCacheDecode(bias[:, None, None, :])  # (B, 1, 1, max_len)
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


__all__ = [
    "CONFIG_LIMITS",
    "MLP",
    "AttentionMask",
    "Block",
    "CausalSelfAttention",
    "TransformerConfig",
    "TransformerLM",
    "WholeCacheDecode",
]
