"""Where preferences come from: a synthetic labeller (a hidden rule plus label noise), so the whole RLHF loop
runs offline and can be checked against the rule, and a terminal session in which a person labels pairs.

Both write the preferences JSONL that :func:`~text_env.rewards.learned.train_reward_model` reads, one
``{"prompt", "chosen", "rejected"}`` object per line. The terminal session appends one line per answer
(flushed and fsync'ed before the next pair is shown) and never rewrites the file, so a label, once given,
survives Ctrl-C, a crash or a closed terminal; a restarted session skips the pairs already answered.

Example:
    >>> from text_env.rewards.sentiment import vader_compound
    >>> labeller = SyntheticLabeller(lambda prompt, text: vader_compound([text])[0], noise=0.1, seed=0)
    >>> pairs = labeller.label([("Review:", "A wonderful film.", "A dreadful film.")])
    >>> pairs[0].chosen  # unless the 10% noise flipped it
    'A wonderful film.'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from text_env.io import atomic_write_bytes
from text_env.rewards.learned import PreferencePair

logger = logging.getLogger(__name__)

Rule = Callable[[str, str], float]


@dataclass(frozen=True)
class Candidate:
    """Two completions of one prompt, to be compared."""

    prompt: str
    completion_a: str
    completion_b: str


def _candidate(obj: Any, where: str) -> Candidate:
    if isinstance(obj, Candidate):
        return obj
    if isinstance(obj, Mapping):
        missing = [k for k in ("prompt", "completion_a", "completion_b") if k not in obj]
        if missing:
            raise ValueError(
                f"{where}: missing field(s) {missing}; expected 'prompt', 'completion_a', 'completion_b'"
            )
        vals = (obj["prompt"], obj["completion_a"], obj["completion_b"])
    elif isinstance(obj, (tuple, list)) and len(obj) == 3:
        vals = tuple(obj)
    else:
        raise ValueError(
            f"{where}: expected {{'prompt', 'completion_a', 'completion_b'}} or a (prompt, a, b) tuple, "
            f"got {type(obj).__name__}: {obj!r}"
        )
    for name, v in zip(("prompt", "completion_a", "completion_b"), vals, strict=True):
        if not isinstance(v, str):
            raise ValueError(f"{where}: {name} must be a string, got {type(v).__name__}: {v!r}")
    return Candidate(*vals)


def read_candidates(path: str | os.PathLike) -> list[Candidate]:
    """Read a JSONL file of ``{"prompt", "completion_a", "completion_b"}`` objects (blank lines ignored).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A line is not JSON or lacks a field; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"candidates file {str(path)!r} does not exist")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{str(path)!r}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}): {line[:80]!r}") from None
            out.append(_candidate(obj, where))
    return out


def _pair_record(p: PreferencePair) -> dict[str, str]:
    return {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}


