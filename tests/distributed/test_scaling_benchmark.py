"""``benchmarks/scaling_ddp.py --quick`` end to end on the short workload: every figure the issue asks for
(strong and weak efficiency, straggler ratio, collective share) and the no-communication ceiling are
written, finite and consistent with the runs they come from. Figures, not speed: no timing is asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scaling_ddp_quick_writes_every_figure(tmp_path) -> None:
    out = tmp_path / "scaling_ddp.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXT_ENV_CACHE": str(tmp_path / "cache")}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scaling_ddp",
        "--quick",
        "--workload",
        "short",
        "--results",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    w = res["workloads"]["short"]
    runs = w["runs"]
    assert set(runs) == {"strong_1", "strong_2", "weak_1", "weak_2", "independent_2"}
    for key in ("strong_efficiency", "weak_efficiency", "straggler_ratio", "collective_share",
                "no_communication_efficiency", "strong_efficiency_vs_no_communication"):  # fmt: skip
        assert math.isfinite(w[key]) and w[key] > 0, (key, w[key])
    assert 0 < w["collective_share"] < 1 and w["straggler_ratio"] >= 1
    # the efficiencies are the ratios of the runs' own figures
    assert math.isclose(
        w["strong_efficiency"], runs["strong_1"]["s_per_token"] / (2 * runs["strong_2"]["s_per_token"])
    )
    assert math.isclose(
        w["no_communication_efficiency"],
        runs["strong_1"]["s_per_token"] / (2 * runs["independent_2"]["s_per_token"]),
    )
    # a two-process run counts the global batch's tokens, about twice a one-process run of half of it
    assert runs["strong_2"]["global_tokens_per_step"] > 1.5 * runs["weak_1"]["global_tokens_per_step"]
    assert res["machine"]["load_average"] and res["load_average_before"] and res["load_average_after"]
    assert "wrote" in proc.stdout and "no-comm eff" in proc.stdout
