"""bAbI-style question answering: short generated stories of people moving between rooms and handling
objects, each with one question whose one-word answer is in the story; plus a reader for a user's own
question/answer JSONL.

The stories follow the world model of the bAbI tasks (Weston et al., "Towards AI-Complete Question
Answering", 2015; tasks 1-3): a person is where they last went; an object someone holds is wherever that
person is; a dropped object stays where it was dropped. A person picks up an object only where it is (or
one not yet seen anywhere). Questions, each asked only when the story determines its answer:

- ``Where is Mary?`` → the room she last went to (one supporting fact);
- ``Where is the apple?`` → the room of the person holding it, or where it was dropped (two facts);
- ``Who has the apple?`` → the person holding it;
- ``Where was Mary before the kitchen?`` → the room she left for the kitchen (asked only when she went to
  the kitchen once and her room before that is known; task 3's form).

Example:
    >>> import numpy as np
    >>> s = generate_story(np.random.default_rng(0))
    >>> s.answer in s.context
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np

from text_env.data.sources import draw_splits, read_jsonl_records
from text_env.validate import is_int

_T = TypeVar("_T")

SPLIT_SALT = "babi-v1"
PEOPLE = ("Mary", "John", "Sandra", "Daniel", "Emma", "Peter")
ROOMS = ("kitchen", "garden", "office", "bathroom", "bedroom", "hallway")
OBJECTS = ("apple", "football", "milk", "book", "key", "hat")
MOVE = ("went to", "moved to", "journeyed to", "travelled to")
PICK = ("picked up", "got", "grabbed", "took")
DROP = ("dropped", "put down", "discarded", "left")
QUESTION_KINDS = ("where_person", "where_object", "who_has", "where_before")


@dataclass(frozen=True)
class Story:
    """A story, its question and the answer.

    Attributes:
        sentences: The story, one event per sentence.
        question: E.g. ``"Where is Mary?"``.
        answer: One word that occurs in the story (a room or a name).
        kind: One of ``QUESTION_KINDS`` (``"user"`` for a user's rows).
    """

    sentences: tuple[str, ...]
    question: str
    answer: str
    kind: str

    @property
    def context(self) -> str:
        return " ".join(self.sentences)

    @property
    def prompt(self) -> str:
        """``context\\nquestion\\n``: the answer follows on its own line."""
        return qa_prompt(self.context, self.question)


def qa_prompt(context: str, question: str) -> str:
    """The prompt of a question about a context (the same for generated and user rows)."""
    return f"{context.strip()}\n{question.strip()}\n"


class _World:
    """The story's state, updated one event at a time."""

    def __init__(self) -> None:
        self.location: dict[str, str | None] = dict.fromkeys(PEOPLE)
        self.holder: dict[str, str | None] = dict.fromkeys(OBJECTS)
        self.dropped_at: dict[str, str | None] = dict.fromkeys(OBJECTS)
        self.visits: dict[tuple[str, str], list[str | None]] = {}  # (person, room) → rooms left for it

    def object_location(self, obj: str) -> str | None:
        h = self.holder[obj]
        return self.location[h] if h is not None else self.dropped_at[obj]

    def events(self) -> list[tuple[str, str, str]]:
        """Every possible next event as (kind, person, room or object)."""
        out: list[tuple[str, str, str]] = []
        for p in PEOPLE:
            here = self.location[p]
            out.extend(("move", p, r) for r in ROOMS if r != here)
            if here is None:
                continue
            for o in OBJECTS:
                if self.holder[o] == p:
                    out.append(("drop", p, o))
                elif self.holder[o] is None and self.dropped_at[o] in (None, here):
                    out.append(("pick", p, o))
        return out

    def apply(self, kind: str, person: str, arg: str) -> None:
        if kind == "move":
            self.visits.setdefault((person, arg), []).append(self.location[person])
            self.location[person] = arg
        elif kind == "pick":
            self.holder[arg] = person
            self.dropped_at[arg] = None
        else:
            self.holder[arg] = None
            self.dropped_at[arg] = self.location[person]

    def questions(self) -> dict[str, list[tuple[str, str]]]:
        """Answerable (question, answer) pairs by kind."""
        qs: dict[str, list[tuple[str, str]]] = {k: [] for k in QUESTION_KINDS}
        for p in PEOPLE:
            if self.location[p] is not None:
                qs["where_person"].append((f"Where is {p}?", self.location[p]))  # type: ignore[arg-type]
        for o in OBJECTS:
            loc = self.object_location(o)
            if loc is not None:
                qs["where_object"].append((f"Where is the {o}?", loc))
            if self.holder[o] is not None:
                qs["who_has"].append((f"Who has the {o}?", self.holder[o]))  # type: ignore[arg-type]
        for (p, room), before in self.visits.items():
            if len(before) == 1 and before[0] is not None:
                qs["where_before"].append((f"Where was {p} before the {room}?", before[0]))
        return qs


def _pick(rng: np.random.Generator, items: Sequence[_T]) -> _T:
    return items[int(rng.integers(len(items)))]


def generate_story(
    rng: np.random.Generator,
    min_sentences: int = 2,
    max_sentences: int = 8,
    kinds: tuple[str, ...] = QUESTION_KINDS,
) -> Story:
    """One story of ``min_sentences``..``max_sentences`` events and one answerable question.

    Moves are drawn more often than object events (half the time while anyone is still nowhere), so most
    stories place several people. The question kind is drawn uniformly among the answerable ones in
    ``kinds``; if none is answerable the story is redrawn.

    Raises:
        ValueError: Bad sentence bounds or an unknown question kind.
    """
    if not (is_int(min_sentences) and is_int(max_sentences) and 1 <= min_sentences <= max_sentences):
        raise ValueError(f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}")
    bad = [k for k in kinds if k not in QUESTION_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown question kinds {bad or kinds!r}; expected a subset of {QUESTION_KINDS}")
    for _ in range(1000):
        world = _World()
        sentences = []
        for _ in range(int(rng.integers(min_sentences, max_sentences + 1))):
            events = world.events()
            moves = [e for e in events if e[0] == "move"]
            others = [e for e in events if e[0] != "move"]
            kind, person, arg = _pick(rng, moves if not others or rng.random() < 0.6 else others)
            world.apply(kind, person, arg)
            verb = _pick(rng, {"move": MOVE, "pick": PICK, "drop": DROP}[kind])
            sentences.append(f"{person} {verb} the {arg}.")
        qs = world.questions()
        answerable = [k for k in kinds if qs[k]]
        if answerable:
            k = str(_pick(rng, answerable))
            question, answer = _pick(rng, qs[k])
            return Story(tuple(sentences), question, answer, k)
    raise RuntimeError(f"no answerable question of kinds {kinds} in 1000 stories; allow longer stories")


@lru_cache(maxsize=16)
def babi_stories(
    sizes: tuple[int, int, int] = (10000, 1000, 1000),
    seed: int = 0,
    min_sentences: int = 2,
    max_sentences: int = 8,
    kinds: tuple[str, ...] = QUESTION_KINDS,
) -> dict[str, tuple[Story, ...]]:
    """Distinct stories per split; a story's split is a hash of its text (so no story, and no question
    about it, is in two splits). Sizes are exact: drawing continues until each split is full.

    Raises:
        ValueError: A size is not a positive int (or see :func:`generate_story`).
    """
    return draw_splits(
        lambda rng: generate_story(rng, min_sentences, max_sentences, kinds),
        lambda story: story.context,
        sizes,
        seed,
        SPLIT_SALT,
        what="stories",
    )


def read_qa_rows(path: str | os.PathLike) -> list[tuple[Story, str | None]]:
    """A user's question/answer rows from JSONL: ``{"context": ..., "question": ..., "answer": ...}`` per
    line, optionally with ``"split"``. Returns ``(story, split or None)`` in file order (``kind="user"``;
    the context is one sentence of the story).

    Raises:
        ValueError: A malformed row (the message names the file and line).

    Example:
        >>> read_qa_rows("my_qa.jsonl")  # doctest: +SKIP
        [(Story(sentences=('Ann is in Rome.',), question='Where is Ann?', answer='Rome', kind='user'), None)]
    """
    rows = read_jsonl_records(path, (("context", "question", "answer"),), what="question/answer rows")
    return [
        (Story((r["context"].strip(),), r["question"].strip(), r["answer"].strip(), "user"), r.get("split"))
        for _, r in rows
    ]


__all__ = [
    "OBJECTS",
    "PEOPLE",
    "QUESTION_KINDS",
    "ROOMS",
    "Story",
    "babi_stories",
    "generate_story",
    "qa_prompt",
    "read_qa_rows",
]
