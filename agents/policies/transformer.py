"""The built-in policy: a :class:`~agents.policies.model.TransformerLM` with a tokenizer and a sampling
distribution, what the learners train.

The model is in :mod:`agents.policies.model`, its KV cache in :mod:`agents.policies.cache`, and what every
policy shares (the :class:`~agents.policies.base.LMPolicy` protocol, the distribution, persistence rules) in
:mod:`agents.policies.base`; their names are re-exported here, where they lived before the split.

A saved TransformerPolicy is a directory (see :meth:`TransformerPolicy.save`)::

    config.json         policy class, format_version, temperature, has_action_mask, the model config
    model.safetensors   every weight (and the action mask), checked against the config before it is read
    tokenizer.json      the tokenizer
    manifest.json       sha256 and size of each of the above (text_env.persistence)

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

import logging
import os
from pathlib import Path
from typing import Any

import torch

from agents.policies.base import (
    FORMAT_VERSION,
    LMPolicy,
    LMPolicyBase,
    check_token_inputs,
    sample_categorical,
)
from agents.policies.cache import KVCache, SlotCache
from agents.policies.model import (
    CONFIG_LIMITS,
    MLP,
    Block,
    CausalSelfAttention,
    TransformerConfig,
    TransformerLM,
    WholeCacheDecode,
)
from text_env.persistence import (
    check_tensor_shapes,
    read_safetensors,
    read_safetensors_header,
    resolve_inside,
    write_safetensors,
)
from text_env.tokenizers import Tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

# dtypes a weight may have in model.safetensors (the action mask is BOOL)
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


def check_weight_dtypes(path: Path, header: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Refuse a weights file whose tensors are not floating point (``action_mask``: bool), from its header."""
    wrong = {
        k: dtype
        for k, (dtype, _) in header.items()
        if (dtype != "BOOL" if k == "action_mask" else dtype not in _FLOAT_DTYPES)
    }
    if wrong:
        shown = dict(list(sorted(wrong.items()))[:3])
        raise ValueError(
            f"weights file {str(path)!r}: tensors of the wrong dtype {shown}; weights must be one of "
            f"{sorted(_FLOAT_DTYPES)} and action_mask BOOL"
        )


class TransformerPolicy(LMPolicyBase):
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
    def _save_files(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``model.safetensors`` (every weight and the action mask); config.json gets the model config."""
        write_safetensors(directory / "model.safetensors", state)
        return {"config": self.config.to_dict()}

    @staticmethod
    def state_shapes(config: TransformerConfig, has_action_mask: bool) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor of the ``state_dict()`` of a policy over ``TransformerLM(config)``."""
        shapes = {f"model.{k}": v for k, v in TransformerLM.state_shapes(config).items()}
        if has_action_mask:
            shapes["action_mask"] = (config.vocab_size,)
        return shapes

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: torch.device | str | None = None
    ) -> TransformerPolicy:
        """Restore a policy written by :meth:`save` (safetensors and JSON only; nothing is unpickled).

        In order, before anything is allocated: the manifest is verified (every file's sha256 and size),
        config.json is read strictly and its model config range-checked (:data:`CONFIG_LIMITS`), and the
        weights file's header is checked against the shapes the config implies. The policy comes back in
        training mode, like a freshly built one.

        Raises:
            FileNotFoundError: ``directory`` holds no policy.
            ValueError: A file is corrupt, tampered with, inconsistent with another, or from an older format
                (the message names the file, or gives the migration command).
        """
        return cls._load(directory, device, verify=True)

    @classmethod
    def _load(
        cls, directory: str | os.PathLike, device: torch.device | str | None, verify: bool
    ) -> TransformerPolicy:
        d, meta = cls._open_saved(directory, {"config": dict}, verify=verify)
        config_path = d / "config.json"
        try:
            config = TransformerConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{str(config_path)!r} holds no valid model config: {e}") from e
        weights_path = resolve_inside(d, "model.safetensors", what="weights file")
        if not weights_path.is_file():
            raise ValueError(f"weights file {str(weights_path)!r} is missing")
        # the shapes the config implies, against the header: before any weight is read or any module built
        header = read_safetensors_header(weights_path)
        expected = cls.state_shapes(config, meta["has_action_mask"])
        check_tensor_shapes(weights_path, header, expected, what=f"the model config in {str(config_path)!r}")
        check_weight_dtypes(weights_path, header)
        tokenizer = load_tokenizer(resolve_inside(d, "tokenizer.json", what="tokenizer file"))
        tensors = read_safetensors(weights_path, device, expected=expected)
        # build on the meta device (no init work) and take the loaded tensors as they are
        with torch.device("meta"):
            model = TransformerLM(config)
        mask = torch.ones(config.vocab_size, dtype=torch.bool) if meta["has_action_mask"] else None
        try:
            policy = cls(model, tokenizer, meta["temperature"], mask)
        except (TypeError, ValueError) as e:  # e.g. a tokenizer of another vocabulary
            raise ValueError(f"{str(config_path)!r} or its tokenizer.json is invalid: {e}") from e
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
    "CONFIG_LIMITS",
    "FORMAT_VERSION",
    "MLP",
    "Block",
    "CausalSelfAttention",
    "KVCache",
    "LMPolicy",
    "LMPolicyBase",
    "SlotCache",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "WholeCacheDecode",
    "check_token_inputs",
    "read_safetensors",
    "sample_categorical",
    "write_safetensors",
]