def write_preferences(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> Path:
    """Write ``pairs`` as a preferences JSONL file, atomically (replacing ``path``)."""
    lines = "".join(json.dumps(_pair_record(p), ensure_ascii=False) + "\n" for p in pairs)
    atomic_write_bytes(path, lines.encode("utf-8"))
    return Path(path)


class SyntheticLabeller:
    """Turns a hidden scoring rule into noisy preference labels, as a stand-in for people.

    For a pair ``(a, b)`` the labeller prefers the completion the rule scores higher, then flips that
    choice with probability ``noise`` (a symmetric label-noise model of annotator disagreement). Pairs the
    rule cannot separate (``|rule(a) - rule(b)| <= min_margin``) are ties and get no label.

    Args:
        rule: ``rule(prompt, completion) -> float``, higher is better; hidden from the reward model.
        noise: Probability in [0, 0.5) of flipping a label.
        seed: Seeds the noise (and the pair sampling of :meth:`label_pool`).
        min_margin: Rule differences up to this are ties.

    Attributes:
        n_labelled, n_flipped, n_ties: Counts since construction.

    Example:
        >>> labeller = SyntheticLabeller(lambda p, c: len(c.split()), noise=0.0)
        >>> labeller.label([("Say more:", "a b c", "a")])[0].chosen
        'a b c'
    """

    def __init__(self, rule: Rule, noise: float = 0.1, seed: int = 0, min_margin: float = 0.0) -> None:
        if not callable(rule):
            raise TypeError(f"rule must be callable as rule(prompt, completion) -> float, got {rule!r}")
        if not (isinstance(noise, (int, float)) and 0.0 <= noise < 0.5):
            raise ValueError(f"noise must be a flip probability in [0, 0.5), got {noise!r}")
        if not (isinstance(min_margin, (int, float)) and min_margin >= 0):
            raise ValueError(f"min_margin must be a number >= 0, got {min_margin!r}")
        self.rule = rule
        self.noise = float(noise)
        self.min_margin = float(min_margin)
        self.rng = np.random.default_rng(seed)
        self.n_labelled = self.n_flipped = self.n_ties = 0

    def _score(self, prompt: str, completion: str) -> float:
        v = float(self.rule(prompt, completion))
        if not np.isfinite(v):
            raise ValueError(
                f"the labelling rule returned {v} for completion {completion[:60]!r}; expected a finite float"
            )
        return v

    def true_preference(self, prompt: str, a: str, b: str) -> int | None:
        """The rule's own choice without noise: 0 for ``a``, 1 for ``b``, ``None`` for a tie."""
        ra, rb = self._score(prompt, a), self._score(prompt, b)
        if abs(ra - rb) <= self.min_margin:
            return None
        return 0 if ra > rb else 1

    def label(
        self, candidates: Iterable[Candidate | Mapping[str, str] | tuple[str, str, str]]
    ) -> list[PreferencePair]:
        """Label each ``(prompt, a, b)``; ties are dropped, so the result may be shorter than the input."""
        out = []
        for i, c in enumerate(candidates):
            cand = _candidate(c, f"candidate {i}")
            choice = self.true_preference(cand.prompt, cand.completion_a, cand.completion_b)
            if choice is None:
                self.n_ties += 1
                continue
            if self.rng.random() < self.noise:
                choice = 1 - choice
                self.n_flipped += 1
            chosen, rejected = (
                (cand.completion_a, cand.completion_b)
                if choice == 0
                else (cand.completion_b, cand.completion_a)
            )
            out.append(PreferencePair(cand.prompt, chosen, rejected))
            self.n_labelled += 1
        return out

    def label_pool(self, texts: Sequence[str], n_pairs: int, prompt: str = "") -> list[PreferencePair]:
        """Label ``n_pairs`` random pairs of distinct texts from ``texts`` (all as replies to ``prompt``).

        Ties are dropped, so fewer than ``n_pairs`` may come back.
        """
        if len(texts) < 2:
            raise ValueError(f"need at least 2 texts to form pairs, got {len(texts)}")
        if not isinstance(n_pairs, int) or n_pairs < 1:
            raise ValueError(f"n_pairs must be an integer >= 1, got {n_pairs!r}")
        a = self.rng.integers(0, len(texts), n_pairs)
        b = (a + self.rng.integers(1, len(texts), n_pairs)) % len(texts)  # b != a
        return self.label((prompt, texts[i], texts[j]) for i, j in zip(a.tolist(), b.tolist(), strict=True))

    def write(self, pairs: Iterable[PreferencePair], path: str | os.PathLike) -> Path:
        """Write labelled pairs to ``path`` as preferences JSONL, atomically (:func:`write_preferences`)."""
        return write_preferences(pairs, path)


# ------------------------------------------------------------------------------ the terminal session


@dataclass
class LabelSessionResult:
    """What one :func:`label_session` did.

    Attributes:
        labelled: Pairs the person chose between (a line each in the output file).
        skipped: Pairs the person skipped (also recorded, with ``"skip": true``).
        already_done: Candidates found in the output file from an earlier session, not shown again.
        remaining: Candidates not reached because the person quit.
        stopped: True if the session ended on ``q``, Ctrl-C or end of input rather than running out.
    """

    labelled: int = 0
    skipped: int = 0
    already_done: int = 0
    remaining: int = 0
    stopped: bool = False


def _key(prompt: str, a: str, b: str) -> tuple[str, frozenset[str]]:
    return prompt, frozenset((a, b))


def _done_keys(path: Path) -> set[tuple[str, frozenset[str]]]:
    """Keys of the pairs already in the output file (malformed lines are reported and ignored)."""
    keys: set[tuple[str, frozenset[str]]] = set()
    if not path.exists():
        return keys
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if obj.get("skip"):
                    keys.add(_key(obj["prompt"], obj["completion_a"], obj["completion_b"]))
                else:
                    keys.add(_key(obj.get("prompt", ""), obj["chosen"], obj["rejected"]))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                logger.warning("%s line %d is not a preference record; left as is and ignored", path, lineno)
    return keys


def _append_line(f: Any, record: Mapping[str, Any]) -> None:
    # one write per record, then flush + fsync: a label is on disk before the next pair is shown
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def label_session(
    candidates: Iterable[Candidate | Mapping[str, str] | tuple[str, str, str]],
    out_path: str | os.PathLike,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., None] = print,
    shuffle: bool = False,
    seed: int = 0,
) -> LabelSessionResult:
    """Ask a person to compare completions, appending each answer to the preferences JSONL at ``out_path``.

    For each candidate the prompt and the two completions are shown as ``1`` and ``2``; the answer is
    ``1`` or ``2`` (a ``{"prompt", "chosen", "rejected"}`` line is appended), ``s`` (skip: a line with
    ``"skip": true`` is appended, which training ignores) or ``q`` (quit). Ctrl-C and end of input also
    quit. Earlier lines are never rewritten, and candidates already answered in ``out_path`` (by an
    earlier, interrupted session) are not shown again.

    Args:
        candidates: ``{"prompt", "completion_a", "completion_b"}`` dicts, :class:`Candidate` or
            ``(prompt, a, b)`` tuples; a generator works (e.g. pairs sampled from a policy on the fly).
        out_path: The preferences JSONL to append to (created if absent).
        input_fn: Reads one answer (``input`` by default; tests pass a scripted function).
        print_fn: Shows text (``print`` by default).
        shuffle: Show each pair in a random order (against position bias); the file records the choice,
            not the position.
        seed: Seeds ``shuffle``.

    Example:
        >>> answers = iter(["2", "q"])
        >>> ask = lambda _: next(answers)
        >>> label_session([("Hi", "a", "b")], "prefs.jsonl", input_fn=ask)  # doctest: +SKIP
        LabelSessionResult(labelled=1, skipped=0, already_done=0, remaining=0, stopped=False)
    """
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(path)
    rng = np.random.default_rng(seed)
    result = LabelSessionResult()
    items = iter(candidates)
    # a file whose last line lacks its newline (written by something else) must not swallow our first record
    needs_newline = path.exists() and path.stat().st_size > 0 and path.read_bytes()[-1:] != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if needs_newline:
            f.write("\n")
        position = 0
        for i, c in enumerate(items):
            cand = _candidate(c, f"candidate {i}")
            key = _key(cand.prompt, cand.completion_a, cand.completion_b)
            if key in done:
                result.already_done += 1
                continue
            position += 1
            shown = [cand.completion_a, cand.completion_b]
            if shuffle and rng.random() < 0.5:
                shown.reverse()
            print_fn(f"\n--- pair {position} ---")
            print_fn(f"Prompt:\n{cand.prompt}")
            print_fn(f"\n[1] {shown[0]}")
            print_fn(f"\n[2] {shown[1]}")
            answer = None
            while answer is None:
                try:
                    raw = input_fn("Which is better? 1 / 2, s = skip, q = quit: ")
                except (KeyboardInterrupt, EOFError):
                    raw = "q"
                raw = (raw or "").strip().lower()
                if raw in ("1", "2", "s", "q"):
                    answer = raw
                else:
                    print_fn(f"  {raw!r} is not an answer; type 1, 2, s or q")
            if answer == "q":
                result.stopped = True
                result.remaining = 1 + sum(1 for _ in items)
                break
            if answer == "s":
                record: dict[str, Any] = {
                    "prompt": cand.prompt,
                    "completion_a": cand.completion_a,
                    "completion_b": cand.completion_b,
                    "skip": True,
                }
                result.skipped += 1
            else:
                chosen = shown[int(answer) - 1]
                rejected = shown[2 - int(answer)]
                record = {"prompt": cand.prompt, "chosen": chosen, "rejected": rejected}
                result.labelled += 1
            _append_line(f, record)
            done.add(key)
    print_fn(
        f"\n{result.labelled} labelled, {result.skipped} skipped"
        + (f", {result.already_done} already in {str(path)!r}" if result.already_done else "")
        + (f", {result.remaining} left for later" if result.remaining else "")
        + f"; saved to {str(path)!r}"
    )
    return result


