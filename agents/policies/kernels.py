"""fp32 linear layers through oneDNN on CPU: the same products as ``F.linear``, with faster kernels.

PyTorch's CPU build runs an fp32 ``F.linear`` through MKL's GEMM. On AMD CPUs MKL takes its AVX2 code path
even where the CPU has AVX-512 (it dispatches on the vendor), while oneDNN, which PyTorch also ships, uses the
widest instructions the CPU has. On this project's AMD EPYC machines (AVX-512) the same fp32 products run
about 2x faster through oneDNN, one thread, at the shapes of a 100M-class model's decode step (32 rows) and of
its prefill and update (1,000+ rows); ``benchmarks/hf_generation.py`` measures what that buys a rollout. On a
CPU without AVX-512 the two libraries run the same instructions.

:func:`fast_linear` is a drop-in ``F.linear``: oneDNN for fp32 CPU tensors of two or more dimensions, with a
backward made of the same oneDNN products (``grad_input = grad · W``, ``grad_W = gradᵀ · x``), and
``F.linear`` for everything else (CUDA, other dtypes, CPU autocast, 1-D inputs, empty batches). Results
match ``F.linear`` to float32 rounding (a different summation order, as between any two BLAS libraries):
never a lower precision. :func:`onednn_linears` routes a module's ``nn.Linear`` layers through it for the
duration of a block, leaving the modules as they were afterwards.

:class:`PackedWeights` keeps oneDNN's prepacked (reordered) copy of *frozen* weights for the small products
of a decode step. Without it oneDNN reorders the weight into its blocked layout inside every product, which
at a few rows costs as much as the arithmetic: one thread, SmolLM2's (1,536 × 576) projection at 8 rows
runs in 89 µs instead of 182, at 32 rows in 300 instead of 384, with bit-identical results from 2 rows (at
1 row another kernel runs: float32 rounding, 1e-6; ``benchmarks/hf_generation.py`` measures a whole
rollout). The copy costs the weight's size again, and
packing it about 3 ms per MB (2 s for SmolLM2's 540 MB), so only weights that cannot change under an
optimizer (``requires_grad`` False: a LoRA base, an inference-only model) are packed, once, and a packed
copy is dropped and redone if its weight is written to (its version counter moves) or freed.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PackedWeights", "fast_linear", "onednn_available", "onednn_linears", "packing_available"]


# the row count oneDNN is told to pack for: formats picked for 8 or more rows ran equally fast from 8 to
# 448 rows; a 1-row hint picks the unpacked format (no gain)
_PACK_ROWS = 32


def _op() -> Any:
    return torch.ops.mkldnn._linear_pointwise


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear kernel and it gives ``F.linear``'s product."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(3, 5, generator=gen), torch.randn(4, 5, generator=gen)
        return bool(torch.allclose(_op()(x, w, None, "none", [], ""), F.linear(x, w), atol=1e-5))
    except (RuntimeError, NotImplementedError):  # an op the build lists but cannot run
        return False


@functools.cache
def packing_available() -> bool:
    """Whether this torch build can prepack a weight for oneDNN's linear, with the same product."""
    if not onednn_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(8, 5, generator=gen), torch.randn(4, 5, generator=gen)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
        return bool(torch.allclose(_op()(x, packed, None, "none", [], ""), F.linear(x, w), atol=1e-5))
    except (RuntimeError, NotImplementedError):
        return False


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x · weightᵀ + bias`` in oneDNN; ``x (..., K)``, ``weight (N, K)`` (any strides)."""
    return _op()(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with its forward and backward products in oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _product(grad, weight.t(), None)  # (..., N) · (N, K)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            g2 = grad.reshape(-1, grad.shape[-1])  # (M, N)
            if ctx.needs_input_grad[1]:
                grad_w = _product(g2.t(), x.reshape(-1, x.shape[-1]).t(), None)  # (N, M) · (M, K)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and weight.dim() == 2
        and (bias is None or bias.dtype == torch.float32)
        and x.dim() >= 2
        and x.numel() > 0
        and weight.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and onednn_available()
    )


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where it applies (see the module docstring)."""
    if not _eligible(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return cast(torch.Tensor, _OneDNNLinear.apply(x, weight, bias))
    return _product(x, weight, bias)


class PackedWeights:
    """oneDNN's prepacked copies of frozen fp32 weights, one per weight, made at first use.

    :meth:`get` returns the packed copy of ``weight`` for ``oneDNN``'s linear, packing it if there is none
    or if the weight changed since (another tensor, new storage, or an in-place write, which moves its
    version counter). A copy is dropped when its weight is freed. Copies are never saved, copied or
    pickled with their owner (``copy.deepcopy`` and pickling give an empty cache).
    """

    def __init__(self) -> None:
        # id(weight) -> (weak reference, version, data pointer, packed copy)
        self._entries: dict[int, tuple[weakref.ref[torch.Tensor], int, int, torch.Tensor]] = {}

    @staticmethod
    def packable(weight: torch.Tensor) -> bool:
        """Frozen (``requires_grad`` False), fp32, 2-D, on the CPU, and not an inference tensor (which keeps
        no version counter to tell a write)."""
        return (
            not weight.requires_grad
            and weight.dtype == torch.float32
            and weight.dim() == 2
            and weight.device.type == "cpu"
            and weight.numel() > 0
            and not weight.is_inference()
            and packing_available()
        )

    def get(self, weight: torch.Tensor) -> torch.Tensor:
        """The packed copy of ``weight`` (which must be :meth:`packable`), up to date with it."""
        key = id(weight)
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry[0]() is weight
            and entry[1] == weight._version
            and entry[2] == weight.data_ptr()
        ):
            return entry[3]
        with torch.inference_mode(False), torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_ROWS)
        entries = self._entries

        def drop(_ref: weakref.ref[torch.Tensor], k: int = key) -> None:  # the weight was freed
            entries.pop(k, None)

        ref = weakref.ref(weight, drop)
        entries[key] = (ref, weight._version, weight.data_ptr(), packed)
        return packed

    def clear(self) -> None:
        """Drop every packed copy."""
        self._entries.clear()

    def prune(self) -> int:
        """Drop the copies that can no longer be used: of weights changed since, or no longer
        :meth:`packable` (made trainable again, moved off the CPU). Returns how many were dropped."""
        stale = [
            k
            for k, (ref, version, ptr, _) in self._entries.items()
            if (w := ref()) is None or not self.packable(w) or w._version != version or w.data_ptr() != ptr
        ]
        for k in stale:
            self._entries.pop(k, None)
        return len(stale)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes the packed copies hold (fp32: the packed weights' sizes)."""
        return sum(e[3].numel() * e[3].element_size() for e in self._entries.values())

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedWeights:
        return PackedWeights()

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedWeights, ())

    def __repr__(self) -> str:
        return f"PackedWeights({len(self)} weights, {self.nbytes / 2**20:.1f} MiB)"


