"""The benchmark harness: external algorithms end to end, resume, validation before any run, statistics
checked against hand-computed values, outputs, and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agents import harness as bm
from agents.cli import build_parser, main
from agents.config import field_docstrings
from agents.harness.cli import cli_defaults

HERE = Path(__file__).parent
COPY = "TextEnv/Copy-L4-v0"


@pytest.fixture
def external(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/agents/external_algo.py importable as ``external_algo`` (tests/ is not a package)."""
    monkeypatch.syspath_prepend(str(HERE))


def tiny_config(out: Path, **kw) -> bm.BenchmarkConfig:
    base = dict(envs=[COPY], algos=["external_algo:CopyPrompt"], seeds=2, budget=60, eval_every=20, n_eval=8)
    base.update(kw)
    return bm.BenchmarkConfig(out=out, reps=200, **base)


# ---- end to end -------------------------------------------------------------------------------------------
def test_external_algorithms_end_to_end(tmp_path: Path, external: None) -> None:
    cfg = tiny_config(tmp_path, algos=["external_algo:CopyPrompt", "external_algo:make_copy"])
    result = bm.run_benchmark(cfg)

    assert sorted(result.executed) == sorted(
        f"TextEnv-Copy-L4-v0__external_algo-{a}__{s}" for a in ("CopyPrompt", "make_copy") for s in (0, 1)
    )
    assert result.failed == [] and result.skipped == []
    by = {(r.algo, r.seed): r for r in result.runs}
    cls_run = by["external_algo:CopyPrompt", 0]
    # CopyPrompt.learn never stops by itself: the harness stopped it at exactly the budget
    assert cls_run.steps == 60
    assert [p["target"] for p in cls_run.curve] == [0, 20, 40, 60]
    assert cls_run.final["success_rate"] == 1.0  # the scripted copier solves every test prompt
    fn_run = by["external_algo:make_copy", 1]
    assert [p["target"] for p in fn_run.curve] == [60]  # function form: final point only,
    assert fn_run.steps is None and fn_run.steps_per_second is None  # and its steps are unknown
    assert fn_run.curve[0]["step"] is None

    summary = result.summary
    assert summary["aggregate"]["success"]["external_algo:CopyPrompt"]["iqm"] == {
        "point": 1.0,
        "lo": 1.0,
        "hi": 1.0,
    }
    assert (
        summary["poi"]["success"]["external_algo:CopyPrompt>external_algo:make_copy"]["point"] == 0.5
    )  # ties

    saved = json.loads(
        (tmp_path / "runs" / "TextEnv-Copy-L4-v0__external_algo-CopyPrompt__1.json").read_text()
    )
    assert saved["status"] == "done" and saved["key"]["budget"] == 60
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 2 * 4 + 2 * 1  # every curve point of every run
    assert json.loads((tmp_path / "results.json").read_text())["config"]["budget"] == 60
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if "external_algo:make_copy | 2" in line)
    assert row.rstrip(" |").endswith("| — | —"), row  # tokens and tok/s: unknown, not the budget
    assert "external_algo:CopyPrompt" in report and "Probability of improvement" in report
    assert "![curves.png](curves.png)" in report and "60 env steps" in report
    for png in ("curves.png", "aggregate_iqm.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tabular_learner_and_our_scratch_agent(tmp_path: Path, external: None) -> None:
    """A real external learner and one of ours (tiny batch) side by side; ours never exceeds the budget."""
    cfg = tiny_config(
        tmp_path,
        envs=["TextEnv/Arithmetic-D1-v0"],
        algos=["external_algo:TabularMC", "ours:reinforce-scratch"],
        seeds=1,
        budget=80,
        algo_kwargs={"ours:reinforce-scratch": {"n_envs": 4}},
    )
    result = bm.run_benchmark(cfg)
    assert result.failed == []
    ours = next(r for r in result.runs if r.algo == "ours:reinforce-scratch")
    assert 80 - 4 * 3 < ours.steps <= 80  # stops before a batch (≤ 4 episodes × 3 tokens) could cross it
    assert ours.sft is None and ours.hparams["n_envs"] == 4
    assert ours.curve[-1]["target"] == 80


def test_sft_warm_start_is_reported_separately(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_ENV_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(
        tmp_path / "out",
        envs=["TextEnv/Arithmetic-D1-v0"],
        algos=["ours:rloo"],
        seeds=1,
        budget=64,
        sft_steps=3,
        algo_kwargs={"ours:rloo": {"n_envs": 4, "k": 2}},
    )
    run = bm.run_benchmark(cfg).runs[0]
    sft = run.sft
    assert sft["steps"] == 3 and sft["demonstrations"] == 3 * 64
    # every Arithmetic-D1 answer is 1-2 digits + EOS: 2-3 target tokens per demonstration
    assert 2 * 3 * 64 <= sft["demo_tokens"] <= 3 * 3 * 64
    assert run.steps <= 64  # the SFT tokens are not in the RL count


@pytest.mark.expensive
def test_worker_processes(tmp_path: Path, external: None) -> None:
    """Runs spread over 2 processes (forkserver/spawn) find the user's module via the parent's sys.path."""
    result = bm.run_benchmark(tiny_config(tmp_path, workers=2, budget=20, eval_every=20))
    assert result.failed == [] and len(result.executed) == 2
    assert {r.pid for r in result.runs} != {os.getpid()}


# ---- resume -----------------------------------------------------------------------------------------------
def test_resume_skips_finished_runs(tmp_path: Path, external: None) -> None:
    cfg = tiny_config(tmp_path, algos=["external_algo:TabularMC"], budget=30, eval_every=30, n_eval=4)
    first = bm.run_benchmark(cfg)
    assert len(first.executed) == 2 and first.skipped == []

    again = bm.run_benchmark(cfg)
    assert again.executed == [] and len(again.skipped) == 2
    assert again.runs == first.runs  # the same results, read back from disk

    (tmp_path / "runs" / "TextEnv-Copy-L4-v0__external_algo-TabularMC__1.json").unlink()
    third = bm.run_benchmark(cfg)
    assert third.executed == ["TextEnv-Copy-L4-v0__external_algo-TabularMC__1"] and len(third.skipped) == 1

    changed = bm.run_benchmark(dataclass_replace(cfg, budget=40))  # other settings: nothing is reused
    assert len(changed.executed) == 2 and changed.skipped == []


def dataclass_replace(cfg: bm.BenchmarkConfig, **kw) -> bm.BenchmarkConfig:
    return dataclasses.replace(cfg, **kw)


# ---- validation before any run starts ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus", "bad algorithm spec 'bogus'"),
        ("ours:dqn", "no built-in agent 'dqn'"),
        ("sb3:Nope", "has no algorithm 'Nope'"),
        ("sb3x:PPO", "cannot import module 'sb3x'"),
        ("external_algo:Missing", "has no attribute 'Missing'"),
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("external_algo:np", "neither a class nor a function"),
        ("bad module:x", "bad algorithm spec"),
    ],
)
def test_bad_algorithm_spec_fails_before_any_run(
    tmp_path: Path, external: None, spec: str, message: str
) -> None:
    cfg = tiny_config(tmp_path, algos=["external_algo:CopyPrompt", spec])
    with pytest.raises(ValueError, match=message):
        bm.run_benchmark(cfg)
    assert not (tmp_path / "runs").exists()  # the valid algorithm listed first did not run either


