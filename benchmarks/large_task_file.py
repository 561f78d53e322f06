"""A large user task file: seconds and peak memory to parse it, and to build the env on it (issue 13).

A JSONL file of ``--mb`` megabytes is generated once (deterministically: same ``--mb`` and ``--seed``, same
bytes) with prompts of 5 to 40 words (and a 1 % tail of 60 to 120 words, cut at 600 characters, so that
padding every prompt to the longest one costs what it costs on real data) and one reference each, some
of the words non-ASCII. Each
measurement runs in a fresh interpreter under ``/usr/bin/time -v`` (its "Maximum resident set size" and
"Elapsed" lines are the figures), in two stages:

- ``load``: ``Task.from_file(path)`` only;
- ``env``: the same, then ``TextGenEnv(task)`` and ``TextGenVectorEnv(task, num_envs=16)``, and a fixed
  workload of seeded resets and steps whose observations, rewards and flags are hashed into a digest.

``--code DIR`` (repeatable) measures the text-env checkout at ``DIR`` (its ``text_env`` goes first on
``PYTHONPATH``); the default is this checkout. With two checkouts (e.g. the code before and after a change)
the digests tell whether both produced the same observations and rewards. The figures are printed and
written to ``benchmarks/results/large_task_file.json``.

Usage::

    python -m benchmarks.large_task_file                      # this checkout, a 100 MB file
    python -m benchmarks.large_task_file --code before=/tmp/old-checkout --code after=.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "large_task_file.json"
TIME = "/usr/bin/time"


# ---- the file ---------------------------------------------------------------------------------------------
def generate(path: Path, megabytes: float, seed: int) -> dict[str, Any]:
    """Write the JSONL task file (if absent) and return its size and row count."""
    import numpy as np

    if not path.exists():
        rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(3000)]
        words += ["café", "niño", "señor", "über", "naïve", "—", "déjà"]
        target = int(megabytes * 1e6)
        written = 0
        tmp = path.with_suffix(".partial")
        with open(tmp, "w", encoding="utf-8") as f:
            while written < target:
                n = int(rng.integers(5, 40)) if rng.random() > 0.01 else int(rng.integers(60, 121))
                prompt = " ".join(words[i] for i in rng.integers(0, len(words), size=n))[:600] + " ->"
                reference = " ".join(
                    words[i] for i in rng.integers(0, len(words), size=int(rng.integers(1, 8)))
                )
                line = json.dumps({"prompt": prompt, "reference": reference}, ensure_ascii=False) + "\n"
                written += f.write(line)
        os.replace(tmp, path)
    with open(path, "rb") as f:
        rows = sum(1 for _ in f)
    return {"path": str(path), "bytes": path.stat().st_size, "rows": rows}


# ---- the child: what is measured --------------------------------------------------------------------------
def child(path: str, stage: str) -> None:
    """Run one stage in this (fresh) process and print one JSON line of timings and the digest."""
    import numpy as np

    from text_env import TextGenEnv, TextGenVectorEnv
    from text_env.tasks.base import Task

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    task = Task.from_file(path)
    out["load_s"] = time.perf_counter() - t0
    out["split_sizes"] = task.split_sizes()
    if stage == "env":
        t0 = time.perf_counter()
        env = TextGenEnv(task)
        venv = TextGenVectorEnv(task, num_envs=16)
        out["env_build_s"] = time.perf_counter() - t0
        out["context_len"] = env.context_len
        h = hashlib.sha256()
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            for _ in range(400):
                h.update(obs.tobytes())
                h.update(str(info["prompt_index"]).encode())
                obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
                h.update(np.float64(reward).tobytes() + bytes([terminated, truncated]))
                if terminated or truncated:
                    obs, info = env.reset()
        obs, _ = venv.reset(seed=0)
        for _ in range(300):
            obs, reward, terminated, truncated, _ = venv.step(
                rng.integers(venv.single_action_space.n, size=16)
            )
            h.update(obs.tobytes() + reward.tobytes() + terminated.tobytes() + truncated.tobytes())
        out["workload_s"] = time.perf_counter() - t0
        out["digest"] = h.hexdigest()[:16]
    print("RESULT " + json.dumps(out), flush=True)


# ---- the parent: one /usr/bin/time -v per stage ----------------------------------------------------------
def _time_v(field: str, text: str) -> str:
    m = re.search(rf"^\s*{re.escape(field)}: (.+)$", text, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no {field!r} line in /usr/bin/time -v's output:\n{text[-2000:]}")
    return m.group(1).strip()


def _seconds(clock: str) -> float:
    parts = [float(p) for p in clock.split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def measure(code: Path, path: Path, stage: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    cmd = [TIME, "-v", sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--stage", stage]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(code), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} with {code} failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    result["peak_rss_mb"] = int(_time_v("Maximum resident set size (kbytes)", proc.stderr)) / 1024
    result["wall_s"] = _seconds(_time_v("Elapsed (wall clock) time (h:mm:ss or m:ss)", proc.stderr))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=100.0, help="size of the generated file in MB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--code",
        action="append",
        help="a text-env checkout to measure, as DIR or LABEL=DIR (repeatable; default: this checkout)",
    )
    p.add_argument("--file", type=Path, help="where the generated file goes (default: the temp directory)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--stage", choices=["load", "env"], default="env", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.stage)
        return 0
    path = args.file or Path(tempfile.gettempdir()) / f"text_env_large_task_{args.mb:g}mb_s{args.seed}.jsonl"
    info = generate(path, args.mb, args.seed)
    print(f"file: {info['bytes'] / 1e6:.1f} MB, {info['rows']:,} rows ({path})")
    runs: dict[str, Any] = {}
    for spec in args.code or [str(ROOT)]:
        label, _, where = spec.rpartition("=")
        code = Path(where).resolve()
        label = label or str(code)
        runs[label] = {stage: measure(code, path, stage) for stage in ("load", "env")}
        load, env = runs[label]["load"], runs[label]["env"]
        print(
            f"{label}: parse {load['wall_s']:.1f} s, peak {load['peak_rss_mb']:.0f} MB | parse + env + "
            f"workload {env['wall_s']:.1f} s (build {env['env_build_s']:.1f} s), "
            f"peak {env['peak_rss_mb']:.0f} MB | digest {env['digest']}"
        )
    digests = {r["env"]["digest"] for r in runs.values()}
    result = {"file": info, "runs": runs, "identical_outputs": len(digests) == 1}
    if len(runs) > 1:
        print("identical observations, rewards and flags:", result["identical_outputs"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
