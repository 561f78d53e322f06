"""Data-parallel scaling of one training run (issue 17): 1 → N processes under torchrun, gloo on CPU (and 1 →
N GPUs with NCCL when a machine has several), with the machine's own N-process efficiency as the reference.

For each workload, in one run of this script, side by side:

- **strong scaling**: the same global batch (``n_envs``) on 1 and on N processes (each rolls out n_envs / N);
- **weak scaling**: the same batch *per process* (the global batch grows N×);
- **efficiency** ``T1 / (N · TN)``, with T the seconds per generated token of the global batch (for strong
  scaling that is the iteration time; weak scaling does N× the work per iteration), median over iterations;
- **straggler ratio**: the slowest rank's busy time (its step time less the time it spent in collectives)
  over the fastest's, median over iterations;
- **collective share**: rank 0's seconds in all-reduce / all-gather / broadcast over its step time (it
  includes waiting for a straggler);
- **no-communication efficiency**: the strong-scaling efficiency of N concurrent *independent* copies of
  the workload, each with the per-process batch and no process group: the ceiling this machine sets for
  this very workload (shared memory bandwidth and caches), and the strong efficiency as a share of it;
- **compute reference**: a pure matmul loop of the same total work in 1 process and split over N concurrent
  processes with no communication at all — what the machine itself allows (a shared machine's other jobs
  take cores from the N processes; an idle one gives ≈ 1.0).

Every process runs torch on one thread (``OMP_NUM_THREADS=1``, the agents' setting for small models on
CPU). Workloads: ``short`` (a 1-layer 32-wide policy on Reverse-L4: per-step overheads dominate) and
``long`` (a 4-layer 256-wide policy on Reverse-v0, 32 episodes per process, EOS masked so that every episode
runs its whole budget: compute dominates; the bar is an efficiency ≥ 0.8 on an idle machine). The load
average and the compute reference are recorded before and after.

Usage::

    python -m benchmarks.scaling_ddp [--quick] [--workload short long] [--nproc 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaling_ddp.json"

WORKLOADS: dict[str, dict[str, Any]] = {
    "short": {
        "env": "TextEnv/Reverse-L4-v0", "n_envs_per_proc": 16,
        "policy_kwargs": {"n_layer": 1, "n_embd": 32, "n_head": 2}, "batch_size": 8, "iterations": 6,
    },
    "long": {
        "env": "TextEnv/Reverse-v0", "n_envs_per_proc": 32, "mask_eos": True,
        "policy_kwargs": {"n_layer": 4, "n_embd": 256, "n_head": 4}, "batch_size": 16, "iterations": 4,
    },
}  # fmt: skip


# ---- what each rank runs ---------------------------------------------------------------------------------
def worker(spec: dict[str, Any], out: Path) -> None:
    """One timed training run on this rank: per-iteration step time and the seconds spent in collectives."""
    import torch.distributed as dist

    from agents import PPO
    from agents.distributed import get_world

    torch.set_num_threads(1)
    world = get_world()
    in_collectives = [0.0]
    if world.is_distributed:  # time every collective the loop makes (waiting for the others included)
        for name in ("all_reduce", "all_gather", "broadcast", "barrier"):
            real = getattr(dist, name)

            def timed(*a: Any, _real: Any = real, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _real(*a, **k)
                finally:
                    in_collectives[0] += time.perf_counter() - t

            setattr(dist, name, timed)
    agent = PPO(
        "transformer", spec["env"], n_envs=spec["n_envs"], n_epochs=1, batch_size=spec["batch_size"],
        policy_kwargs=spec["policy_kwargs"], device=spec["device"], seed=0, lr_warmup=0, max_approx_kl=None,
    )  # fmt: skip
    if spec.get("mask_eos"):  # every episode runs its whole token budget: a fixed amount of work
        from benchmarks.workloads import mask_stop_tokens

        mask_stop_tokens(agent.policy, agent.env.task)
    steps: list[dict[str, float]] = []
    marks = {"t": 0.0, "c": 0.0, "tokens": 0}

    def on_step(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        now = time.perf_counter()
        steps.append(
            {
                "step_s": now - marks["t"],
                "collective_s": in_collectives[0] - marks["c"],
                "global_tokens": agent.num_timesteps - marks["tokens"],
            }
        )
        marks.update(t=time.perf_counter(), c=in_collectives[0], tokens=agent.num_timesteps)
        return len(steps) < spec["iterations"] + 1  # the first iteration is a warm-up

    marks["t"] = time.perf_counter()
    agent.learn(10**9, callback=on_step)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{world.rank}.json").write_text(json.dumps({"rank": world.rank, "steps": steps[1:]}))


def compute_worker(seconds_of_work: int, out: Path, rank: int) -> None:
    """A matmul loop of a fixed number of multiplies, no communication (the reference)."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    t = time.perf_counter()
    for _ in range(seconds_of_work):
        a = torch.tanh(a @ a)
    (out / f"compute{rank}.json").write_text(json.dumps({"seconds": time.perf_counter() - t}))


