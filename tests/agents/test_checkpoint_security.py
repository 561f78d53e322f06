"""Agent checkpoints under attack and misuse (issue 13): nothing read from a checkpoint is imported, every
file is verified, non-finite updates are skipped and never saved, loads stay inside the run, a callable reward
is recorded by name, logs survive resumes, and one run directory has one writer.

An attacker who edits a file can also rewrite the manifest, so the rules that matter most are checked with a
*re-hashed* checkpoint too (:func:`rehash`): the manifest catches accidents and naive tampering, the rules
catch the rest.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import PPO, RLOO
from agents.checkpoint import LOCK_NAME, NonFiniteUpdateError, RunLock, latest_checkpoint
from agents.cli import main as cli_main
from text_env.persistence import read_safetensors, write_manifest, write_safetensors
from text_env.tasks.base import Task

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}
KW = dict(n_envs=8, seed=0, device="cpu", policy_kwargs=TINY)


def _task() -> Task:
    rows = [
        {"prompt": p, "reference": r, "split": s}
        for s in ("train", "validation", "test")
        for p, r in zip("abcd", "dcba", strict=True)
    ]
    return Task.from_examples(rows, name="one-step", max_new_tokens=1)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A PPO run on a registered id (so the env is recorded) with a KL reference, saved once."""
    run = tmp_path_factory.mktemp("sec") / "run"
    agent = PPO("transformer", "TextEnv/Reverse-L4-v0", kl_coef=0.1, **KW)
    agent.learn(16)
    agent.save(run)
    return run


@pytest.fixture
def run(saved_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    return out


def ckpt_of(run: Path) -> Path:
    return latest_checkpoint(run)


def rehash(ckpt: Path) -> None:
    """Rewrite every manifest under ``ckpt`` to match what is there now (what a careful attacker does)."""
    for sub in ("policy", "reference"):
        d = ckpt / sub
        if (d / "manifest.json").exists():
            m = json.loads((d / "manifest.json").read_text())
            write_manifest(d, m["kind"], m["format_version"])
    m = json.loads((ckpt / "manifest.json").read_text())
    write_manifest(ckpt, m["kind"], m["format_version"])


def edit_state(ckpt: Path, fn) -> None:
    path = ckpt / "state.json"
    state = json.loads(path.read_text())
    fn(state)
    path.write_text(json.dumps(state))


# ---- 1. code execution from a checkpoint -------------------------------------------------------------------
PAYLOAD = """
import pathlib
pathlib.Path(__file__).with_name("PWNED").write_text("ran")
def fn(prompts, completions, refs):
    return [0.0] * len(completions)
"""


@pytest.fixture
def payload_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "payload_mod.py").write_text(PAYLOAD)
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))  # as `python -m` or an interactive session would have it
    yield cwd
    sys.modules.pop("payload_mod", None)


@pytest.mark.parametrize("rehashed", [False, True])
@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["config"]["env_kwargs"].update(reward="payload_mod:fn"),
        lambda s: s["config"]["env_kwargs"].update(reward={"payload_mod:fn": 1.0}),
        lambda s: s.update(env="payload_mod:TextEnv/Reverse-L4-v0"),
    ],
    ids=["reward", "weighted-reward", "env"],
)
def test_load_never_imports_what_a_checkpoint_names(run, payload_cwd, edit, rehashed) -> None:
    ckpt = ckpt_of(run)
    edit_state(ckpt, edit)
    if rehashed:
        rehash(ckpt)
    with pytest.raises(ValueError, match=r"state\.json|manifest"):
        PPO.load(run)
    assert cli_main(["eval", str(run), "--episodes", "2", "--samples", "0"]) == 2
    assert not (payload_cwd / "PWNED").exists()


def test_trust_code_never_imports_from_the_working_directory(run, payload_cwd) -> None:
    ckpt = ckpt_of(run)
    edit_state(
        ckpt, lambda s: s["config"]["env_kwargs"].update(reward={"__not_serialized__": "payload_mod.fn"})
    )
    rehash(ckpt)
    with pytest.raises(ValueError, match=r"passed again|pass it again"):
        PPO.load(run)
    with pytest.raises(ModuleNotFoundError, match="payload_mod"):
        PPO.load(run, trust_code=True)
    assert not (payload_cwd / "PWNED").exists()


