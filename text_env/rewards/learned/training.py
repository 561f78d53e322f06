"""Training the learned rewards: :func:`train_reward_model` (Bradley-Terry on preference pairs),
:func:`train_classifier_reward` (binary cross-entropy on labelled texts), :class:`TrainReport` and
:func:`pairwise_accuracy`."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from text_env.rewards.learned.encoder import EncoderConfig, TextScorer
from text_env.rewards.learned.models import (
    BradleyTerryRewardModel,
    ClassifierRewardModel,
    LearnedReward,
    _binary_labels,
)
from text_env.rewards.learned.preferences import PreferencePair, _as_pairs

logger = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What training measured (also stored under ``"training"`` in ``config.json``).

    Attributes:
        kind: ``"bradley_terry"`` or ``"classifier"``.
        n_train / n_val: Training and held-out examples (pairs, or labelled texts).
        epochs: Passes over the training set.
        train_loss: Mean loss over the last epoch.
        train_accuracy: Pairwise accuracy (BT) or accuracy (classifier) on the training set.
        val_accuracy: The same on the held-out set (``None`` without one).
        val_loss: Mean loss on the held-out set.
        seconds: Wall time of the whole call.
        seed: The seed that fixed the initialization, the split and the batch order.
    """

    kind: str
    n_train: int
    n_val: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None
    val_loss: float | None
    seconds: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    perm = rng.permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_hparams(epochs: int, batch_size: int, lr: float) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _optimizers(net: TextScorer, lr: float) -> list[torch.optim.Optimizer]:
    # Plain SGD, as fastText trains the same kind of model (Joulin et al., 2017, "Bag of Tricks for Efficient
    # Text Classification"); it takes the table's sparse gradients as they are. Adam normalizes each
    # coordinate's step, so a feature seen twice moves as far as one seen a thousand times: with 10% label
    # noise it memorized the noise (held-out ranking 0.87, falling with more epochs) where SGD reached 0.98.
    return [torch.optim.SGD(net.parameters(), lr=lr)]


