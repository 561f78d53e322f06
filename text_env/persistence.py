"""One persistence layer for everything text-env writes to disk: a saved directory is versioned JSON, tensors
as safetensors, and a ``manifest.json`` holding the sha256 and size of every other file, verified on load.

Policies, the Hugging Face adapter, reward models, optimizer state, tasks and agent checkpoints all save
through :func:`atomic_directory` and load through :func:`verify_manifest`, so one set of rules holds for every
file the project reads back:

- **Files are data, never code.** Nothing here imports or unpickles; tensors are read with safetensors, whose
  header is parsed and checked (dtypes, shapes, offsets inside the file) before a byte of data is allocated.
- **Integrity.** The manifest lists every file under the directory (nested ones included) with its size and
  sha256. A flipped bit, a truncated file, a file swapped in from another run, an extra file or a missing one
  raises ``ValueError`` naming it. The manifest also records the directory's ``kind`` (``"policy"``,
  ``"checkpoint"``, ...) and ``format_version``; a version from the future is refused.
- **Containment.** Paths read from a file (a sub-directory name, a model directory) must resolve inside the
  directory that holds them: absolute paths, ``..`` and symlinks are refused (:func:`resolve_inside`).
- **Atomicity.** A directory is written into a temporary sibling, its manifest last, then renamed into place:
  a crash or an error at any point leaves no partial directory under the target name (the temporary one is
  removed on error; one left by a killed process is cleared by the next save into the same parent).

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_directory(root / "thing", kind="example", format_version=1) as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    >>> verify_manifest(root / "thing", kind="example")["kind"]
    'example'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text_env.io import atomic_write_json, fsync_directory, read_json

if TYPE_CHECKING:  # torch is imported lazily: text_env itself does not need it
    import torch

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "text-env-manifest"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20
# a safetensors header is a small JSON object; refuse to parse anything absurd (a tampered length field)
_MAX_HEADER_BYTES = 64 << 20
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class IntegrityError(ValueError):
    """A saved directory does not match its manifest (or has none); the message names the file."""


# ---- paths ------------------------------------------------------------------------------------------------
def resolve_inside(root: str | os.PathLike, relative: Any, what: str = "path") -> Path:
    """``root / relative`` for a ``relative`` read from a file, refusing anything that leaves ``root``.

    Refused: a non-string, an empty or absolute path, a ``..`` component, and a symlink anywhere between
    ``root`` and the target (a symlinked file or directory could point anywhere).

    Raises:
        ValueError: naming ``what``, the value and ``root``.

    Example:
        >>> resolve_inside("/tmp/run", "ckpt-00000001").name
        'ckpt-00000001'
    """
    root = Path(root)
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ValueError(f"{what} {relative!r} in {str(root)!r} must be a non-empty relative path string")
    rel = Path(relative)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or relative.startswith("~"):
        raise ValueError(
            f"{what} {relative!r} in {str(root)!r} must be a path inside that directory (no absolute path, "
            "no '..')"
        )
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"{what} {relative!r} in {str(root)!r} is a symlink ({str(current)!r}); refused")
    return current


# ---- manifest ---------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _walk_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every regular file under ``directory`` except the manifest itself;
    a symlink or a special file anywhere raises ``IntegrityError``."""
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise IntegrityError(f"{str(base / name)!r} is a symlink; a saved directory may not hold one")
        dirnames.sort()
        for name in sorted(filenames):
            p = base / name
            rel = p.relative_to(directory).as_posix()
            if rel == MANIFEST_NAME:
                continue
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                raise IntegrityError(f"{str(p)!r} is not a regular file (a symlink?); refused")
            yield rel, p


