"""Pretrained policies shipped with the package: ``english-small``, the default English-speaking policy of
the language tasks.

``english-small`` is a 4-layer, 128-wide :class:`~agents.policies.TransformerPolicy` (1.9M parameters) over
the shared 8192-token BPE of the language tasks (:func:`text_env.data.english.default_tokenizer`),
pretrained with the causal LM loss on the train-split English corpus (BBC News, Rotten Tomatoes reviews and
plot summaries) and the tasks' train-split text in their prompt formats, by ``examples/pretrain_english.py``.
Its recipe and measured perplexities are in ``english-small/pretraining.json``.

Each shipped directory carries a ``manifest.json`` (sha256 and size of every file, see
:mod:`text_env.persistence`), verified on every load like any saved policy's.

Example:
    >>> from agents.pretrained import load_english_policy
    >>> policy = load_english_policy()  # doctest: +SKIP
    >>> from agents import PPO, sft
    >>> policy = sft("TextEnv/Translate-v0", policy=load_english_policy(), steps=300)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from text_env.io import read_json
from text_env.persistence import IntegrityError

PRETRAINED_ROOT = Path(__file__).parent
REBUILD_COMMANDS = {
    "english-small": "python examples/pretrain_english.py --steps 1200 --out agents/pretrained/english-small",
}
_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def available_pretrained() -> list[str]:
    """Names of the shipped pretrained policies whose files are all present."""
    return sorted(
        p.name for p in PRETRAINED_ROOT.iterdir() if p.is_dir() and all((p / f).is_file() for f in _FILES)
    )


def pretrained_dir(name: str = "english-small") -> Path:
    """The directory of the pretrained policy ``name``.

    Raises:
        ValueError: ``name`` is not a known pretrained policy.
        FileNotFoundError: Its files are missing (e.g. a checkout without them); the message gives the
            command that rebuilds them.
    """
    if name not in REBUILD_COMMANDS:
        raise ValueError(f"unknown pretrained policy {name!r}; expected one of {sorted(REBUILD_COMMANDS)}")
    directory = PRETRAINED_ROOT / name
    missing = [f for f in _FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the pretrained policy {name!r} is missing {missing} in {str(directory)!r}; rebuild it "
            f"(about 30 minutes on one CPU thread) from the repository root with: {REBUILD_COMMANDS[name]}"
        )
    return directory


def load_pretrained(name: str = "english-small", device: Any = None) -> Any:
    """Load the shipped pretrained policy ``name`` (a fresh, trainable copy on every call).

    Args:
        name: ``"english-small"``.
        device: Where to put the weights (default CPU).

    Raises:
        ValueError / FileNotFoundError: See :func:`pretrained_dir`; ValueError also when a shipped file does
            not match the manifest (the message names it and the command that rebuilds the policy).
    """
    from agents.policies import TransformerPolicy

    directory = pretrained_dir(name)
    try:
        policy = TransformerPolicy.load(directory, device=device)
    except IntegrityError as e:
        raise IntegrityError(
            f"the shipped pretrained policy {name!r} is damaged: {e}. Restore it (git checkout -- "
            f"{str(directory)!r}) or rebuild it from the repository root with: {REBUILD_COMMANDS[name]}"
        ) from e
    return policy.eval()


def load_english_policy(device: Any = None) -> Any:
    """The default English-speaking policy of the language tasks (``english-small``).

    Its tokenizer is the tasks' shared BPE; build tasks with ``make_task(name, tokenizer=policy.tokenizer)``
    to be sure their token ids are the policy's.

    Example:
        >>> policy = load_english_policy()  # doctest: +SKIP
        >>> policy.tokenizer.vocab_size  # doctest: +SKIP
        8192
    """
    return load_pretrained("english-small", device=device)


def pretraining_report(name: str = "english-small") -> dict[str, Any]:
    """The recipe and measured perplexities written next to the checkpoint (``pretraining.json``)."""
    path = pretrained_dir(name) / "pretraining.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; rebuild with: {REBUILD_COMMANDS[name]}")
    return read_json(path, what="pretraining report")


__all__ = [
    "PRETRAINED_ROOT",
    "available_pretrained",
    "load_english_policy",
    "load_pretrained",
    "pretrained_dir",
    "pretraining_report",
]
