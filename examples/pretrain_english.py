"""Pretrain the small English policy that ships as ``agents/pretrained/english-small``.

A 4-layer, 128-wide :class:`~agents.policies.TransformerPolicy` (1.9M parameters, 1.05M of them the tied
8192-token embedding of the shared BPE tokenizer, :func:`text_env.data.english.default_tokenizer`) is
trained with the causal language-modelling loss (GPT-2 style: every position predicts the next token) on

- the English corpus read from installed packages (:func:`text_env.data.english.english_corpus`: BBC News
  articles, Rotten Tomatoes plot summaries and reviews) — train-split documents only, so no validation or
  test headline, review or article is ever read;
- the train split of the language tasks in their own formats (``prompt + reference``: article opening →
  headline, English → Spanish pairs, bAbI stories → answers), so the policy "speaks" the formats that the
  tasks prompt it with (the way GPT-2 had seen ``TL;DR:`` before RL4LMs prompted it with it).

Every document is framed as ``[BOS] text [EOS]``; the documents are shuffled with the seed, concatenated
into one token stream and cut into fixed windows of ``seq_len + 1`` tokens (nanoGPT's recipe), from which
each step draws a seeded random batch. AdamW, linear warm-up then cosine decay to 10%, weight decay on
matrices only, gradient clipping at 1. One CPU thread (the fastest setting for a model this small on a
shared machine). The run is deterministic given ``--seed``.

Usage (the shipped checkpoint took 29 minutes on one thread of a busy 2-core machine)::

    python examples/pretrain_english.py --steps 1200 --out agents/pretrained/english-small

It writes ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` (loadable with
:func:`agents.pretrained.load_english_policy`) and ``pretraining.json`` with the recipe and the measured
train/validation perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agents.policies import TransformerConfig, TransformerLM, TransformerPolicy
from text_env.data.bbc import load_bbc_articles
from text_env.data.english import default_tokenizer, english_corpus, movie_reviews, plot_summaries
from text_env.data.sources import content_hash
from text_env.tasks.base import make_task

TASKS_IN_FORMAT = ("summarize", "translate", "qa")  # the sentiment task's texts are the corpus's reviews


@dataclass
class Args:
    steps: int = 1200
    """Optimizer steps (each sees batch_size × seq_len tokens)."""
    out: str = "agents/pretrained/english-small"
    """Directory to write the checkpoint to."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 128
    """Residual width."""
    n_head: int = 4
    """Attention heads."""
    seq_len: int = 192
    """Training window, also the model's max_seq_len (the longest task episode is 1 + 127 + 24 tokens)."""
    batch_size: int = 16
    """Windows per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate."""
    warmup: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on weight matrices (not on biases, LayerNorms or embeddings)."""
    seed: int = 0
    """Seeds the weights, the document shuffle and the batch draws."""
    eval_every: int = 200
    """Steps between validation measurements."""
    eval_windows: int = 64
    """Validation windows per measurement (fixed, so measurements are comparable)."""
    threads: int = 1
    """torch intra-op threads (1 is fastest for this model on 2 shared cores)."""


# ---- data --------------------------------------------------------------------------------------------------
def task_texts(split: str) -> list[str]:
    """``prompt + reference`` of every example of ``split`` of the formatted tasks."""
    texts: list[str] = []
    for name in TASKS_IN_FORMAT:
        texts += [p + c for p, c in make_task(name).demonstrations(split)]
    return texts


def heldout_english(split: str = "validation") -> list[str]:
    """English documents of ``split`` (never trained on): BBC articles, plot summaries and reviews."""
    docs = [a.text for a in load_bbc_articles() if a.split == split]
    docs += [p.text for p in plot_summaries() if p.split == split]
    docs += [r.text for r in movie_reviews() if r.split == split]
    return docs


def token_stream(texts: list[str], tokenizer, seed: int) -> np.ndarray:
    """``[BOS] text [EOS]`` for every text, in a seeded shuffled order, concatenated: ``(N,)`` int32."""
    order = np.random.default_rng(seed).permutation(len(texts))
    ids = tokenizer.encode_batch([texts[i] for i in order])
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    return np.concatenate([np.asarray([bos, *x, eos], dtype=np.int32) for x in ids])


def windows(stream: np.ndarray, length: int) -> torch.Tensor:
    """Non-overlapping windows of ``length`` tokens: ``(N // length, length)`` long."""
    n = len(stream) // length
    return torch.from_numpy(stream[: n * length].astype(np.int64)).view(n, length)


# ---- training ----------------------------------------------------------------------------------------------
def lm_loss(model: TransformerLM, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of ``batch (B, L + 1)``."""
    logits, _ = model(batch[:, :-1])  # (B, L, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@torch.no_grad()
def perplexity(model: TransformerLM, data: torch.Tensor, batch_size: int = 16) -> float:
    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(data), batch_size):
        b = data[s : s + batch_size]
        total += lm_loss(model, b).item() * b.shape[0]
        n += b.shape[0]
    model.train()
    return math.exp(total / max(n, 1))


def param_groups(model: TransformerLM, weight_decay: float) -> list[dict]:
    """Decay 2-D weights of the linear layers only (nanoGPT's rule, minus the tied embedding, which is
    the LM head and sees few updates per rare token)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith(("wte", "wpe")) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def sample_windows(texts: list[str], tokenizer, length: int, n: int, seed: int) -> torch.Tensor:
    """``n`` seeded random windows (in stream order) of the framed, shuffled ``texts``."""
    w = windows(token_stream(texts, tokenizer, seed), length)
    return w[np.sort(np.random.default_rng(seed + 1).permutation(len(w))[:n])]


def measure(model: TransformerLM, tokenizer, args: Args, n: int = 256) -> dict[str, float]:
    """Perplexity on ``n`` windows each of train and validation text, English corpus and task formats
    apart (the two differ by two orders of magnitude: the task formats are templated)."""
    L = args.seq_len + 1
    sets = {
        "train_ppl_english": english_corpus(),
        "train_ppl_tasks": task_texts("train"),
        "val_ppl_english": heldout_english("validation"),
        "val_ppl_tasks": task_texts("validation"),
    }
    out = {k: perplexity(model, sample_windows(v, tokenizer, L, n, args.seed)) for k, v in sets.items()}
    return out | {"uniform_ppl": float(tokenizer.vocab_size), "windows": n}


def main(args: Args) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    tok = default_tokenizer()
    train_texts = english_corpus() + task_texts("train")
    data_hash = content_hash(train_texts, tok.vocab_size)
    train = windows(token_stream(train_texts, tok, args.seed), args.seq_len + 1)
    val_sets = {
        "english": sample_windows(
            heldout_english("validation"), tok, args.seq_len + 1, args.eval_windows, args.seed
        ),
        "tasks": sample_windows(
            task_texts("validation"), tok, args.seq_len + 1, args.eval_windows, args.seed
        ),
    }
    print(
        f"data: {len(train_texts)} train texts, {train.numel():,} tokens in {len(train)} windows "
        f"({time.perf_counter() - t_start:.0f}s)",
        flush=True,
    )

    config = TransformerConfig(
        vocab_size=tok.vocab_size, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        max_seq_len=args.seq_len,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = TransformerLM(config)
    print(f"model: {model.num_params():,} parameters ({model.num_params(False):,} without embeddings)")
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    model.train()
    t0 = time.perf_counter()
    running = float("nan")
    for step in range(args.steps):
        idx = torch.randint(len(train), (args.batch_size,), generator=gen)
        loss = lm_loss(model, train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        if not math.isfinite(running):
            raise FloatingPointError(f"loss diverged at step {step}; lower --lr")
        last = step == args.steps - 1
        if (step + 1) % args.eval_every == 0 or last:
            row = {
                "step": step + 1,
                "train_loss_ema": running,
                "val_ppl_english": perplexity(model, val_sets["english"]),
                "val_ppl_tasks": perplexity(model, val_sets["tasks"]),
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            print(
                f"step {step + 1}/{args.steps} loss {running:.3f} "
                f"val ppl english {row['val_ppl_english']:.1f} tasks {row['val_ppl_tasks']:.2f} "
                f"({row['seconds']:.0f}s, "
                f"{(step + 1) * args.batch_size * args.seq_len / row['seconds']:.0f} tok/s)",
                flush=True,
            )

    model.eval()
    result = measure(model, tok, args)
    policy = TransformerPolicy(model, tok)
    out = Path(args.out)
    report = {
        "recipe": asdict(args),
        "model": config.to_dict(),
        "parameters": model.num_params(),
        "data": {
            "train_texts": len(train_texts),
            "train_tokens": int(train.numel()),
            "data_hash": data_hash,
            "tasks_in_format": list(TASKS_IN_FORMAT),
            "tokens_seen": args.steps * args.batch_size * args.seq_len,
        },
        "result": result,
        "history": history,
        "seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    # the report is part of the saved directory, so it is listed in (and verified by) its manifest
    policy.save(out, extra_json={"pretraining.json": report})
    print(json.dumps(result, indent=1))
    print(f"wrote {out} in {report['seconds'] / 60:.1f} min")
    return report


def measure_only(args: Args) -> dict:
    """Re-measure the checkpoint in ``args.out`` (no training) and update its ``pretraining.json``."""
    torch.set_num_threads(args.threads)
    policy = TransformerPolicy.load(args.out)
    result = measure(policy.model, policy.tokenizer, args)
    path = Path(args.out) / "pretraining.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report["result"] = result
    # re-saved (byte-identical weights) so that the manifest covers the updated report
    policy.save(args.out, extra_json={"pretraining.json": report})
    print(json.dumps(result, indent=1))
    return report


def parse_args(argv: list[str] | None = None) -> tuple[Args, bool]:
    """``(Args, measure_only)`` from the command line (every ``Args`` field is a ``--flag``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--measure-only", action="store_true", help="re-measure the checkpoint in --out")
    ns = vars(parser.parse_args(argv))
    measure_only_flag = ns.pop("measure_only")
    return Args(**ns), measure_only_flag


if __name__ == "__main__":
    arguments, only_measure = parse_args()
    if only_measure:
        measure_only(arguments)
    else:
        main(arguments)