def test_bad_env_id_fails_before_any_run(tmp_path: Path, external: None) -> None:
    cfg = tiny_config(tmp_path, envs=[COPY, "TextEnv/Nope-v0"])
    with pytest.raises(ValueError, match="bad env id 'TextEnv/Nope-v0'"):
        bm.run_benchmark(cfg)
    assert not (tmp_path / "runs").exists()


def test_non_text_env_is_rejected(tmp_path: Path, external: None) -> None:
    with pytest.raises(ValueError, match="'CartPole-v1' is not a text-env environment"):
        bm.run_benchmark(tiny_config(tmp_path, envs=["CartPole-v1"]))


@pytest.mark.parametrize(
    ("field", "value"), [("budget", 0), ("seeds", -1), ("eval_every", 0), ("workers", 0), ("sft_steps", -2)]
)
def test_bad_settings(tmp_path: Path, external: None, field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        bm.run_benchmark(tiny_config(tmp_path, **{field: value}))


def test_function_algorithm_must_take_three_arguments(tmp_path: Path, external: None) -> None:
    import external_algo

    external_algo.two_args = lambda env_id, budget: None
    try:
        with pytest.raises(ValueError, match=r"must accept \(env_id, budget, seed\)"):
            bm.parse_algo_spec("external_algo:two_args")
    finally:
        del external_algo.two_args


# ---- statistics against hand-computed values --------------------------------------------------------------
def fake_run(env: str, algo: str, seed: int, success: float, ret: float | None = None) -> bm.RunResult:
    ret = success if ret is None else ret
    curve = [
        {"target": 0, "step": 0, "success_rate": 0.0, "mean_return": 0.0},
        {"target": 10, "step": 10, "success_rate": success, "mean_return": ret},
    ]
    return bm.RunResult(
        name=f"{env}__{algo}__{seed}", env=env, algo=algo, seed=seed, budget=10, key={}, steps=10,
        final={"success_rate": success, "mean_return": ret}, curve=curve, train_seconds=1.0, eval_seconds=0.1,
        wall_seconds=1.1, steps_per_second=10.0, hparams={}, sft=None, pid=0,
    )  # fmt: skip


def hand_runs() -> list[bm.RunResult]:
    x_a, y_a = [0.0, 0.2, 0.4, 1.0], [0.1, 0.1, 0.1, 0.1]
    x_b, y_b = [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]
    runs = []
    for env, xs, ys in (("A", x_a, y_a), ("B", x_b, y_b)):
        for seed, (x, y) in enumerate(zip(xs, ys)):
            runs += [fake_run(env, "x", seed, x), fake_run(env, "y", seed, y)]
    return runs


def test_summary_matches_hand_computed_values() -> None:
    s = bm.summarize(hand_runs(), ["A", "B"], ["x", "y"], reps=500)
    xa = s["per_env"]["A"]["x"]["success"]
    assert xa["mean"]["point"] == pytest.approx(0.4)  # (0 + .2 + .4 + 1) / 4
    assert xa["iqm"]["point"] == pytest.approx(0.3)  # drop 0 and 1: mean(.2, .4)
    assert 0.0 <= xa["mean"]["lo"] <= 0.4 <= xa["mean"]["hi"] <= 1.0
    assert s["per_env"]["A"]["y"]["success"]["iqm"] == {
        "point": pytest.approx(0.1),
        "lo": pytest.approx(0.1),
        "hi": pytest.approx(0.1),
    }

    agg = s["aggregate"]["success"]
    # x over the suite: [0, .2, .4, 1, 1, 1, 1, 1] → IQM drops two at each end: mean(.4, 1, 1, 1) = .85
    assert agg["x"]["iqm"]["point"] == pytest.approx(0.85)
    assert agg["x"]["mean"]["point"] == pytest.approx((0.4 + 1.0) / 2)  # mean of the per-env means
    # y: [.1, .1, .1, .1, 0, 0, 0, 1] → sorted [0, 0, 0, .1, .1, .1, .1, 1] → mean(0, .1, .1, .1) = .075
    assert agg["y"]["iqm"]["point"] == pytest.approx(0.075)

    # P(x > y): env A 12/16 (0 loses to .1, the rest win); env B (4·3 wins + 4·1 ties / 2) / 16 = .875
    poi = s["poi"]["success"]
    assert poi["x>y"]["point"] == pytest.approx((0.75 + 0.875) / 2)
    assert poi["y>x"]["point"] == pytest.approx(1 - (0.75 + 0.875) / 2)
    assert poi["x>y"]["lo"] <= poi["x>y"]["point"] <= poi["x>y"]["hi"]

    curve = s["curves"]["A"]["x"]
    assert [p["target"] for p in curve] == [0, 10]
    assert curve[1]["mean"] == pytest.approx(0.4) and curve[0]["lo"] == curve[0]["hi"] == 0.0

    table = bm.format_table(s)
    assert "0.30 [" in table and "(suite)" in table
    assert "0.81 [" in bm.format_poi(s)


def test_summary_leaves_out_incomplete_algorithms_from_the_aggregate() -> None:
    runs = [r for r in hand_runs() if not (r.algo == "y" and r.env == "B" and r.seed == 3)]
    s = bm.summarize(runs, ["A", "B"], ["x", "y"], reps=100)
    assert set(s["aggregate"]["success"]) == {"x"}
    assert s["per_env"]["B"]["y"]["n"] == 3
    assert any("y has unequal or missing runs" in n for n in s["notes"])
    assert "success" not in s["poi"]  # one complete algorithm: nothing to compare


def test_eval_schedule_grid() -> None:
    calls = []
    sched = bm.EvalSchedule(100, 30, lambda: calls.append(1) or {"success_rate": 1.0, "mean_return": 1.0})
    assert sched.targets == [0, 30, 60, 90, 100]
    sched.maybe_eval(0)
    sched.maybe_eval(65)  # one evaluation covers the two grid points passed
    sched.finish(97)
    assert [(p["target"], p["step"]) for p in sched.curve] == [
        (0, 0),
        (30, 65),
        (60, 65),
        (90, 97),
        (100, 97),
    ]
    assert len(calls) == 3


# ---- CLI --------------------------------------------------------------------------------------------------
def _config(argv: list[str]) -> bm.BenchmarkConfig:
    args = build_parser().parse_args(["benchmark", *argv])
    return bm.dataclass_from_args(bm.BenchmarkConfig, args, defaults=cli_defaults(args.quick))


def test_cli_parses_defaults_and_quick() -> None:
    cfg = _config([])
    assert tuple(cfg.envs) == bm.DEFAULT_ENVS and tuple(cfg.algos) == bm.DEFAULT_ALGOS
    assert (cfg.seeds, cfg.budget, cfg.out) == (3, bm.DEFAULT_BUDGET, "results/benchmark")
    assert cfg.workers == (os.cpu_count() or 1)
    assert bm.benchmark_command(cfg) == "text-env benchmark"  # every field at the command line's default

    quick = _config(["--quick", "--seeds", "1", "--workers", "2"])
    assert tuple(quick.envs) == bm.QUICK["envs"] and quick.budget == bm.QUICK["budget"]
    assert (quick.seeds, quick.workers, quick.out) == (1, 2, "results/benchmark-quick")

    cfg = _config(
        ["--algos", "ours:ppo", "sb3:DQN", "--envs", COPY, "--budget", "500", "--eval-every", "none",
         "--env-kwargs", '{"max_new_tokens": 6}', "--algo-kwargs", '{"sb3:DQN": {"learning_starts": 10}}']
    )  # fmt: skip
    assert cfg.algos == ["ours:ppo", "sb3:DQN"] and cfg.envs == [COPY] and cfg.budget == 500
    assert cfg.eval_every is None and cfg.eval_interval == 500 // 8
    assert cfg.env_kwargs == {"max_new_tokens": 6} and cfg.algo_kwargs == {"sb3:DQN": {"learning_starts": 10}}
    command = bm.benchmark_command(cfg)
    assert "--budget 500" in command and "--eval-every none" in command
    # the reproduce command parses back to the same configuration
    assert _config(shlex.split(command)[2:]) == cfg
    assert _config(shlex.split(bm.benchmark_command(quick))[2:]) == dataclasses.replace(quick, out=quick.out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env-kwargs", "[1, 2]"], "--env-kwargs: expected a JSON object, got [1, 2]"),
        (["--algo-kwargs", '{"sb3:PPO": 5}'], '--algo-kwargs["sb3:PPO"]: expected a JSON object, got 5'),
        (["--env-kwargs", "{bad"], "not valid JSON"),
        (["--seeds", "two"], "invalid int value: 'two'"),
    ],
)
def test_cli_rejects_bad_flag_values(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["benchmark", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_shows_every_field_with_its_docstring_and_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    docs = field_docstrings(bm.BenchmarkConfig)
    for f in dataclasses.fields(bm.BenchmarkConfig):
        if f.name == "command":
            continue
        assert " ".join(docs[f.name].split()) in text, f.name
    assert "--eval-episodes INT" in text and "(default: 100)" in text and "(default: 8192)" in text


def test_cli_reports_a_bad_spec_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["benchmark", "--algos", "ours:ppo", "nope", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad algorithm spec 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_cli_runs_and_prints_the_report_path(
    tmp_path: Path, external: None, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        ["benchmark", "--algos", "external_algo:make_copy", "--envs", COPY, "--seeds", "1", "--budget", "10",
         "--eval-episodes", "4", "--workers", "1", "--reps", "100", "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert f"report: {tmp_path / 'report.md'}" in out and "external_algo:make_copy" in out
    assert np.isclose(
        json.loads((tmp_path / "results.json").read_text())["runs"][0]["final"]["success_rate"], 1.0
    )


def test_run_result_round_trips_through_its_json_and_rejects_malformed_files() -> None:
    run = fake_run("A", "x", 0, 0.5)
    data = run.to_dict()
    assert list(data)[:6] == ["name", "env", "algo", "seed", "budget", "status"] and data["status"] == "done"
    assert bm.RunResult.from_dict(json.loads(json.dumps(data))) == run
    with pytest.raises(ValueError, match=r"missing keys \['curve'\]"):
        bm.RunResult.from_dict({k: v for k, v in data.items() if k != "curve"}, "runs/x.json")
    with pytest.raises(ValueError, match="status is 'failed'"):
        bm.RunResult.from_dict({**data, "status": "failed"})


# ---- where a user's module is looked up (issue 13, item 2) ------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
# modules the harness imports lazily, after the CLI has started: each writes a marker file if it is ever
# imported from the working directory instead of from the installed packages
SHADOWS = ("matplotlib", "stable_baselines3", "sb3_contrib")


def _plant_shadows(cwd: Path, names: tuple[str, ...] = SHADOWS) -> Path:
    marker = cwd / "shadowed.txt"
    for name in names:
        source = (
            f"import pathlib\nwith pathlib.Path({str(marker)!r}).open('a') as f:\n"
            f"    f.write({name + ' '!r})\n"
        )
        (cwd / f"{name}.py").write_text(source)
    return marker


def _text_env(argv: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the CLI as the ``text-env`` console script does: a launcher outside ``cwd`` (so ``sys.path[0]``
    is the launcher's directory, not the working directory) and only the repository on PYTHONPATH."""
    launcher = tmp_path / "bin" / "text_env_launcher.py"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text("import sys\nfrom agents.cli import main\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(PYTHONPATH=str(REPO), TEXT_ENV_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(launcher), "benchmark", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


TINY_CLI = ["--seeds", "1", "--budget", "16", "--eval-every", "16", "--eval-episodes", "2", "--workers", "1",
            "--reps", "20", "--sft-steps", "1"]  # fmt: skip


@pytest.mark.expensive
def test_a_module_in_the_working_directory_never_shadows_what_the_harness_imports(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    marker = _plant_shadows(cwd)
    proc = _text_env(
        ["--algos", "ours:ppo", "--envs", "TextEnv/Arithmetic-D1-v0", *TINY_CLI, "--out", str(cwd / "out"),
         "--algo-kwargs", '{"ours:ppo": {"n_envs": 4}}'],
        cwd, tmp_path,
    )  # fmt: skip
    assert not marker.exists(), f"imported from the working directory: {marker.read_text().split()}"
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "out" / "curves.png").exists()  # the real matplotlib drew it


@pytest.mark.expensive
def test_a_users_module_is_found_in_the_working_directory_or_import_path_without_shadowing(
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    marker = _plant_shadows(cwd)
    (cwd / "my_copy_algo.py").write_text((HERE / "external_algo.py").read_text())
    elsewhere = tmp_path / "algos"
    elsewhere.mkdir()
    (elsewhere / "other_algo.py").write_text((HERE / "external_algo.py").read_text())
    proc = _text_env(
        ["--algos", "my_copy_algo:make_copy", "other_algo:CopyPrompt", "--import-path", ".", str(elsewhere),
         "--envs", COPY, *TINY_CLI, "--out", str(cwd / "out")],
        cwd, tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), f"imported from the working directory: {marker.read_text().split()}"
    runs = json.loads((cwd / "out" / "results.json").read_text())["runs"]
    assert {r["algo"]: r["final"]["success_rate"] for r in runs} == {
        "my_copy_algo:make_copy": 1.0,
        "other_algo:CopyPrompt": 1.0,
    }

    # without --import-path the other directory is not searched
    proc = _text_env(["--algos", "other_algo:CopyPrompt", "--envs", COPY, *TINY_CLI], cwd, tmp_path)
    assert proc.returncode == 2 and "cannot import module 'other_algo'" in proc.stderr


def test_resolve_external_appends_the_import_path_only_while_importing(tmp_path: Path) -> None:
    from agents.harness.specs import resolve_external

    (tmp_path / "harness_probe_algo.py").write_text(
        "import sys\nPATH_AT_IMPORT = list(sys.path)\ndef make(env_id, budget, seed):\n    return None\n"
    )
    before = list(sys.path)
    try:
        fn = resolve_external("harness_probe_algo:make", import_path=[str(tmp_path)])
        assert callable(fn)
        at_import = sys.modules["harness_probe_algo"].PATH_AT_IMPORT
        assert at_import[-1] == str(tmp_path) and at_import[:-1] == before  # appended, never first
        assert sys.path == before  # and gone again
    finally:
        sys.modules.pop("harness_probe_algo", None)
    with pytest.raises(ValueError, match="cannot import module 'harness_probe_algo'"):
        resolve_external("harness_probe_algo:make")  # not on the path without import_path


# ---- fairness (issue 16, item 2) --------------------------------------------------------------------------
@pytest.mark.expensive
def test_sb3_and_sb3_contrib_run_to_completion_with_every_update_their_budget_paid_for(
    tmp_path: Path,
) -> None:
    """PPO (n_steps 128) at a budget of 512 makes 4 updates, not 3: stopping SB3 at the budget used to skip
    the update of its last rollout. TRPO gets past its first update (double backward through the
    extractor's attention), ARS runs (its policy takes no extractor), QR-DQN trains every train_freq steps."""
    algo_kwargs = {
        "sb3:PPO": {"n_steps": 128, "batch_size": 64, "n_epochs": 1},
        "sb3:A2C": {"n_steps": 16},
        # the harness's default extractor is "flatten": ask for the attention TRPO must differentiate twice
        "sb3_contrib:TRPO": {"n_steps": 128, "batch_size": 128, "policy_kwargs": {"encoder": "transformer"}},
        "sb3_contrib:ARS": {"n_delta": 2},
        "sb3_contrib:QRDQN": {"learning_starts": 0, "train_freq": 4, "batch_size": 16},
    }
    cfg = tiny_config(
        tmp_path,
        algos=list(algo_kwargs),
        algo_kwargs=algo_kwargs,
        seeds=1,
        budget=512,
        eval_every=256,
        n_eval=2,
    )
    result = bm.run_benchmark(cfg)
    assert result.failed == []
    by = {r.algo: r for r in result.runs}
    assert set(by) == set(algo_kwargs)
    assert by["sb3:PPO"].updates == 512 // 128  # n_epochs 1: one update per rollout
    assert by["sb3:A2C"].updates == 512 // 16
    assert by["sb3_contrib:TRPO"].updates == 512 // 128
    assert by["sb3_contrib:QRDQN"].updates == 512 // 4
    assert by["sb3_contrib:ARS"].updates >= 1
    assert by["sb3:PPO"].hparams["policy_kwargs"] == {"encoder": "flatten"}  # the harness's default
    assert by["sb3_contrib:TRPO"].hparams["policy_kwargs"] == {"encoder": "transformer"}  # overridden
    for r in result.runs:
        assert r.steps <= 512, r.name  # the budget still holds
        if r.algo != "sb3_contrib:ARS":  # ARS stops inside a candidate's episode
            assert r.steps == 512, r.name


def test_a_partial_last_rollout_is_cut_at_the_budget(tmp_path: Path) -> None:
    """A budget that is not a multiple of the rollout: the steps stop at the budget, and the rollout that
    would cross it is collected up to the budget but not trained on."""
    kwargs = {"sb3:A2C": {"n_steps": 8}}
    cfg = tiny_config(
        tmp_path, algos=["sb3:A2C"], algo_kwargs=kwargs, seeds=1, budget=60, eval_every=60, n_eval=2
    )
    (run,) = bm.run_benchmark(cfg).runs
    assert run.steps == 60 and run.updates == 60 // 8


def test_one_seed_gives_one_note_with_the_real_names(caplog: pytest.LogCaptureFixture) -> None:
    runs = [r for r in hand_runs() if r.seed == 0]
    with caplog.at_level(logging.WARNING):
        s = bm.summarize(runs, ["A", "B"], ["x", "y"], reps=50)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "single run (seed) for every env and algorithm (x, y)" in warnings[0], warnings
    assert "'c'" not in warnings[0] and warnings[0] in s["notes"]

    runs = [r for r in hand_runs() if r.seed == 0 or r.algo == "x"]  # only y has one seed
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        s = bm.summarize(runs, ["A", "B"], ["x", "y"], reps=50)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "single run (seed) for y on A, y on B:" in warnings[0], warnings


# ---- scale-out: shards, aggregate, Ray (issue 17) ---------------------------------------------------------
def _plan(**kw) -> list[bm.RunSpec]:
    cfg = bm.BenchmarkConfig(**{"envs": ["E1", "E2"], "seeds": 3, **kw})
    specs = [
        bm.AlgoSpec("ours:ppo", "ours", "ppo"),
        bm.AlgoSpec("ours:rloo", "ours", "rloo"),
        bm.AlgoSpec("ours:ppo-scratch", "ours", "ppo", scratch=True),
        bm.AlgoSpec("sb3:PPO", "sb3", "sb3:PPO"),
    ]
    return bm.plan_runs(dataclasses.replace(cfg, algos=[s.spec for s in specs]), specs)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 30])
def test_shards_partition_the_plan(n: int) -> None:
    plan = _plan()
    shards = [bm.shard_runs(plan, (i, n)) for i in range(n)]
    names = [r.name for shard in shards for r in shard]
    assert sorted(names) == sorted(r.name for r in plan) and len(set(names)) == len(plan)  # a partition
    assert shards == [bm.shard_runs(_plan(), (i, n)) for i in range(n)]  # deterministic
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 2  # balanced (a unit is at most ours:ppo + ours:rloo)
    for shard in shards:  # the runs that share a warm start share a shard
        for r in shard:
            if r.algo == "ours:ppo":
                twin = next(
                    p for p in plan if p.algo == "ours:rloo" and (p.env_id, p.seed) == (r.env_id, r.seed)
                )
                assert twin in shard


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "-1/3", "1/0"])
def test_bad_shard_is_rejected(tmp_path: Path, external: None, bad: str) -> None:
    with pytest.raises(ValueError, match="shard must be 'I/N'"):
        bm.run_benchmark(tiny_config(tmp_path, shard=bad))


def _scores(out: Path) -> tuple[str, dict]:
    """results.csv and the summary without its timings: what must not depend on where a run ran."""
    summary = json.loads((out / "results.json").read_text())["summary"]
    for rows in summary["per_env"].values():
        for row in rows.values():
            row.pop("train_seconds"), row.pop("steps_per_second")
    return (out / "results.csv").read_text(), summary


@pytest.mark.expensive
def test_aggregate_over_shards_equals_one_unsharded_run(
    tmp_path: Path, external: None, capsys: pytest.CaptureFixture
) -> None:
    argv = ["benchmark", "--algos", "external_algo:TabularMC", "ours:reinforce-scratch", "--envs", COPY,
            "--seeds", "2", "--budget", "40", "--eval-every", "20", "--eval-episodes", "4", "--workers", "1",
            "--reps", "100", "--algo-kwargs", '{"ours:reinforce-scratch": {"n_envs": 4}}']  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0

    sharded = str(tmp_path / "sharded")
    assert main([*argv, "--out", sharded, "--shard", "0/3"]) == 0
    assert "--aggregate" in capsys.readouterr().out  # it says how to aggregate
    assert not (tmp_path / "sharded" / "results.csv").exists()  # a shard writes no summary
    assert main([*argv, "--out", sharded, "--aggregate"]) == 1  # two shards still missing
    err = capsys.readouterr().err
    assert "planned run(s) have no result" in err and "TabularMC__1" in err
    assert "MISSING" in (tmp_path / "sharded" / "report.md").read_text()
    for i in (1, 2):
        assert main([*argv, "--out", sharded, "--shard", f"{i}/3"]) == 0
    assert main([*argv, "--out", sharded, "--aggregate"]) == 0
    assert _scores(tmp_path / "sharded") == _scores(tmp_path / "whole")

    runs = json.loads((tmp_path / "sharded" / "results.json").read_text())["runs"]
    assert {r["host"] for r in runs} == {socket.gethostname()}
    assert {r["algo"]: r["device"] for r in runs} == {
        "external_algo:TabularMC": None,
        "ours:reinforce-scratch": "cpu",
    }


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the Ray executor needs ray: pip install 'text-env[ray]'"
)


@needs_ray
@pytest.mark.expensive
def test_ray_gives_the_same_results_as_the_process_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray is started by the harness (a local cluster of 2 CPUs), runs the 2 runs as tasks, and the
    driver writes every file; nothing is imported from the working directory on the workers either (Ray
    puts the driver's working directory first on its workers' sys.path)."""
    import ray

    kw = dict(algos=["external_algo:TabularMC"], budget=40, eval_every=20, n_eval=4, import_path=[str(HERE)])
    bm.run_benchmark(tiny_config(tmp_path / "pool", **kw))
    cwd = tmp_path / "work"
    cwd.mkdir()
    marker = _plant_shadows(cwd, ("numpy", "gymnasium", "torch", *SHADOWS))
    monkeypatch.chdir(cwd)
    on_ray = bm.run_benchmark(tiny_config(tmp_path / "ray", executor="ray", workers=2, **kw))
    assert not marker.exists(), f"imported from the working directory: {marker.read_text().split()}"
    assert on_ray.failed == [] and len(on_ray.executed) == 2
    assert _scores(tmp_path / "ray") == _scores(tmp_path / "pool")
    assert {r.pid for r in on_ray.runs}.isdisjoint({os.getpid()})  # they ran in Ray's workers
    assert all(r.host == socket.gethostname() for r in on_ray.runs)
    assert not ray.is_initialized()  # the harness shut down the cluster it started


@pytest.fixture
def ray_cluster() -> Iterator[None]:
    """A local Ray started by the test (the harness uses it as it is, and leaves it running)."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


@needs_ray
@pytest.mark.expensive
def test_ray_retries_a_run_lost_with_its_worker_and_reports_it_failed_when_retries_run_out(
    tmp_path: Path, ray_cluster: None
) -> None:
    def config(out: str, retries: int) -> bm.BenchmarkConfig:
        kwargs = {"external_algo:crash_once": {"marker": str(tmp_path / f"{out}.crashed")}}
        return tiny_config(
            tmp_path / out, algos=["external_algo:crash_once"], seeds=1, budget=10, n_eval=2, executor="ray",
            max_retries=retries, import_path=[str(HERE)], algo_kwargs=kwargs,
        )  # fmt: skip

    retried = bm.run_benchmark(config("retried", 1))
    assert retried.failed == [] and retried.runs[0].final["success_rate"] == 1.0
    assert (tmp_path / "retried.crashed").exists()  # the first attempt did die

    lost = bm.run_benchmark(config("lost", 0))
    assert lost.runs == [] and len(lost.failed) == 1
    assert "WorkerCrashedError" in lost.failed[0].error, lost.failed[0].error
    assert "FAILED" in (tmp_path / "lost" / "report.md").read_text()
