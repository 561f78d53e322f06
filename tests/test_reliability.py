"""Crash safety of checkpoints and of ``text-env train --resume`` (issue 8, item 2), in real processes.

- SIGKILL at random moments of a train-and-checkpoint loop, and SIGKILL at *every* file-system step of one
  ``save()`` (each ``os.replace``/``os.fsync``/``os.mkdir``/``shutil.rmtree`` call in turn): the last good
  checkpoint always loads, and its weights and optimizer state are exactly those of an uninterrupted run
  at the iteration ``state.json`` names.
- SIGTERM and SIGINT: ``learn()`` finishes its iteration, writes a checkpoint and returns; the process
  exits 0.
- ``text-env train`` killed with SIGTERM midway and continued with ``--resume`` ends with the same weights
  as one uninterrupted ``text-env train``.

The kill tests fork their children from one "zygote" process that has imported torch once, so that dozens
of kills cost seconds rather than an interpreter start each. Timeouts are generous and nothing is timed:
the test machine has two shared cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from agents import PPO
from agents.checkpoint import LOCK_NAME, latest_checkpoint
from agents.cli import main as cli_main
from agents.policies import load_policy
from text_env.io import read_json
from text_env.tasks.base import Task

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"n_layer": 1, "n_embd": 32, "n_head": 2}
# one update per iteration (a single epoch over a single minibatch, no early stop): Adam's step count equals
# the iteration, which ties optimizer.safetensors to state.json
AGENT_KWARGS = dict(
    n_envs=8, seed=0, device="cpu", kl_coef=0.1, target_kl=1.0, n_epochs=1, batch_size=8, max_approx_kl=None,
    policy_kwargs=TINY_MODEL,
)  # fmt: skip
CHILD_TIMEOUT = 120  # seconds for any one child to reach a milestone (generous: shared, loaded machine)

# the same four one-token prompts as tests/agents' one_step_task: every iteration is exactly n_envs tokens
TASK_CODE = """
from text_env.tasks.base import Task
rows = [{"prompt": p, "reference": r, "split": s}
        for s in ("train", "validation", "test") for p, r in zip("abcd", "dcba")]
TASK = Task.from_examples(rows, name="one-step", max_new_tokens=1)
"""
namespace: dict[str, Any] = {}
exec(compile(TASK_CODE, "<task>", "exec"), namespace)  # one definition for this process and the children
TASK: Task = namespace["TASK"]

# Reads commands from stdin, one JSON object a line, and forks a child for each; prints JSON lines.
ZYGOTE = (
    """
import json, os, shutil, signal, sys
import torch
torch.set_num_threads(1)
from agents import PPO
from agents.checkpoint import latest_checkpoint
"""
    + TASK_CODE
    + """
KW = json.loads(sys.argv[1])

def say(**msg):
    sys.stdout.write(json.dumps(msg) + "\\n")
    sys.stdout.flush()

def agent_for(directory):
    try:
        latest_checkpoint(directory)
    except FileNotFoundError:
        return PPO("transformer", TASK, checkpoint_dir=directory, checkpoint_every=1, **KW)
    return PPO.load(directory, env=TASK, checkpoint_dir=directory, checkpoint_every=1)

FS_CALLS = [(os, "replace"), (os, "fsync"), (os, "mkdir"), (shutil, "rmtree")]

def kill_at(k):
    # SIGKILL this process just before its k-th file-system call (counting from 1); k = 0 counts only
    count = [0]
    for mod, name in FS_CALLS:
        real = getattr(mod, name)
        def wrapper(*a, _real=real, **kw):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*a, **kw)
        setattr(mod, name, wrapper)
    return count

def child(cmd):
    agent = agent_for(cmd["dir"])
    if cmd["mode"] == "loop":  # train and checkpoint until killed: a periodic checkpoint + an extra save
        while True:
            agent.learn(8, reset_num_timesteps=False)
            agent.save(cmd["dir"])
            if agent.iteration == cmd["first"]:  # one whole checkpoint in this life: the kill may come now
                say(event="ready", pid=os.getpid(), iteration=agent.iteration)
    agent.checkpoint_dir = None  # "save": one iteration, then one counted (and maybe killed) save()
    agent.learn(8, reset_num_timesteps=False)
    count = kill_at(cmd["k"])
    agent.save(cmd["dir"])
    say(event="saved", calls=count[0], iteration=agent.iteration)

# warm up (lazy imports, first-call initialisation) once here rather than in every child
import tempfile
with tempfile.TemporaryDirectory() as warm:
    PPO("transformer", TASK, **KW).learn(8).save(warm)
    PPO.load(warm, env=TASK)