# ---- 3. integrity ------------------------------------------------------------------------------------------
def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _zero_file(path: Path) -> None:
    path.write_bytes(b"")


INTEGRITY = [
    ("policy/model.safetensors", _flip),
    ("reference/model.safetensors", _flip),
    ("optimizer.safetensors", _flip),
    ("optimizer.safetensors", _zero_file),
    ("state.json", lambda p: edit_state(p.parent, lambda s: s.update(iteration=s["iteration"] + 1))),
    ("state.json", lambda p: edit_state(p.parent, lambda s: s["config"].update(seed=7))),
    ("state.json", lambda p: edit_state(p.parent, lambda s: s.update(env="TextEnv/Copy-L4-v0"))),
    ("state.json", lambda p: edit_state(p.parent, lambda s: s.update(has_reference=False))),
    ("policy/tokenizer.json", lambda p: p.write_text(p.read_text().replace("abc", "bac", 1))),
]


@pytest.mark.parametrize(
    ("name", "damage"), INTEGRITY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INTEGRITY)]
)
def test_any_change_to_a_checkpoint_is_caught_naming_the_file(run, name, damage) -> None:
    ckpt = ckpt_of(run)
    damage(ckpt / name)
    with pytest.raises(ValueError, match=Path(name).name.replace(".", r"\.")):
        PPO.load(run)


def test_files_swapped_between_two_runs_are_caught(run, tmp_path) -> None:
    other = tmp_path / "other"
    PPO("transformer", "TextEnv/Reverse-L4-v0", kl_coef=0.1, **{**KW, "seed": 1}).learn(16).save(other)
    a, b = ckpt_of(run), ckpt_of(other)
    shutil.copy(b / "policy" / "model.safetensors", a / "policy" / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        PPO.load(run)


def test_a_checkpoint_without_a_manifest_names_the_migration(run) -> None:
    (ckpt_of(run) / "manifest.json").unlink()
    with pytest.raises(ValueError, match="text-env migrate"):
        PPO.load(run)


def test_a_checkpoint_of_the_old_format_migrates_and_resumes_exactly(tmp_path) -> None:
    """A run saved by text-env 0.1 (no manifests, ``hparams``): refused, then migrated, then it loads with the
    weights it had."""
    fixture = Path(__file__).parent / "data" / "old_format_run"
    run = tmp_path / "old"
    shutil.copytree(fixture, run)
    with pytest.raises(ValueError, match="migrate"):
        PPO.load(run)
    assert cli_main(["migrate", str(run)]) == 0
    agent = PPO.load(run, device="cpu")
    old = read_safetensors(fixture / "ckpt-00000001" / "policy" / "model.safetensors")
    assert all(torch.equal(agent.policy.state_dict()[k], v) for k, v in old.items())
    assert agent.iteration == 1 and agent.config.kl_coef == 0.1
    agent.learn(8, reset_num_timesteps=False)


# ---- 4. non-finite updates ---------------------------------------------------------------------------------
def test_non_finite_state_values_are_refused_at_load(run) -> None:
    ckpt = ckpt_of(run)
    edit_state(ckpt, lambda s: s.update(kl_coef_value=float("nan")))
    rehash(ckpt)
    with pytest.raises(ValueError, match="kl_coef_value"):
        PPO.load(run)


def test_nan_adam_moments_are_refused_at_load(run) -> None:
    ckpt = ckpt_of(run)
    path = ckpt / "optimizer.safetensors"
    tensors = read_safetensors(path)
    key = next(k for k in sorted(tensors) if k.endswith("exp_avg_sq"))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    write_safetensors(path, tensors)
    rehash(ckpt)
    with pytest.raises(ValueError, match=r"optimizer\.safetensors.*non-finite"):
        PPO.load(run)


def test_fp16_weights_are_refused_for_training() -> None:
    from agents.policies import TransformerPolicy

    policy = TransformerPolicy.for_task(_task(), **TINY).half()
    with pytest.raises(ValueError, match="float32 master weights"):
        PPO(policy, _task(), n_envs=8, device="cpu")


def test_a_huge_reward_skips_updates_then_stops_and_never_saves_them(tmp_path) -> None:
    """A finite but huge reward (1e20 per character of length) makes the value loss overflow: each such update
    is skipped and counted, training stops after max_nonfinite_updates, and the last good checkpoint stays the
    one latest.json names."""
    out = tmp_path / "run"
    agent = PPO("transformer", _task(), n_epochs=1, batch_size=8, max_nonfinite_updates=2, **KW)
    agent.learn(8)
    good = agent.save(out)
    huge = {"exact_match": 1.0, "length:1": 1e20}
    agent = PPO.load(out, env=_task(), env_kwargs={"reward": huge}, checkpoint_dir=out, checkpoint_every=1)
    weights = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    with pytest.raises(NonFiniteUpdateError, match="in a row"):
        agent.learn(64, reset_num_timesteps=False)
    assert agent.skipped_updates == 2
    assert all(torch.equal(v, agent.policy.state_dict()[k]) for k, v in weights.items())  # nothing applied
    assert all(math.isfinite(float(p.detach().abs().max())) for p in agent.policy.parameters())
    # the checkpoints written while updates were skipped hold the last good weights
    latest = read_safetensors(latest_checkpoint(out) / "policy" / "model.safetensors")
    first = read_safetensors(good / "policy" / "model.safetensors")
    assert latest.keys() == first.keys() and all(torch.equal(latest[k], first[k]) for k in first)


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path) -> None:
    agent = PPO("transformer", _task(), **KW)
    agent.learn(8)
    agent.save(tmp_path / "run")
    with torch.no_grad():
        next(agent.policy.parameters())[0] = float("inf")
    agent.iteration += 1
    with pytest.raises(ValueError, match="non-finite"):
        agent.save(tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-00000001"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME, "ckpt-00000001", "latest.json"]


# ---- 5. loads stay inside the run --------------------------------------------------------------------------
def test_a_symlinked_checkpoint_directory_is_refused(run, tmp_path) -> None:
    ckpt = ckpt_of(run)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(ckpt), elsewhere)
    ckpt.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="symlink"):
        PPO.load(run)


