"""LM policies: the built-in transformer (one file, KV cache, value head) and a Hugging Face adapter.

Both expose the same methods: ``forward`` → ``(logits, values)``, ``prefill`` / ``decode_step`` through a
cache from ``new_cache``, ``log_probs`` / ``sample`` (one distribution for sampling and training),
``clone_frozen`` and ``save`` / ``load``. :class:`HFPolicy` is imported lazily so that ``transformers``
stays optional.

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

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.policies.transformer import (
    KVCache,
    LMPolicy,
    SlotCache,
    TransformerConfig,
    TransformerLM,
    TransformerPolicy,
)
from text_env.io import read_json

if TYPE_CHECKING:
    from agents.policies.hf import HFCache, HFPolicy


def __getattr__(name: str) -> Any:
    if name in ("HFPolicy", "HFCache"):
        from agents.policies import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_policy(directory: str | os.PathLike, **kwargs: Any) -> LMPolicy:
    """Load any policy saved with ``save(directory)``, dispatching on ``policy_class`` in its config.json."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no saved policy in {str(directory)!r} (missing config.json)")
    meta = read_json(path, what="policy config")
    kind = meta.get("policy_class") if isinstance(meta, dict) else None
    if kind == "TransformerPolicy":
        return TransformerPolicy.load(directory, **kwargs)
    if kind == "HFPolicy":
        from agents.policies.hf import HFPolicy

        return HFPolicy.load(directory, **kwargs)
    raise ValueError(
        f"{str(path)!r}: unknown policy_class {kind!r}; expected 'TransformerPolicy' or 'HFPolicy'"
    )


def migrate_policy(directory: str | os.PathLike) -> Path:
    """Give a policy saved by text-env 0.1 (no manifest) its manifest, after checking that it loads."""
    from text_env.persistence import write_manifest

    d = Path(directory)
    load_policy(d)  # every file is validated as before
    write_manifest(d, "policy", 1)
    return d


__all__ = [
    "HFCache",
    "HFPolicy",
    "KVCache",
    "LMPolicy",
    "SlotCache",
    "TransformerConfig",
    "TransformerLM",
    "TransformerPolicy",
    "load_policy",
    "migrate_policy",
]
