"""Data-parallel training as plain SPMD over ``torch.distributed``: the policy is replicated, each rank rolls
out its slice of one global batch, and the gradients are all-reduced once per step in one flat buffer.

:func:`get_world` reads only the ``env://`` variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so torchrun, srun or Ray Train can launch the same code::

    torchrun --standalone --nproc_per_node=2 -m agents.cli train --algo ppo --env TextEnv/Reverse-L4-v0

Without those variables (or with ``WORLD_SIZE=1``) the world is a single process whose helpers return their
input untouched and run no collective, so a plain run is exactly what it was before data parallelism.

The process group uses gloo for CPU tensors and NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"`` when CUDA is
present). The policy is not wrapped in ``DistributedDataParallel``: the rollout calls ``prefill`` /
``decode_step`` and the update calls ``forward_actions``, which bypass ``DDP.forward``, and a learner that
does not train the value head (RLOO) would trip DDP's unused-parameter check.
:meth:`World.all_reduce_gradients` averages the gradients itself, and carries the step's scalars in the same
collective.

Everything a rank sends another is tensors or JSON text, never a pickle.

Example:
    >>> world = get_world()
    >>> world.size, world.rank, world.is_main
    (1, 0, True)
    >>> world.sum([1.0, 2.0])
    [1.0, 2.0]
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_S = int(os.environ.get("TEXT_ENV_DIST_TIMEOUT", "1800"))
"""How long a collective waits for the other ranks before it fails (``TEXT_ENV_DIST_TIMEOUT`` seconds)."""


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(
                f"the environment variable {name} is not set; a data-parallel launch (torchrun, srun) must "
                f"set all of {', '.join(ENV_VARS)}"
            )
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"the environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"the environment variable {name}={raw!r} must be ≥ 0")
    return value


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run: ``rank`` of ``size``, ``local_rank`` on its host.

    A world of size 1 is a no-op: every helper returns its input and runs no collective.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # the flat gradient buffer, reused from step to step (one allocation, not one of the model's size per
    # step); keyed by device and length
    _buffers: dict[tuple[str, int], torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def device(self, requested: torch.device) -> torch.device:
        """The device this rank trains on: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` when
        distributed, one GPU per process; anything else is kept."""
        if self.is_distributed and requested.type == "cuda" and requested.index is None:
            return torch.device("cuda", self.local_rank)
        return requested

    # ---- collectives ----------------------------------------------------------------------------------
    def all_reduce_(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: the sum (``"sum"``), mean (``"mean"``) or max (``"max"``) of ``tensor`` over ranks."""
        if not self.is_distributed:
            return tensor
        import torch.distributed as dist

        if op == "max":
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        elif op in ("sum", "mean"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            if op == "mean":
                tensor /= self.size
        else:
            raise ValueError(f"op must be 'sum', 'mean' or 'max', got {op!r}")
        return tensor

    def sum(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """The sum over ranks of each of ``values`` (float64; one collective)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        return self.all_reduce_(t).tolist()

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over ranks of each of ``values`` (float64; one collective)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        return [v / self.size for v in self.sum(values)]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (stop requests agree: a rank that left
        the loop alone would leave the others waiting in a collective)."""
        if not self.is_distributed:
            return bool(flag)
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (same shape on each), concatenated along dim 0 in rank order."""
        if not self.is_distributed:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def all_reduce_gradients(
        self, parameters: Iterable[torch.nn.Parameter], extras: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Average the gradients over ranks in one collective, with ``extras`` (a float vector, e.g. the
        step's loss terms, each already a rank's share) averaged alongside; returns the averaged extras.

        A parameter whose gradient is None on every rank keeps None (AdamW then leaves it and its state
        alone, as in a single process); if any rank has one, the others count zeros for it. The buffer is
        float32 on the parameters' device: NCCL for CUDA, gloo for CPU.
        """
        params = [p for p in parameters if p.requires_grad]
        if not self.is_distributed:
            return extras
        if not params:
            raise ValueError("all_reduce_gradients got no trainable parameters")
        dev = params[0].device
        n_extra = 0 if extras is None else extras.numel()
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        key = (str(dev), total + len(params) + n_extra)
        flat = self._buffers.get(key)
        if flat is None:
            self._buffers.clear()  # one buffer at a time: a new parameter set replaces the old one
            flat = self._buffers[key] = torch.empty(key[1], dtype=torch.float32, device=dev)
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        flat[total : total + len(params)].copy_(flags)  # 1: this rank has a gradient for p
        offset = 0
        for i, p in enumerate(params):
            segment = flat[offset : offset + sizes[i]]
            if p.grad is not None:
                segment.copy_(p.grad.reshape(-1))
            else:
                segment.zero_()
            offset += sizes[i]
        if extras is not None:
            flat[-n_extra:] = extras.detach().reshape(-1).to(device=dev, dtype=torch.float32)
        self.all_reduce_(flat, "mean")
        offset = 0
        had_grad = (flat[total : total + len(params)] > 0).tolist()  # one device sync, not one per tensor
        for i, p in enumerate(params):
            if had_grad[i]:
                g = flat[offset : offset + sizes[i]].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            offset += sizes[i]
        return None if extras is None else flat[-n_extra:].to(extras.device, copy=True)  # not a view of it

    def broadcast_tensors(self, tensors: Iterable[torch.Tensor], src: int = 0) -> None:
        """In place: rank ``src``'s values of ``tensors`` (same shapes and order on every rank)."""
        if not self.is_distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t.data, src=src)

    def broadcast_module(self, module: torch.nn.Module, what: str = "the policy", src: int = 0) -> None:
        """Rank ``src``'s weights (parameters and buffers) into ``module`` on every rank, after checking the
        ranks hold the same architecture (names, shapes and dtypes; a mismatch raises on every rank)."""
        if not self.is_distributed:
            return
        state = module.state_dict(keep_vars=True)
        signature = [[k, list(v.shape), str(v.dtype)] for k, v in state.items()]
        theirs = self.broadcast_object(signature, src=src)
        if theirs != signature:
            mine = {k: (s, d) for k, s, d in signature}
            other = {k: (s, d) for k, s, d in theirs}
            diff = sorted(str(k) for k in set(mine) | set(other) if mine.get(k) != other.get(k))[:5]
            raise ValueError(
                f"rank {self.rank} holds a different {what} from rank {src} (first differences: {diff}); "
                "every rank must build the same model"
            )
        self.broadcast_tensors([v for v in state.values()], src=src)

    def broadcast_bytes(self, data: bytes | None, src: int = 0) -> bytes:
        """Rank ``src``'s ``data`` on every rank (others pass None)."""
        if not self.is_distributed:
            if data is None:
                raise ValueError("broadcast_bytes needs data in a single process")
            return data
        n = torch.tensor([len(data) if self.rank == src and data is not None else 0], dtype=torch.int64)
        self.broadcast_tensors([n], src=src)
        if self.rank == src:
            buf = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8) if n.item() else None
        else:
            buf = torch.empty(int(n.item()), dtype=torch.uint8)
        if buf is None or buf.numel() == 0:
            return b""
        self.broadcast_tensors([buf], src=src)
        return buf.numpy().tobytes()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s JSON-serialisable ``obj`` on every rank (sent as JSON text, never pickled)."""
        if not self.is_distributed:
            return obj
        data = json.dumps(obj).encode() if self.rank == src else None
        return json.loads(self.broadcast_bytes(data, src=src).decode())

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. while rank 0 writes a checkpoint)."""
        if not self.is_distributed:
            return
        import torch.distributed as dist

        dist.barrier()

    def slice(self, n: int, k: int = 1, what: str = "n_envs") -> slice:
        """This rank's rows of a global batch of ``n`` rows in groups of ``k`` (a group stays on one rank).
        Raises ValueError unless ``n`` is a multiple of ``size · k``."""
        if n % (self.size * k):
            raise ValueError(
                f"{what}={n} must be a multiple of world_size × k = {self.size} × {k} = {self.size * k}, "
                "so that every rank rolls out the same number of whole groups"
            )
        local = n // self.size
        return slice(self.rank * local, (self.rank + 1) * local)


_WORLD: World | None = None


def get_world() -> World:
    """This process's :class:`World`, from the ``env://`` variables; the first call with ``WORLD_SIZE`` > 1
    initialises the default process group (unless the caller already did)."""
    global _WORLD
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise ValueError(f"the environment variable WORLD_SIZE={size} must be ≥ 1")
    if size == 1:
        return World()
    if _WORLD is not None and _WORLD.size == size:
        return _WORLD
    rank = _env_int("RANK")
    if rank >= size:
        raise ValueError(f"the environment variable RANK={rank} must be < WORLD_SIZE={size}")
    local_rank = _env_int("LOCAL_RANK", rank)
    import torch.distributed as dist

    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ValueError(
                    f"WORLD_SIZE={size} but the environment variable {name} is not set; launch with torchrun "
                    "(or set MASTER_ADDR and MASTER_PORT)"
                )
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    elif dist.get_world_size() != size or dist.get_rank() != rank:
        raise ValueError(
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
            f"RANK={rank} WORLD_SIZE={size}"
        )
    _WORLD = World(rank=rank, size=size, local_rank=local_rank)
    return _WORLD


def shutdown() -> None:
    """Destroy the process group if this module created one (the end of a torchrun command)."""
    global _WORLD
    if _WORLD is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _WORLD = None


__all__ = ["ENV_VARS", "World", "get_world", "shutdown"]
