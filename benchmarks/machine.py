"""The machine a benchmark ran on, and what its matmuls can do: the denominator of every roofline.

The roofline of a transformer is ``2 · parameters · tokens`` FLOPs (one multiply-add per weight per token)
at the matmul rate measured *in the same run* (this machine is shared: its rate drifts with the load, so a
rate measured elsewhere would make the ratio meaningless). Two rates are measured:

- **peak**: the best median rate over large square matmuls and the model's own shapes;
- **shape-matched**: the rate of exactly the matmuls one decode step of the model runs (batch × width
  against each weight matrix), combined by their FLOPs (total FLOPs ÷ total time), as a hot loop runs them.

Usage::

    python -m benchmarks.machine            # prints the machine and the matmul rates
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import text_env
from text_env.io import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = RESULTS_DIR.parent.parent


def run_json_worker(args: list[str], threads: int, what: str) -> dict[str, Any]:
    """Run ``python -m <args>`` in a fresh process at the repository root with ``threads`` torch threads
    (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), offline (``HF_HUB_OFFLINE=1``), and return the JSON object its
    last stdout line holds, with the load average before and after. A failure raises naming ``what`` with
    the end of the worker's stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"  # nothing downloads: workers load local directories only
    load = load_average()
    cmd = [sys.executable, "-m", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_average_before"], out["load_average_after"] = load, load_average()
    return out


def sync(device: torch.device | str) -> None:
    """Wait for queued device work (a no-op on CPU): timings must include it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU (as the agents' ``--device auto`` does)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (runnable processes; above the core count means a shared CPU)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "text_env": text_env.__version__,
        "load_average": load_average(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int, inner: int) -> float:
    """Median over ``repeats`` of the mean seconds per call over ``inner`` back-to-back calls."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def matmul_rate(
    m: int, k: int, n: int, device: torch.device, seconds: float = 0.15, repeats: int = 5
) -> float:
    """GFLOP/s of ``(m × k) @ (k × n)`` float32 on ``device`` (``2·m·k·n`` FLOPs per product)."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    flops = 2.0 * m * k * n
    start = time.perf_counter()
    torch.mm(a, b)
    sync(device)
    once = max(time.perf_counter() - start, 1e-6)
    inner = int(max(1, min(2000, seconds / repeats / once)))
    return flops / median_time(lambda: torch.mm(a, b), device, repeats, inner) / 1e9


def decode_matmul_shapes(batch: int, n_embd: int, vocab_size: int) -> list[tuple[int, int, int]]:
    """The matmuls of one decode step of one block (and the head) at ``batch`` slots: ``(m, k, n)``."""
    c = n_embd
    return [(batch, c, 3 * c), (batch, c, c), (batch, c, 4 * c), (batch, 4 * c, c), (batch, c, vocab_size)]


def matmul_rates(
    device: torch.device,
    model_shapes: list[tuple[int, int, int]],
    quick: bool = False,
) -> dict[str, Any]:
    """Peak and shape-matched matmul GFLOP/s (see the module docstring), with every shape's rate."""
    squares = [512, 1024] if quick else [512, 1024, 2048]
    if device.type == "cuda":
        squares = [2048, 4096, 8192]
    rows = []
    for s in squares:
        rows.append({"shape": [s, s, s], "gflops": matmul_rate(s, s, s, device)})
    layer_rows = []
    for m, k, n in model_shapes:
        layer_rows.append({"shape": [m, k, n], "gflops": matmul_rate(m, k, n, device)})
    total_flops = sum(2.0 * m * k * n for m, k, n in model_shapes)
    total_time = sum(2.0 * m * k * n / (r["gflops"] * 1e9) for (m, k, n), r in zip(model_shapes, layer_rows))
    matched = total_flops / total_time / 1e9
    peak = max(r["gflops"] for r in rows + layer_rows)
    return {"peak_gflops": peak, "matched_gflops": matched, "square": rows, "model_shapes": layer_rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="The machine and its measured matmul GFLOP/s.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = machine_info(device)
    rates = matmul_rates(device, decode_matmul_shapes(64, 128, 19), args.quick)
    print(
        f"{info['cpu']}: {info['usable_cores']} cores, load {info['load_average']}, {info['torch_threads']} "
        "threads"
    )
    for r in rates["square"] + rates["model_shapes"]:
        m, k, n = r["shape"]
        print(f"  ({m}x{k}) @ ({k}x{n})  {r['gflops']:8.1f} GFLOP/s")
    print(
        f"  peak {rates['peak_gflops']:.1f} GFLOP/s, decode-shape-matched {rates['matched_gflops']:.1f} "
        "GFLOP/s"
    )
    result = {"machine": info, "matmul": rates}
    atomic_write_json(RESULTS_DIR / "machine.json", result, indent=1)
    return result


if __name__ == "__main__":
    main()