def write_manifest(directory: str | os.PathLike, kind: str, format_version: int) -> dict[str, Any]:
    """Hash every file under ``directory`` into ``directory/manifest.json`` (written atomically, last)."""
    d = Path(directory)
    files = {rel: {"sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in _walk_files(d)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "format_version": int(format_version),
        "files": files,
    }
    atomic_write_json(d / MANIFEST_NAME, manifest, indent=1)
    return manifest


def has_manifest(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST_NAME).is_file()


def verify_manifest(
    directory: str | os.PathLike,
    kind: str | tuple[str, ...] | None = None,
    max_format_version: int | None = None,
) -> dict[str, Any]:
    """Check ``directory`` against its ``manifest.json`` and return the manifest.

    Every listed file must exist as a regular file with the listed size and sha256, and no other file may be
    present (a file swapped in or left over would otherwise be read unchecked).

    Args:
        directory: The saved directory.
        kind: The kind(s) of directory expected (``"policy"``, ``"checkpoint"``, ...); None accepts any.
        max_format_version: The newest ``format_version`` this code reads; None skips the check.

    Raises:
        IntegrityError (a ``ValueError``): the manifest is missing, malformed, of another kind or a future
            version, or a file differs; the message names the file.
    """
    d = Path(directory)
    if d.is_symlink():
        raise IntegrityError(f"{str(d)!r} is a symlink; refused")
    if not d.is_dir():
        raise FileNotFoundError(f"{str(d)!r} is not a directory")
    path = d / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        raise IntegrityError(
            f"{str(d)!r} has no {MANIFEST_NAME} (saved by text-env < 0.2, or not a text-env directory); "
            f"if you trust its contents, add one with: text-env migrate {str(d)!r}"
        )
    m = read_json(path, what="manifest")
    files = m.get("files") if isinstance(m, dict) else None
    if (
        not isinstance(m, dict)
        or m.get("format") != MANIFEST_FORMAT
        or not isinstance(files, dict)
        or not isinstance(m.get("kind"), str)
        or type(m.get("format_version")) is not int
        or type(m.get("manifest_version")) is not int
    ):
        raise IntegrityError(
            f"manifest {str(path)!r} is malformed; expected an object with format {MANIFEST_FORMAT!r}, a "
            "'kind' string, int 'format_version' and 'manifest_version', and a 'files' object"
        )
    if m["manifest_version"] > MANIFEST_VERSION:
        raise IntegrityError(
            f"manifest {str(path)!r} has manifest_version {m['manifest_version']}; this code reads "
            f"≤ {MANIFEST_VERSION} (upgrade text-env)"
        )
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and m["kind"] not in kinds:
        raise IntegrityError(f"{str(d)!r} holds a {m['kind']!r}, not a {' or '.join(map(repr, kinds))}")
    if max_format_version is not None and not 0 <= m["format_version"] <= max_format_version:
        raise IntegrityError(
            f"{str(d)!r} has format_version {m['format_version']}; this code reads 0 to {max_format_version} "
            "(saved by a newer text-env?)"
        )
    present = dict(_walk_files(d))
    for rel, entry in files.items():
        p = present.pop(rel, None)
        if p is None:
            raise IntegrityError(f"{str(d / rel)!r} is listed in {str(path)!r} but missing")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or type(entry.get("size")) is not int
        ):
            raise IntegrityError(f"manifest {str(path)!r}: the entry of {rel!r} is malformed: {entry!r}")
        size = p.stat().st_size
        if size != entry["size"]:
            raise IntegrityError(
                f"{str(p)!r} has {size} bytes; its manifest says {entry['size']} (truncated or replaced)"
            )
        if sha256_file(p) != entry["sha256"]:
            raise IntegrityError(
                f"{str(p)!r} does not match the sha256 in {str(path)!r} (corrupted, edited or swapped)"
            )
    if present:
        extra = sorted(present)
        raise IntegrityError(f"{str(d)!r} holds files its manifest does not list: {extra[:5]}")
    return m


