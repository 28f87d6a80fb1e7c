"""qwend eval: suite loading (built in and --file), the figures, the table and --show."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from qwend import cli
from qwend.errors import EvalFailed
from qwend.evaluation import report, suites
from qwend.evaluation.targets import parse_target

RECORD = {
    "task_id": "Mine/0",
    "prompt": "def f(x):\n",
    "suffix": "",
    "canonical_solution": "    return x + 1\n",
    "test": "def check(c):\n    assert c(1) == 2\n",
    "entry_point": "f",
}


def test_builtin_suites_hold_every_record_and_ship_the_licence() -> None:
    single = suites.builtin_suite("humaneval-single")
    multi = suites.builtin_suite("humaneval-multi")
    assert (single.total, len(single.cases), single.mode) == (1033, 1033, "single")
    assert (multi.total, len(multi.cases), multi.mode) == (5815, 5815, "multi")
    assert all(case.has_tests for case in single.cases + multi.cases)
    assert "MIT License" in suites.license_text()
    with pytest.raises(EvalFailed, match="no built-in suite"):
        suites.builtin_suite("humaneval-everything")


def test_limit_spreads_the_cases_over_every_problem() -> None:
    limited = suites.builtin_suite("humaneval-multi", limit=50)
    assert limited.total == 5815 and len(limited.cases) == 50
    problems = {case.task_id.split("/")[2] for case in limited.cases}
    assert len(problems) > 40  # the first 50 records would cover 2 problems
    assert limited.cases == suites.builtin_suite("humaneval-multi", limit=50).cases
    with pytest.raises(EvalFailed, match="at least 1"):
        suites.builtin_suite("humaneval-single", limit=0)


@pytest.mark.parametrize("name", ["mine.jsonl", "mine.jsonl.gz"])
def test_a_file_suite_in_the_same_format(tmp_path: Path, name: str) -> None:
    text = json.dumps(RECORD) + "\n\n" + json.dumps({**RECORD, "test": "", "task_id": "Mine/1"})
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    suite = suites.file_suite(path)
    assert suite.name == "mine" and suite.mode == "auto" and suite.source == str(path)
    assert [case.has_tests for case in suite.cases] == [True, False]


def test_the_mode_follows_humaneval_task_ids() -> None:
    case = suites.Case(**RECORD)
    assert suites.guess_mode([case]) == "auto"
    single = suites.Case(**{**RECORD, "task_id": "SingleLineInfilling/HumanEval/0/L0"})
    assert suites.guess_mode([single]) == "single"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no cases"),
        ("{not json\n", "line 1 is not JSON"),
        (json.dumps(RECORD) + "\n[1, 2]\n", "line 2 is not a JSON object"),
        (json.dumps({**RECORD, "prompt": None}) + "\n", "field 'prompt' is missing"),
        (json.dumps({**RECORD, "test": 3}) + "\n", "field 'test' is not a string"),
    ],
)
def test_a_bad_file_names_its_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EvalFailed, match=message):
        suites.file_suite(path)


def test_a_missing_or_corrupt_file_is_an_eval_error(tmp_path: Path) -> None:
    with pytest.raises(EvalFailed, match="no such file"):
        suites.file_suite(tmp_path / "absent.jsonl")
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(EvalFailed, match="cannot read"):
        suites.file_suite(corrupt)


def _record(task: str, exact: bool, similarity: float, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task,
        "latency_ms": extra.pop("latency_ms", 100.0),
        "suggestion": extra.pop("suggestion", "x"),
        "tokens": extra.pop("tokens", 4),
        "exact_match": exact,
        "edit_similarity": similarity,
        "tests": extra.pop("tests", None),
        **extra,
    }


def test_summary_figures_from_hand_made_records() -> None:
    cases = [
        _record("a", True, 100.0, latency_ms=100.0, tests={"status": "passed"}),
        _record("b", False, 50.0, latency_ms=300.0, tests={"status": "failed"}, suggestion=" "),
        _record("c", False, 0.0, latency_ms=200.0, tests={"status": "timeout"}),
        _record("d", False, 0.0, tokens=0, error={"code": "x"}, tests={"status": "not_run"}),
    ]
    summary = report.summarize(cases)
    assert summary["cases"] == 4
    assert summary["exact_match"] == 0.25
    assert summary["edit_similarity"] == 37.5
    assert summary["pass_at_1"] == 0.25 and summary["tested"] == 4
    assert summary["latency_p50_ms"] == 200.0  # the error's latency is left out
    assert summary["latency_p95_ms"] == pytest.approx(290.0)
    assert summary["tokens_generated"] == 12 and summary["errors"] == 1
    assert summary["empty_suggestions"] == 1
    assert summary["test_outcomes"] == {"passed": 1, "failed": 1, "timeout": 1, "not_run": 1}
    untested = report.summarize([_record("a", True, 100.0)])
    assert untested["pass_at_1"] is None and untested["tested"] == 0
    assert report.summarize([])["exact_match"] is None


def _document(*labels: str) -> dict[str, Any]:
    cases_a = [_record("t/0", True, 100.0, tests={"status": "passed"}, suggestion="same")]
    cases_b = [_record("t/0", False, 60.0, tests={"status": "failed"}, suggestion="other")]
    runs = [
        {
            "label": label,
            "target": f"socket /tmp/{label}",
            "model": {"name": f"model-{label}", "backend": "transformers", "device": "cpu"},
            "aborted": None,
            "suites": {"humaneval-single": {"summary": report.summarize(cases), "cases": cases}},
        }
        for label, cases in zip(labels, (cases_a, cases_b), strict=False)
    ]
    return {
        "schema": report.SCHEMA,
        "date": "2026-11-29T10:00:00+00:00",
        "settings": {
            "temperature": 0.0,
            "max_tokens": None,
            "sandbox": {"timeout_s": 10.0, "memory_mb": 1024},
        },
        "environment": {"qwend": "0.1", "cpu_cores": 2, "cpu": "test cpu"},
        "sandbox": {"network_namespace": True},
        "suites": [{"name": "humaneval-single", "mode": "single"}],
        "runs": runs,
    }


def test_the_table_and_the_side_by_side_comparison() -> None:
    table = report.render_table(_document("A.sock", "B.toml"))
    assert "A.sock: model-A.sock (transformers, cpu)" in table
    assert "humaneval-single" in table and "100.0% of 1" in table
    assert "side by side: A = A.sock, B = B.toml" in table
    assert "-100.0 pt" in table  # exact match and pass@1 both fell by 100 points
    assert "same suggestion in 0 of 1 cases; tests passed only on A: 1, only on B: 0" in table


def test_show_renders_a_saved_file_and_json_has_the_summary_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.json"
    report.write_results(_document("daemon"), path)
    assert cli.main(["eval", "--show", str(path)]) == 0
    assert "daemon: model-daemon" in capsys.readouterr().out
    assert cli.main(["eval", "--show", str(path), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    (run,) = view["runs"]
    summary = run["suites"]["humaneval-single"]
    for key in ("exact_match", "edit_similarity", "pass_at_1", "latency_p50_ms"):
        assert key in summary
    assert "latency_p95_ms" in summary and "tokens_generated" in summary
    assert summary["cases"] == 1
    assert view["results_file"] == str(path)


def test_show_refuses_what_is_not_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    assert cli.main(["eval", "--show", str(path)]) == 1
    assert "not a qwend eval results file" in capsys.readouterr().err
    old = _document("daemon") | {"schema": 0}
    path.write_text(json.dumps(old))
    with pytest.raises(EvalFailed, match="schema 0"):
        report.read_results(path)


def test_an_unknown_suite_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "humaneval-everything", "--socket", "/nonexistent.sock"]) == 1
    assert "unknown suite 'humaneval-everything'" in capsys.readouterr().err


def test_compare_targets_are_sockets_config_files_or_profiles(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text("")
    assert parse_target(str(config), None).kind == "config"
    assert parse_target("smollm2-135m", None).kind == "profile"
    with pytest.raises(EvalFailed, match="neither a Unix socket"):
        parse_target("no-such-profile", None)