# ---- the driver ------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def launch(nproc: int, spec: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="scaling-ddp-") as tmp:
        out = Path(tmp)
        args = ["-m", "benchmarks.scaling_ddp", "--worker", json.dumps(spec), "--out", str(out)]
        if nproc > 1:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={nproc}",
                *args,
            ]
        else:
            cmd = [sys.executable, *args]
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def launch_independent(nproc: int, spec: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """``nproc`` concurrent single-process runs of ``spec`` (no process group, no communication): what the
    machine allows N copies of this very workload, memory bandwidth and caches shared as under torchrun."""
    with tempfile.TemporaryDirectory(prefix="scaling-ddp-") as tmp:
        outs = [Path(tmp) / f"proc{r}" for r in range(nproc)]
        cmds = [
            [sys.executable, "-m", "benchmarks.scaling_ddp", "--worker", json.dumps(spec), "--out", str(o)]
            for o in outs
        ]
        procs = [
            subprocess.Popen(
                c, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            for c in cmds
        ]
        for c, proc in zip(cmds, procs, strict=True):
            _, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(c)} exited {proc.returncode}:\n{err[-4000:]}")
        return [json.loads((o / "rank0.json").read_text()) for o in outs]


def summarise_independent(procs: list[dict[str, Any]]) -> dict[str, float]:
    """Per iteration, the slowest copy's step time over the tokens of all copies (as for a global batch)."""
    n_steps = min(len(r["steps"]) for r in procs)
    per_token = [
        max(r["steps"][i]["step_s"] for r in procs) / sum(r["steps"][i]["global_tokens"] for r in procs)
        for i in range(n_steps)
    ]
    return {
        "s_per_token": statistics.median(per_token),
        "step_s": statistics.median(max(r["steps"][i]["step_s"] for r in procs) for i in range(n_steps)),
        "iterations": n_steps,
    }


def summarise(ranks: list[dict[str, Any]]) -> dict[str, float]:
    n_steps = min(len(r["steps"]) for r in ranks)
    per_token, straggler, share = [], [], []
    for i in range(n_steps):
        rows = [r["steps"][i] for r in ranks]
        step = max(row["step_s"] for row in rows)
        per_token.append(step / rows[0]["global_tokens"])
        busy = [max(row["step_s"] - row["collective_s"], 1e-9) for row in rows]
        straggler.append(max(busy) / min(busy))
        share.append(rows[0]["collective_s"] / rows[0]["step_s"])
    return {
        "s_per_token": statistics.median(per_token),
        "step_s": statistics.median(max(r["steps"][i]["step_s"] for r in ranks) for i in range(n_steps)),
        "global_tokens_per_step": statistics.median(
            ranks[0]["steps"][i]["global_tokens"] for i in range(n_steps)
        ),
        "straggler_ratio": statistics.median(straggler),
        "collective_share": statistics.median(share),
        "iterations": n_steps,
    }


def compute_reference(nproc: int, work: int) -> dict[str, float]:
    """Seconds of a fixed matmul loop in 1 process, and of the same loop split over nproc concurrent ones."""
    with tempfile.TemporaryDirectory(prefix="scaling-ddp-") as tmp:
        out = Path(tmp)

        def run(n: int) -> float:
            code = (
                "import sys; from pathlib import Path; from benchmarks.scaling_ddp import compute_worker; "
                "compute_worker(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))"
            )
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", code, str(work // n), str(out), str(r)], env=_env(), cwd=ROOT
                )
                for r in range(n)
            ]
            for p in procs:
                if p.wait(timeout=600) != 0:
                    raise RuntimeError("the compute reference failed")
            return max(json.loads((out / f"compute{r}.json").read_text())["seconds"] for r in range(n))

        t1, tn = run(1), run(nproc)
    return {"t1_s": t1, "tn_s": tn, "efficiency": t1 / (nproc * tn)}


