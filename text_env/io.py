"""Crash-safe file writes and strict readers shared by every part that persists data.

Every write goes to a temporary file in the same directory, is fsync'ed, then renamed over the target
(``os.replace`` is atomic on POSIX): a process killed at any point leaves either the old file or the new
one, never a torn mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)  # make the rename itself durable


def fsync_directory(path: str | os.PathLike) -> None:
    """fsync a directory, so that renames into it survive a crash (a no-op where the filesystem refuses)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems do not allow fsync on a directory
        pass


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = None) -> None:
    """Serialize ``data`` as UTF-8 JSON and write it atomically."""
    atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, indent=indent).encode("utf-8"))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file; a truncated or non-JSON file raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is corrupt or not JSON: {e}") from e
