"""What every LM policy is and shares: the :class:`LMPolicy` protocol that the rollouts and learners program
against, and :class:`LMPolicyBase`, the ``nn.Module`` both built-in policies subclass.

:class:`LMPolicyBase` holds the one definition of the policy's distribution (temperature and action mask,
:meth:`LMPolicyBase.log_probs`), sampling from it, the frozen reference copy, and the persistence rules every
saved policy follows (issues 13 and 14):

- a policy directory is written through :func:`text_env.persistence.atomic_directory` (``kind="policy"``,
  ``format_version`` :data:`FORMAT_VERSION`), so it carries a ``manifest.json`` with the sha256 and size of
  every file and appears under its name only once complete;
- loading verifies that manifest first, then reads ``config.json`` strictly (every field of the type it
  must have, no unknown field, no version from the future) before any weight is read;
- a policy with NaN or infinite weights is never written.

Shapes: ``B`` batch, ``T`` tokens, ``V`` vocabulary.

Example:
    >>> from agents.policies import TransformerPolicy
    >>> from text_env.tasks import reverse_task
    >>> policy = TransformerPolicy.for_task(reverse_task(), n_layer=1, n_embd=32)
    >>> isinstance(policy, LMPolicy), isinstance(policy, LMPolicyBase)
    (True, True)
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from agents.policies.cache import SlotCache
from text_env.io import atomic_write_json, read_json
from text_env.persistence import (
    IntegrityError,
    atomic_directory,
    has_manifest,
    nonfinite_tensors,
    resolve_inside,
    verify_manifest,
)
from text_env.tokenizers import Tokenizer, never_emitted_ids

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""The policy directory format this code writes and reads. 1: no manifest (text-env < 0.2; readable only by
:func:`agents.policies.migrate_policy`). 2: ``manifest.json``, strict ``config.json``."""
MANIFEST_KIND = "policy"
MIGRATE_COMMAND = "text-env migrate"
# the fields of config.json every policy writes; subclasses add their own (TransformerPolicy: "config")
_META_FIELDS = ("policy_class", "format_version", "temperature", "has_action_mask")
# every name a policy save writes at the top of its directory (TransformerPolicy, HFPolicy with or without
# LoRA adapters, HF tokenizers)
_POLICY_FILES = frozenset(
    {"config.json", "manifest.json", "tokenizer.json", "tokenizer.hf", "model.safetensors", "model",
     "value_head.safetensors", "adapter.safetensors"}
)  # fmt: skip
_EXTRA_JSON_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.json")