def test_a_symlinked_policy_directory_is_refused(run, tmp_path) -> None:
    ckpt = ckpt_of(run)
    elsewhere = tmp_path / "policy-elsewhere"
    shutil.move(str(ckpt / "policy"), elsewhere)
    (ckpt / "policy").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="symlink"):
        PPO.load(run)


# ---- 13. a callable reward ---------------------------------------------------------------------------------
def _length_reward(prompts, completions, refs):
    return [float(len(c)) for c in completions]


def test_a_lambda_reward_checkpoints_and_must_be_passed_again(tmp_path, caplog) -> None:
    reward = lambda prompts, completions, refs: [float(len(c)) for c in completions]  # noqa: E731
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        agent = PPO("transformer", _task(), checkpoint_dir=out, checkpoint_every=1,
                    env_kwargs={"reward": reward}, **KW)  # fmt: skip
    assert "resuming needs it passed again" in caplog.text
    agent.learn(16)  # checkpoints at every iteration: the reward is recorded by name, not serialised
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["config"]["env_kwargs"]["reward"] == {
        "__not_serialized__": f"{__name__}.{reward.__qualname__}"
    }
    with pytest.raises(ValueError, match="recorded by name"):
        PPO.load(out, env=_task())
    again = PPO.load(out, env=_task(), env_kwargs={"reward": reward})
    assert again.iteration == agent.iteration


def test_trust_code_imports_a_recorded_function_from_its_installed_module(tmp_path) -> None:
    out = tmp_path / "run"
    PPO("transformer", _task(), env_kwargs={"reward": _length_reward}, **KW).learn(8).save(out)
    again = PPO.load(out, env=_task(), trust_code=True)
    assert again.config.env_kwargs["reward"] is _length_reward


