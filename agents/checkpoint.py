"""Agent checkpoints: one directory per save, verified on load, written by one process at a time.

A run directory holds::

    latest.json            {"checkpoint": "ckpt-00000120"}: the newest complete checkpoint
    ckpt-00000120/         one save (the ``keep`` newest are kept)
        manifest.json      sha256 + size of every file below (text_env.persistence), verified on load
        state.json         algorithm, config (``asdict``), env id, step counters, β, world size
        policy/            the policy (its own manifest)
        reference/         the frozen KL reference, if any
        optimizer.json     optimizer hyperparameters; its tensors in optimizer.safetensors
    logs/progress.csv      one row per iteration, appended across resumes
    .text-env-lock.json    held (flock) by the process writing the run; names its pid

Rules (issue 13): nothing read from a checkpoint is imported or executed — a callable the config held (a
reward function) is recorded by name and must be passed again, and a ``module:attr`` spec read back is refused
unless the caller passes ``trust_code=True`` (and even then it is never imported from the working directory);
every file is checked against the manifest; paths read from a file resolve inside the run; a checkpoint with
a non-finite tensor is never written.

Example:
    >>> agent.save("runs/reverse")                   # doctest: +SKIP
    >>> agent = PPO.load("runs/reverse")             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from text_env.io import atomic_write_json, read_json
from text_env.persistence import (
    IntegrityError,
    atomic_directory,
    has_manifest,
    nonfinite_tensors,
    read_safetensors,
    resolve_inside,
    verify_manifest,
    write_manifest,
    write_safetensors,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 1: text-env 0.1 (no manifest, "hparams"); 2: manifest, "config"
CHECKPOINT_KIND = "checkpoint"
LOCK_NAME = ".text-env-lock.json"
NOT_SERIALIZED = "__not_serialized__"
# an env id a checkpoint may name: a registered TextEnv id, optionally with gymnasium's "text_env:" prefix.
# Anything else ("payload_mod:TextEnv/X-v0") would make gym.make import a module named by a file.
_ENV_ID = re.compile(r"(text_env:)?TextEnv/[A-Za-z0-9_.\-]+-v[0-9]+")


class NonFiniteUpdateError(FloatingPointError):
    """Several updates in a row had a non-finite loss or gradient; training stopped (nothing was saved)."""


# ---- the run lock ------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive, non-blocking ``flock`` on ``directory/.text-env-lock.json``: a second *process* writing
    the same run directory fails at once with a clear message instead of corrupting it. Released when the
    holder exits (even by SIGKILL) or releases it as often as it acquired it.

    :meth:`for_directory` gives one shared, re-entrant lock per directory within a process, so the CLI, the
    agent's loop and its checkpoint saves can all hold it at once.

    Example:
        >>> import tempfile
        >>> with RunLock.for_directory(tempfile.mkdtemp()):
        ...     pass
    """

    _held: ClassVar[dict[str, RunLock]] = {}

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._depth = 0

    @classmethod
    def for_directory(cls, directory: str | os.PathLike) -> RunLock:
        """This process's lock object for ``directory`` (created on first use)."""
        key = os.path.realpath(directory)
        lock = cls._held.get(key)
        if lock is None:
            lock = cls._held[key] = cls(directory)
        return lock

    def acquire(self) -> RunLock:
        if self._fd is not None:
            self._depth += 1
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = _read_holder(path)
                raise RuntimeError(
                    f"run directory {str(self.directory)!r} is in use by another process{holder}; wait for "
                    "it to finish, or write this run elsewhere"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid()}).encode())
        self._fd, self._depth = fd, 1
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(path: Path) -> str:
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return ""
    return f" (pid {pid})" if type(pid) is int else ""


# ---- optimizer state ---------------------------------------------------------------------------------------
def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (hyperparameters): no pickle."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    write_safetensors(directory / "optimizer.safetensors", tensors)
    atomic_write_json(directory / "optimizer.json", {"param_groups": groups, "scalars": scalars})


