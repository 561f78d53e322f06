"""Issue 16, item 6: the `text-env` command — --env-kwargs on train (validated, recorded, used by SFT and
eval), --version, eval's messages, SFT's progress bar and the budget note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.checkpoint import read_checkpoint_state
from agents.cli import main as cli_main

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}
ROWS = [{"prompt": f"echo {w}=", "reference": w} for w in ["ab", "ba", "aab", "bba", "abab", "b", "a", "bb"]]


def _task_file(tmp_path: Path) -> Path:
    path = tmp_path / "echo.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _train(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train", "--sft-steps", "0", "--n-envs", "4", "--total-timesteps", "8", "--policy-kwargs",
        json.dumps(TINY), "--no-progress", "--eval-episodes", "2", "--device", "cpu", *extra,
    ]  # fmt: skip


def test_train_env_kwargs_are_recorded_and_used_by_sft_and_eval(tmp_path: Path, capsys) -> None:
    task = _task_file(tmp_path)
    out = tmp_path / "run"
    kwargs = {"task": str(task), "max_new_tokens": 6}
    argv = _train(
        tmp_path, "--env", "TextEnv/Custom-v0", "--env-kwargs", json.dumps(kwargs), "--out", str(out)
    )
    argv[argv.index("--sft-steps") + 1] = "3"
    argv.remove("--no-progress")
    assert cli_main(argv) == 0
    printed = capsys.readouterr()
    assert "SFT: 3 steps" in printed.out
    assert "sft echo" in printed.err  # the demonstrations came from the task file (its stem names the task)
    _, state = read_checkpoint_state(out)
    assert state["env"] == "TextEnv/Custom-v0" and state["config"]["env_kwargs"] == kwargs
    assert cli_main(["eval", str(out), "--episodes", "3", "--samples", "2"]) == 0
    report = capsys.readouterr().out
    assert "TextEnv/Custom-v0" in report and "echo " in report  # prompts from the task file, not Reverse


@pytest.mark.parametrize(
    ("env_kwargs", "message"),
    [
        ('["task"]', "expected a JSON object"),
        ("{task: 1}", "JSON"),
        ('{"max_new_tokens": 0}', "max_new_tokens must be a positive int, got 0"),
    ],
)
def test_train_env_kwargs_are_validated(tmp_path: Path, capsys, env_kwargs: str, message: str) -> None:
    argv = _train(
        tmp_path, "--env", "TextEnv/Reverse-L4-v0", "--env-kwargs", env_kwargs, "--out", str(tmp_path)
    )
    try:
        code = cli_main(argv)
    except SystemExit as e:  # argparse's own refusal of a malformed flag value
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_custom_v0_without_a_task_says_so(tmp_path: Path, capsys) -> None:
    assert cli_main(_train(tmp_path, "--env", "TextEnv/Custom-v0", "--out", str(tmp_path / "r"))) == 2
    assert "needs task=" in capsys.readouterr().err


def test_version_and_eval_messages(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("text-env ")
    assert cli_main(["eval", str(tmp_path / "nope")]) == 2
    assert "nope' does not exist; expected a run directory or a saved policy" in capsys.readouterr().err


def test_budget_note_sft_bar_and_perplexity_without_reference(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = _train(tmp_path, "--env", "TextEnv/Reverse-L4-v0", "--out", str(out), "--kl-coef", "0")
    argv[argv.index("--sft-steps") + 1] = "4"
    argv.remove("--no-progress")
    assert cli_main(argv) == 0
    printed = capsys.readouterr()
    assert "sft reverse" in printed.err and "4/4" in printed.err  # SFT's tqdm bar
    # one iteration (4 whole episodes) is more than the 8-token budget: said, with the unit
    assert (
        "(the budget asked for 8; training stops at the first iteration boundary at or past it" in printed.out
    )
    assert cli_main(["eval", str(out), "--episodes", "2", "--samples", "0"]) == 0
    report = capsys.readouterr().out
    assert "perplexity     -       (needs a reference model" in report and "nan" not in report