@contextmanager
def _training_context(seed: int) -> Iterator[None]:
    """Seeded torch RNG (the caller's global RNG is restored afterwards) and one intra-op thread.

    Batches here are tiny (64 texts): extra intra-op threads only add synchronization, which on a busy
    2-core machine made each step ~10x slower. The thread count is restored on exit.
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _step(opts: list[torch.optim.Optimizer], loss: torch.Tensor) -> float:
    for o in opts:
        o.zero_grad()
    loss.backward()
    for o in opts:
        o.step()
    return float(loss.detach())


def train_reward_model(
    data: str | os.PathLike | Iterable[PreferencePair | Mapping[str, Any]],
    *,
    val_fraction: float = 0.1,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1.0,
    seed: int = 0,
    encoder: EncoderConfig | None = None,
) -> tuple[BradleyTerryRewardModel, TrainReport]:
    """Train a :class:`BradleyTerryRewardModel` on preference pairs.

    Args:
        data: A JSONL path (``{"prompt", "chosen", "rejected"}`` per line, see :func:`read_preferences`) or
            an iterable of such dicts / :class:`PreferencePair`.
        val_fraction: Fraction of pairs held out (chosen at random with ``seed``) for the report's
            pairwise accuracy; 0 trains on everything.
        epochs: Passes over the training pairs.
        batch_size: Pairs per gradient step.
        lr: SGD learning rate.
        seed: Fixes initialization, split and batch order; the same seed gives identical weights. The
            caller's global torch RNG is left untouched.
        encoder: Encoder settings (default :class:`EncoderConfig`).

    Returns:
        ``(model, report)``; ``report.val_accuracy`` is the fraction of held-out pairs the model ranks like
        the labels (ties count one half).

    Example:
        >>> rm, report = train_reward_model("prefs.jsonl")  # doctest: +SKIP
        >>> report.val_accuracy  # doctest: +SKIP
        0.93
    """
    t0 = time.perf_counter()
    _check_hparams(epochs, batch_size, lr)
    pairs = _as_pairs(data)
    if not pairs:
        raise ValueError("no preference pairs to train on")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = _split(len(pairs), val_fraction, rng)
    if len(train_idx) == 0:
        raise ValueError(f"val_fraction={val_fraction} leaves no training pairs out of {len(pairs)}")
    texts = list(dict.fromkeys(t for p in pairs for t in (p.chosen, p.rejected)))
    index = {t: i for i, t in enumerate(texts)}
    ch = np.array([index[p.chosen] for p in pairs], dtype=np.int64)
    rj = np.array([index[p.rejected] for p in pairs], dtype=np.int64)
    train_texts = np.unique(np.concatenate([ch[train_idx], rj[train_idx]]))
    with _training_context(seed):
        net = TextScorer(encoder)
        counts = [net.encoder.feature_counts(t) for t in texts]
        net.encoder.fit_idf([counts[i] for i in train_texts])  # IDF from training texts only
        vecs = [net.encoder.vectorize(t, c) for t, c in zip(texts, counts, strict=True)]

        def margins(idx: np.ndarray) -> torch.Tensor:
            chosen = net.score_vectors([vecs[i] for i in ch[idx]])
            return chosen - net.score_vectors([vecs[i] for i in rj[idx]])

        opts = _optimizers(net, lr)
        net.train()
        losses: list[float] = []
        for _ in range(epochs):
            order = rng.permutation(train_idx)
            # Bradley-Terry negative log-likelihood −log σ(r_chosen − r_rejected) (Ouyang et al., 2022, eq. 1)
            losses = []
            for s in range(0, len(order), batch_size):
                b = order[s : s + batch_size]
                losses.append(_step(opts, -nn.functional.logsigmoid(margins(b)).mean()))
        net.eval()
        with torch.no_grad():
            train_acc, _ = _pair_metrics(margins, train_idx)
            val_acc, val_loss = _pair_metrics(margins, val_idx) if len(val_idx) else (None, None)
            # only differences matter to Bradley-Terry: centre the rewards on the training texts
            net.head.bias.sub_(net.score_vectors([vecs[i] for i in train_texts]).mean())
    report = TrainReport(
        kind="bradley_terry",
        n_train=len(train_idx),
        n_val=len(val_idx),
        epochs=epochs,
        train_loss=float(np.mean(losses)),
        train_accuracy=train_acc,
        val_accuracy=val_acc,
        val_loss=val_loss,
        seconds=time.perf_counter() - t0,
        seed=seed,
    )
    logger.info("trained Bradley-Terry reward model: %s", report)
    return BradleyTerryRewardModel(net, training=report.to_dict()), report


def _pair_metrics(margins: Any, idx: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
    m = torch.cat([margins(idx[s : s + chunk]) for s in range(0, len(idx), chunk)])
    acc = float(((m > 0).float() + 0.5 * (m == 0).float()).mean())
    return acc, float(-nn.functional.logsigmoid(m).mean())


def pairwise_accuracy(
    model: LearnedReward, pairs: str | os.PathLike | Iterable[PreferencePair | Mapping[str, Any]]
) -> float:
    """Fraction of ``pairs`` where ``model`` scores ``chosen`` above ``rejected`` (ties count one half).

    Example:
        >>> pairwise_accuracy(rm, "heldout_prefs.jsonl")  # doctest: +SKIP
        0.94
    """
    ps = _as_pairs(pairs)
    if not ps:
        raise ValueError("no pairs to evaluate")
    c = model.score_texts([p.chosen for p in ps])
    r = model.score_texts([p.rejected for p in ps])
    return float(((c > r) + 0.5 * (c == r)).mean())


def train_classifier_reward(
    texts: Sequence[str],
    labels: Sequence[int | bool],
    *,
    val_fraction: float = 0.2,
    val_texts: Sequence[str] | None = None,
    val_labels: Sequence[int | bool] | None = None,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 1.0,
    seed: int = 0,
    encoder: EncoderConfig | None = None,
) -> tuple[ClassifierRewardModel, TrainReport]:
    """Train a :class:`ClassifierRewardModel` (binary cross-entropy) on labelled texts.

    Args:
        texts: Training texts.
        labels: 1 (or True) for the positive class, 0 for the negative one.
        val_fraction: Fraction of ``texts`` held out at random when no ``val_texts`` are given.
        val_texts / val_labels: An explicit held-out set (e.g. a split by movie), used instead.
        epochs: Passes over the training texts.
        batch_size, lr, seed, encoder: As in :func:`train_reward_model`.

    Returns:
        ``(model, report)`` with held-out accuracy in ``report.val_accuracy``.

    Example:
        >>> texts, labels = ["great", "awful"] * 20, [1, 0] * 20
        >>> clf, report = train_classifier_reward(texts, labels, val_fraction=0, epochs=3)
        >>> bool(clf.score_texts(["great"])[0] > 0.5)
        True
    """
    t0 = time.perf_counter()
    _check_hparams(epochs, batch_size, lr)
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one string")
    texts = list(texts)
    y_all = _binary_labels(labels, len(texts))
    if not texts:
        raise ValueError("no texts to train on")
    rng = np.random.default_rng(seed)
    if val_texts is not None:
        if val_labels is None:
            raise ValueError("val_texts given without val_labels")
        tr_texts, y_tr = texts, y_all
        va_texts, y_va = list(val_texts), _binary_labels(val_labels, len(val_texts))
    else:
        tr_idx, va_idx = _split(len(texts), val_fraction, rng)
        tr_texts, y_tr = [texts[i] for i in tr_idx], y_all[tr_idx]
        va_texts, y_va = [texts[i] for i in va_idx], y_all[va_idx]
    if not tr_texts:
        raise ValueError(f"val_fraction={val_fraction} leaves no training texts out of {len(texts)}")
    with _training_context(seed):
        net = TextScorer(encoder)
        counts = [net.encoder.feature_counts(t) for t in tr_texts]
        net.encoder.fit_idf(counts)
        vecs = [net.encoder.vectorize(t, c) for t, c in zip(tr_texts, counts, strict=True)]
        y = torch.from_numpy(y_tr)
        opts = _optimizers(net, lr)
        net.train()
        losses: list[float] = []
        for _ in range(epochs):
            order = rng.permutation(len(tr_texts))
            losses = [
                _step(
                    opts,
                    nn.functional.binary_cross_entropy_with_logits(
                        net.score_vectors([vecs[i] for i in b]), y[b]
                    ),
                )
                for b in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
            ]
        net.eval()
    model = ClassifierRewardModel(net)
    train_acc = float(((model.raw_scores(tr_texts) > 0) == (y_tr > 0.5)).mean())
    val_acc = val_loss = None
    if va_texts:
        logits = model.raw_scores(va_texts)
        val_acc = float(((logits > 0) == (y_va > 0.5)).mean())
        val_loss = float(
            nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(y_va))
        )
    report = TrainReport(
        kind="classifier",
        n_train=len(tr_texts),
        n_val=len(va_texts),
        epochs=epochs,
        train_loss=float(np.mean(losses)),
        train_accuracy=train_acc,
        val_accuracy=val_acc,
        val_loss=val_loss,
        seconds=time.perf_counter() - t0,
        seed=seed,
    )
    model.training = report.to_dict()
    logger.info("trained classifier reward: %s", report)
    return model, report


__all__ = ["TrainReport", "pairwise_accuracy", "train_classifier_reward", "train_reward_model"]
