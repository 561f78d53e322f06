"""The learned rewards as :class:`~text_env.rewards.base.Reward` objects: :class:`BradleyTerryRewardModel` and
:class:`ClassifierRewardModel`, their save/load (``model.safetensors`` + ``config.json`` + the persistence
layer's ``manifest.json``; no pickle) and :func:`load_learned_reward`."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import safetensors.torch

from text_env.io import atomic_write_bytes, atomic_write_json, read_json
from text_env.persistence import (
    IntegrityError,
    atomic_directory,
    check_tensor_shapes,
    has_manifest,
    nonfinite_tensors,
    read_safetensors_header,
    verify_manifest,
)
from text_env.rewards.base import Reward, RewardBatch
from text_env.rewards.learned.encoder import EncoderConfig, TextScorer

logger = logging.getLogger(__name__)

FORMAT = "text_env.learned_reward"
FORMAT_VERSION = 2  # 1: text-env 0.1 (weights_sha256 optional, no manifest); 2: manifest, sha mandatory
MANIFEST_KIND = "reward_model"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class LearnedReward(Reward):
    """Shared machinery of the learned rewards: scoring texts in batches, save/load, ``as_reward``."""

    model_type: ClassVar[str] = ""

    def __init__(self, net: TextScorer, training: Mapping[str, Any] | None = None) -> None:
        if not isinstance(net, TextScorer):
            raise TypeError(f"{type(self).__name__} needs a TextScorer, got {type(net).__name__}")
        self.net = net
        self.net.eval()
        self.training = dict(training) if training is not None else None
        self._collapsed: tuple[np.ndarray, float] | None = None

    def refresh(self) -> None:
        """Recompute the cached inference weights (call after changing ``net``'s parameters in place)."""
        self._collapsed = self.net.collapsed()

    @property
    def encoder_config(self) -> EncoderConfig:
        return self.net.encoder.config

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The head's output per text (a reward for Bradley-Terry, a logit for the classifier)."""
        if isinstance(texts, str):
            raise TypeError("expected a sequence of texts, got one string; wrap it in a list")
        if self._collapsed is None:
            self.refresh()
        return self.net.score_texts(list(texts), self._collapsed)

    def score_texts(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Scores of ``completions`` as the reward reports them. ``prompts`` is accepted for the common
        signature and ignored (see the module docstring for why)."""
        raise NotImplementedError

    def score(self, batch: RewardBatch) -> np.ndarray:
        return self.score_texts(batch.completions)

    def as_reward(self) -> LearnedReward:
        """This object is already a reward; returned as is, for symmetry with other model wrappers."""
        return self

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``, atomically, with the
        persistence layer's manifest (:mod:`text_env.persistence`); the config also records the weights'
        SHA-256."""
        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        bad = nonfinite_tensors(state)
        if bad:
            raise ValueError(f"refusing to save a reward model with non-finite weights (in {bad[:5]})")
        data = safetensors.torch.save(state, metadata={"format": FORMAT, "type": self.model_type})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "type": self.model_type,
            "encoder": asdict(self.encoder_config),
            "weights_sha256": hashlib.sha256(data).hexdigest(),
            "training": self.training,
        }
        with atomic_directory(directory, kind=MANIFEST_KIND, format_version=FORMAT_VERSION) as tmp:
            atomic_write_bytes(tmp / WEIGHTS_FILE, data)
            atomic_write_json(tmp / CONFIG_FILE, config, indent=2)
        logger.info("saved %s reward model to %s", self.model_type, directory)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LearnedReward:
        """Load a model saved by :meth:`save`: the manifest first, then the config (strictly), then the
        weights' header against the shapes the config implies, then the weights.

        Raises:
            FileNotFoundError: The directory or one of its two files does not exist.
            ValueError: A file is truncated, corrupt, edited or swapped, the directory was saved by text-env
                0.1 (no manifest: ``text-env migrate`` upgrades it), or it holds the other kind of model; the
                message names the file.
        """
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"no reward model at {str(directory)!r}: {str(p)!r} does not exist "
                    f"(expected {CONFIG_FILE} and {WEIGHTS_FILE} written by save())"
                )
        if not has_manifest(directory):
            raise IntegrityError(
                f"reward model {str(directory)!r} has no manifest.json (saved by text-env 0.1); if you trust "
                f"it, upgrade it in place with: text-env migrate {str(directory)!r}"
            )
        verify_manifest(directory, kind=MANIFEST_KIND, max_format_version=FORMAT_VERSION)
        config, target, encoder = cls._read_config(cfg_path)
        data = w_path.read_bytes()
        expected = config.get("weights_sha256")
        if not isinstance(expected, str) or hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(
                f"{str(w_path)!r} is corrupt or truncated, or does not belong to {str(cfg_path)!r} "
                "(its SHA-256 differs from the one recorded at save time, or none was recorded)"
            )
        net = TextScorer(encoder)
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        check_tensor_shapes(
            w_path, read_safetensors_header(w_path), want, what=f"the model in {str(cfg_path)!r}"
        )
        try:
            state = safetensors.torch.load(data)
        except Exception as e:  # safetensors raises its own SafetensorError on a torn header/body
            raise ValueError(f"{str(w_path)!r} is corrupt or truncated: {e}") from e
        bad = nonfinite_tensors(state)
        if bad:
            raise ValueError(f"{str(w_path)!r} holds non-finite weights (in {bad[:5]})")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"{str(w_path)!r} does not match the model described in {str(cfg_path)!r}: {e}"
            ) from e
        net.eval()
        return target(net, training=config.get("training"))

    @classmethod
    def _read_config(
        cls, cfg_path: Path, versions: tuple[int, ...] = (FORMAT_VERSION,)
    ) -> tuple[dict[str, Any], type[LearnedReward], EncoderConfig]:
        """The config of a saved model, checked field by field: ``(config, class, encoder settings)``."""
        config = read_json(cfg_path, what="reward model config")
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(
                f"{str(cfg_path)!r} is not a text_env learned-reward config (no format={FORMAT!r})"
            )
        version = config.get("format_version")
        if type(version) is not int or version not in versions:
            raise ValueError(
                f"{str(cfg_path)!r} has format_version {version!r}; this text_env reads version "
                f"{' or '.join(map(str, versions))}"
            )
        model_type: Any = config.get("type")
        target = _MODEL_TYPES.get(model_type) if cls is LearnedReward else cls
        if target is None:
            raise ValueError(
                f"{str(cfg_path)!r} has unknown model type {model_type!r}; "
                f"expected one of {sorted(_MODEL_TYPES)}"
            )
        if target.model_type != model_type:
            hint = {"bradley_terry": "reward_model:<dir>", "classifier": "classifier:<dir>"}.get(
                str(model_type)
            )
            raise ValueError(
                f"{str(cfg_path)!r} holds a {model_type!r} model, not a {cls.model_type!r} one"
                + (f"; load it with {_MODEL_TYPES[model_type].__name__}.load or {hint!r}" if hint else "")
            )
        training = config.get("training")
        if training is not None and not isinstance(training, dict):
            raise ValueError(f"{str(cfg_path)!r}: 'training' must be an object or null, got {training!r}")
        try:
            encoder = EncoderConfig.from_dict(config.get("encoder") or {})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{str(cfg_path)!r}: invalid encoder settings: {e}") from e
        return config, target, encoder

    @classmethod
    def migrate(cls, directory: str | os.PathLike) -> Path:
        """Upgrade a reward model saved by text-env 0.1 in place: check that it loads as before (its
        optional SHA-256 must match if present), then save it again in the current format."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        config, target, encoder = cls._read_config(cfg_path, versions=(1,))
        data = w_path.read_bytes()
        expected = config.get("weights_sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"{str(w_path)!r} does not match the SHA-256 in {str(cfg_path)!r}; not migrated")
        net = TextScorer(encoder)
        try:
            net.load_state_dict(safetensors.torch.load(data), strict=True)
        except Exception as e:
            raise ValueError(f"{str(w_path)!r} is corrupt or does not match {str(cfg_path)!r}: {e}") from e
        target(net, training=config.get("training")).save(directory)
        return directory

    def __repr__(self) -> str:
        c = self.encoder_config
        return f"{type(self).__name__}(name={self.name!r}, buckets={c.n_buckets}, dim={c.dim})"


class BradleyTerryRewardModel(LearnedReward):
    """A scalar reward ``r(text)`` learned from preferences with the Bradley-Terry model.

    ``P(chosen ≻ rejected) = σ(r(chosen) − r(rejected))`` (Bradley & Terry, 1952), trained by minimizing
    ``−log σ(r_chosen − r_rejected)`` as in InstructGPT (Ouyang et al., 2022, eq. 1). Rewards are shifted
    after training so that the training texts average 0 (only differences matter to the model). Build one
    with :func:`train_reward_model` or :meth:`load`.

    Example:
        >>> rm = BradleyTerryRewardModel.load("runs/rm")  # doctest: +SKIP
        >>> rm.score_texts(["A moving, funny film."])  # doctest: +SKIP
        array([1.7], dtype=float32)
    """

    name = "reward_model"
    kind = "state"
    requires = ()
    model_type = "bradley_terry"

    def score_texts(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        return self.raw_scores(completions)


class ClassifierRewardModel(LearnedReward):
    """A binary text classifier whose reward is ``P(positive | completion)`` in [0, 1].

    Trained with binary cross-entropy by :func:`train_classifier_reward` (e.g. on fresh vs rotten reviews,
    to reward positive completions).

    Example:
        >>> clf = ClassifierRewardModel.load("runs/sentiment")  # doctest: +SKIP
        >>> clf.score_texts(["A moving, funny film.", "A tedious mess."])  # doctest: +SKIP
        array([0.91, 0.07], dtype=float32)
    """

    name = "classifier"
    kind = "state"
    requires = ()
    model_type = "classifier"

    def score_texts(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-self.raw_scores(completions).astype(np.float64)))).astype(np.float32)

    def accuracy(self, texts: Sequence[str], labels: Sequence[int | bool]) -> float:
        """Fraction of ``texts`` whose predicted class (probability > 0.5) equals the label."""
        y = _binary_labels(labels, len(texts))
        return float(((self.raw_scores(texts) > 0) == (y > 0.5)).mean()) if len(y) else float("nan")


_MODEL_TYPES: dict[str, type[LearnedReward]] = {
    BradleyTerryRewardModel.model_type: BradleyTerryRewardModel,
    ClassifierRewardModel.model_type: ClassifierRewardModel,
}


def load_learned_reward(directory: str | os.PathLike) -> LearnedReward:
    """Load whichever learned reward ``directory`` holds (dispatching on ``config.json``'s ``type``)."""
    return LearnedReward.load(directory)


def _binary_labels(labels: Sequence[Any], n: int) -> np.ndarray:
    y = np.asarray(list(labels))
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} texts; expected one label per text")
    if len(y) and (y.dtype.kind not in "biu" or not np.isin(y, (0, 1)).all()):
        bad = [v for v in y.tolist() if isinstance(v, float) or v not in (0, 1)][:3]
        raise ValueError(f"labels must be 0/1 or booleans (1 = positive class), got e.g. {bad!r}")
    return y.astype(np.float32)


__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "BradleyTerryRewardModel",
    "ClassifierRewardModel",
    "LearnedReward",
    "load_learned_reward",
]