def _linear_forward(module: nn.Linear, packed: PackedWeights | None, x: torch.Tensor) -> torch.Tensor:
    weight, bias = module.weight, module.bias
    if (
        packed is not None
        and PackedWeights.packable(weight)
        and not (torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)))
        and _eligible(x, weight, bias)
    ):
        return _product(x, packed.get(weight), bias)  # no graph to build: the bare product
    return fast_linear(x, weight, bias)


@contextlib.contextmanager
def onednn_linears(
    module: nn.Module, enabled: bool = True, packed: PackedWeights | None = None
) -> Iterator[int]:
    """Within the block, ``module``'s ``nn.Linear`` layers (exactly that class: subclasses and wrappers such
    as PEFT's LoRA layers may compute something else, and keep their own forward, while the ``nn.Linear``
    inside them is routed) compute with :func:`fast_linear`. Yields how many were routed; 0 when disabled or
    when oneDNN is unavailable. Nested blocks leave the outer routing in place.

    With ``packed``, the products of frozen weights that need no gradient use its prepacked copies
    (:class:`PackedWeights`): meant for the many small products of decoding with the same weights."""
    routed: list[nn.Module] = []
    if enabled and onednn_available():
        for m in module.modules():
            if type(m) is nn.Linear and "forward" not in m.__dict__:
                object.__setattr__(m, "forward", functools.partial(_linear_forward, m, packed))
                routed.append(m)
    try:
        yield len(routed)
    finally:
        for m in routed:
            m.__dict__.pop("forward", None)