# ---- 14. the progress log survives resumes -----------------------------------------------------------------
def test_progress_csv_is_appended_on_resume(tmp_path) -> None:
    out = tmp_path / "run"
    agent = PPO("transformer", _task(), log_dir=out / "logs", checkpoint_dir=out, checkpoint_every=1, **KW)
    agent.learn(24)
    lines = (out / "logs" / "progress.csv").read_text().splitlines()
    assert len(lines) == 4
    resumed = PPO.load(out, env=_task(), log_dir=out / "logs", checkpoint_dir=out)
    resumed.learn(16, reset_num_timesteps=False)
    after = (out / "logs" / "progress.csv").read_text().splitlines()
    assert after[: len(lines)] == lines and len(after) == 6
    steps = [int(float(r.split(",")[0])) for r in after[1:]]
    assert steps == [8, 16, 24, 32, 40]


def test_memory_keeps_only_the_latest_rows(tmp_path) -> None:
    from agents.logger import TrainLogger

    log = TrainLogger(tmp_path, tensorboard=False, max_rows=3)
    for i in range(10):
        log.write(i, {"x": float(i)})
    assert [r["global_step"] for r in log.rows] == [7, 8, 9]
    assert len((tmp_path / "progress.csv").read_text().splitlines()) == 11


# ---- 15/16. one run, one writer ----------------------------------------------------------------------------
TRAIN = [
    "train", "--env", "TextEnv/Reverse-L4-v0", "--sft-steps", "0", "--n-envs", "4", "--total-timesteps", "8",
    "--policy-kwargs", json.dumps(TINY), "--no-progress", "--eval-episodes", "2", "--device", "cpu",
]  # fmt: skip


def test_train_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main([*TRAIN, "--out", str(out)]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    assert cli_main([*TRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing deleted
    assert cli_main([*TRAIN, "--out", str(out), "--overwrite"]) == 0


def test_resume_refuses_a_changed_identity_and_says_what_it_overrides(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main([*TRAIN, "--out", str(out)]) == 0
    for flag, value in (
        ("--seed", "3"),
        ("--n-envs", "8"),
        ("--env", "TextEnv/Copy-L4-v0"),
        ("--algo", "rloo"),
    ):
        args = [*TRAIN, "--out", str(out), "--resume"]
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
        assert cli_main(args) == 2, flag
        assert "resume" in capsys.readouterr().err
    assert cli_main([*TRAIN, "--out", str(out), "--resume", "--learning-rate", "1e-4"]) == 0
    assert "overriding learning_rate" in capsys.readouterr().out


def test_every_checkpoint_is_written_once_and_a_finished_resume_adds_nothing(tmp_path) -> None:
    out = tmp_path / "run"
    args = [*TRAIN, "--out", str(out), "--checkpoint-every", "1", "--total-timesteps", "16"]
    assert cli_main(args) == 0
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt-"))
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert names[-1] == f"ckpt-{state['iteration']:08d}"  # the final save did not repeat the periodic one
    assert all(re.fullmatch(r"ckpt-\d{8}", n) for n in names), names
    assert cli_main([*args, "--resume"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt-")) == names


LOCK_HOLDER = """
import sys
from agents.checkpoint import RunLock
lock = RunLock.for_directory(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_fails_at_once(tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        agent = PPO("transformer", _task(), checkpoint_dir=out, **KW)
        with pytest.raises(RuntimeError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            agent.learn(8)
        with pytest.raises(RuntimeError, match="in use"):
            agent.save(out)
        assert cli_main([*TRAIN, "--out", str(out)]) == 2
    finally:
        holder.communicate(b"", timeout=60)
    agent.learn(8)  # the holder is gone: the lock is free
    assert RunLock.for_directory(out).held is False


def test_rloo_state_records_its_config(tmp_path) -> None:
    agent = RLOO("transformer", _task(), k=4, **KW)
    agent.learn(8)
    ckpt = agent.save(tmp_path / "run")
    state = json.loads((ckpt / "state.json").read_text())
    assert (
        state["config"]["k"] == 4 and state["config_class"] == "RLOOConfig" and state["format_version"] == 2
    )
    assert np.isclose(RLOO.load(tmp_path / "run", env=_task()).config.learning_rate, 3e-5)
