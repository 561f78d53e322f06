"""Tasks: data (prompts, references, labels, demonstrations, splits) plus a default reward and tokenizer."""

from text_env.tasks import language, synthetic  # noqa: F401  (registers the built-in tasks)
from text_env.tasks.base import (
    SPLITS,
    EncodedSplit,
    Example,
    Task,
    available_tasks,
    make_task,
    read_examples,
    register_task,
    split_indices,
)
from text_env.tasks.synthetic import arithmetic_task, copy_task, keyword_task, reverse_task, sort_task

__all__ = [
    "SPLITS",
    "EncodedSplit",
    "Example",
    "Task",
    "arithmetic_task",
    "available_tasks",
    "copy_task",
    "keyword_task",
    "make_task",
    "read_examples",
    "register_task",
    "reverse_task",
    "sort_task",
    "split_indices",
]