# ---- the protocol --------------------------------------------------------------------------------------
@runtime_checkable
class LMPolicy(Protocol):
    """What the rollouts and learners call on a policy: the interface of :class:`TransformerPolicy` and
    :class:`HFPolicy` (both subclass :class:`LMPolicyBase`), and of any other object that implements it.

    The cache that :meth:`new_cache` makes is only handed back to :meth:`prefill` and :meth:`decode_step`;
    the built-in ones are :class:`~agents.policies.cache.SlotCache` s, whose finished slots a rollout drops.

    Example:
        >>> from agents.policies import TransformerPolicy
        >>> from text_env.tasks import reverse_task
        >>> isinstance(TransformerPolicy.for_task(reverse_task(), n_layer=1, n_embd=32), LMPolicy)
        True
        >>> isinstance(torch.nn.Linear(2, 2), LMPolicy)
        False
    """

    tokenizer: Tokenizer
    """The text_env tokenizer whose ids the model reads."""
    vocab_size: int
    """Width of the logits."""
    action_mask: torch.Tensor | None
    """``(V,)`` bool of the tokens the policy may emit; None allows all."""

    @property
    def temperature(self) -> float:
        """Logits are divided by it, when sampling and when training alike."""
        ...

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logits (B, T, V)`` float32 and ``values (B, T)`` float32 at every position."""
        ...

    def forward_actions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, prompt_width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values at the columns that score the actions after a ``prompt_width`` prompt."""
        ...

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompts into ``cache``; ``logits (B, V)`` and ``values (B,)`` at their ends."""
        ...

    def decode_step(self, tokens: torch.Tensor, cache: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per slot into ``cache``; the next ``logits (B, V)`` and ``values (B,)``."""
        ...

    def new_cache(self, batch_size: int, max_len: int | None = None) -> SlotCache | Any:
        """An empty cache of ``batch_size`` slots."""
        ...

    def log_probs(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """The log-probabilities of the sampling distribution, float32, shape of ``logits``."""
        ...

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens (B,)`` drawn from :meth:`log_probs` of ``logits (B, V)`` and their log-probs."""
        ...

    def clone_frozen(self) -> LMPolicy:
        """A deep copy in eval mode without gradients: the KL reference."""
        ...

    def save(self, directory: str | os.PathLike) -> None:
        """Write the policy into ``directory`` (read back by :func:`agents.policies.load_policy`)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def to(self, *args: Any, **kwargs: Any) -> Any: ...


# ---- inputs and the distribution -----------------------------------------------------------------------
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


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``probs (B, V)`` (non-negative, rows need not sum to 1) by inverting the CDF: one
    uniform per row and a binary search of the running sum, so a token of probability 0 is never drawn.

    ``torch.multinomial`` draws V exponentials per row instead: 10.7 ms against 0.57 ms for 64 rows of a
    8192-token vocabulary on one CPU thread, which made sampling 61% of an English policy's rollout. For
    vocabularies of :data:`_BLOCKED_SAMPLING_MIN_VOCAB` or more the search is two-level: the running sum of
    256-token block sums picks a block, then the running sum inside that block alone picks the token (a
    running sum is serial: 1.5 ms for 32 rows of SmolLM2's 49,152 tokens in one pass, 0.2 ms this way). The
    same inverse CDF, summed in another order.

    Raises:
        ValueError: A row is not a finite, positive measure (NaN or inf logits: diverged or corrupt weights).

    Example:
        >>> sample_categorical(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])).tolist()
        [2, 0]
    """
    B, V = probs.shape
    blocked = V >= _BLOCKED_SAMPLING_MIN_VOCAB
    if blocked:
        n_blocks = -(-V // _SAMPLING_BLOCK)
        if n_blocks * _SAMPLING_BLOCK != V:
            probs = F.pad(probs, (0, n_blocks * _SAMPLING_BLOCK - V))  # zeros: never drawn
        blocks = probs.reshape(B, n_blocks, _SAMPLING_BLOCK)
        cdf = blocks.sum(-1).cumsum(-1)  # (B, n_blocks)
    else:
        cdf = probs.cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    if not bool(((total > 0) & torch.isfinite(total)).all()):
        raise ValueError(
            "the policy's next-token distribution is not finite (NaN or inf logits): its weights "
            "diverged (e.g. a learning rate too large) or were loaded corrupt"
        )
    # u in (0, 1]: the first index whose running sum reaches u·total has probability > 0
    u = 1.0 - torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype)
    target = u * total  # (B, 1)
    if not blocked:
        return torch.searchsorted(cdf, target).clamp_(max=V - 1).squeeze(-1)  # (B,)
    j = torch.searchsorted(cdf, target).clamp_(max=n_blocks - 1)  # (B, 1): its block sum is > 0
    before = torch.where(j > 0, cdf.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(target))
    inner = blocks.gather(1, j[:, :, None].expand(B, 1, _SAMPLING_BLOCK)).squeeze(1).cumsum(-1)  # (B, block)
    # rest > 0 (the block's running sum before it is < target); capped at the block's own total, which the
    # two summation orders may put a rounding below, so the token found has probability > 0
    rest = torch.minimum(target - before, inner[:, -1:])
    k = torch.searchsorted(inner, rest).clamp_(max=_SAMPLING_BLOCK - 1)
    return (j * _SAMPLING_BLOCK + k).squeeze(-1)  # (B,)


# two-level CDF inversion in sample_categorical from this vocabulary size on, in blocks of this many tokens
_BLOCKED_SAMPLING_MIN_VOCAB = 4096
_SAMPLING_BLOCK = 256


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


def _check_temperature(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"temperature must be a positive finite number, got {value!r}")
    return float(value)


# ---- the shared implementation ---------------------------------------------------------------------------
class LMPolicyBase(nn.Module):
    """What every built-in LM policy shares: the sampling distribution (temperature + action mask), sampling,
    the frozen reference copy, and saving through the persistence layer. Subclasses provide ``forward`` /
    ``prefill`` / ``decode_step`` / ``new_cache``, the files of :meth:`save` (``_save_files``) and ``load``.

    Args:
        tokenizer: A text_env tokenizer (treated as immutable).
        vocab_size: Width of the logits.
        temperature: Logits are divided by it, when sampling and when training alike.
        action_mask: ``(V,)`` bool (or 0/1) of the tokens the policy may emit; None allows all.

    Example:
        >>> from text_env.tokenizers import CharTokenizer
        >>> class Uniform(LMPolicyBase):
        ...     pass
        >>> Uniform(CharTokenizer("ab"), vocab_size=6, temperature=2.0).log_probs(torch.zeros(1, 6)).exp()
        tensor([[0.0000, 0.0000, 0.3333, 0.0000, 0.3333, 0.3333]])
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
        # pad / bos / unk are never sampled (nor given probability in training), mask or no mask: derived
        # from the tokenizer, so not saved
        never = torch.tensor(never_emitted_ids(tokenizer), dtype=torch.long)
        self.register_buffer("never_ids", never if len(never) else None, persistent=False)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = _check_temperature(value)

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
        ``pad``, ``bos`` and ``unk`` (:func:`~text_env.tokenizers.never_emitted_ids` of the tokenizer) are
        always disallowed, the same ids the env's ``action_masks()`` and ``action_space.sample()`` leave out.
        ``temperature`` overrides the policy's own (e.g. to score a reference at another policy's).
        """
        return F.log_softmax(self._scored_logits(logits, temperature), dim=-1)

    def _scored_logits(self, logits: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """The float32 logits :meth:`log_probs` normalises: temperature-scaled, disallowed ids masked."""
        logits = logits.float()
        temperature = self._temperature if temperature is None else float(temperature)
        if temperature != 1.0:
            logits = logits / temperature
        if self.action_mask is not None:
            logits = logits.masked_fill(~self.action_mask, torch.finfo(logits.dtype).min)
        never = getattr(self, "never_ids", None)
        if never is not None:
            logits = logits.index_fill(-1, never, torch.finfo(logits.dtype).min)
        return logits

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
            >>> from agents.policies import TransformerConfig, TransformerLM, TransformerPolicy
            >>> from text_env.tokenizers import CharTokenizer
            >>> tok = CharTokenizer("ab")
            >>> policy = TransformerPolicy(TransformerLM(TransformerConfig(vocab_size=6, n_layer=1)), tok)
            >>> tokens, logprobs = policy.sample(torch.tensor([[0.0, 0, 0, 0, 9, 0]]), deterministic=True)
            >>> tokens.tolist()
            [4]
        """
        if logits.dim() != 2:
            raise ValueError(f"sample expects logits of shape (B, V), got {tuple(logits.shape)}")
        if deterministic:
            logp = self.log_probs(logits)  # (B, V)
            tokens = logp.argmax(dim=-1)  # (B,)
            return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
        # the same distribution as log_probs, normalised once: softmax, then the log of the drawn tokens'
        # probabilities only (log_softmax + exp over the vocabulary cost 9x a softmax for 32 x 49,152)
        probs = torch.softmax(self._scored_logits(logits), dim=-1)  # (B, V)
        tokens = sample_categorical(probs, generator)  # (B,)
        return tokens, probs.gather(-1, tokens[:, None]).squeeze(-1).log()

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
        return cast("LMPolicy", ref.eval())

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, extra_json: Mapping[str, Any] | None = None) -> None:
        """Write the policy into ``directory`` atomically, with a manifest (``kind="policy"``).

        The files (``_save_files``), ``tokenizer.json`` and ``config.json`` are written into a temporary
        sibling that replaces ``directory`` only once complete. An existing ``directory`` is replaced only if
        it holds nothing but what a policy save writes (an older save of a policy): saving over a directory
        of other files raises ``FileExistsError`` rather than delete them.

        Args:
            directory: Where to write.
            extra_json: ``{file name: JSON-serialisable object}`` written beside the policy and covered by its
                manifest (e.g. ``{"pretraining.json": report}``); loading ignores them.

        Raises:
            ValueError: Some weights are NaN or infinite (the message names them), or an ``extra_json`` name
                is not a plain ``*.json`` file name of its own; nothing is written.
        """
        d = Path(directory)
        extra = dict(extra_json or {})
        for name in extra:
            if not _EXTRA_JSON_NAME.fullmatch(str(name)) or name in _POLICY_FILES:
                raise ValueError(
                    f"extra_json file name {name!r} must be a plain '*.json' name other than "
                    f"{sorted(n for n in _POLICY_FILES if n.endswith('.json'))}"
                )
        state = self.state_dict()
        bad = nonfinite_tensors(state)
        if bad:
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise ValueError(
                f"refusing to save the {type(self).__name__} to {str(d)!r}: {len(bad)} tensors hold NaN or "
                f"inf values ({shown}); its training diverged (e.g. a learning rate too large)"
            )
        if d.is_dir() and not d.is_symlink():
            foreign = sorted(
                p.name for p in d.iterdir() if p.name not in _POLICY_FILES and p.name not in extra
            )
            if foreign:
                raise FileExistsError(
                    f"refusing to replace {str(d)!r} with a policy: it holds files a policy save does not "
                    f"write ({foreign[:5]}); save into a new or empty directory"
                )
        with atomic_directory(d, kind=MANIFEST_KIND, format_version=FORMAT_VERSION) as tmp:
            own = self._save_files(tmp, state)
            self.tokenizer.save(tmp / "tokenizer.json")
            meta = {
                "policy_class": type(self).__name__,
                "format_version": FORMAT_VERSION,
                "temperature": self.temperature,
                "has_action_mask": self.action_mask is not None,
                **own,
            }
            atomic_write_json(tmp / "config.json", meta, indent=1)
            for name, obj in extra.items():
                atomic_write_json(tmp / name, obj, indent=1)

    def _save_files(self, directory: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Write the subclass's files (weights) into ``directory``; return its own config.json fields."""
        raise NotImplementedError(f"{type(self).__name__} does not implement saving")

    @classmethod
    def _open_saved(
        cls, directory: str | os.PathLike, extra_fields: dict[str, type], verify: bool = True
    ) -> tuple[Path, dict[str, Any]]:
        """Verify a saved policy directory and read its ``config.json`` strictly.

        Args:
            directory: The policy directory.
            extra_fields: The subclass's own config.json fields and their JSON types.
            verify: Check the manifest (False only for :func:`agents.policies.migrate_policy`, which reads a
                format-1 directory that has none and writes it one).

        Returns:
            The directory and the config.json object.
        """
        d = Path(directory)
        path = d / "config.json"
        manifest_version = None
        if verify:
            manifest_version = verify_policy_directory(d)["format_version"]
        elif not path.is_file() or path.is_symlink():
            raise FileNotFoundError(f"no saved policy in {str(d)!r} (missing config.json)")
        meta = read_json(resolve_inside(d, "config.json", what="policy config"), what="policy config")
        check_policy_meta(path, meta, cls.__name__, extra_fields, manifest_version)
        return d, meta


def verify_policy_directory(directory: str | os.PathLike) -> dict[str, Any]:
    """Check a policy directory against its manifest; return the manifest.

    Raises:
        FileNotFoundError: ``directory`` holds no policy.
        IntegrityError (a ``ValueError``): The manifest is missing (a format-1 directory: the message gives
            the migration command), malformed or does not match a file (the message names the file).
    """
    d = Path(directory)
    if not d.is_symlink() and not has_manifest(d):
        if not (d / "config.json").exists():
            raise FileNotFoundError(f"no saved policy in {str(d)!r} (missing config.json)")
        raise IntegrityError(
            f"{str(d)!r} holds a policy saved by text-env < 0.2 (format_version 1, without the "
            "manifest.json that lets its files be verified); if you trust its contents, migrate it in place "
            f"with: {MIGRATE_COMMAND} {str(d)!r}"
        )
    return verify_manifest(d, kind=MANIFEST_KIND, max_format_version=FORMAT_VERSION)


def check_policy_meta(
    path: Path,
    meta: Any,
    policy_class: str,
    extra_fields: dict[str, type],
    manifest_version: int | None,
) -> None:
    """Refuse (never coerce) a ``config.json`` whose fields are missing, unknown or of the wrong type.

    Args:
        path: The config.json, for messages.
        meta: Its parsed content.
        policy_class: The class expected in its ``policy_class``.
        extra_fields: The class's own fields and their JSON types.
        manifest_version: The directory's manifest ``format_version`` (config.json must agree with it); None
            (migration) accepts every version up to :data:`FORMAT_VERSION`.
    """
    where = repr(str(path))
    if not isinstance(meta, dict) or meta.get("policy_class") != policy_class:
        found = meta.get("policy_class") if isinstance(meta, dict) else meta
        raise ValueError(f"{where} describes a {found!r}, not a {policy_class}")
    fields = (*_META_FIELDS, *extra_fields)
    missing = [k for k in fields if k not in meta]
    unknown = sorted(set(meta) - set(fields))
    if missing or unknown:
        raise ValueError(
            f"{where}: missing fields {missing} and unknown fields {unknown}; a {policy_class} config.json "
            f"has exactly {list(fields)}"
        )
    version = meta["format_version"]
    if type(version) is not int:
        raise ValueError(f"{where} has format_version {version!r}; expected an int")
    if not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{where} has format_version {version}; this code reads 1 to {FORMAT_VERSION} (saved by a newer "
            "text-env? upgrade it)"
        )
    if manifest_version is not None and version != manifest_version:
        raise ValueError(
            f"{where} has format_version {version} but its directory's manifest.json says {manifest_version}"
        )
    try:
        _check_temperature(meta["temperature"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    types = {"has_action_mask": bool, **extra_fields}
    for name, kind in types.items():
        if type(meta[name]) is not kind:
            raise ValueError(
                f"{where}: field {name!r} must be a JSON {kind.__name__}, got {meta[name]!r} "
                f"({type(meta[name]).__name__})"
            )


__all__ = [
    "FORMAT_VERSION",
    "LMPolicy",
    "LMPolicyBase",
    "check_policy_meta",
    "check_token_inputs",
    "sample_categorical",
    "verify_policy_directory",
]
