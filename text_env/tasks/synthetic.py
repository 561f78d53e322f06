"""Built-in synthetic tasks with verifiable answers, generated procedurally (no data files).

Each generator is deterministic for its arguments: the same call gives the same disjoint
train/validation/test splits on every machine. Each has a difficulty knob (``length`` or ``digits``).

======================  ======================  ===============  ===========================
task                    prompt → reference      knob             default reward / success
======================  ======================  ===============  ===========================
copy                    ``copy abc=`` → ``abc``    length (≤ L)     exact_match
reverse                 ``reverse abc=`` → ``cba`` length (≤ L)     exact_match
sort                    ``sort cab=`` → ``abc``    length (≤ L)     exact_match
arithmetic              ``12+34=`` → ``46``        digits           exact_match
keyword                 ``use cat:`` → a sentence  (vocabulary)     keyword (+ format)
======================  ======================  ===============  ===========================
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from text_env.tasks.base import Example, Task, register_task
from text_env.validate import int_in, nonnegative_int, positive_int, sizes3

LETTERS = "abcdefghij"


def _unique_splits(
    sample: Callable[[np.random.Generator], Example],
    sizes: tuple[int, int, int],
    seed: int,
    space: int | None = None,
) -> dict[str, list[Example]]:
    """Draw unique examples (by prompt) until the three split sizes are filled; splits are disjoint.

    If the space of prompts is smaller than the total asked for, the sizes shrink in proportion.
    """
    sizes = sizes3(sizes)
    seed = nonnegative_int(seed, "seed")
    total = sum(sizes)
    if space is not None and space < total:
        scale = space / total
        n_val, n_test = max(int(sizes[1] * scale), 1), max(int(sizes[2] * scale), 1)
        if space - n_val - n_test < 1:
            raise ValueError(
                f"only {space} distinct prompts exist; three disjoint splits need at least 3 "
                "(raise the length or the alphabet)"
            )
        # train takes what validation and test leave, so the total never exceeds the space
        sizes = (space - n_val - n_test, n_val, n_test)
        total = space
    rng = np.random.default_rng(seed)
    seen: dict[str, Example] = {}
    attempts = 0
    while len(seen) < total:
        ex = sample(rng)
        seen.setdefault(ex.prompt, ex)
        attempts += 1
        if attempts > 50 * total + 10_000:
            raise RuntimeError(
                f"could not draw {total} unique prompts (got {len(seen)}); shrink the split sizes"
            )
    exs = list(seen.values())
    a, b = sizes[0], sizes[0] + sizes[1]
    return {"train": exs[:a], "validation": exs[a:b], "test": exs[b:]}


MAX_STRING_LENGTH = 1024


def _string_task(
    name: str, op: Callable[[str], str], length: int, alphabet: str, sizes: tuple[int, int, int], seed: int
) -> Task:
    # a string task is for algorithm research at small lengths; 1024 letters already makes every prompt
    # longer than the default observation window, and 10**7 would spin for minutes building the splits
    positive_int(length, "length", name)
    if length > MAX_STRING_LENGTH:
        raise ValueError(f"{name}: length must be at most {MAX_STRING_LENGTH}, got {length}")
    if not isinstance(alphabet, str) or len(set(alphabet)) < 2:
        raise ValueError(f"{name}: alphabet needs at least two distinct characters, got {alphabet!r}")

    def sample(rng: np.random.Generator) -> Example:
        n = int(rng.integers(1, length + 1))
        s = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=n))
        return Example(f"{name} {s}=", (op(s),))

    space = sum(len(alphabet) ** k for k in range(1, length + 1))
    return Task(
        name,
        _unique_splits(sample, sizes, seed, space),
        reward="exact_match",
        success="exact_match",
        max_new_tokens=length + 1,  # the answer, then EOS
        allowed_completion_chars=alphabet,
        metrics=("exact_match", "partial_match"),
        description=f"{name} a string of ≤{length} letters from {alphabet!r}",
    )


@lru_cache(maxsize=32)
def copy_task(
    length: int = 8, alphabet: str = LETTERS, sizes: tuple[int, int, int] = (5000, 500, 500), seed: int = 0
) -> Task:
    """Copy a random string: ``copy abc=`` → ``abc``."""
    return _string_task("copy", lambda s: s, length, alphabet, sizes, seed)


@lru_cache(maxsize=32)
def reverse_task(
    length: int = 8, alphabet: str = LETTERS, sizes: tuple[int, int, int] = (5000, 500, 500), seed: int = 0
) -> Task:
    """Reverse a random string: ``reverse abc=`` → ``cba``."""
    return _string_task("reverse", lambda s: s[::-1], length, alphabet, sizes, seed)


@lru_cache(maxsize=32)
def sort_task(
    length: int = 8, alphabet: str = LETTERS, sizes: tuple[int, int, int] = (5000, 500, 500), seed: int = 0
) -> Task:
    """Sort the letters of a random string: ``sort cab=`` → ``abc``."""
    return _string_task("sort", lambda s: "".join(sorted(s)), length, alphabet, sizes, seed)


@lru_cache(maxsize=32)
def arithmetic_task(
    digits: int = 2, ops: str = "+", sizes: tuple[int, int, int] = (8000, 1000, 1000), seed: int = 0
) -> Task:
    """Integer arithmetic on operands of up to ``digits`` digits: ``12+34=`` → ``46``.

    ``ops`` is any of ``+-*``; subtraction can give negative answers (``-`` is then an answer character).
    """
    int_in(digits, 1, 6, "digits", "arithmetic")
    if not isinstance(ops, str) or not ops or any(o not in "+-*" for o in ops):
        raise ValueError(f"arithmetic: ops must be a non-empty string of '+', '-', '*', got {ops!r}")
    hi = 10**digits

    def sample(rng: np.random.Generator) -> Example:
        a, b = (int(x) for x in rng.integers(0, hi, size=2))
        return _arith_example(a, b, ops[int(rng.integers(len(ops)))])

    space = hi * hi * len(ops)
    if space <= 250_000:
        # small spaces: enumerate and shuffle (rejection sampling would need ~space·log(space) draws)
        total = min(sum(sizes), space)
        order = np.random.default_rng(seed).permutation(space)[:total]
        ex = [
            _arith_example(int(k) // (hi * len(ops)), int(k) // len(ops) % hi, ops[int(k) % len(ops)])
            for k in order
        ]
        n_val = n_test = max(1, round(total * sizes[1] / sum(sizes)))
        splits = {
            "train": ex[: total - 2 * n_val],
            "validation": ex[total - 2 * n_val : total - n_val],
            "test": ex[total - n_test :],
        }
    else:
        splits = _unique_splits(sample, sizes, seed)
    answer_len = {"+": len(str(2 * (hi - 1))), "-": digits + 1, "*": len(str((hi - 1) ** 2))}
    return Task(
        "arithmetic",
        splits,
        reward="exact_match",
        success="exact_match",
        max_new_tokens=max(answer_len[o] for o in ops) + 1,  # the answer, then EOS
        allowed_completion_chars=string.digits + ("-" if "-" in ops else ""),
        metrics=("exact_match", "partial_match"),
        description=f"{digits}-digit integer arithmetic with {ops!r}",
    )


def _arith_example(a: int, b: int, op: str) -> Example:
    val = a + b if op == "+" else a - b if op == "-" else a * b
    return Example(f"{a}{op}{b}=", (str(val),))


_NOUNS = [
    "cat",
    "dog",
    "bird",
    "fish",
    "cow",
    "fox",
    "owl",
    "bee",
    "ant",
    "hen",
    "pig",
    "rat",
    "bat",
    "elk",
    "yak",
]
_VERBS = ["runs", "sits", "eats", "sleeps", "jumps", "swims", "sings", "hides", "waits", "plays"]
_ADVERBS = ["fast", "here", "now", "slowly", "today", "outside", "again", "quietly"]
_ADJECTIVES = ["big", "small", "red", "old", "young", "happy", "lazy", "brave"]


@lru_cache(maxsize=8)
def keyword_task(
    sizes: tuple[int, int, int] = (2000, 200, 200), seed: int = 0, max_new_tokens: int = 40
) -> Task:
    """Write a sentence that uses a given word: ``use cat:`` → ``the big cat runs fast.``

    The reward (``keyword``) pays 0.5 for the word as a whole word and 0.5 for a well-formed sentence
    (three or more lower-case words ending in a period); success needs both. Demonstrations come from a small
    grammar (determiner, optional adjective, noun, verb, optional adverb); prompts repeat across examples
    since there are few keywords, but their demonstrations differ.
    """
    sizes, seed = sizes3(sizes), nonnegative_int(seed, "seed")
    words = _NOUNS

    def sample(rng: np.random.Generator) -> Example:
        kw = words[int(rng.integers(len(words)))]
        adj = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))] + " " if rng.random() < 0.5 else ""
        verb = _VERBS[int(rng.integers(len(_VERBS)))]
        adv = " " + _ADVERBS[int(rng.integers(len(_ADVERBS)))] if rng.random() < 0.7 else ""
        sentence = f"the {adj}{kw} {verb}{adv}."
        # the prompt is not unique per example here, so key the example by prompt+sentence
        return Example(f"use {kw}:", (sentence,), metadata={"keyword": kw})

    rng = np.random.default_rng(seed)
    seen: dict[str, Example] = {}
    total = sum(sizes)
    while len(seen) < total:
        ex = sample(rng)
        seen.setdefault(ex.prompt + ex.references[0], ex)
    exs = list(seen.values())
    a, b = sizes[0], sizes[0] + sizes[1]
    return Task(
        "keyword",
        {"train": exs[:a], "validation": exs[a:b], "test": exs[b:]},
        reward="keyword",
        success="keyword",
        max_new_tokens=max_new_tokens,
        allowed_completion_chars=string.ascii_lowercase + " .",
        metrics=("keyword",),
        description="write a sentence that uses the given word",
    )


register_task("copy", copy_task)
register_task("reverse", reverse_task)
register_task("sort", sort_task)
register_task("arithmetic", arithmetic_task)
register_task("keyword", keyword_task)
