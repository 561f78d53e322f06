"""LM policies: the built-in transformer (model, KV cache, value head) and a Hugging Face adapter.

Both implement the :class:`LMPolicy` protocol: ``forward`` → ``(logits, values)``, ``prefill`` /
``decode_step`` through a cache from ``new_cache``, ``log_probs`` / ``sample`` (one distribution for sampling
and training), ``clone_frozen`` and ``save`` / ``load``. :class:`HFPolicy` is imported lazily so that
``transformers`` stays optional.

Modules: :mod:`~agents.policies.model` (the transformer LM), :mod:`~agents.policies.cache` (KV caches),
:mod:`~agents.policies.base` (the protocol and what both policies share), :mod:`~agents.policies.transformer`
(:class:`TransformerPolicy`), :mod:`~agents.policies.hf` (:class:`HFPolicy`).

A saved policy is a directory with a ``manifest.json`` (:mod:`text_env.persistence`), verified on every load;
one saved by text-env < 0.2 has none and is refused until :func:`migrate_policy` gives it one.

Example:
    >>> import tempfile
    >>> from text_env.tasks import reverse_task
    >>> policy = TransformerPolicy.for_task(reverse_task(), n_layer=1, n_embd=32)
    >>> directory = tempfile.mkdtemp()
    >>> policy.save(directory)
    >>> type(load_policy(directory)).__name__
    'TransformerPolicy'
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.policies.base import (
    FORMAT_VERSION,
    MANIFEST_KIND,
    LMPolicy,
    LMPolicyBase,
    verify_policy_directory,
)
from agents.policies.cache import KVCache, SlotCache
from agents.policies.model import TransformerConfig, TransformerLM
from agents.policies.transformer import TransformerPolicy
from text_env.io import atomic_write_json, read_json
from text_env.persistence import MANIFEST_NAME, atomic_directory, has_manifest, resolve_inside

if TYPE_CHECKING:
    from agents.policies.hf import HFCache, HFPolicy, LoRAReference

logger = logging.getLogger(__name__)
POLICY_CLASSES = ("TransformerPolicy", "HFPolicy")


def __getattr__(name: str) -> Any:
    if name in ("HFPolicy", "HFCache", "LoRAReference"):
        from agents.policies import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _policy_class(directory: Path) -> type[TransformerPolicy] | type[HFPolicy]:
    """The class named by ``policy_class`` in ``directory/config.json`` (only a choice between the two known
    classes is made from it; the class's loader then verifies and checks everything)."""
    path = directory / "config.json"
    kind = None
    if path.is_file() and not path.is_symlink():
        meta = read_json(path, what="policy config")
        kind = meta.get("policy_class") if isinstance(meta, dict) else None
    if kind == "TransformerPolicy":
        return TransformerPolicy
    if kind == "HFPolicy":
        from agents.policies.hf import HFPolicy

        return HFPolicy
    if not path.exists():
        raise FileNotFoundError(f"no saved policy in {str(directory)!r} (missing config.json)")
    raise ValueError(f"{str(path)!r}: unknown policy_class {kind!r}; expected one of {list(POLICY_CLASSES)}")


def load_policy(directory: str | os.PathLike, **kwargs: Any) -> LMPolicy:
    """Load any policy saved with ``save(directory)``, dispatching on ``policy_class`` in its config.json.

    ``kwargs`` go to the class's ``load`` (e.g. ``device``). See :meth:`TransformerPolicy.load` for what is
    checked; a policy saved by text-env < 0.2 is refused with the command that migrates it.

    Example:
        >>> load_policy("runs/reverse/ckpt-00000010/policy")  # doctest: +SKIP
        TransformerPolicy(n_layer=2, n_embd=128, vocab=36, params=..., temperature=1.0, action_mask=False)
    """
    d = Path(directory)
    try:
        cls = _policy_class(d)
    except (ValueError, FileNotFoundError):
        # a tampered or old directory: say so (naming the file) rather than only that the class is unknown
        # or that config.json is missing
        verify_policy_directory(d)
        raise
    return cls.load(d, **kwargs)


def load_reference(directory: str | os.PathLike, policy: Any, **kwargs: Any) -> LMPolicy:
    """Load a checkpoint's KL reference: a saved policy (:func:`load_policy`), or, for a LoRA policy, the
    marker its :class:`~agents.policies.hf.LoRAReference` saved, which becomes ``policy``'s own view (the same
    model with its adapters disabled; the temperature and action mask as saved).

    Raises:
        ValueError: A LoRA reference marker with a ``policy`` that has no adapters, or any failure of
            :func:`load_policy`.
    """
    d = Path(directory)
    path = d / "config.json"
    kind = None
    if path.is_file() and not path.is_symlink():
        meta = read_json(path, what="policy config")
        kind = meta.get("policy_class") if isinstance(meta, dict) else None
    if kind != "LoRAReference":
        return load_policy(d, **kwargs)
    from agents.policies.base import check_policy_meta
    from agents.policies.hf import LoRAReference

    manifest = verify_policy_directory(d)
    check_policy_meta(path, meta, "LoRAReference", {"reference_of": str}, manifest["format_version"])
    if getattr(policy, "lora", None) is None:
        raise ValueError(f"{str(path)!r} is the reference of a LoRA policy, but the policy has no adapters")
    reference = LoRAReference(policy)
    reference.temperature = meta["temperature"]
    if meta["has_action_mask"]:
        from text_env.persistence import read_safetensors

        vocab = policy.vocab_size
        head = resolve_inside(d, "value_head.safetensors", what="reference action mask")
        mask = read_safetensors(head, None, expected={"action_mask": (vocab,)})["action_mask"]
        reference.action_mask = mask.to(dtype=torch.bool, device=next(policy.parameters()).device)
    else:
        reference.action_mask = None
    return reference


def migrate_policy(directory: str | os.PathLike) -> Path:
    """Give a policy saved by text-env < 0.2 (format_version 1, no manifest) its ``manifest.json`` and
    format_version 2, in place; what ``text-env migrate <dir>`` runs.

    The policy is first loaded with every check of a normal load except the manifest (config.json read
    strictly, sizes range-checked, weights checked against the config, tokenizer loaded), so only a directory
    that loads is migrated. Its files are then copied byte for byte into a temporary sibling, config.json's
    ``format_version`` is set to 2, the manifest is written, and the copy replaces the directory (an atomic
    rename: a failure at any point leaves the original untouched). A directory that already has a manifest is
    verified and left as it is.

    Migrating vouches for the files: run it only on directories you trust.

    Returns:
        The directory.

    Raises:
        FileNotFoundError: ``directory`` holds no policy.
        ValueError: It does not load, holds a symlink or special file, or its manifest does not verify.

    Example:
        >>> migrate_policy("runs/old/ckpt-00000010/policy")  # doctest: +SKIP
        PosixPath('runs/old/ckpt-00000010/policy')
    """
    d = Path(directory)
    if d.is_symlink():
        raise ValueError(f"{str(d)!r} is a symlink; migrate the directory it points to")
    if has_manifest(d):
        manifest = verify_policy_directory(d)
        logger.info(
            "%s already has a manifest (format_version %d); nothing to do", d, manifest["format_version"]
        )
        return d
    cls = _policy_class(d)
    cls._load(d, None, verify=False)  # every check but the manifest's
    with atomic_directory(d, kind=MANIFEST_KIND, format_version=FORMAT_VERSION) as tmp:
        _copy_regular_files(d, tmp)
        config_path = resolve_inside(tmp, "config.json", what="policy config")
        meta = read_json(config_path, what="policy config")
        meta["format_version"] = FORMAT_VERSION
        atomic_write_json(config_path, meta, indent=1)
    cls.load(d)  # what was written verifies and loads
    logger.info("migrated %s to policy format_version %d", d, FORMAT_VERSION)
    return d


def _copy_regular_files(source: Path, target: Path) -> None:
    """Copy every file under ``source`` into ``target`` byte for byte; a symlink or special file raises."""
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        base = Path(dirpath)
        rel = base.relative_to(source)
        for name in dirnames:
            if (base / name).is_symlink():
                raise ValueError(f"{str(base / name)!r} is a symlink; a policy directory may not hold one")
            (target / rel / name).mkdir()
        for name in filenames:
            p = base / name
            if not stat.S_ISREG(os.lstat(p).st_mode):
                raise ValueError(f"{str(p)!r} is not a regular file (a symlink?); refused")
            if rel == Path(".") and name == MANIFEST_NAME:
                continue
            shutil.copyfile(p, target / rel / name)


__all__ = [
    "FORMAT_VERSION",
    "HFCache",
    "HFPolicy",
    "KVCache",
    "LMPolicy",
    "LMPolicyBase",
    "LoRAReference",
    "SlotCache",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "load_policy",
    "load_reference",
    "migrate_policy",
]
