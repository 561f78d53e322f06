"""Any Hugging Face causal LM as a text-env policy: the same methods as :class:`TransformerPolicy`.

:class:`HFPolicy` wraps a ``transformers.AutoModelForCausalLM`` and adds a scalar value head on its last
hidden state. Decoding goes through HF's own ``DynamicCache`` inside an :class:`HFCache`, which keeps the
per-slot key mask and position ids of :class:`~agents.policies.cache.SlotCache`, so left padding and
``reset_slots`` behave exactly as with the built-in model.

``transformers`` is an optional dependency (``pip install text-env[hf]``); it is imported only when an
``HFPolicy`` is built or loaded. Nothing here downloads: models and tokenizers load with
``local_files_only=True``.

Example:
    >>> policy = HFPolicy.from_pretrained("runs/smollm2")  # a local save_pretrained dir  # doctest: +SKIP
    >>> cache = policy.new_cache(batch_size=8, max_len=128)  # doctest: +SKIP
    >>> logits, values = policy.prefill(prompt_ids, prompt_mask, cache)  # doctest: +SKIP
    >>> tokens, logprobs = policy.sample(logits)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError

from agents.policies.base import LMPolicyBase, check_token_inputs
from agents.policies.cache import SlotCache
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


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL_HINT) from e
    return transformers


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


class HFCache(SlotCache):
    """The KV cache of an :class:`HFPolicy`: a ``transformers.DynamicCache`` for the keys and values plus
    the per-slot key mask, position ids and shared write index of :class:`SlotCache`.

    Unlike :class:`~agents.policies.cache.KVCache` the keys are not preallocated (``DynamicCache``
    concatenates); ``max_len`` bounds the write index all the same.
    """

    def __init__(
        self, model_config: Any, batch_size: int, max_len: int, device: torch.device | str | None
    ) -> None:
        super().__init__(batch_size, max_len, device)
        self._model_config = model_config
        self.past = self._new_past()

    def _new_past(self) -> Any:
        transformers = _require_transformers()
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


class HFPolicy(LMPolicyBase):
    """A Hugging Face causal LM with a value head, behind the :class:`TransformerPolicy` interface.

    Args:
        model: A ``transformers`` causal LM (``AutoModelForCausalLM``-style: ``forward`` returns ``logits``
            and accepts ``attention_mask``, ``position_ids`` and a cache).
        tokenizer: A text_env tokenizer, or a ``transformers`` tokenizer (wrapped in ``HFTokenizer``).
        temperature: Divides the logits, when sampling and when training alike.
        action_mask: ``(V,)`` bool of allowed tokens (``V`` = the model's logit width); None allows all.

    Example:
        >>> policy = HFPolicy.from_pretrained("path/to/saved/model")  # doctest: +SKIP
        >>> cache = policy.new_cache(batch_size=4, max_len=64)  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, temperature: float = 1.0, action_mask: Any = None
    ) -> None:
        _require_transformers()
        if not isinstance(tokenizer, Tokenizer):
            tokenizer = HFTokenizer(tokenizer)
        text_config = _text_config(model)
        super().__init__(tokenizer, int(text_config.vocab_size), temperature, action_mask)
        self.model = model
        p = next(model.parameters())
        self.value_head = nn.Linear(int(text_config.hidden_size), 1, device=p.device, dtype=p.dtype)
        nn.init.normal_(self.value_head.weight, mean=0.0, std=0.01)  # small: initial values near 0
        nn.init.zeros_(self.value_head.bias)
        self.value_grad_to_trunk = False
        if self.action_mask is not None:
            self.action_mask = self.action_mask.to(p.device)
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is deprecated until 5.40)
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_kwarg = "logits_to_keep" if "logits_to_keep" in params else None
        self._max_positions = getattr(text_config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, tokenizer: Any = None, temperature: float = 1.0, **model_kwargs: Any
    ) -> HFPolicy:
        """A policy from a local ``save_pretrained`` directory (never the hub); the tokenizer is loaded
        from the same directory unless given. ``model_kwargs`` go to ``from_pretrained`` (e.g. ``dtype``)."""
        transformers = _require_transformers()
        model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **model_kwargs)
        if tokenizer is None:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, temperature)

    # -- forward passes ------------------------------------------------------------------------------------
    def _run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: HFCache | None,
        last_only: bool | int = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, attention_mask = check_token_inputs(input_ids, attention_mask)
        B, T = input_ids.shape
        kwargs: dict[str, Any] = {}
        keep = 1 if last_only is True else int(last_only)  # logits for the last `keep` columns (0: all)
        if cache is None:
            mask2d = None if attention_mask is None else attention_mask.long()  # (B, T)
            pos_ids = None if attention_mask is None else (attention_mask.cumsum(1) - 1).clamp_(min=0)
            n_real = T
        else:
            if cache.batch_size != B:
                raise ValueError(f"input batch size {B} != cache batch size {cache.batch_size}")
            start, pos_ids = cache.claim(T, attention_mask)  # (B, T)
            mask2d = cache.key_mask[:, : start + T].long()  # (B, S'): HF masks keys from the 2-D mask
            kwargs[self._cache_kwarg] = cache.past
            n_real = start + T
        if self._max_positions is not None and n_real > self._max_positions:
            top = (
                int(cache.next_pos.max())
                if cache is not None
                else (T if pos_ids is None else int(pos_ids.max()) + 1)
            )
            if top > self._max_positions:
                raise ValueError(
                    f"a sequence has more than max_position_embeddings={self._max_positions} tokens"
                )
        if keep and self._logits_kwarg is not None:
            kwargs[self._logits_kwarg] = keep
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask2d,
            position_ids=pos_ids,
            use_cache=cache is not None,
            output_hidden_states=True,
            **kwargs,
        )
        if cache is not None:
            cache.pos = start + T
        hidden = out.hidden_states[-1]  # (B, T, C): after the final norm in HF causal LMs
        logits = out.logits  # (B, T or keep, V)
        if last_only is True:
            hidden, logits = hidden[:, -1], logits[:, -1]  # (B, C), (B, V)
        elif keep:
            hidden, logits = hidden[:, -keep:], logits[:, -keep:]  # (B, keep, C), (B, keep, V)
        # stop-gradient into the LM as in TransformerLM.head: a fresh value head must not rewrite features
        h = hidden if self.value_grad_to_trunk else hidden.detach()
        return logits.float(), self.value_head(h).squeeze(-1).float()

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

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: HFCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run left-padded prompts through ``cache``; ``logits (B, V)`` and ``values (B,)`` at the end."""
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError(
                "prefill expects left-padded prompts: attention_mask[:, -1] must be True in every row"
            )
        return self._run(input_ids, attention_mask, cache, last_only=True)

    def decode_step(self, tokens: torch.Tensor, cache: HFCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token per slot; return the next ``logits (B, V)`` and ``values (B,)``."""
        if tokens.dim() != 1:
            raise ValueError(f"decode_step expects tokens of shape (B,), got {tuple(tokens.shape)}")
        return self._run(tokens[:, None], None, cache, last_only=True)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> HFCache:
        """An empty :class:`HFCache` (``max_len`` defaults to the model's ``max_position_embeddings``)."""
        max_len = max_len or self._max_positions
        if max_len is None:
            raise ValueError("the model config has no max_position_embeddings; pass max_len")
        return HFCache(self.model.config, batch_size, int(max_len), next(self.model.parameters()).device)

    # -- persistence ---------------------------------------------------------------------------------------
    def _save_files(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``model/`` (``save_pretrained``, safetensors) and ``value_head.safetensors`` (value head and action
        mask); config.json gets ``model_dir``."""
        kwargs = {}
        if "safe_serialization" in inspect.signature(self.model.save_pretrained).parameters:
            kwargs["safe_serialization"] = True  # transformers 4.x; 5.x writes only safetensors
        self.model.save_pretrained(directory / "model", **kwargs)
        own = {k: v for k, v in state.items() if not k.startswith("model.")}
        write_safetensors(directory / "value_head.safetensors", own)
        return {"model_dir": "model"}

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: torch.device | str | None = None, **model_kwargs: Any
    ) -> HFPolicy:
        """Restore a policy written by :meth:`save` (offline; safetensors and JSON only).

        In order: the manifest is verified, config.json is read strictly, ``model_dir`` must lie inside
        ``directory``, the model's sizes are range-checked and compared with its weight files' headers
        (:func:`check_model_dir_sizes`) and the value head's header with them, all before the model is built.

        Raises:
            FileNotFoundError: ``directory`` holds no policy.
            ValueError: A file is corrupt, tampered with, inconsistent with another, or from an older format
                (the message names the file, or gives the migration command).
        """
        return cls._load(directory, device, verify=True, **model_kwargs)

    @classmethod
    def _load(
        cls,
        directory: str | os.PathLike,
        device: torch.device | str | None,
        verify: bool,
        **model_kwargs: Any,
    ) -> HFPolicy:
        transformers = _require_transformers()
        d, meta = cls._open_saved(directory, {"model_dir": str}, verify=verify)
        config_path = d / "config.json"
        model_dir = resolve_inside(d, meta["model_dir"], what=f"model_dir of {str(config_path)!r}")
        if not model_dir.is_dir():
            raise ValueError(f"{str(config_path)!r}: its model_dir {str(model_dir)!r} is not a directory")
        head_path = resolve_inside(d, "value_head.safetensors", what="value head file")
        try:  # JSON only: no weights, no code (trust_remote_code stays False)
            model_config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"cannot read the model config in {str(model_dir)!r}: {type(e).__name__}: {e}"
            ) from e
        hidden, vocab = check_model_dir_sizes(model_dir, _text_config_of(model_config))
        expected = {"value_head.weight": (1, hidden), "value_head.bias": (1,)}
        if meta["has_action_mask"]:
            expected["action_mask"] = (vocab,)
        check_tensor_shapes(
            head_path, read_safetensors_header(head_path), expected, what=f"{str(model_dir)!r}"
        )
        tokenizer = load_tokenizer(resolve_inside(d, "tokenizer.json", what="tokenizer file"))
        kwargs = {
            **model_kwargs,
            "local_files_only": True,
            "use_safetensors": True,
            "output_loading_info": True,
        }
        try:
            model, info = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise ValueError(
                f"cannot load the model saved in {str(model_dir)!r}: {type(e).__name__}: {e}"
            ) from e
        missing = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
        if missing:  # from_pretrained would train on them as freshly initialised weights
            raise ValueError(
                f"the weight files in {str(model_dir)!r} do not match its config.json: missing or mis-shaped "
                f"{sorted(map(str, missing))[:5]}"
            )
        if device is not None:
            model = model.to(device)
        tensors = read_safetensors(head_path, device, expected=expected)
        mask = torch.ones(vocab, dtype=torch.bool) if meta["has_action_mask"] else None
        try:
            policy = cls(model, tokenizer, meta["temperature"], mask)
        except (TypeError, ValueError) as e:  # e.g. a tokenizer of another vocabulary
            raise ValueError(f"{str(config_path)!r} or its tokenizer.json is invalid: {e}") from e
        missing, unexpected = policy.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not k.startswith("model.")]
        if missing or unexpected:
            raise ValueError(
                f"{str(head_path)!r} does not match the policy: missing {missing}, unexpected {unexpected}"
            )
        return policy

    def __repr__(self) -> str:
        return (
            f"HFPolicy({type(self.model).__name__}, vocab={self.vocab_size}, temperature={self.temperature}, "
            f"action_mask={self.action_mask is not None})"
        )


__all__ = ["HFCache", "HFPolicy"]