# optimizer switches that choose a kernel, not the arithmetic: kept from the live optimizer on load
IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Inverse of :func:`save_optimizer`; a malformed, tampered or non-finite state raises ``ValueError``
    naming the file."""
    meta_path, tensors_path = directory / "optimizer.json", directory / "optimizer.safetensors"
    meta = read_json(meta_path, what="optimizer state")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    tensors = read_safetensors(tensors_path)
    state: dict[int, dict[str, Any]] = {}
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list):
            raise ValueError("expected an object with a 'param_groups' list")
        scalars = meta.get("scalars", {})
        if not isinstance(scalars, dict):
            raise ValueError("'scalars' must be an object")
        for key, v in [*tensors.items(), *scalars.items()]:
            pid, name = key.split(".", 1)  # "<parameter index>.<state name>"
            if not pid.isdigit():
                raise ValueError(f"state key {key!r} does not start with a parameter index")
            state.setdefault(int(pid), {})[name] = v
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"optimizer state {str(meta_path)!r} / {tensors_path.name!r} is malformed: {e}"
        ) from e
    bad = nonfinite_tensors(tensors)
    if bad:
        raise ValueError(f"optimizer state {str(tensors_path)!r} holds non-finite values in {bad[:5]}")
    # a per-parameter tensor of the wrong shape loads fine and fails only at the next step, deep in torch
    for pid, st in state.items():
        for name, v in st.items():
            want = tuple(params[pid].shape) if 0 <= pid < len(params) else "no parameter"
            if want == "no parameter" or (isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != want):
                raise ValueError(
                    f"optimizer state {str(tensors_path)!r} does not fit this model: {pid}.{name} has shape "
                    f"{tuple(getattr(v, 'shape', ()))}; the model's parameter {pid}: {want}"
                )
    _check_param_groups(groups, optimizer, meta_path)
    for saved, live in zip(groups, optimizer.param_groups):
        # how the update runs is this process's choice, not the file's: a checkpoint from the per-tensor loop
        # resumes fused (and a tampered ``fused: true`` cannot pick a kernel this device lacks)
        for key in IMPLEMENTATION_FLAGS:
            if key in live:
                saved[key] = live[key]
            else:
                saved.pop(key, None)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"optimizer state in {str(directory)!r} does not fit this model: {e}") from e


def _check_param_groups(groups: list[dict[str, Any]], optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Saved hyperparameters must be finite numbers of the right kind (torch would take a NaN lr as is)."""
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(
            f"optimizer state {str(path)!r} has {len(groups)} parameter groups; this model has "
            f"{len(optimizer.param_groups)}"
        )
    for i, g in enumerate(groups):
        for key in ("lr", "eps", "weight_decay"):
            v = g.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"optimizer state {str(path)!r}: param_groups[{i}].{key} is {v!r}")
        betas = g.get("betas")
        if (
            not isinstance(betas, tuple)
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"optimizer state {str(path)!r}: param_groups[{i}].betas is {betas!r}")