say(event="zygote-ready")
for line in sys.stdin:
    cmd = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            child(cmd)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    say(event="reaped", pid=pid, killed=os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
"""
)


def digest(agent: Any) -> str:
    """SHA-256 of the policy's weights and every optimizer tensor."""
    h = hashlib.sha256()
    for k, v in sorted(agent.policy.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    for pid, st in sorted(agent.optimizer.state_dict()["state"].items()):
        for k, v in sorted(st.items()):
            h.update(f"{pid}.{k}".encode())
            h.update(torch.as_tensor(v).cpu().numpy().tobytes())
    return h.hexdigest()


class Replay:
    """The uninterrupted run, advanced lazily: ``digest_at(i)`` is its digest after iteration ``i``."""

    def __init__(self) -> None:
        self.agent = PPO("transformer", TASK, **AGENT_KWARGS)
        self.digests = [digest(self.agent)]

    def digest_at(self, iteration: int) -> str:
        while len(self.digests) <= iteration:
            self.agent.learn(8, reset_num_timesteps=False)
            self.digests.append(digest(self.agent))
        return self.digests[iteration]


def check_checkpoint(directory: Path, replay: Replay) -> int:
    """The checkpoint ``latest.json`` names loads completely and equals the uninterrupted run at its
    iteration; returns that iteration."""
    ckpt = latest_checkpoint(directory)
    state = read_json(ckpt / "state.json", what="agent state")
    agent = PPO.load(directory)  # weights, reference, optimizer, counters: raises on any damage
    assert agent.iteration == state["iteration"] and ckpt.name.startswith(f"ckpt-{agent.iteration:08d}")
    assert agent.num_timesteps == 8 * agent.iteration
    steps = {int(s["step"]) for s in agent.optimizer.state_dict()["state"].values()}
    assert steps == ({agent.iteration} if agent.iteration else set()), steps
    assert digest(agent) == replay.digest_at(agent.iteration), (
        f"{ckpt.name} differs from the uninterrupted run"
    )
    return agent.iteration


class Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, json.dumps({k: v for k, v in AGENT_KWARGS.items()})],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.expect("zygote-ready")

    def expect(self, event: str) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # the child's own deadline is the test's timeout
        assert line, f"the zygote died (rc={self.proc.poll()}) while waiting for {event!r}"
        msg = json.loads(line)
        assert msg["event"] == event, msg
        return msg

    def send(self, **cmd: Any) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=CHILD_TIMEOUT)


@pytest.fixture
def zygote():
    z = Zygote()
    yield z
    if z.proc.poll() is None:
        z.proc.kill()
        z.proc.wait()


def leftovers(directory: Path) -> list[str]:
    """Temporary files and directories (the run lock is meant to stay: it is the lock, not debris)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME)


@pytest.mark.expensive
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_never_corrupts_the_last_checkpoint(zygote, tmp_path):
    # 20 kills of a loop that trains one iteration, checkpoints, saves again, ...; every new child resumes
    # from whatever the previous one left (partial directories and temporary files included), writes one
    # whole checkpoint, says so, and is killed 0–0.4 s later, wherever it is
    replay = Replay()
    rng = random.Random(8)
    directory = tmp_path / "run"
    iterations, torn, it = [], 0, 0
    for _ in range(20):
        zygote.send(dir=str(directory), mode="loop", first=it + 1)
        ready = zygote.expect("ready")
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(ready["pid"], signal.SIGKILL)
        assert zygote.expect("reaped")["killed"]
        torn += bool(leftovers(directory))
        assert ready["iteration"] == it + 1  # the child resumed from the last good checkpoint
        it = check_checkpoint(directory, replay)
        assert it >= ready["iteration"]  # and the checkpoint it finished before the kill survived it
        iterations.append(it)
    zygote.close()
    print(f"\n20 SIGKILLs; checkpoint iterations {iterations}; {torn} kills left a torn write behind")


@pytest.mark.expensive
@pytest.mark.timeout(300)
def test_sigkill_at_every_file_system_step_of_a_save_keeps_a_good_checkpoint(zygote, tmp_path):
    replay = Replay()
    directory = tmp_path / "run"
    zygote.send(dir=str(directory), mode="save", k=0)  # count the steps of one save (writes ckpt 1)
    n_calls = zygote.expect("saved")["calls"]
    zygote.expect("reaped")
    assert n_calls >= 20  # policy, reference, optimizer, state: temp file + fsync + rename (+ dir fsync) each
    assert check_checkpoint(directory, replay) == 1
    expected, moved = 1, 0
    for k in range(1, n_calls + 1):
        zygote.send(dir=str(directory), mode="save", k=k)
        assert zygote.expect("reaped")["killed"], f"the child survived its kill point {k}"
        # the pointer moves on (to the new iteration) only once the whole new checkpoint is on disk
        expected += 1
        it = check_checkpoint(directory, replay)
        assert it in (expected - 1, expected), (k, it, expected)
        moved += it == expected
        expected = it
    zygote.close()
    # the pointer moves exactly once per save: only kills after that step (the pruning, the debris cleanup,
    # the pointer's directory fsync) find the new checkpoint in place
    assert 1 <= moved < n_calls
    print(f"\n{n_calls} SIGKILL points in one save(); {moved} of them after the pointer moved")
    # a later complete save clears the debris of the killed ones
    agent = PPO.load(directory, env=TASK)
    agent.save(directory)
    assert leftovers(directory) == [], leftovers(directory)


# ---- SIGTERM / SIGINT -------------------------------------------------------------------------------------
SIGNALLED = (
    """