def clear_debris(parent: str | os.PathLike, name: str) -> None:
    """Remove temporary directories a killed writer left for ``name`` under ``parent``."""
    for debris in Path(parent).glob(f".{name}.partial-*"):
        if debris.is_dir() and not debris.is_symlink():
            shutil.rmtree(debris, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, kind: str, format_version: int, replace: bool = True
) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary sibling to fill; on success write its manifest and
    rename it to ``target``; on any error remove it (and leave ``target`` as it was).

    Args:
        target: The directory to create (its parent is created if needed).
        kind: Recorded in the manifest and checked by :func:`verify_manifest`.
        format_version: Recorded in the manifest.
        replace: Replace an existing ``target`` (the old one is moved aside first and removed only after the
            new one is in place). With False an existing target raises ``FileExistsError``.
    """
    target = Path(target)
    if target.is_symlink():
        raise ValueError(f"{str(target)!r} is a symlink; refusing to write through it")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    clear_debris(parent, target.name)
    if target.exists() and not replace:
        raise FileExistsError(f"{str(target)!r} already exists")
    tmp = parent / f".{target.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        write_manifest(tmp, kind, format_version)
        fsync_directory(tmp)
        old = None
        if target.exists():
            old = parent / f".{target.name}.partial-{os.getpid()}-old"
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_directory(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- safetensors -------------------------------------------------------------------------------------------
def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Parse and check a safetensors file's header without reading its data: ``{name: (dtype, shape)}``.

    Checked: the header length fits the file, the header is a JSON object, every entry has a known dtype, a
    shape of non-negative ints, and data offsets that match the shape and lie inside the file.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"weights file {str(path)!r} is truncated ({size} bytes; no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise ValueError(f"weights file {str(path)!r} is truncated or corrupt (header of {n} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"weights file {str(path)!r} has a corrupt header: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"weights file {str(path)!r} has a corrupt header (not an object)")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES
        shape = entry.get("shape") if ok else None
        offsets = entry.get("data_offsets") if ok else None
        ok = (
            ok
            and isinstance(shape, list)
            and all(type(s) is int and s >= 0 for s in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
        )
        if not ok:
            raise ValueError(f"weights file {str(path)!r}: tensor {name!r} has a malformed header entry")
        assert isinstance(shape, list) and isinstance(offsets, list)  # checked just above
        begin, end = offsets
        nbytes = math.prod(shape) * _DTYPE_BYTES[entry["dtype"]]
        if not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise ValueError(
                f"weights file {str(path)!r}: tensor {name!r} {entry['dtype']}{shape} does not fit its data "
                f"offsets {offsets} (file data: {data_size} bytes): truncated or corrupt"
            )
        out[name] = (entry["dtype"], tuple(shape))
    return out


def check_tensor_shapes(
    path: str | os.PathLike,
    header: Mapping[str, tuple[str, tuple[int, ...]]],
    expected: Mapping[str, tuple[int, ...]],
    what: str = "the model",
) -> None:
    """Compare a file's header (:func:`read_safetensors_header`) with the shapes a config implies, before any
    allocation: missing, unexpected or mis-shaped tensors raise ``ValueError`` naming them."""
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    wrong = sorted(k for k in set(expected) & set(header) if tuple(header[k][1]) != tuple(expected[k]))
    if missing or unexpected or wrong:
        detail = [
            *(f"missing {k}" for k in missing[:3]),
            *(f"unexpected {k}" for k in unexpected[:3]),
            *(f"{k} has shape {header[k][1]}, {what} needs {tuple(expected[k])}" for k in wrong[:3]),
        ]
        raise ValueError(f"weights file {str(path)!r} does not match {what}: {'; '.join(detail)}")


def read_safetensors(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    expected: Mapping[str, tuple[int, ...]] | None = None,
    what: str = "the model",
) -> dict[str, torch.Tensor]:
    """Load a safetensors file (its header checked first; against ``expected`` shapes when given).

    A truncated or corrupt file raises ``ValueError`` naming it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as _load

    path = Path(path)
    header = read_safetensors_header(path)
    if expected is not None:
        check_tensor_shapes(path, header, expected, what)
    data = path.read_bytes()
    try:
        tensors = _load(data)
    except SafetensorError as e:
        raise ValueError(f"weights file {str(path)!r} is truncated or corrupt: {e}") from e
    # Fresh allocations, not views into the file's bytes: those are not 64-byte aligned, and CPU GEMM
    # kernels round differently on unaligned operands (a loaded checkpoint scored 2e-7 off its original)
    tensors = {k: v.clone() for k, v in tensors.items()}
    return tensors if device is None else {k: v.to(device) for k, v in tensors.items()}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write tensors as safetensors, atomically (see :mod:`text_env.io`)."""
    from safetensors.torch import save as _save

    from text_env.io import atomic_write_bytes

    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, _save(payload, metadata={"format": "pt"}))


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or ±inf (a checkpoint with any is never written)."""
    import torch

    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


__all__ = [
    "MANIFEST_NAME",
    "IntegrityError",
    "atomic_directory",
    "check_tensor_shapes",
    "clear_debris",
    "has_manifest",
    "nonfinite_tensors",
    "read_safetensors",
    "read_safetensors_header",
    "resolve_inside",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
    "write_safetensors",
]
