"""Safe loading (issue 8, item 3): nothing in the package can execute a pickle or evaluate a string, and a
tampered file gives a clear ``ValueError`` naming it.

- A static scan of every ``.py`` file under ``text_env/`` and ``agents/`` (by syntax tree, so ``.eval()``
  on a module or a word in a docstring is not a hit) for pickle-based modules, ``torch.load`` without
  ``weights_only=True``, ``torch.save``, ``numpy.load(allow_pickle=True)``, ``eval``/``exec``/``compile``/
  ``__import__``, ``yaml.load``; and every dynamic import is one of the reviewed ``module:attr`` resolvers.
  The scanner is itself tested on snippets that must be flagged.
- Checkpoint, policy and task files that still parse but were edited (wrong types, missing fields, tensors
  of the wrong shape, a pointer that leads out of the run directory) raise ``ValueError`` naming the file.
  Truncated files are covered next to their loaders (tests/agents/test_algorithms.py, test_policies.py,
  tests/text_env/test_tokenizers.py, tests/text_env/rewards/test_rewards_learned.py).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agents import PPO
from agents.cli import main as cli_main
from agents.policies import TransformerPolicy
from agents.policies.transformer import read_safetensors, write_safetensors
from text_env.persistence import write_manifest
from text_env.tasks.base import Task

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("text_env", "agents")

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
BANNED_BUILTINS = {"eval", "exec", "compile", "__import__"}
# every place that imports a module named at run time, each reviewed: it resolves an explicit
# "package.module:attr" spec (never evaluates it) or a fixed module name from a table in the code
DYNAMIC_IMPORTS = {
    ("agents/harness/specs.py", "resolve_external"),  # --algos package.module:Class (regex-checked name)
    ("agents/harness/report.py", "machine_info"),  # __version__ of a fixed list of packages
    ("agents/checkpoint.py", "import_by_name"),  # a recorded callable, only with trust_code, never from CWD
    ("agents/cli.py", "build_parser"),  # the fixed _COMMANDS table
    ("agents/sb3.py", "resolve_sb3_class"),  # the fixed SB3_LIBRARIES table
    ("agents/sb3.py", "_algorithm_classes"),  # the fixed SB3_LIBRARIES table (the listing of algorithms)
    ("text_env/rewards/__init__.py", "__getattr__"),  # the fixed _LAZY table
    ("text_env/rewards/registry.py", "_import_reward"),  # reward spec package.module:attr
    ("text_env/rewards/registry.py", "_ensure_builtins"),  # the fixed builtin module
    ("text_env/rewards/shaping.py", "_import_callable"),  # fluency scorer package.module:function
}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe-deserialization or code-evaluation site in ``source``, as ``"line: what"`` strings.

    Dynamic imports (``importlib.import_module``) are reported as ``"line: import_module in <function>"``
    so that the caller can compare them with the reviewed list.
    """
    tree = ast.parse(source, filename)
    out: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module it stands for (import numpy as np -> np: numpy)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLE_MODULES:
                    out.append(f"{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in PICKLE_MODULES:
                out.append(f"{node.lineno}: from {node.module} import ...")
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                if full in ("torch.load", "torch.save", "numpy.load", "yaml.load", "yaml.unsafe_load"):
                    out.append(f"{node.lineno}: from {node.module} import {a.name}")
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        if isinstance(node.func, ast.Name) and node.func.id in BANNED_BUILTINS:
            out.append(f"{node.lineno}: {node.func.id}()")
        elif full.split(".")[0] in PICKLE_MODULES:
            out.append(f"{node.lineno}: {full}()")
        elif full == "torch.load" and not _is_true(_kw(node, "weights_only")):
            out.append(f"{node.lineno}: torch.load without weights_only=True")
        elif full == "torch.save":
            out.append(f"{node.lineno}: torch.save (writes a pickle)")
        elif full in ("numpy.load", "numpy.save", "numpy.savez") and _is_true(_kw(node, "allow_pickle")):
            out.append(f"{node.lineno}: {full}(allow_pickle=True)")
        elif full in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            out.append(f"{node.lineno}: {full}")
        elif full in ("importlib.import_module", "builtins.__import__"):
            fn = node
            while fn in parents and not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fn = parents[fn]
            where = fn.name if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else "<module>"
            out.append(f"{node.lineno}: import_module in {where}")
        for k in node.keywords:  # an explicit opt-out anywhere, e.g. transformers' from_pretrained
            if k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is False:
                out.append(f"{node.lineno}: weights_only=False")
    return out


def package_files() -> list[Path]:
    files = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    assert len(files) > 30, files  # the scan really sees the package
    return files


# ---- the scanner can fail ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("snippet", "finding"),
    [
        ("import pickle", "import pickle"),
        ("import cloudpickle as cp\ncp.loads(b'')", "import cloudpickle"),
        ("from pickle import loads", "from pickle import"),
        ("import joblib", "import joblib"),
        ("import torch\ntorch.load('x.pt')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('x.pt', weights_only=False)", "torch.load without weights_only=True"),
        ("import torch as T\nT.load(f, map_location='cpu')", "torch.load without weights_only=True"),
        ("from torch import load", "from torch import load"),
        ("import torch\ntorch.save(obj, 'x.pt')", "torch.save"),
        ("import numpy as np\nnp.load('x.npy', allow_pickle=True)", "numpy.load(allow_pickle=True)"),
        ("eval(user_text)", "eval()"),
        ("exec(code, {})", "exec()"),
        ("__import__(name)", "__import__()"),
        ("import yaml\nyaml.load(s)", "yaml.load"),
        ("m.from_pretrained(p, weights_only=False)", "weights_only=False"),
        ("import importlib\ndef f(s):\n    return importlib.import_module(s)", "import_module in f"),
    ],
)
def test_the_scanner_flags_unsafe_code(snippet, finding):
    found = unsafe_uses(snippet)
    assert any(finding in f for f in found), found


