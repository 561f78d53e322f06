"""``examples/eval_language.py`` builds a table one task at a time without losing rows: a run of some tasks
keeps the rows an earlier run at the same settings wrote, and refuses (leaving the file as it was) a file
made at other settings or not made by the script."""

from __future__ import annotations

import json

import pytest


def _meta(**over):
    meta = {
        "policy": "smollm2", "n_eval": 200, "split": "test", "scale": 1.0, "rl_seed": 0,
        "tasks": ["sentiment"], "minutes": 41.0, "command": "python examples/eval_language.py",
    }  # fmt: skip
    return meta | over


def test_a_later_run_keeps_the_earlier_tasks_rows(tmp_path, load_eval_language):
    module = load_eval_language()
    path = tmp_path / "language_eval_smollm2.json"
    path.write_text(json.dumps({"meta": _meta(), "sentiment": {"results": "S"}, "qa": {"results": "old"}}))
    log = {"qa": {"results": "new"}, "summarize": {"results": "M"}}
    meta = _meta(tasks=["qa", "summarize"], minutes=50.0, command="python examples/eval_language.py --x")
    kept = module.merge_previous(path, log, meta)
    assert kept == ["sentiment"]  # qa was run again: the new row wins
    assert log["sentiment"] == {"results": "S"} and log["qa"] == {"results": "new"}
    assert meta["minutes"] == pytest.approx(91.0)
    assert [r["tasks"] for r in meta["runs"]] == [["sentiment"], ["qa", "summarize"]]
    assert meta["tasks"] == ["summarize", "qa", "sentiment"]  # in the table's order
    # the runs' record survives a third run
    path.write_text(json.dumps({"meta": meta, **log}))
    log3, meta3 = {"translate": {"results": "T"}}, _meta(tasks=["translate"], minutes=9.0)
    assert module.merge_previous(path, log3, meta3) == ["summarize", "qa", "sentiment"]
    assert meta3["minutes"] == pytest.approx(100.0) and len(meta3["runs"]) == 3


def test_no_earlier_file_is_a_single_run(tmp_path, load_eval_language):
    module = load_eval_language()
    log, meta = {"qa": {}}, _meta(tasks=["qa"], minutes=3.0)
    assert module.merge_previous(tmp_path / "none.json", log, meta) == []
    assert list(log) == ["qa"] and meta["minutes"] == 3.0 and len(meta["runs"]) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (json.dumps({"meta": _meta(n_eval=50), "sentiment": {}}), "other settings"),
        (json.dumps({"meta": _meta(policy="english-small"), "sentiment": {}}), "other settings"),
        ("{not json", "not a results file"),
        (json.dumps({"sentiment": {}}), "not a results file"),
    ],
)
def test_a_foreign_or_mismatched_file_is_refused_and_left_alone(
    tmp_path, load_eval_language, content, message
):
    module = load_eval_language()
    path = tmp_path / "language_eval_smollm2.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        module.merge_previous(path, {"qa": {}}, _meta(tasks=["qa"]))
    assert str(path) in str(err.value)
    assert path.read_text() == content
