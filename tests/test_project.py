"""The project's promises about itself: CI runs the README's test command, pins hold, lint stays clean."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(
        i for i, line in enumerate(lines) if line.startswith("# ---") and "README's test command" in line
    )
    return lines[marker + 1].strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _ci_test_command()
    assert "pytest" in command
    assert command in (ROOT / "README.md").read_text(), "README and .ci/run must show the same test command"


def test_ci_fails_when_no_test_runs() -> None:
    # pytest exits 5 when it collects nothing; the command is an && chain under `set -e`, so that fails CI
    text = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
    assert "|| true" not in _ci_test_command()


def test_torch_is_pinned_to_the_cpu_build_and_ranged_in_pyproject() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_req = re.search(r'"torch([^"]*)"', pyproject)
    assert torch_req and "<" in torch_req.group(1), "an open torch range would pull a multi-GB CUDA build"


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed (pip install -e '.[dev]')",
)
def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    lint = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout[-3000:]


@pytest.mark.expensive
@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -e '.[dev]')"
)
def test_mypy_is_clean(tmp_path: Path) -> None:
    """The type checker over text_env/ and agents/ (its settings: [tool.mypy] in pyproject.toml)."""
    check = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-1000:]
    assert "no issues found" in check.stdout, check.stdout[-1000:]


def test_every_dependency_and_extra_is_pinned_in_constraints() -> None:
    """Ranges in pyproject.toml, the tested pins in constraints.txt — for every extra too (a package without a
    pin installs whatever is newest, untested)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        re.split(r"[=<>!~\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    requirements = [
        *project["dependencies"],
        *(r for reqs in project["optional-dependencies"].values() for r in reqs),
    ]
    names = {re.split(r"[=<>!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    names -= {"text-env"}  # an extra may name the project's own other extras
    assert not names - pins, f"not pinned in constraints.txt: {sorted(names - pins)}"


def test_the_agents_package_is_ours_and_the_conflict_is_documented() -> None:
    """openai-agents also installs a top-level ``agents`` (issue 16, item 7): the README says so, and a
    clobbered install is caught here rather than by a confusing import error deep in a test."""
    import agents

    assert Path(agents.__file__).resolve().parent == ROOT / "agents", agents.__file__
    assert {"PPO", "RLOO", "sft", "ALGORITHMS"} <= set(dir(agents))
    readme = (ROOT / "README.md").read_text()
    assert "openai-agents" in readme and "separate virtual environments" in readme


@pytest.mark.parametrize(
    "module",
    [
        "agents.advantages", "agents.callbacks", "agents.checkpoint", "agents.config", "agents.kl",
        "agents.logger", "agents.harness.cli", "text_env.persistence", "agents.harness.check",
        "text_env.rewards.dense",
    ],
)  # fmt: skip
def test_the_examples_in_docstrings_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
