"""Any Hugging Face causal LM as a text-env policy: the same methods as :class:`TransformerPolicy`.

:class:`HFPolicy` wraps a ``transformers.AutoModelForCausalLM`` and adds a scalar value head on its last
hidden state. What a TRL user reaches for is a switch here:

- ``lora={"r": 16, "alpha": 32, "target_modules": [...], "dropout": 0.0}`` trains PEFT LoRA adapters only
  (and the value head); the KL reference is then the same model with its adapters disabled
  (:class:`LoRAReference`, no second copy of the weights), as TRL does for PEFT models;
- ``gradient_checkpointing=True`` recomputes the decoder layers' activations in the backward pass;
- ``precision="auto"`` runs the forward under bf16 autocast on CUDA with fp32 master weights (CPU stays
  fp32); ``"fp32"`` / ``"bf16"`` force either;
- ``chat_template=True`` (with a ``transformers`` tokenizer) sends prompts through the tokenizer's chat
  template.

The trunk is the model's decoder (``get_decoder()``) and the LM head its output embedding, called
separately, so the update can score the action columns in chunks (:meth:`HFPolicy.action_hidden`,
:meth:`HFPolicy.head_logits`) and never hold the full (B × T × V) logits.

Decoding goes through an :class:`HFCache`: preallocated per-layer key/value buffers written at the shared
index of :class:`~agents.policies.cache.SlotCache` (no ``torch.cat`` per step as in ``DynamicCache``), with
the per-slot key mask and position ids that make left padding, ``reset_slots`` and ``select`` exact.

``transformers`` is an optional dependency (``pip install text-env[hf]``; LoRA needs ``text-env[lora]``); it
is imported only when an ``HFPolicy`` is built or loaded. Nothing here downloads: models and tokenizers load
with ``local_files_only=True``.

Example:
    >>> policy = HFPolicy.from_pretrained("runs/smollm2")  # a local save_pretrained dir  # doctest: +SKIP
    >>> cache = policy.new_cache(batch_size=8, max_len=128)  # doctest: +SKIP
    >>> logits, values = policy.prefill(prompt_ids, prompt_mask, cache)  # doctest: +SKIP
    >>> tokens, logprobs = policy.sample(logits)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
from safetensors import SafetensorError

from agents.policies.base import LMPolicy, LMPolicyBase, check_token_inputs
from agents.policies.cache import SlotCache
from agents.policies.kernels import PackedWeights, onednn_linears
from text_env.persistence import (
    check_tensor_shapes,
    read_safetensors,
    read_safetensors_header,
    resolve_inside,
    write_safetensors,
)
from text_env.tokenizers import HFTokenizer, Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

_INSTALL_HINT = "HFPolicy needs the optional 'transformers' package: pip install text-env[hf]"
_PEFT_HINT = "LoRA needs the optional 'peft' package: pip install text-env[lora]"
PRECISIONS = ("auto", "fp32", "bf16")
# the named base models a LoRA save may point to instead of holding a copy (see agents.pretrained)
NAMED_BASES = ("smollm2",)


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from e
    return transformers


def _require_peft() -> Any:
    try:
        import peft
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(_PEFT_HINT) from e
    return peft


def _text_config(model: Any) -> Any:
    return _text_config_of(model.config)


def _text_config_of(config: Any) -> Any:
    # multimodal configs nest the LM's (transformers >= 4.48); older versions have no get_text_config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


# Upper bounds of the sizes read from a saved model's config.json before it is built, like
# agents.policies.model.CONFIG_LIMITS (far above released LMs: Llama 3.1 405B has 126 layers, 16384 wide,
# a 128k vocabulary; Llama 4 reads up to 10M positions): a tampered number fails at once instead of building
# a model for minutes.
HF_CONFIG_LIMITS: dict[str, int] = {
    "vocab_size": 1 << 20,
    "hidden_size": 1 << 15,
    "num_hidden_layers": 256,
    "max_position_embeddings": 1 << 24,
}


def check_model_dir_sizes(model_dir: Path, text_config: Any) -> tuple[int, int]:
    """Range-check a saved HF model's sizes and compare them with its weight files' headers, before the model
    is built; return ``(hidden_size, vocab_size)``.

    Every transformer layer holds at least one ``hidden × hidden`` matrix (the attention output projection)
    and the embedding is ``vocab × hidden``, so weight files with fewer elements than either product cannot
    hold the model the config describes: ``from_pretrained`` would build it and fill the missing layers with
    fresh random weights (slowly, for a tampered ``num_hidden_layers``).

    Raises:
        ValueError: naming ``model_dir/config.json`` or the weight file.
    """
    where = repr(str(model_dir / "config.json"))
    sizes: dict[str, int] = {}
    for name, limit in HF_CONFIG_LIMITS.items():
        value = getattr(text_config, name, None)
        if value is None and name in ("num_hidden_layers", "max_position_embeddings"):
            continue  # not every architecture names them
        if type(value) is not int or not 1 <= value <= limit:
            raise ValueError(f"{where}: {name} must be a positive int of at most {limit:,}, got {value!r}")
        sizes[name] = value
    files = sorted(p for p in model_dir.iterdir() if p.name.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{str(model_dir)!r} holds no *.safetensors weights (only safetensors are read)")
    held = 0
    for f in files:
        resolve_inside(model_dir, f.name, what="weights file")  # no symlink
        held += sum(math.prod(shape) for _, shape in read_safetensors_header(f).values())
    hidden, vocab = sizes["hidden_size"], sizes["vocab_size"]
    needed = max(sizes.get("num_hidden_layers", 0) * hidden * hidden, vocab * hidden)
    if held < needed:
        raise ValueError(
            f"{where} describes a model of at least {needed:,} weights "
            f"({sizes.get('num_hidden_layers')} layers of width {hidden}, {vocab} tokens), but the weight "
            f"files in {str(model_dir)!r} hold {held:,}"
        )
    return hidden, vocab


def model_eos_ids(model: Any) -> list[int]:
    """Every ``eos_token_id`` of a model's config and generation config (each may be an int or a list)."""
    found: list[int] = []
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        value = getattr(config, "eos_token_id", None) if config is not None else None
        for i in [value] if isinstance(value, int) else list(value or []):
            if isinstance(i, int) and not isinstance(i, bool) and i >= 0:
                found.append(i)
    return sorted(set(found))


