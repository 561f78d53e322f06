"""Training logs: each iteration's scalars go to ``progress.csv`` (and TensorBoard), and the most recent rows
stay in memory for callbacks and tests.

``progress.csv`` is only ever appended to, so a resumed run continues the file its earlier lives wrote (no row
is lost to a kill: each row is flushed as it is written). When a new key appears the file is rewritten once
with the wider header — from the file on disk, not from memory — through a temporary file and a rename.
Rows written by a killed process after its last checkpoint are kept: each row carries ``global_step``, so a
reader can tell a replayed stretch from the original.

Example:
    >>> log = TrainLogger(None)
    >>> log.write(8, {"charts/episodic_return": 0.5})
    >>> log.rows[-1]["global_step"]
    8
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# rows kept in memory (``TrainLogger.rows``); the CSV on disk keeps all of them
MAX_ROWS_IN_MEMORY = 10_000


class TrainLogger:
    """Writes each iteration's scalars to ``log_dir/progress.csv`` (and TensorBoard when ``tensorboard``).

    Args:
        log_dir: Where ``progress.csv`` and the TensorBoard events go; None keeps rows in memory only.
        tensorboard: Also write TensorBoard events.
        append: Continue an existing ``progress.csv`` (a resumed run). Otherwise an existing file is moved
            aside to ``progress.<time>.csv`` (with a warning), never overwritten.
        max_rows: How many of the latest rows :attr:`rows` keeps.
        enabled: False writes nothing to disk (e.g. on the non-zero ranks of a data-parallel run).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None,
        tensorboard: bool = True,
        append: bool = False,
        max_rows: int = MAX_ROWS_IN_MEMORY,
        enabled: bool = True,
    ) -> None:
        self.log_dir = None if log_dir is None or not enabled else Path(log_dir)
        self._writer: Any = None
        self._keys: list[str] = []
        self._rows: deque[dict[str, float]] = deque(maxlen=max_rows)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            path = self.log_dir / "progress.csv"
            if path.exists() and not append:
                kept = path.with_name(
                    f"progress.{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9}.csv"
                )
                os.replace(path, kept)
                logger.warning(
                    "a new run in %s: the earlier progress.csv is kept as %s", self.log_dir, kept.name
                )
            self._keys = self._existing_header()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.log_dir))
                except ImportError:  # tensorboard is a dependency, but keep training if it is missing
                    logger.warning("tensorboard is not installed; logging to CSV only")

    @property
    def path(self) -> Path | None:
        return None if self.log_dir is None else self.log_dir / "progress.csv"

    def _existing_header(self) -> list[str]:
        path = self.path
        if path is None or not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if header and header[0] != "global_step":
            raise ValueError(
                f"{str(path)!r} is not a text-env progress log (its header starts with {header[0]!r}, "
                "expected 'global_step'); move it away or pick another log_dir"
            )
        return header

    def write(self, step: int, scalars: dict[str, float]) -> None:
        row = {"global_step": step, **{k: float(v) for k, v in scalars.items()}}
        self._rows.append(row)
        if self._writer is not None:
            for k, v in scalars.items():
                if math.isfinite(float(v)):
                    self._writer.add_scalar(k, float(v), step)
        path = self.path
        if path is None:
            return
        new_keys = [k for k in row if k not in self._keys]
        if new_keys or not path.exists():
            self._widen(path, [*self._keys, *new_keys])
        with open(path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self._keys).writerow(row)

    def _widen(self, path: Path, keys: list[str]) -> None:
        """Rewrite the CSV with a wider header, keeping every row already on disk."""
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            w = csv.DictWriter(out, fieldnames=keys)
            w.writeheader()
            if path.exists():
                with open(path, newline="", encoding="utf-8") as f:
                    for old in csv.DictReader(f):
                        w.writerow({k: v for k, v in old.items() if k is not None})
        os.replace(tmp, path)
        self._keys = keys

    @property
    def rows(self) -> list[dict[str, float]]:
        """The most recent rows (at most ``max_rows``), oldest first."""
        return list(self._rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = ["MAX_ROWS_IN_MEMORY", "TrainLogger"]