def run_workload(name: str, nproc: int, device: str, quick: bool) -> dict[str, Any]:
    w = WORKLOADS[name]
    base = {"env": w["env"], "policy_kwargs": w["policy_kwargs"], "batch_size": w["batch_size"],
            "device": device, "mask_eos": w.get("mask_eos", False),
            "iterations": 2 if quick else w["iterations"]}  # fmt: skip
    per = w["n_envs_per_proc"]
    runs = {
        "strong_1": (1, {**base, "n_envs": per * nproc}),
        f"strong_{nproc}": (nproc, {**base, "n_envs": per * nproc}),
        "weak_1": (1, {**base, "n_envs": per}),
        f"weak_{nproc}": (nproc, {**base, "n_envs": per * nproc}),
    }
    res: dict[str, Any] = {"workload": w, "runs": {}}
    for key, (n, spec) in runs.items():
        if key == f"weak_{nproc}":  # the same launch as strong_N: the global batch is per × N either way
            res["runs"][key] = res["runs"][f"strong_{nproc}"]
            continue
        res["runs"][key] = {"nproc": n, "n_envs": spec["n_envs"], **summarise(launch(n, spec, timeout=900))}
    # the same per-process work as strong_N in N concurrent processes that never communicate
    alone = {**base, "n_envs": per}
    res["runs"][f"independent_{nproc}"] = {
        "nproc": nproc, "n_envs_each": per, **summarise_independent(launch_independent(nproc, alone, 900))
    }  # fmt: skip
    r = res["runs"]
    for mode in ("strong", "weak"):
        t1, tn = r[f"{mode}_1"]["s_per_token"], r[f"{mode}_{nproc}"]["s_per_token"]
        res[f"{mode}_efficiency"] = t1 / (nproc * tn)
    # the best strong efficiency this machine allows this workload (no communication at all), and the share
    # of it that data parallelism keeps: 1 - that share is what the collectives and the stragglers cost
    res["no_communication_efficiency"] = r["strong_1"]["s_per_token"] / (
        nproc * r[f"independent_{nproc}"]["s_per_token"]
    )
    res["strong_efficiency_vs_no_communication"] = (
        res["strong_efficiency"] / res["no_communication_efficiency"]
    )
    res["straggler_ratio"] = r[f"strong_{nproc}"]["straggler_ratio"]
    res["collective_share"] = r[f"strong_{nproc}"]["collective_share"]
    return res


def table(results: dict[str, Any], nproc: int) -> str:
    lines = [
        f"{'workload':10} {'strong eff':>10} {'weak eff':>9} {'straggler':>9} {'coll. share':>11} "
        f"{'s/iter 1p':>10} {f's/iter {nproc}p':>10} {'compute ref':>11} {'strong/ref':>10} "
        f"{'no-comm eff':>11} {'strong/no-comm':>14}",
    ]
    ref = (results["compute_reference"]["efficiency"] + results["compute_reference_after"]["efficiency"]) / 2
    for name, res in results["workloads"].items():
        r = res["runs"]
        lines.append(
            f"{name:10} {res['strong_efficiency']:10.2f} {res['weak_efficiency']:9.2f} "
            f"{res['straggler_ratio']:9.2f} {res['collective_share']:11.1%} {r['strong_1']['step_s']:10.2f} "
            f"{r[f'strong_{nproc}']['step_s']:10.2f} {ref:11.2f} "
            f"{res['strong_efficiency_vs_reference']:10.2f} {res['no_communication_efficiency']:11.2f} "
            f"{res['strong_efficiency_vs_no_communication']:14.2f}"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 timed iterations per run")
    p.add_argument("--workload", nargs="+", default=["short", "long"], choices=sorted(WORKLOADS))
    p.add_argument("--nproc", type=int, default=None, help="processes [default: 2 on CPU, the GPUs on CUDA]")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process, NCCL)")
    p.add_argument("--results", default=str(RESULTS), help=f"where to write the figures [default: {RESULTS}]")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker), Path(args.out))
        return None
    from benchmarks.machine import load_average, machine_info
    from text_env.io import atomic_write_json

    if args.device.startswith("cuda"):
        n_gpus = torch.cuda.device_count()
        nproc = args.nproc or n_gpus
        if n_gpus < 2 or nproc > n_gpus:
            print(
                f"skipped: data-parallel GPU scaling needs ≥ 2 GPUs (one per process); this machine has "
                f"{n_gpus}"
            )
            return {"skipped": f"{n_gpus} GPUs"}
    else:
        nproc = args.nproc or 2
    if nproc < 2:
        raise SystemExit(f"--nproc must be ≥ 2, got {nproc}")
    load_before = load_average()
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine_info(torch.device(args.device)),
        "nproc": nproc,
        "torch_threads_per_process": 1,
        "command": "python -m benchmarks.scaling_ddp " + " ".join(argv if argv is not None else sys.argv[1:]),
        "compute_reference": compute_reference(nproc, work=400 if args.quick else 1200),
        "workloads": {},
    }
    for name in args.workload:
        results["workloads"][name] = run_workload(name, nproc, args.device, args.quick)
    results["compute_reference_after"] = compute_reference(nproc, work=400 if args.quick else 1200)
    results["load_average_before"], results["load_average_after"] = load_before, load_average()
    ref = (results["compute_reference"]["efficiency"] + results["compute_reference_after"]["efficiency"]) / 2
    for res in results["workloads"].values():  # what the scaling keeps of what the machine allowed
        res["strong_efficiency_vs_reference"] = res["strong_efficiency"] / ref
    results["wall_s"] = time.perf_counter() - t0
    print(table(results, nproc))
    print(
        "compute reference (no communication) before/after: "
        f"{results['compute_reference']['efficiency']:.2f} / "
        f"{results['compute_reference_after']['efficiency']:.2f}; load average before {load_before}, after "
        f"{results['load_average_after']}"
    )
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results, indent=1)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
