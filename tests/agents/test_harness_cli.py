"""The dataclass → argparse helper of agents/harness/cli.py, on a config with every supported field type:
one flag per field with its docstring and default in --help, bool --flag/--no-flag, optionals, lists,
Literal choices, JSON fields parsed and type-checked (never evaluated), and the reproduce argv round trip."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from agents.config import (
    add_dataclass_arguments,
    check_json_type,
    dataclass_from_args,
    dataclass_to_argv,
    field_docstrings,
)


@dataclass
class Base:
    lr: float = 3e-4
    """Learning rate of Adam (100% of it at step 0)."""


@dataclass
class Config(Base):
    """A learner's config, as the lead's will look."""

    total_timesteps: int = field(default=1000, metadata={"flag": "steps"})
    """Env steps to train for."""
    env: str = "TextEnv/Copy-L4-v0"
    """The env id."""
    cuda: bool = True
    """Use the GPU when there is one."""
    target_kl: float | None = None
    """Stop an update early past this KL (none: never)."""
    tags: list[str] = field(default_factory=list, metadata={"nargs": "*"})
    """Free-form tags."""
    sizes: Sequence[int] = (64, 64)
    """Hidden layer widths."""
    mode: Literal["fast", "exact"] = "fast"
    """Which kernel."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra policy kwargs as JSON."""
    schedule: dict[str, list[float]] = field(default_factory=dict)
    """Named piecewise schedules as JSON."""
    out: Path = Path("runs")
    """Output directory."""
    secret: str = field(default="", metadata={"cli": False})
    """Not on the command line."""


def parse(*argv: str, defaults: dict | None = None) -> Config:
    p = argparse.ArgumentParser(prog="learn")
    add_dataclass_arguments(p, Config, defaults=defaults)
    return dataclass_from_args(Config, p.parse_args(list(argv)), defaults=defaults)


def test_docstrings_are_read_from_the_class_and_its_bases() -> None:
    docs = field_docstrings(Config)
    assert docs["lr"] == "Learning rate of Adam (100% of it at step 0)."
    assert docs["target_kl"] == "Stop an update early past this KL (none: never)."
    assert "secret" in docs and set(docs) >= {f for f in Config.__dataclass_fields__ if f != "secret"}


def test_defaults_and_every_type() -> None:
    assert parse() == Config(sizes=[64, 64])  # a Sequence field arrives as a list, given or not
    cfg = parse(
        "--lr", "0.1", "--steps", "50", "--no-cuda", "--target-kl", "0.02", "--tags", "a", "b",
        "--sizes", "8", "16", "32", "--mode", "exact", "--policy-kwargs", '{"n_layer": 1}',
        "--schedule", '{"lr": [1.0, 0.5]}', "--out", "x/y",
    )  # fmt: skip
    assert cfg == Config(
        lr=0.1, total_timesteps=50, cuda=False, target_kl=0.02, tags=["a", "b"], sizes=[8, 16, 32],
        mode="exact", policy_kwargs={"n_layer": 1}, schedule={"lr": [1.0, 0.5]}, out=Path("x/y"),
    )  # fmt: skip
    assert isinstance(cfg.out, Path) and parse("--cuda").cuda is True
    assert parse("--target-kl", "none").target_kl is None and parse("--tags").tags == []
    assert parse(defaults={"total_timesteps": 7}).total_timesteps == 7  # caller's defaults


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "1.5"], "invalid int value: '1.5'"),
        (["--mode", "slow"], "invalid choice: 'slow'"),
        (["--policy-kwargs", "[1]"], "--policy-kwargs: expected a JSON object, got [1]"),
        (["--schedule", '{"lr": [1, "x"]}'], '--schedule["lr"][1]: expected float, got "x"'),
        (["--schedule", '{"lr": 1}'], '--schedule["lr"]: expected a JSON array, got 1'),
        (["--policy-kwargs", "__import__('os')"], "not valid JSON"),
        (["--secret", "x"], "unrecognized arguments: --secret"),
    ],
)
def test_bad_values_are_clear_argparse_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_each_docstring_and_default(capsys) -> None:
    p = argparse.ArgumentParser(prog="learn")
    add_dataclass_arguments(p, Config, defaults={"env": "TextEnv/Reverse-v0"})
    p.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr FLOAT Learning rate of Adam (100% of it at step 0). (default: 0.0003)" in text
    assert "--steps INT Env steps to train for. (default: 1000)" in text
    assert "--cuda, --no-cuda Use the GPU when there is one. (default: True)" in text
    assert "--target-kl FLOAT|none" in text and "(default: none)" in text
    assert "(default: TextEnv/Reverse-v0)" in text  # the caller's default, not the class's
    assert "{fast,exact}" in text and "--secret" not in text


def test_argv_round_trip() -> None:
    cfg = Config(
        lr=0.5, cuda=False, target_kl=0.1, tags=["x y", "z"], mode="exact", policy_kwargs={"a": [1, 2]},
        out=Path("o"), sizes=[64, 64],
    )  # fmt: skip
    argv = dataclass_to_argv(cfg)
    assert argv[:4] == ["--lr", "0.5", "--no-cuda", "--target-kl"]
    assert "--steps" not in argv  # at its default
    assert parse(*argv) == cfg
    assert dataclass_to_argv(Config()) == [] and dataclass_to_argv(Config(sizes=[64, 64])) == []


def test_check_json_type() -> None:
    check_json_type({"a": {"b": 1}}, dict[str, dict[str, Any]])
    check_json_type([1, 2.5], list[float])
    check_json_type(None, int | None)
    with pytest.raises(ValueError, match=r"x\[0\]: expected int, got true"):
        check_json_type([True], list[int], "x")
    with pytest.raises(ValueError, match="expected one of"):
        check_json_type("c", Literal["a", "b"])


def test_only_dataclasses_are_accepted() -> None:
    with pytest.raises(TypeError, match="expected a dataclass type"):
        add_dataclass_arguments(argparse.ArgumentParser(), dict)