# ---- what a config records ----------------------------------------------------------------------------
def callable_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (``"<lambda>"`` parts included), for the record."""
    module = getattr(obj, "__module__", None) or "?"
    qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qual}"


def to_record(value: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """A JSON-able copy of ``value`` and ``{path: name}`` of what could not be serialised (each replaced by
    ``{"__not_serialized__": name}``): callables and other objects are recorded by name, never pickled."""
    missing: dict[str, str] = {}

    def walk(v: Any, path: str) -> Any:
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else str(v)
        if isinstance(v, Mapping) and all(isinstance(k, str) for k in v):
            return {k: walk(x, f"{path}.{k}" if path else k) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        name = callable_name(v) if callable(v) else f"{type(v).__module__}.{type(v).__qualname__} object"
        missing[path] = name
        return {NOT_SERIALIZED: name}

    return walk(value, where), missing


def not_serialized(value: Any, path: str = "") -> dict[str, str]:
    """``{path: name}`` of the markers :func:`to_record` left in ``value``."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        if set(value) == {NOT_SERIALIZED}:
            return {path: str(value[NOT_SERIALIZED])}
        for k, v in value.items():
            out.update(not_serialized(v, f"{path}.{k}" if path else k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(not_serialized(v, f"{path}[{i}]"))
    return out


def code_references(spec: Any) -> list[str]:
    """The ``module:attr`` strings in a reward or env-kwargs spec that building it would import: every
    ``a:b`` string except a registered reward name with its argument (``reward_model:runs/rm``)."""
    from text_env.rewards.registry import available

    with_argument = {r.name for r in available() if r.takes_argument}
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            if ":" in v and v.split(":", 1)[0] not in with_argument:
                found.append(v)
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(spec)
    return found


@contextlib.contextmanager
def without_working_directory() -> Iterator[None]:
    """Import with the working directory (``""``, ``"."`` or its absolute path) off ``sys.path``: code named
    by a file must come from an installed package, never from whatever lies in the directory a user runs
    in."""
    cwd = os.path.realpath(os.getcwd())
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.realpath(p) != cwd]
    try:
        yield
    finally:
        sys.path[:] = saved


def import_by_name(name: str) -> Any:
    """Import a recorded ``module.qualname`` (or ``module:attr``) from installed packages only."""
    module, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not module or not attr or "<" in attr:
        raise ValueError(
            f"{name!r} cannot be imported by name (a lambda or a nested function?); pass it again"
        )
    with without_working_directory():
        obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def check_env_spec(env: Any, where: str) -> str | None:
    """An env id read from a checkpoint: None or a plain ``TextEnv/...`` id (no module to import)."""
    if env is None:
        return None
    if not isinstance(env, str) or not _ENV_ID.fullmatch(env):
        raise ValueError(
            f"{where}: env {env!r} is not a TextEnv id (expected 'TextEnv/<Name>-v<N>'); an env that needs a "
            "module import is never taken from a file: pass env=... (or --env) yourself"
        )
    return env


def resolve_recorded_config(
    config: dict[str, Any], where: str, trust_code: bool, given: Mapping[str, Any]
) -> dict[str, Any]:
    """Make a config read from a checkpoint safe to build from.

    A value recorded by name (a callable) must be passed again in ``given`` (the caller's overrides; a key
    ``env_kwargs`` replaces the recorded one) or, with ``trust_code``, is imported by name from installed
    packages. A ``module:attr`` string in ``env_kwargs`` is refused unless ``trust_code``.
    """
    out = dict(config)
    env_kwargs = out.get("env_kwargs") or {}
    if "env_kwargs" in given:
        out["env_kwargs"] = given["env_kwargs"]
        return out
    markers = not_serialized(env_kwargs)
    if markers and not trust_code:
        what = ", ".join(f"env_kwargs.{k} ({v})" for k, v in markers.items())
        raise ValueError(
            f"{where}: the run's {what} was not serialisable and is recorded by name only; pass it again "
            "(load(..., env_kwargs={...}), or for the CLI a registered reward), or pass trust_code=True "
            "(--trust-code) to import it by name from an installed package"
        )
    refs = code_references(env_kwargs)
    if refs and not trust_code:
        raise ValueError(
            f"{where}: env_kwargs names code to import ({', '.join(map(repr, refs))}); nothing read from a "
            "checkpoint is imported unless you pass trust_code=True (--trust-code), or pass env_kwargs again"
        )
    if markers:
        env_kwargs = _replace_markers(env_kwargs)
    out["env_kwargs"] = env_kwargs
    return out


def _replace_markers(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {NOT_SERIALIZED}:
            return import_by_name(str(value[NOT_SERIALIZED]))
        return {k: _replace_markers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_markers(v) for v in value]
    return value


# ---- checkpoints -------------------------------------------------------------------------------------------
def latest_checkpoint(path: str | os.PathLike) -> Path:
    """The directory of the newest complete checkpoint under ``path`` (named by ``latest.json``)."""
    path = Path(path)
    pointer = path / "latest.json"
    if not path.exists():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    if not pointer.exists():
        raise FileNotFoundError(f"no checkpoint in {str(path)!r} (missing latest.json)")
    data = read_json(pointer, what="checkpoint pointer")
    if not isinstance(data, dict) or "checkpoint" not in data:
        raise ValueError(f"checkpoint pointer {str(pointer)!r} is malformed: {data!r}")
    name = data["checkpoint"]
    # a bare directory name in ``path``: not "", ".", ".." or a path that leads elsewhere, and no symlink
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(
            f"checkpoint pointer {str(pointer)!r} names {name!r}, which is not a checkpoint name"
        )
    try:
        ckpt = resolve_inside(path, name, what="checkpoint")
    except ValueError as e:
        raise ValueError(f"checkpoint pointer {str(pointer)!r}: {e}") from None
    if not ckpt.is_dir():
        raise ValueError(f"checkpoint pointer {str(pointer)!r} names {name!r}, which is missing")
    return ckpt


def write_checkpoint(agent: Any, root: str | os.PathLike, keep: int = 2) -> Path:
    """Write ``agent`` to a new ``ckpt-<iteration>`` under ``root`` and point ``latest.json`` at it.

    Only once all of it is on disk (manifest last, then an atomic rename) does the pointer move, so a crash at
    any point leaves the previous checkpoint loadable. A checkpoint with a non-finite tensor is refused
    (``ValueError``) before anything is written. Saving twice at one iteration (a periodic save, then the
    final one) returns the existing directory. The ``keep`` newest checkpoints are kept.
    """
    if type(keep) is not int or keep < 1:
        raise ValueError(f"keep must be a positive int, got {keep!r}")
    root = Path(root)
    state = agent.checkpoint_state()
    name = f"ckpt-{agent.iteration:08d}"
    pointer = root / "latest.json"
    marker = (str(root.resolve()), agent.iteration, agent.num_timesteps)
    if agent.saved_at == marker and (root / name).is_dir():
        with contextlib.suppress(ValueError, OSError):
            if read_json(pointer).get("checkpoint") == name:
                return (
                    root / name
                )  # nothing changed since the last save (a periodic save, then the final one)
    tensors = {f"policy.{k}": v for k, v in agent.policy.state_dict().items()}
    if agent.reference is not None:
        tensors.update({f"reference.{k}": v for k, v in agent.reference.state_dict().items()})
    for st in agent.optimizer.state_dict()["state"].values():
        tensors.update({f"optimizer.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
    bad = nonfinite_tensors(tensors)
    if bad:
        raise ValueError(
            f"refusing to checkpoint a model with non-finite values (in {bad[:5]}); the previous checkpoint "
            f"in {str(root)!r} is kept"
        )
    with RunLock.for_directory(root):
        final = root / name
        if final.exists():  # saved twice at one iteration: never touch the directory the pointer may name
            name = f"{name}-{time.time_ns()}"
            final = root / name
        with atomic_directory(final, kind=CHECKPOINT_KIND, format_version=FORMAT_VERSION) as tmp:
            agent.policy.save(tmp / "policy")
            if agent.reference is not None:
                agent.reference.save(tmp / "reference")
            save_optimizer(agent.optimizer, tmp)
            atomic_write_json(tmp / "state.json", state, indent=1)
        atomic_write_json(pointer, {"checkpoint": name})
        agent.saved_at = marker
        # prune by age, never the checkpoint just written (an older run in the same directory can hold
        # higher-numbered ones)
        ckpts = sorted(
            (p for p in root.glob("ckpt-*") if p.is_dir() and not p.is_symlink() and p != final),
            key=lambda p: p.stat().st_mtime,
        )
        for old in ckpts[: max(0, len(ckpts) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        # a process killed mid-save leaves its partial directory or temporary pointer behind; the checkpoints
        # never depend on them, so clear them here rather than let them pile up over restarts
        for debris in [*root.glob(".ckpt-*.partial-*"), *root.glob(".latest.json.tmp*")]:
            if debris.is_dir() and not debris.is_symlink():
                shutil.rmtree(debris, ignore_errors=True)
            else:
                debris.unlink(missing_ok=True)
    return final


def read_checkpoint_state(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint under the run directory ``path``, verified against its manifest, and its
    ``state.json`` with every field checked. A checkpoint of the old format is refused with the migration
    command."""
    ckpt = latest_checkpoint(path)
    if not has_manifest(ckpt):
        raise IntegrityError(
            f"checkpoint {str(ckpt)!r} has no manifest.json (written by text-env 0.1); if you trust it, "
            f"upgrade it in place with: text-env migrate {str(Path(path))!r}"
        )
    verify_manifest(ckpt, kind=CHECKPOINT_KIND, max_format_version=FORMAT_VERSION)
    state_path = ckpt / "state.json"
    state = read_json(state_path, what="agent state")
    where = repr(str(state_path))
    if not isinstance(state, dict):
        raise ValueError(f"{where} is not an agent state file (expected a JSON object)")
    version = state.get("format_version")
    if type(version) is not int or not 2 <= version <= FORMAT_VERSION:
        raise ValueError(f"{where} has format_version {version!r}; this code reads 2 to {FORMAT_VERSION}")
    if not isinstance(state.get("algo"), str) or not isinstance(state.get("config"), dict):
        raise ValueError(f"{where} lacks its 'algo' name or 'config' object")
    for key in ("num_timesteps", "iteration", "world_size"):
        v = state.get(key, 1 if key == "world_size" else None)
        if type(v) is not int or v < (1 if key == "world_size" else 0):
            raise ValueError(f"{where}: {key} must be an int ≥ {1 if key == 'world_size' else 0}, got {v!r}")
    beta = state.get("kl_coef_value")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{where}: kl_coef_value must be a finite number ≥ 0, got {beta!r}")
    if not isinstance(state.get("has_reference"), bool):
        raise ValueError(f"{where}: has_reference must be true or false, got {state.get('has_reference')!r}")
    state["env"] = check_env_spec(state.get("env"), where)
    return ckpt, state


# ---- migration of old checkpoints ----------------------------------------------------------------------
def migrate(path: str | os.PathLike) -> list[Path]:
    """Upgrade what text-env 0.1 saved under ``path`` (a run directory, one checkpoint, a saved policy or a
    reward model) to the current format, in place: each policy gets its manifest, each ``state.json`` its
    ``config``, each checkpoint its manifest. Only do this for files you trust: the manifest vouches for what
    is there now. Returns the directories upgraded."""
    from agents.policies import migrate_policy

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} does not exist or is not a directory")
    if (root / "config.json").is_file() and not (root / "state.json").exists():
        if has_manifest(root):
            return []
        if read_json(root / "config.json", what="config").get("format") == "text_env.learned_reward":
            from text_env.rewards.learned import LearnedReward

            return [LearnedReward.migrate(root)]
        return [migrate_policy(root)]
    ckpts = (
        [root] if (root / "state.json").is_file() else sorted(p for p in root.glob("ckpt-*") if p.is_dir())
    )
    if not ckpts:
        raise ValueError(f"{str(root)!r} holds no checkpoint (ckpt-*/state.json) and no policy (config.json)")
    done = []
    for ckpt in ckpts:
        if has_manifest(ckpt):
            continue
        for sub in ("policy", "reference"):
            if (ckpt / sub).is_dir() and not has_manifest(ckpt / sub):
                migrate_policy(ckpt / sub)
        state = read_json(ckpt / "state.json", what="agent state")
        if not isinstance(state, dict) or not isinstance(state.get("hparams", state.get("config")), dict):
            raise ValueError(f"{str(ckpt / 'state.json')!r} is not an agent state file")
        if "hparams" in state:
            state["config"] = state.pop("hparams")
        state["format_version"] = FORMAT_VERSION
        state.setdefault("world_size", 1)
        atomic_write_json(ckpt / "state.json", state, indent=1)
        write_manifest(ckpt, CHECKPOINT_KIND, FORMAT_VERSION)
        done.append(ckpt)
    return done


def dumps_state(state: dict[str, Any]) -> str:
    return json.dumps(state, indent=1)


__all__ = [
    "FORMAT_VERSION",
    "NonFiniteUpdateError",
    "RunLock",
    "callable_name",
    "check_env_spec",
    "code_references",
    "import_by_name",
    "latest_checkpoint",
    "load_optimizer",
    "migrate",
    "read_checkpoint_state",
    "resolve_recorded_config",
    "save_optimizer",
    "to_record",
    "without_working_directory",
    "write_checkpoint",
]


# ---- data parallelism: one rank reads, every rank loads ------------------------------------------------
def broadcast_checkpoint(world: Any, path: str | os.PathLike, into: Path) -> Path:
    """Rank 0 reads the newest checkpoint of the run ``path`` (verified against its manifest) and sends its
    files to every rank, which writes them under ``into`` as a run directory of one checkpoint; returns the
    run directory to load from (``path`` itself on rank 0). No shared filesystem is needed, and each rank
    verifies the manifest again as it loads. Sent as bytes and JSON, never pickled."""
    header: dict[str, Any] = {"error": None}
    files: list[Path] = []
    if world.is_main:
        try:
            ckpt, _ = read_checkpoint_state(path)
            files = sorted(p for p in ckpt.rglob("*") if p.is_file() and not p.is_symlink())
            header = {
                "error": None,
                "name": ckpt.name,
                "files": [[p.relative_to(ckpt).as_posix(), p.stat().st_size] for p in files],
            }
        except Exception as e:  # every rank raises, none waits for files that will not come
            header = {"error": f"{type(e).__name__}: {e}"}
            world.broadcast_object(header)
            raise
    header = world.broadcast_object(header)
    if header["error"] is not None:
        raise ValueError(f"rank 0 could not read the checkpoint in {str(path)!r}: {header['error']}")
    if world.is_main:
        for p in files:
            world.broadcast_bytes(p.read_bytes())
        return Path(path)
    name = header["name"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"rank 0 sent a checkpoint name {name!r} that is not a directory name")
    ckpt = into / name
    for rel, size in header["files"]:
        data = world.broadcast_bytes(None)
        if (
            not isinstance(rel, str)
            or ".." in Path(rel).parts
            or Path(rel).is_absolute()
            or len(data) != size
        ):
            raise ValueError(
                f"rank 0 sent a bad checkpoint file {rel!r} ({len(data)} bytes, expected {size})"
            )
        target = ckpt / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    atomic_write_json(into / "latest.json", {"checkpoint": name})
    return into