def check_lora(lora: Any, where: str = "lora") -> dict[str, Any]:
    """Validate LoRA settings and fill the defaults: ``{"r": int ≥ 1, "alpha": number > 0 (default 2·r),
    "target_modules": list of module names or None (PEFT's default for the architecture), "dropout": [0, 1)
    (default 0)}``. A bad value raises ``ValueError`` naming it (``where`` says where it came from).

    Example:
        >>> check_lora({"r": 8, "target_modules": ["q_proj", "v_proj"]})
        {'r': 8, 'alpha': 16.0, 'target_modules': ['q_proj', 'v_proj'], 'dropout': 0.0}
    """
    if not isinstance(lora, dict):
        raise ValueError(f"{where} must be a dict like {{'r': 16, 'alpha': 32}}, got {lora!r}")
    unknown = sorted(set(lora) - {"r", "alpha", "target_modules", "dropout"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; expected r, alpha, target_modules, dropout")
    r = lora.get("r", 16)
    if type(r) is not int or not 1 <= r <= 1 << 16:
        raise ValueError(f"{where}: r must be a positive int, got {r!r}")
    alpha = lora.get("alpha", 2 * r)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < math.inf:
        raise ValueError(f"{where}: alpha must be a positive number, got {alpha!r}")
    dropout = lora.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{where}: dropout must be a number in [0, 1), got {dropout!r}")
    targets = lora.get("target_modules")
    if targets is not None and (
        isinstance(targets, str)
        or not isinstance(targets, (list, tuple))
        or not targets
        or not all(isinstance(t, str) and t for t in targets)
    ):
        raise ValueError(f"{where}: target_modules must be a non-empty list of module names, got {targets!r}")
    return {
        "r": r,
        "alpha": float(alpha),
        "target_modules": None if targets is None else sorted(targets),
        "dropout": float(dropout),
    }


def _lora_model(model: nn.Module, lora: dict[str, Any]) -> Any:
    """``model`` with fresh LoRA adapters (PEFT freezes every base weight)."""
    peft = _require_peft()
    config = peft.LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        bias="none",
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:  # e.g. target modules the model does not have
        raise ValueError(f"cannot add LoRA adapters {lora}: {e}") from e


# ---- the KV cache ----------------------------------------------------------------------------------------
def _static_layer_class() -> type:
    """A transformers cache layer over preallocated ``(B, H, S, D)`` buffers written at the SlotCache's shared
    index (defined lazily: transformers is optional)."""
    from transformers.cache_utils import CacheLayerMixin

    class SlotLayer(CacheLayerMixin):
        is_compileable = False
        is_sliding = False

        keys: torch.Tensor  # (B, H, S, D), allocated at the first update
        values: torch.Tensor

        def __init__(self, slots: SlotCache) -> None:
            super().__init__()
            self.slots = slots

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            B, H, _, D = key_states.shape
            S = self.slots.max_len
            self.device = key_states.device
            self.keys = key_states.new_zeros(B, H, S, D)  # (B, H, S, D)
            self.values = value_states.new_zeros(B, H, S, value_states.shape[-1])
            self.is_initialized = True

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start = self.slots.pos  # SlotCache.claim checked the room; pos moves after all layers
            end = start + key_states.shape[2]
            self.keys[:, :, start:end] = key_states
            self.values[:, :, start:end] = value_states
            return self.keys[:, :, :end], self.values[:, :, :end]  # (B, H, S', D) views: no copy

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.slots.pos + query_length, 0

        def get_seq_length(self) -> int:
            return self.slots.pos

        def get_max_length(self) -> int:
            return self.slots.max_len

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self.keys = self.keys.index_select(0, indices)
                self.values = self.values.index_select(0, indices)

        def reset(self) -> None:  # the key mask hides stale columns: nothing to zero
            pass

    return SlotLayer


_SLOT_LAYER: type | None = None


class HFCache(SlotCache):
    """The KV cache of an :class:`HFPolicy`: the per-slot key mask, position ids and shared write index of
    :class:`SlotCache`, plus the model's keys and values in ``past`` (a ``transformers.Cache``).

    With ``static=True`` (the default for models whose layers all attend to the full context) every layer's
    keys and values live in buffers preallocated at the first forward, ``(B, H_kv, max_len, D)``, and each
    forward writes its columns at ``pos`` in place; the model then gets a 4-D boolean mask built from
    ``key_mask`` (a view for a decode step: nothing allocated). Otherwise ``past`` is a ``DynamicCache``,
    which concatenates per step.
    """

    def __init__(
        self,
        model_config: Any,
        batch_size: int,
        max_len: int,
        device: torch.device | str | None,
        static: bool = True,
    ) -> None:
        super().__init__(batch_size, max_len, device)
        self._model_config = model_config
        self.static = bool(static)
        self.past = self._new_past()

    def _new_past(self) -> Any:
        transformers = _require_transformers()
        if self.static:
            global _SLOT_LAYER
            if _SLOT_LAYER is None:
                _SLOT_LAYER = _static_layer_class()
            n_layers = int(_text_config_of(self._model_config).num_hidden_layers)
            return transformers.Cache(layers=[_SLOT_LAYER(self) for _ in range(n_layers)])
        try:
            return transformers.DynamicCache(config=self._model_config)
        except TypeError:  # transformers < 4.56 takes no config
            return transformers.DynamicCache()

    def reset(self) -> None:
        super().reset()
        self.past = self._new_past()

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        if self.pos:  # an empty DynamicCache has no layers to index
            self.past.batch_select_indices(torch.as_tensor(rows, device=self.device))

    def attention_mask_4d(self, start: int, num_tokens: int, real: torch.Tensor | None) -> torch.Tensor:
        """The boolean ``(B, 1, T, start + T)`` mask (True = attend) of a forward writing ``T`` columns at
        ``start``: causal over the columns, valid keys only. For a decode step (``T = 1``, every new token
        real) it is a view of ``key_mask``."""
        end = start + num_tokens
        keys = self.key_mask[:, :end]  # (B, S')
        if num_tokens == 1 and real is None:
            return keys[:, None, None, :]  # (B, 1, 1, S'): causality is implied
        q_idx = torch.arange(start, end, device=self.device)
        k_idx = torch.arange(end, device=self.device)
        mask = (k_idx[None, :] <= q_idx[:, None])[None] & keys[:, None, :]  # (B, T, S')
        # a left-pad query has no valid key; letting it see itself keeps SDPA from returning NaN there
        # (its output is never read, and pad keys stay masked for real queries), as in TransformerLM
        mask |= (k_idx[None, :] == q_idx[:, None])[None]
        return mask[:, None]  # (B, 1, T, S')


def _supports_static_cache(config: Any) -> bool:
    """Whether every layer attends to the whole context (no sliding window, no linear attention)."""
    text = _text_config_of(config)
    types = getattr(text, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    return getattr(text, "sliding_window", None) is None or not getattr(text, "use_sliding_window", True)


# ---- the policy ------------------------------------------------------------------------------------------
def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each row's position ids counted from its first real token (left padding does not move a row)."""
    return (attention_mask.long().cumsum(1) - 1).clamp_(min=0)


class HFPolicy(LMPolicyBase):
    """A Hugging Face causal LM with a value head, behind the :class:`TransformerPolicy` interface.

    Args:
        model: A ``transformers`` causal LM (``AutoModelForCausalLM``-style), or a PEFT model around one.
        tokenizer: A text_env tokenizer, or a ``transformers`` tokenizer (wrapped in ``HFTokenizer``, which
            then also stops on every ``eos_token_id`` of the model's config and generation config).
        temperature: Divides the logits, when sampling and when training alike.
        action_mask: ``(V,)`` bool of allowed tokens (``V`` = the model's logit width); None allows all.
        lora: LoRA settings (:func:`check_lora`): train adapters only (plus the value head); the KL
            reference is the model with its adapters disabled. Needs ``peft``. The frozen base may be
            bfloat16 (half the memory); the adapters and the value head train in float32.
        gradient_checkpointing: Recompute the decoder layers' activations in the backward pass.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"fp32"`` or ``"bf16"`` (autocast on any
            device). Weights stay as they are (fp32 masters for training).
        chat_template: With a ``transformers`` tokenizer, send prompts through its chat template.
        static_cache: Preallocated key/value buffers for decoding (see :class:`HFCache`); models with sliding
            window or linear attention layers always use a ``DynamicCache``.
        compile_decode: ``torch.compile`` the decode step (CUDA only; off by default: on CPU the compile
            costs more than a rollout saves, and it is untested here).
        onednn: Run the model's fp32 ``nn.Linear`` layers through oneDNN on CPU, forward and backward
            (:mod:`agents.policies.kernels`: the same products to float32 rounding, about 2x faster on
            AVX-512 CPUs where MKL takes its AVX2 path). No effect on CUDA, for other dtypes, or where the
            torch build lacks oneDNN.
        prepack: With ``onednn``, decode steps use oneDNN's prepacked copies of the *frozen* linear weights
            (``requires_grad`` False: a LoRA base, an inference-only model), made at the first decode step
            and kept while the weights stay unchanged (:class:`~agents.policies.kernels.PackedWeights`).
            This costs the frozen linear weights' size again in memory (540 MB for SmolLM2 in fp32) and
            about 2 s at the first decode step; the products are the same (bit for bit from 2 rows), 1.3x
            faster at 32 rows and 2x at 8. Trainable weights are never packed; prefill, scoring and
            updates never use the copies.
        base_model: The name of the base model when it is a named default (``"smollm2"``): a LoRA save then
            points at it instead of holding a copy.

    Example:
        >>> policy = HFPolicy.from_pretrained("path/to/saved/model", lora={"r": 16})  # doctest: +SKIP
        >>> cache = policy.new_cache(batch_size=4, max_len=64)  # doctest: +SKIP
    """

    # a transformers causal LM or a PEFT model around one, its CausalLM, decoder and head (all duck-typed)
    model: Any
    _lm: Any
    _decoder: Any
    _head: Any

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        temperature: float = 1.0,
        action_mask: Any = None,
        *,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        precision: str = "auto",
        chat_template: bool | None = None,
        static_cache: bool = True,
        compile_decode: bool = False,
        onednn: bool = True,
        prepack: bool = True,
        base_model: str | None = None,
    ) -> None:
        _require_transformers()
        eos_ids = [i for i in model_eos_ids(model) if i < int(_text_config(model).vocab_size)]
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = HFTokenizer(tokenizer, chat_template=bool(chat_template), eos_ids=eos_ids)
        elif isinstance(tokenizer, HFTokenizer) and (
            (chat_template is not None and chat_template != tokenizer.chat_template)
            or not set(eos_ids) <= set(tokenizer.eos_ids)
        ):
            tokenizer = HFTokenizer(
                tokenizer._tok,
                tokenizer.directory,
                chat_template=tokenizer.chat_template if chat_template is None else bool(chat_template),
                eos_ids=[*tokenizer.eos_ids, *eos_ids],
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if base_model is not None and base_model not in NAMED_BASES:
            raise ValueError(f"base_model must be None or one of {list(NAMED_BASES)}, got {base_model!r}")
        text_config = _text_config(model)
        super().__init__(tokenizer, int(text_config.vocab_size), temperature, action_mask)
        self.lora: dict[str, Any] | None = None
        if lora is not None:
            if _is_peft(model):
                raise ValueError("the model already has PEFT adapters; pass it without lora=...")
            self.lora = check_lora(lora)
            model = _lora_model(model, self.lora)
            assert self.lora is not None
            targets = model.peft_config["default"].target_modules
            self.lora["target_modules"] = sorted(targets) if not isinstance(targets, str) else [targets]
        elif _is_peft(model):
            cfg = model.peft_config[model.active_adapter]
            self.lora = check_lora(
                {
                    "r": cfg.r,
                    "alpha": cfg.lora_alpha,
                    "dropout": cfg.lora_dropout,
                    "target_modules": sorted(cfg.target_modules),
                }
            )
        self.model = model
        self.base_model = base_model
        self.precision = precision
        self.compile_decode = bool(compile_decode)
        self.onednn = bool(onednn)
        self.prepack = bool(prepack)
        self.__dict__["_packed"] = PackedWeights()  # not state: never saved, copied or moved
        self.__dict__["_decoding"] = False
        lm = model.get_base_model() if _is_peft(model) else model  # the transformers CausalLM
        self.__dict__["_lm"] = lm  # not a second registration of the same module
        decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else lm
        head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
        text = _text_config_of(lm.config)
        # logit scaling or soft-capping happens inside the model's forward: then run the whole model
        special_head = any(
            getattr(text, a, None) not in (None, 1.0) for a in ("final_logit_softcapping", "logit_scale")
        )
        self._split = decoder is not lm and head is not None and not special_head
        self.__dict__["_decoder"] = decoder
        self.__dict__["_head"] = head
        p = next(model.parameters())
        self.value_head = nn.Linear(int(text_config.hidden_size), 1, device=p.device, dtype=torch.float32)
        nn.init.normal_(self.value_head.weight, mean=0.0, std=0.01)  # small: initial values near 0
        nn.init.zeros_(self.value_head.bias)
        self.value_grad_to_trunk = False
        if self.action_mask is not None:
            self.action_mask = self.action_mask.to(p.device)
        run = decoder if self._split else lm
        params = inspect.signature(run.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is deprecated until 5.40);
        # asked of the transformers module itself, not a PEFT wrapper, whose forward names neither
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_kwarg = "logits_to_keep" if "logits_to_keep" in params else None
        self._max_positions = getattr(text_config, "max_position_embeddings", None)
        self.static_cache = bool(static_cache) and _supports_static_cache(lm.config)
        self.gradient_checkpointing = False
        if gradient_checkpointing:
            self.set_gradient_checkpointing(True)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        tokenizer: Any = None,
        temperature: float = 1.0,
        *,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        precision: str = "auto",
        chat_template: bool | None = None,
        **model_kwargs: Any,
    ) -> HFPolicy:
        """A policy from a local ``save_pretrained`` directory (never the hub); the tokenizer is loaded
        from the same directory unless given. ``model_kwargs`` go to ``from_pretrained`` (e.g. ``dtype``).

        Example:
            >>> policy = HFPolicy.from_pretrained(path, lora={"r": 16}, chat_template=True)  # doctest: +SKIP
        """
        transformers = _require_transformers()
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{str(path)!r} is not a directory holding a save_pretrained model")
        model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **model_kwargs)
        if tokenizer is None:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(
            model, tokenizer, temperature, lora=lora, gradient_checkpointing=gradient_checkpointing,
            precision=precision, chat_template=chat_template,
        )  # fmt: skip

    # -- switches -------------------------------------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the decoder layers' activations in the backward pass (non-reentrant checkpoints, which
        need no input that requires grad: LoRA's frozen embeddings are fine)."""
        lm = self._lm
        if enabled:
            if not getattr(lm, "supports_gradient_checkpointing", False):
                raise ValueError(f"{type(lm).__name__} does not support gradient checkpointing")
            # the recompute runs in the backward, outside the forward's block: it gets the same kernels as
            # the forward it repeats (context_fn is called at forward time), or the checkpoint's saved
            # tensors would not match
            kwargs = {"use_reentrant": False, "context_fn": self._checkpoint_contexts}
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif self.__dict__.get("gradient_checkpointing"):
            lm.gradient_checkpointing_disable()
        self.gradient_checkpointing = bool(enabled)

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward on the model's current device (None: no autocast)."""
        device = next(self.model.parameters()).device
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.autocast_dtype()
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(next(self.model.parameters()).device.type, dtype=dtype)

    def _onednn_on(self) -> bool:
        return self.onednn and next(self.model.parameters()).device.type == "cpu"

    @contextlib.contextmanager
    def _kernels(self, module: nn.Module) -> Iterator[None]:
        """The forward's precision (:meth:`_autocast`) and, on CPU, oneDNN for ``module``'s linear layers
        (with the prepacked frozen weights in a decode step, see ``prepack``)."""
        packed = self.packed_weights if self.prepack and self.__dict__.get("_decoding") else None
        with self._autocast(), onednn_linears(module, enabled=self._onednn_on(), packed=packed):
            yield

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``.to()``, ``.float()``, ...: the packed copies are of the old tensors; drop them."""
        packed = self.__dict__.get("_packed")
        if packed is not None:
            packed.clear()
        return super()._apply(fn, recurse)

    @property
    def packed_weights(self) -> PackedWeights:
        """The prepacked copies of frozen weights the decode steps use (see ``prepack``); ``.clear()`` frees
        them."""
        return cast(PackedWeights, self.__dict__["_packed"])

    def _checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager[Any], ...]:
        """``torch.utils.checkpoint``'s ``context_fn``: the recompute of a checkpointed layer runs with the
        kernels its forward ran with (the forward is inside :meth:`_kernels`, which routes them already)."""
        return contextlib.nullcontext(), onednn_linears(self._decoder, enabled=self._onednn_on())

    # -- forward passes ------------------------------------------------------------------------------------
    def _trunk(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: HFCache | None,
        keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden (B, T or keep, C)`` after the final norm, and the logits if the model's own head ran
        (None when the decoder runs alone: then :meth:`head_logits` makes them)."""
        input_ids, attention_mask = check_token_inputs(input_ids, attention_mask)
        B, T = input_ids.shape
        kwargs: dict[str, Any] = {}
        if cache is None:
            mask = None if attention_mask is None else attention_mask.long()  # (B, T)
            pos_ids = None if attention_mask is None else _position_ids(attention_mask)
            n_real = T
        else:
            if cache.batch_size != B:
                raise ValueError(f"input batch size {B} != cache batch size {cache.batch_size}")
            start, pos_ids = cache.claim(T, attention_mask)  # (B, T)
            if cache.static:
                mask = cache.attention_mask_4d(start, T, attention_mask)  # (B, 1, T, S')
            else:
                mask = cache.key_mask[:, : start + T].long()  # (B, S'): HF masks keys from the 2-D mask
            kwargs[self._cache_kwarg] = cache.past
            n_real = start + T
        if self._max_positions is not None and n_real > self._max_positions:
            top = (
                int(cache.next_pos.max())
                if cache is not None
                else (T if pos_ids is None else int(pos_ids.max()) + 1)
            )
            self._check_positions(top)
        with self._kernels(self._decoder if self._split else self.model):
            if self._split:
                out = self._decoder(
                    input_ids=input_ids, attention_mask=mask, position_ids=pos_ids,
                    use_cache=cache is not None, **kwargs,
                )  # fmt: skip
                hidden, logits = out.last_hidden_state, None  # (B, T, C)
            else:
                if keep and self._logits_kwarg is not None:
                    kwargs[self._logits_kwarg] = keep
                out = self._lm(
                    input_ids=input_ids, attention_mask=mask, position_ids=pos_ids,
                    use_cache=cache is not None, output_hidden_states=True, **kwargs,
                )  # fmt: skip
                hidden, logits = out.hidden_states[-1], out.logits  # after the final norm in HF causal LMs
        if cache is not None:
            cache.pos = start + T
        if keep:
            hidden = hidden[:, -keep:]
            logits = None if logits is None else logits[:, -keep:]
        return hidden, logits

    def _check_positions(self, top: int) -> None:
        """Raise if a sequence reaches position ``top`` (its length) past the model's position table."""
        if self._max_positions is not None and top > self._max_positions:
            raise ValueError(f"a sequence has more than max_position_embeddings={self._max_positions} tokens")

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Raw logits ``(..., V)`` float32 from final hidden states ``(..., C)`` (the LM head alone)."""
        with self._kernels(self._head):
            return self._head(hidden).float()

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        # stop-gradient into the LM as in TransformerLM.head: a fresh value head must not rewrite features
        h = hidden if self.value_grad_to_trunk else hidden.detach()
        return self.value_head(h.float()).squeeze(-1)

    def _run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: HFCache | None,
        last_only: bool | int = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = 1 if last_only is True else int(last_only)  # logits for the last `keep` columns (0: all)
        hidden, logits = self._trunk(input_ids, attention_mask, cache, keep)
        if logits is None:
            logits = self.head_logits(hidden)
        if last_only is True:
            hidden, logits = hidden[:, -1], logits[:, -1]  # (B, C), (B, V)
        return logits.float(), self._values(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: HFCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logits (B, T, V)`` float32 (raw: apply :meth:`log_probs`) and ``values (B, T)`` float32.

        Rows may be left-padded (``attention_mask`` False at padding); position ids are counted per row
        from the mask, so padding does not change a row's logits.
        """
        return self._run(input_ids, attention_mask, cache)

    def forward_actions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`LMPolicy.forward_actions`: the LM head runs on the last ``T + 1`` columns only
        (``logits_to_keep``) and the last one is dropped."""
        keep = input_ids.shape[1] - prompt_width + 1
        logits, values = self._run(input_ids, attention_mask, None, last_only=keep)
        return logits[:, :-1], values[:, :-1]

    def action_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The final hidden states ``(B, T, C)`` and values ``(B, T)`` at the columns that score the actions
        after a ``prompt_width`` prompt, without the LM head: the update then makes the logits in chunks
        (:meth:`head_logits`). None for models whose head cannot run alone (logit soft-capping)."""
        if not self._split:
            return None
        keep = input_ids.shape[1] - prompt_width + 1
        hidden, _ = self._trunk(input_ids, attention_mask, None, keep)
        hidden = hidden[:, :-1]
        return hidden, self._values(hidden)

    def shared_prompt_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_width: int,
        first: torch.Tensor,
        inverse: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`action_hidden` for rows that share prompts (a group of k completions of one prompt, as RLOO
        and PPO(k) roll out): row ``i``'s prompt columns equal row ``first[inverse[i]]``'s.

        Each distinct prompt runs through the decoder once; its keys and values are gathered for the rows
        that share it (an index, so autograd sums the rows' gradients into the one prompt pass); then every
        row's completion columns run on top of them. The same hidden states and gradients as
        :meth:`action_hidden` up to float rounding, for (U·P + B·T) token columns instead of B·(P + T).

        None where it does not apply: no separate LM head, no attention mask, or gradient checkpointing
        under autograd (transformers drops the cache in a checkpointed layer); the caller then runs
        :meth:`action_hidden`.
        """
        if not self._split or attention_mask is None:
            return None
        if self.gradient_checkpointing and torch.is_grad_enabled() and self._lm.training:
            return None
        from transformers import DynamicCache

        ids, am = check_token_inputs(input_ids, attention_mask)
        if am is None:
            return None
        T = ids.shape[1]
        p = int(prompt_width)
        if not 0 < p < T:
            raise ValueError(f"prompt_width={prompt_width} must be in [1, {T - 1}] for {T} columns")
        mask = am.long()
        pos = _position_ids(mask)
        self._check_positions(int(pos.max()) + 1)
        cache = DynamicCache(config=self._lm.config)
        with self._kernels(self._decoder):
            out = self._decoder(
                input_ids=ids[first, :p], attention_mask=mask[first, :p], position_ids=pos[first, :p],
                use_cache=True, **{self._cache_kwarg: cache},
            )  # fmt: skip
            last = out.last_hidden_state[:, -1][inverse]  # (B, C): scores each row's first action
            parts = [last[:, None]]
            if p < T - 1:  # the completion columns that score a later action (the last one scores none)
                cache.batch_select_indices(inverse)
                cols = slice(p, T - 1)
                rest = self._decoder(
                    input_ids=ids[:, cols], attention_mask=mask[:, : T - 1], position_ids=pos[:, cols],
                    use_cache=True, **{self._cache_kwarg: cache},
                )  # fmt: skip
                parts.append(rest.last_hidden_state)
        hidden = torch.cat(parts, dim=1)  # (B, T - p, C)
        return hidden, self._values(hidden)

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: HFCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run left-padded prompts through ``cache``; ``logits (B, V)`` and ``values (B,)`` at the end."""
        self.packed_weights.prune()  # a rollout starts: free the copies of weights made trainable or changed
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "prefill expects left-padded prompts: attention_mask[:, -1] must be True in every row"
            )
        return self._run(input_ids, attention_mask, cache, last_only=True)

    def decode_step(self, tokens: torch.Tensor, cache: HFCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token per slot; return the next ``logits (B, V)`` and ``values (B,)``."""
        if tokens.dim() != 1:
            raise ValueError(f"decode_step expects tokens of shape (B,), got {tuple(tokens.shape)}")
        if self.compile_decode and tokens.device.type == "cuda":
            if "_compiled_decode" not in self.__dict__:
                self.__dict__["_compiled_decode"] = torch.compile(self._run, dynamic=True)
            return self.__dict__["_compiled_decode"](tokens[:, None], None, cache, True)
        self.__dict__["_decoding"] = True
        try:
            return self._run(tokens[:, None], None, cache, last_only=True)
        finally:
            self.__dict__["_decoding"] = False

    def new_cache(self, batch_size: int, max_len: int | None = None) -> HFCache:
        """An empty :class:`HFCache` (``max_len`` defaults to the model's ``max_position_embeddings``)."""
        max_len = max_len or self._max_positions
        if max_len is None:
            raise ValueError("the model config has no max_position_embeddings; pass max_len")
        device = next(self.model.parameters()).device
        return HFCache(self._lm.config, batch_size, int(max_len), device, static=self.static_cache)

    # -- the reference ---------------------------------------------------------------------------------------
    def clone_frozen(self) -> LMPolicy:
        """The KL reference: for a LoRA policy the same model with its adapters disabled
        (:class:`LoRAReference`, no copy of the weights, as TRL does with PEFT); otherwise a frozen deep copy.

        The LoRA reference is the *base* model: it equals the policy when the adapters are fresh (LoRA's B
        matrices start at 0), and stays the base model when the policy started from trained adapters.
        """
        if self.lora is not None:
            return LoRAReference(self)
        return super().clone_frozen()

    # -- persistence ---------------------------------------------------------------------------------------
    def _save_files(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Full model: ``model/`` (``save_pretrained``, safetensors). LoRA: ``adapter.safetensors`` (the
        adapter weights) and the base model in ``model/`` unless it is a named default (``smollm2``), whose
        name is recorded instead. Both: ``value_head.safetensors`` (value head and action mask)."""
        own = {k: v for k, v in state.items() if not k.startswith("model.")}
        write_safetensors(directory / "value_head.safetensors", own)
        if self.lora is None:
            self._lm.save_pretrained(directory / "model", **_safe_kwargs(self._lm))
            return {"model_dir": "model"}
        peft = _require_peft()
        adapter = peft.get_peft_model_state_dict(self.model)
        write_safetensors(directory / "adapter.safetensors", {k: v.contiguous() for k, v in adapter.items()})
        base = self.base_model
        if base is None:  # hold a copy of the base weights: the LoRA layers' own names stripped
            clean = {
                k.replace(".base_layer.", "."): v
                for k, v in self._lm.state_dict().items()
                if "lora_" not in k
            }
            self._lm.save_pretrained(directory / "model", state_dict=clean, **_safe_kwargs(self._lm))
            base = "model"
        return {"base_model": base, "adapter": "adapter.safetensors", "lora": dict(self.lora)}

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: torch.device | str | None = None, **kwargs: Any
    ) -> HFPolicy:
        """Restore a policy written by :meth:`save` (offline; safetensors and JSON only).

        In order: the manifest is verified, config.json is read strictly, ``model_dir`` (or a LoRA save's
        ``base_model``) must lie inside ``directory`` or name a default base (``smollm2``), the model's sizes
        are range-checked and compared with its weight files' headers (:func:`check_model_dir_sizes`), and
        the value head's and adapter's headers with the model, all before any weight is read.

        ``kwargs`` are :class:`HFPolicy` switches (``gradient_checkpointing``, ``precision``, ...) or go to
        ``from_pretrained`` (e.g. ``dtype``).

        Raises:
            FileNotFoundError: ``directory`` holds no policy.
            ValueError: A file is corrupt, tampered with, inconsistent with another, or from an older format
                (the message names the file, or gives the migration command).
        """
        return cls._load(directory, device, verify=True, **kwargs)

    @classmethod
    def _open_hf_saved(cls, directory: str | os.PathLike, verify: bool) -> tuple[Path, dict[str, Any]]:
        d = Path(directory)
        path = d / "config.json"
        fields: dict[str, type] = {"model_dir": str}
        if path.is_file() and not path.is_symlink():
            from text_env.io import read_json

            meta = read_json(path, what="policy config")
            if isinstance(meta, dict) and "adapter" in meta:
                fields = {"base_model": str, "adapter": str, "lora": dict}
        return cls._open_saved(d, fields, verify=verify)

    @classmethod
    def _load(
        cls,
        directory: str | os.PathLike,
        device: torch.device | str | None,
        verify: bool,
        **kwargs: Any,
    ) -> HFPolicy:
        _require_transformers()
        d, meta = cls._open_hf_saved(directory, verify)
        config_path = d / "config.json"
        where = repr(str(config_path))
        switches = {k: kwargs.pop(k) for k in _SWITCHES if k in kwargs}
        lora = None
        base_name = None
        if "adapter" in meta:
            lora = check_lora(meta["lora"], where=f"{where}: lora")
            if meta["base_model"] in NAMED_BASES:
                from agents.pretrained import named_base_dir

                base_name = meta["base_model"]
                model_dir = named_base_dir(base_name)
            else:
                model_dir = resolve_inside(d, meta["base_model"], what=f"base_model of {where}")
            adapter_path = resolve_inside(d, meta["adapter"], what=f"adapter of {where}")
        else:
            model_dir = resolve_inside(d, meta["model_dir"], what=f"model_dir of {where}")
        if not model_dir.is_dir():
            raise ValueError(f"{where}: its model directory {str(model_dir)!r} is not a directory")
        head_path = resolve_inside(d, "value_head.safetensors", what="value head file")
        expected: dict[str, tuple[int, ...]] = {}

        def check_head(hidden: int, vocab: int) -> None:  # before the model is built
            expected.update({"value_head.weight": (1, hidden), "value_head.bias": (1,)})
            if meta["has_action_mask"]:
                expected["action_mask"] = (vocab,)
            check_tensor_shapes(
                head_path, read_safetensors_header(head_path), expected, what=f"{str(model_dir)!r}"
            )

        model, vocab, _ = load_checked_model(model_dir, before_build=check_head, **kwargs)
        tokenizer = load_tokenizer(resolve_inside(d, "tokenizer.json", what="tokenizer file"))
        if device is not None:
            model = model.to(device)
        tensors = read_safetensors(head_path, device, expected=expected)
        mask = torch.ones(vocab, dtype=torch.bool) if meta["has_action_mask"] else None
        try:
            policy = cls(
                model, tokenizer, meta["temperature"], mask, lora=lora, base_model=base_name, **switches
            )
        except (TypeError, ValueError) as e:  # e.g. a tokenizer of another vocabulary
            raise ValueError(f"{where} or its tokenizer.json is invalid: {e}") from e
        missing, unexpected = policy.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.startswith("model.")]
        if missing or unexpected:
            raise ValueError(
                f"{str(head_path)!r} does not match the policy: missing {missing}, unexpected {unexpected}"
            )
        if lora is not None:
            peft = _require_peft()
            fresh = peft.get_peft_model_state_dict(policy.model)
            shapes = {k: tuple(v.shape) for k, v in fresh.items()}
            check_tensor_shapes(
                adapter_path,
                read_safetensors_header(adapter_path),
                shapes,
                what=f"the LoRA settings in {where}",
            )
            adapter = read_safetensors(adapter_path, device, expected=shapes)
            result = peft.set_peft_model_state_dict(policy.model, adapter)
            bad = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
            if bad:
                raise ValueError(f"{str(adapter_path)!r} does not match the model's adapters: {bad[:5]}")
        return policy

    def __repr__(self) -> str:
        lora = f", lora=r{self.lora['r']}" if self.lora else ""
        return (
            f"HFPolicy({type(self._lm).__name__}, vocab={self.vocab_size}, temperature={self.temperature}, "
            f"action_mask={self.action_mask is not None}{lora})"
        )


_SWITCHES = (
    "gradient_checkpointing", "precision", "chat_template", "static_cache", "compile_decode", "onednn",
    "prepack",
)  # fmt: skip


def _is_peft(model: Any) -> bool:
    return (
        hasattr(model, "peft_config")
        and hasattr(model, "disable_adapter")
        and hasattr(model, "get_base_model")
    )


def _safe_kwargs(model: Any) -> dict[str, Any]:
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        return {"safe_serialization": True}  # transformers 4.x; 5.x writes only safetensors
    return {}


def load_checked_model(
    model_dir: Path, before_build: Any = None, **model_kwargs: Any
) -> tuple[Any, int, int]:
    """A causal LM from a local ``save_pretrained`` directory, after its config.json's sizes were
    range-checked against its weight files' headers (:func:`check_model_dir_sizes`) and
    ``before_build(hidden_size, vocab_size)`` ran; returns ``(model, vocab_size, hidden_size)``.

    Raises:
        ValueError: The config or the weights are unreadable or disagree (naming the directory).
    """
    transformers = _require_transformers()
    try:  # JSON only: no weights, no code (trust_remote_code stays False)
        model_config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"cannot read the model config in {str(model_dir)!r}: {type(e).__name__}: {e}"
        ) from e
    hidden, vocab = check_model_dir_sizes(model_dir, _text_config_of(model_config))
    if before_build is not None:  # the caller's checks of files sized by the model (a value head)
        before_build(hidden, vocab)
    kwargs = {**model_kwargs, "local_files_only": True, "use_safetensors": True, "output_loading_info": True}
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ValueError(f"cannot load the model saved in {str(model_dir)!r}: {type(e).__name__}: {e}") from e
    missing = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
    if missing:  # from_pretrained would train on them as freshly initialised weights
        raise ValueError(
            f"the weight files in {str(model_dir)!r} do not match its config.json: missing or mis-shaped "
            f"{sorted(map(str, missing))[:5]}"
        )
    return model, vocab, hidden


class LoRAReference(LMPolicyBase):
    """The KL reference of a LoRA :class:`HFPolicy`: the policy's own model run with its adapters disabled.

    It holds no weights of its own (the base weights are frozen and shared, the adapters are switched off
    for its forwards), only a copy of the policy's temperature and action mask at the time it was made, so
    nothing it reads is trained. A checkpoint saves it as a small directory (``policy_class``
    ``"LoRAReference"``) that :func:`agents.policies.load_reference` turns back into the loaded policy's own
    view.

    Example:
        >>> reference = lora_policy.clone_frozen()  # doctest: +SKIP
        >>> ref_logits, _ = reference(ids, mask)  # the base model's logits  # doctest: +SKIP
    """

    def __init__(self, policy: HFPolicy) -> None:
        super().__init__(policy.tokenizer, policy.vocab_size, policy.temperature, policy.action_mask)
        self.__dict__["_policy"] = policy  # not a submodule: its parameters are not this module's

    @property
    def policy(self) -> HFPolicy:
        return self.__dict__["_policy"]

    @contextlib.contextmanager
    def _base(self) -> Iterator[HFPolicy]:
        policy = self.policy
        was_training = policy.training
        policy.eval()  # no adapter dropout, whatever the policy's mode
        try:
            with policy.model.disable_adapter():
                yield policy
        finally:
            policy.train(was_training)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._base() as p:
            return p(input_ids, attention_mask, cache)

    def forward_actions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._base() as p:
            return p.forward_actions(input_ids, attention_mask, prompt_width)

    def action_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self._base() as p:
            return p.action_hidden(input_ids, attention_mask, prompt_width)

    def shared_prompt_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_width: int,
        first: torch.Tensor,
        inverse: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self._base() as p:
            return p.shared_prompt_hidden(input_ids, attention_mask, prompt_width, first, inverse)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        with self._base() as p:  # the head may carry adapters too
            return p.head_logits(hidden)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: HFCache) -> Any:
        with self._base() as p:
            return p.prefill(input_ids, attention_mask, cache)

    def decode_step(self, tokens: torch.Tensor, cache: HFCache) -> tuple[torch.Tensor, torch.Tensor]:
        with self._base() as p:
            return p.decode_step(tokens, cache)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> HFCache:
        return self.policy.new_cache(batch_size, max_len)

    def clone_frozen(self) -> LoRAReference:
        return LoRAReference(self.policy)

    def _save_files(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``value_head.safetensors`` holds the action mask, if any; the weights are the policy's."""
        write_safetensors(directory / "value_head.safetensors", dict(state))
        return {"reference_of": "policy"}

    def __repr__(self) -> str:
        return f"LoRAReference(of {self.policy!r})"


__all__ = ["HFCache", "HFPolicy", "LoRAReference", "check_lora", "load_checked_model", "model_eos_ids"]
