"""Where the time goes: a wall-clock breakdown of a rollout by phase, and torch.profiler op tables.

The breakdown wraps the collector's calls (``prefill``, ``decode_step``, ``sample``, ``env.step``) with
timers on the very objects the collector uses, so it times the product's own loop; everything else in
``collect`` (cache allocation, reset, the per-step bookkeeping, the final tensors) is ``bookkeeping``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.machine import sync

PHASES = ("prefill", "decode_step", "sample", "env_step")


@contextmanager
def phase_timers(policy: Any, env: Any, device: torch.device) -> Iterator[dict[str, float]]:
    """Within the block, the seconds spent in each phase accumulate in the yielded dict."""
    totals: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            totals[name] += time.perf_counter() - start
            return out

        return wrapper

    patched = [(policy, "prefill"), (policy, "decode_step"), (policy, "sample"), (env, "step")]
    for obj, attr in patched:
        # an instance attribute shadows the method for this object only; deleting it restores the method
        object.__setattr__(obj, attr, timed("env_step" if attr == "step" else attr, getattr(obj, attr)))
    try:
        yield totals
    finally:
        for obj, attr in patched:
            object.__delattr__(obj, attr)


def op_table(fn: Callable[[], Any], device: torch.device, rows: int = 12) -> dict[str, Any]:
    """torch.profiler of ``fn()``: the ops with the most self time, with their share of the total."""
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:rows]
    return {
        "sorted_by": key,
        "total_ms": total / 1e3,
        "ops": [
            {
                "op": e.key,
                "calls": e.count,
                "self_ms": getattr(e, key, 0.0) / 1e3,
                "share": getattr(e, key, 0.0) / total,
            }
            for e in ranked
        ],
    }