@pytest.mark.parametrize(
    "snippet",
    [
        "model.eval()",  # a module's eval mode, not the builtin
        "import torch\ntorch.load('x.pt', weights_only=True)",
        "import numpy as np\nnp.load('x.npy')",  # allow_pickle defaults to False
        "from safetensors.torch import load\nload(data)",
        '"""Never pickle: we eval() nothing."""',
        "import json\njson.loads(s)",
    ],
)
def test_the_scanner_passes_safe_code(snippet):
    assert unsafe_uses(snippet) == []


# ---- the package -------------------------------------------------------------------------------------------
def test_no_pickle_torch_load_or_eval_anywhere_in_the_package():
    findings = []
    for path in package_files():
        rel = path.relative_to(ROOT).as_posix()
        for f in unsafe_uses(path.read_text(encoding="utf-8"), rel):
            if " import_module in " not in f:
                findings.append(f"{rel}:{f}")
    assert findings == [], "unsafe deserialization or evaluation:\n" + "\n".join(findings)


def test_every_dynamic_import_is_a_reviewed_module_attr_resolver():
    sites = set()
    for path in package_files():
        rel = path.relative_to(ROOT).as_posix()
        for f in unsafe_uses(path.read_text(encoding="utf-8"), rel):
            m = re.match(r"\d+: import_module in (\S+)", f)
            if m:
                sites.add((rel, m.group(1)))
    unreviewed = sites - DYNAMIC_IMPORTS
    assert not unreviewed, (
        f"new dynamic imports {sorted(unreviewed)}: resolve only explicit 'package.module:attr' specs (never "
        "eval), then add the site to DYNAMIC_IMPORTS"
    )


