"""Launch a scenario of ``worker.py`` under torchrun with 2 gloo processes and read what each rank found.

Not an ``__init__.py`` on purpose, like tests/agents. Each launch has a wall-clock timeout, and the ranks'
collectives time out sooner (``TEXT_ENV_DIST_TIMEOUT``), so a rank left waiting fails the test instead of
hanging it. ``torchrun --standalone`` picks a free port itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def _torchrun(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TEXT_ENV_CACHE": str(tmp / "cache"),
        "TEXT_ENV_DIST_TIMEOUT": "60",
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def launch(tmp_path: Path) -> Callable[[str], list[dict[str, Any]]]:
    """``launch(scenario)``: run it on 2 ranks; returns each rank's findings, rank 0 first."""

    def run(scenario: str) -> list[dict[str, Any]]:
        out = tmp_path / scenario
        out.mkdir()
        _torchrun([str(WORKER), scenario, str(out)], tmp_path)
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    return run


@pytest.fixture
def torchrun(tmp_path: Path) -> Callable[[list[str]], subprocess.CompletedProcess]:
    """``torchrun(args)``: ``torchrun --standalone --nproc_per_node=2 *args`` in ``tmp_path``."""
    return lambda args: _torchrun(args, tmp_path)