def add_label_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``label`` subcommand to an argparse ``subparsers`` object (the ``text-env`` CLI calls this).

    ``text-env label candidates.jsonl --out prefs.jsonl`` shows each pair and appends the answers. The
    parser's default ``func`` runs the session and returns an exit code.

    Example:
        >>> parser = argparse.ArgumentParser(prog="text-env")
        >>> _ = add_label_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["label", "c.jsonl", "--out", "p.jsonl"]).out
        'p.jsonl'
    """
    p = subparsers.add_parser(
        "label",
        help="compare pairs of completions in the terminal and append the choices to a preferences JSONL",
        description=(
            "Shows a prompt and two completions; answer 1 or 2 (which is better), s (skip) or q (quit). Each "
            "answer is appended to --out at once, so nothing is lost on Ctrl-C; rerunning resumes."
        ),
    )
    p.add_argument("candidates", help="JSONL file of {prompt, completion_a, completion_b} objects")
    p.add_argument(
        "--out", default="prefs.jsonl", help="preferences JSONL to append to (default: prefs.jsonl)"
    )
    p.add_argument("--shuffle", action="store_true", help="show each pair in a random order")
    p.add_argument("--seed", type=int, default=0, help="seed for --shuffle")
    p.set_defaults(func=run_label_command)
    return p


def run_label_command(
    args: argparse.Namespace, input_fn: Callable[[str], str] = input, print_fn: Callable[..., None] = print
) -> int:
    """Run ``text-env label`` with parsed ``args``; returns the process exit code."""
    try:
        candidates = read_candidates(args.candidates)
    except (FileNotFoundError, ValueError) as e:
        print_fn(f"error: {e}")
        return 2
    label_session(
        candidates, args.out, input_fn=input_fn, print_fn=print_fn, shuffle=args.shuffle, seed=args.seed
    )
    return 0


__all__ = [
    "Candidate",
    "LabelSessionResult",
    "SyntheticLabeller",
    "add_label_command",
    "label_session",
    "read_candidates",
    "run_label_command",
    "write_preferences",
]