def test_saved_agents_hold_only_safetensors_and_json(tmp_path):
    agent = PPO("transformer", _task(), n_envs=8, device="cpu", kl_coef=0.1, policy_kwargs=TINY)
    agent.learn(8)
    ckpt = agent.save(tmp_path / "run")
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert {p.suffix for p in files} == {".json", ".safetensors"}, files
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".json":
            json.loads(data)
        else:  # safetensors: an 8-byte header length, then a JSON header; no pickle opcodes up front
            n = int.from_bytes(data[:8], "little")
            json.loads(data[8 : 8 + n])
        assert not data.startswith(b"\x80"), f"{p} looks like a pickle"
    assert (ckpt / "policy" / "model.safetensors").exists()


# ---- tampered files ----------------------------------------------------------------------------------------
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def _task() -> Task:
    rows = [
        {"prompt": p, "reference": r, "split": s}
        for s in ("train", "validation", "test")
        for p, r in zip("abcd", "dcba", strict=True)
    ]
    return Task.from_examples(rows, name="one-step", max_new_tokens=1)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A PPO run (with a KL reference) after two iterations, saved once for every tampering case."""
    run = tmp_path_factory.mktemp("saved") / "run"
    agent = PPO("transformer", _task(), n_envs=8, device="cpu", kl_coef=0.1, policy_kwargs=TINY)
    agent.learn(16)
    agent.save(run)
    return run


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _edit_tensors(path: Path, fn: Callable[[dict], None]) -> None:
    tensors = read_safetensors(path)
    fn(tensors)
    write_safetensors(path, tensors)


def _first(tensors: dict, suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


# (case, file it damages relative to the checkpoint, the damage)
TAMPERING = [
    ("state without counters", "state.json", lambda p: _edit_json(p, lambda d: d.pop("num_timesteps"))),
    ("state counter not a number", "state.json", lambda p: _edit_json(p, lambda d: d.update(iteration="x"))),
    ("state config not a dict", "state.json", lambda p: _edit_json(p, lambda d: d.update(config=[1]))),
    ("state unknown hparam", "state.json", lambda p: _edit_json(p, lambda d: d["config"].update(bogus=1))),
    ("state a list", "state.json", lambda p: p.write_text("[1, 2]")),
    (
        "optimizer.json without groups",
        "optimizer.json",
        lambda p: _edit_json(p, lambda d: d.pop("param_groups")),
    ),
    ("optimizer.json a list", "optimizer.json", lambda p: p.write_text("[]")),
    (
        "optimizer tensor of the wrong shape",
        "optimizer.safetensors",
        lambda p: _edit_tensors(p, lambda t: t.update({_first(t, ".exp_avg"): torch.zeros(3, 3)})),
    ),
    (
        "optimizer tensor for a parameter that does not exist",
        "optimizer.safetensors",
        lambda p: _edit_tensors(p, lambda t: t.update({"999.exp_avg": torch.zeros(2)})),
    ),
    (
        "optimizer tensor with a malformed key",
        "optimizer.safetensors",
        lambda p: _edit_tensors(p, lambda t: t.update({"nodot": torch.zeros(1)})),
    ),
    (
        "optimizer.safetensors replaced by junk",
        "optimizer.safetensors",
        lambda p: p.write_bytes(b"\x80\x04\x95" + b"\x00" * (p.stat().st_size - 3)),  # a pickle's first bytes
    ),
    (
        "policy weights of another shape",
        "policy/model.safetensors",
        lambda p: _edit_tensors(p, lambda t: t.update({_first(t, "weight"): torch.zeros(2, 2)})),
    ),
    (
        "policy weights with a missing tensor",
        "policy/model.safetensors",
        lambda p: _edit_tensors(p, lambda t: t.pop(_first(t, "weight"))),
    ),
    (
        "policy temperature not a number",
        "policy/config.json",
        lambda p: _edit_json(p, lambda d: d.update(temperature="hot")),
    ),
    (
        "policy format_version not an int",
        "policy/config.json",
        lambda p: _edit_json(p, lambda d: d.update(format_version="2")),
    ),
    (
        "policy of an unknown class",
        "policy/config.json",
        lambda p: _edit_json(p, lambda d: d.update(policy_class="os.system")),
    ),
    (
        "reference config with an unknown field",
        "reference/config.json",
        lambda p: _edit_json(p, lambda d: d["config"].update(n_layers=3)),
    ),
    (
        "policy tokenizer larger than the model",
        "policy/tokenizer.json",
        lambda p: p.write_text(json.dumps({"type": "char", "alphabet": "abcdefghijklmnopqrstuvwxyz"})),
    ),
    ("pointer to nothing", "../latest.json", lambda p: p.write_text('{"checkpoint": ""}')),
    ("pointer to the run directory", "../latest.json", lambda p: p.write_text('{"checkpoint": "."}')),
    ("pointer out of the run", "../latest.json", lambda p: p.write_text('{"checkpoint": "../run"}')),
    ("pointer not a string", "../latest.json", lambda p: p.write_text('{"checkpoint": 5}')),
]


@pytest.mark.parametrize(("case", "name", "damage"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampered_checkpoint_raises_value_error_naming_the_file(saved_run, tmp_path, case, name, damage):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    (ckpt,) = run.glob("ckpt-*")
    target = (ckpt / name).resolve()
    damage(target)
    with pytest.raises(ValueError) as info:
        PPO.load(run, env=_task())
    msg = str(info.value)
    # the file, or (for a pair of files read together, or a pointer) its directory, by full path
    assert str(target) in msg or str(target.parent) in msg, msg
    assert target.name in msg or target.parent.name in msg, msg


def test_the_cli_reports_a_tampered_checkpoint_in_one_line(saved_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    (ckpt,) = run.glob("ckpt-*")
    _edit_json(ckpt / "state.json", lambda d: d.pop("iteration"))
    assert cli_main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state.json" in err and "Traceback" not in err, err


def test_a_loaded_policy_with_nan_weights_fails_clearly_when_sampling(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    (ckpt,) = run.glob("ckpt-*")
    _edit_tensors(
        ckpt / "policy" / "model.safetensors", lambda t: t.update({k: v * float("nan") for k, v in t.items()})
    )
    with pytest.raises(ValueError, match="manifest"):  # the file no longer matches the manifest
        PPO.load(run, env=_task())
    for d in (ckpt / "policy", ckpt):  # as if the NaN weights had been saved with a valid manifest
        if (d / "manifest.json").exists():
            m = json.loads((d / "manifest.json").read_text())
            write_manifest(d, m["kind"], m["format_version"])
    with pytest.raises(ValueError, match="finite"):  # refused at load, or when sampling
        PPO.load(run, env=_task()).learn(8, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="not finite"):
        TransformerPolicy.load(ckpt / "policy").sample(torch.full((1, 8), float("nan")))


TASK_TAMPERING = [
    ("settings without a name", "task.json", lambda p: _edit_json(p, lambda d: d.pop("name"))),
    ("settings with an unknown key", "task.json", lambda p: _edit_json(p, lambda d: d.update(bogus=1))),
    (
        "settings with a bad budget",
        "task.json",
        lambda p: _edit_json(p, lambda d: d.update(max_new_tokens="x")),
    ),
    ("settings a list", "task.json", lambda p: p.write_text("[]")),
    ("settings not UTF-8", "task.json", lambda p: p.write_bytes(b"\xff\xfe\x00")),
    ("an emptied split", "train.jsonl", lambda p: p.write_text("")),
    ("a truncated split", "test.jsonl", lambda p: p.write_text(p.read_text()[:12])),
    ("a tokenizer of another kind", "tokenizer.json", lambda p: p.write_text('{"type": "wordpiece"}')),
]


@pytest.mark.parametrize(("case", "name", "damage"), TASK_TAMPERING, ids=[t[0] for t in TASK_TAMPERING])
def test_a_tampered_saved_task_raises_value_error_naming_it(tmp_path, case, name, damage):
    d = tmp_path / "task"
    _task().save(d)
    damage(d / name)
    with pytest.raises(ValueError) as info:
        Task.load(d)
    assert str(d / name) in str(info.value) or str(d) in str(info.value), str(info.value)