import json, sys
import torch
torch.set_num_threads(1)
from agents import PPO, BaseCallback
"""
    + TASK_CODE
    + """
class Ready(BaseCallback):
    def _on_step(self):
        if self.n_calls == 2:  # the parent signals after this line (the second iteration of each learn())
            print(json.dumps({"event": "ready", "iteration": self.model.iteration}), flush=True)
        return True

kw = json.loads(sys.argv[2])
agent = PPO("transformer", TASK, checkpoint_dir=sys.argv[1], checkpoint_every=10**6, **kw)
for _ in range(2):  # SIGTERM stops the first learn(), SIGINT the second
    agent.learn(10**9, callback=Ready(), reset_num_timesteps=False)
    print(json.dumps({"event": "returned", "iteration": agent.iteration, "steps": agent.num_timesteps}),
          flush=True)
"""
)


@pytest.mark.expensive
@pytest.mark.timeout(300)
def test_sigterm_and_sigint_finish_the_iteration_checkpoint_and_return(tmp_path):
    directory = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNALLED, str(directory), json.dumps(AGENT_KWARGS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    replay = Replay()

    def expect(event: str) -> dict[str, Any]:
        line = proc.stdout.readline()
        assert line, f"the child died (rc={proc.wait()}): {proc.stderr.read()[-2000:]}"
        msg = json.loads(line)
        assert msg["event"] == event, msg
        return msg

    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            ready = expect("ready")
            proc.send_signal(sig)
            returned = expect("returned")
            # the iteration in flight finished (the signal came after `ready`), then a checkpoint was written
            assert returned["iteration"] >= ready["iteration"]
            assert check_checkpoint(directory, replay) == returned["iteration"]
            assert returned["steps"] == 8 * returned["iteration"]
        _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    # checkpoint_every is huge: only the two signals wrote checkpoints (the newest two are kept)
    assert len(list(directory.glob("ckpt-*"))) == 2


# ---- text-env train --resume ------------------------------------------------------------------------------
TRAIN_ARGS = [
    "train", "--env", "TextEnv/Reverse-L4-v0", "--algo", "ppo", "--sft-steps", "0", "--n-envs", "4",
    "--policy-kwargs", json.dumps(TINY_MODEL), "--kl-coef", "0.05", "--seed", "3", "--checkpoint-every", "1",
    "--total-timesteps", "400", "--eval-episodes", "1", "--no-progress",
]  # fmt: skip


def test_cli_train_ppo_with_a_group_baseline(tmp_path, capsys):
    args = [*TRAIN_ARGS, "--k", "2", "--out", str(tmp_path)]
    args[args.index("--total-timesteps") + 1] = "40"
    assert cli_main(args) == 0
    agent = PPO.load(tmp_path)
    assert agent.k == 2 and agent.hparams["k"] == 2
    assert "trained" in capsys.readouterr().out
    assert cli_main([*TRAIN_ARGS, "--algo", "a2c", "--k", "2", "--out", str(tmp_path / "a2c")]) == 2
    assert "--k applies to ppo and rloo" in capsys.readouterr().err
    assert not (tmp_path / "a2c").exists()


def final_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    ckpt = latest_checkpoint(directory)
    return read_json(ckpt / "state.json"), load_policy(ckpt / "policy").state_dict()


@pytest.mark.expensive
@pytest.mark.timeout(600)
def test_cli_train_killed_midway_and_resumed_ends_with_the_same_weights(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", *TRAIN_ARGS, "--out", str(killed)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not (killed / "latest.json").exists():  # the first checkpoint: learn() is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert "trained" in stdout
    stopped_at, _ = final_state(killed)

    assert cli_main([*TRAIN_ARGS, "--out", str(whole)]) == 0
    want, want_weights = final_state(whole)
    assert stopped_at["iteration"] < want["iteration"] // 2, "the run was not interrupted midway"

    assert cli_main([*TRAIN_ARGS, "--out", str(killed), "--resume"]) == 0
    got, got_weights = final_state(killed)
    assert (got["iteration"], got["num_timesteps"]) == (want["iteration"], want["num_timesteps"])
    assert got["kl_coef_value"] == want["kl_coef_value"]
    assert want_weights.keys() == got_weights.keys()
    assert all(torch.equal(want_weights[k], got_weights[k]) for k in want_weights)
    # and the optimizer state too (the next update would differ otherwise)
    a, b = PPO.load(whole), PPO.load(killed)
    assert digest(a) == digest(b)
