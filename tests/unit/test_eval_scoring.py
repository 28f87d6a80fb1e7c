"""qwend eval's scores on hand-made cases: text scores, the tested program, odd answers.

The functional cases run real HumanEval problems in the real sandbox: the
canonical answer must pass, and plausible wrong answers must fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from qwend.errors import DaemonUnavailable
from qwend.evaluation.runner import (
    EvalOptions,
    _run_target,
    interrupted,
    load_suites,
    request_for,
    score_answer,
)
from qwend.evaluation.sandbox import SandboxLimits, run_program
from qwend.evaluation.scoring import (
    checked_program,
    edit_similarity,
    insertion,
    normalize_block,
    score,
    score_block,
    score_single_line,
)
from qwend.evaluation.suites import Case, builtin_suite
from qwend.evaluation.targets import Target

LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=512)


def _case(suite: str, task_id: str) -> Case:
    (case,) = [c for c in builtin_suite(suite).cases if c.task_id == task_id]
    return case


# -- text scores -----------------------------------------------------------------------


def test_single_line_compares_the_stripped_first_line() -> None:
    canonical = "    return a + b\n"
    assert score_single_line("return a + b", canonical).exact_match
    assert score_single_line("  return a + b  \n    print(a)\n", canonical).exact_match
    wrong = score_single_line("return a - b", canonical)
    assert not wrong.exact_match
    # Indel similarity: one substitution is 2 edits over 24 characters.
    assert wrong.edit_similarity == pytest.approx(100 * (1 - 2 / 24))


def test_single_line_scores_the_first_line_even_when_it_is_empty() -> None:
    # What the editor shows: a suggestion that starts with a newline is empty.
    result = score_single_line("\n    return a + b", "    return a + b\n")
    assert not result.exact_match and result.edit_similarity == 0.0


def test_edit_similarity_values() -> None:
    assert edit_similarity("for i in x:", "for j in x:") == pytest.approx(100 * 20 / 22)
    assert edit_similarity("abc", "abc") == 100.0
    assert edit_similarity("", "abc") == 0.0
    assert edit_similarity("", "") == 100.0


def test_block_ignores_trailing_space_and_blank_lines_but_not_indentation() -> None:
    canonical = "    if x:\n        return 1\n    return 0\n"
    assert score_block("    if x:  \n\n        return 1\n    return 0", canonical).exact_match
    assert not score_block("    if x:\n    return 1\n    return 0", canonical).exact_match
    assert normalize_block("a \r\n\r\n  b\n") == "a\n  b"
    assert score("x = 1\ny = 2", "x = 1\n", "single").exact_match
    assert not score("x = 1\ny = 2", "x = 1\n", "multi").exact_match


def test_insertion_ends_the_hole_at_a_line_start() -> None:
    assert insertion("    x = 1", "single") == "    x = 1\n"
    assert insertion("    x = 1\n    y = 2", "single") == "    x = 1\n"
    assert insertion("    x = 1\n    y = 2", "multi") == "    x = 1\n    y = 2\n"
    assert insertion("   ", "multi") == ""
    assert insertion("", "single") == ""


# -- functional: the problem's own tests on prompt + suggestion + suffix -----------------


def test_the_canonical_line_passes_and_a_wrong_line_fails() -> None:
    case = _case("humaneval-single", "SingleLineInfilling/HumanEval/0/L0")
    assert case.canonical_solution == "    for idx, elem in enumerate(numbers):\n"
    right = run_program(checked_program(case, case.canonical_solution), LIMITS)
    assert right.status == "passed", right
    # Plausible and well-formed, but it compares nothing: has_close_elements is always False.
    wrong = insertion("    for idx, elem in enumerate([]):", "single")
    result = run_program(checked_program(case, wrong), LIMITS)
    assert result.status == "failed" and "AssertionError" in result.detail


@pytest.mark.parametrize(
    ("suggestion", "detail"),
    [
        ("    for idx, elem in enumerate(numbers)", "SyntaxError"),  # the colon is missing
        ("", "IndentationError"),  # nothing inserted: the block has no loop header
    ],
)
def test_broken_suggestions_fail(suggestion: str, detail: str) -> None:
    case = _case("humaneval-single", "SingleLineInfilling/HumanEval/0/L0")
    result = run_program(checked_program(case, insertion(suggestion, "single")), LIMITS)
    assert result.status == "failed"
    assert detail in result.detail


def test_a_multi_line_block_passes_or_fails_on_the_tests() -> None:
    case = _case("humaneval-multi", "MultiLineInfilling/HumanEval/2/L0_L0")
    assert case.canonical_solution == "    return number % 1.0\n"
    assert run_program(checked_program(case, case.canonical_solution), LIMITS).passed
    wrong = insertion("    return number % 2.0", "multi")
    assert run_program(checked_program(case, wrong), LIMITS).status == "failed"
    # Exit status 0 is not a pass: the tests must run to their end.
    leaves = insertion("    import sys; sys.exit(0)", "multi")
    result = run_program(checked_program(case, leaves), LIMITS)
    assert result.status == "failed" and result.detail == "exited before its tests finished"


# -- the request, and answers of every odd shape ----------------------------------------


def test_request_follows_the_suite_mode() -> None:
    case = _case("humaneval-multi", "MultiLineInfilling/HumanEval/2/L0_L0")
    _, single = request_for(case, "single", EvalOptions(max_tokens=32))
    context, multi = request_for(case, "multi", EvalOptions())
    assert single["stop"] == ["\n"] and single["max_tokens"] == 32
    assert "stop" not in multi and "max_tokens" not in multi
    assert multi["temperature"] == 0.0 and multi["language"] == "python"
    # The cursor is on the empty line where the missing lines go.
    assert multi["prefix"] == case.prompt and multi["suffix"] == "\n" + case.suffix
    assert context.multiline and context.line_before == context.line_after == ""
    # The LSP's own heuristic: after a docstring (no block opener), one line.
    auto_context, auto = request_for(case, "auto", EvalOptions(seed=7))
    assert not auto_context.multiline and auto["stop"] == ["\n"] and auto["seed"] == 7
    opener = _case("humaneval-single", "SingleLineInfilling/HumanEval/0/L1")
    assert opener.prompt.rstrip().endswith(":")
    assert request_for(opener, "auto", EvalOptions())[0].multiline


def test_a_span_inside_a_line_keeps_the_cursor_where_the_hole_is() -> None:
    case = Case("span/0", "x = compute(", ")\n", "1, 2")
    context, body = request_for(case, "auto", EvalOptions())
    assert not case.line_hole and body["suffix"] == ")\n" and context.line_after == ")"
    assert insertion("1, 2", "auto", case.line_hole) == "1, 2"
    assert insertion("1, 2", "auto", True) == "1, 2\n"


ODD_ANSWERS: list[tuple[int, Any]] = [
    (200, {"text": None}),
    (200, {"text": 42, "usage": "many"}),
    (200, []),
    (400, {"error": {"code": "context_length_exceeded", "message": "too long"}}),
    (500, {"error": "not an object"}),
    (200, {"text": "\x00\x00", "usage": {"completion_tokens": True}}),
    (200, {"text": "x = '\ud800'\r\n    y = 1", "usage": {"completion_tokens": 3}}),
    (200, {"text": "    " + "a" * 100_000, "finish_reason": "length"}),
    (200, {"text": "\n\n\n"}),
    (200, {"text": "    import os; os.system('true')"}),
]


@pytest.mark.parametrize(("status", "answer"), ODD_ANSWERS)
@pytest.mark.parametrize("mode", ["single", "multi"])
def test_odd_answers_are_scored_never_raised(status: int, answer: Any, mode: str) -> None:
    case = _case("humaneval-single", "SingleLineInfilling/HumanEval/0/L0")
    context, _ = request_for(case, mode, EvalOptions())
    options = EvalOptions(sandbox=LIMITS)
    record = score_answer(case, mode, context, status, answer, 12.34, options)
    assert record["task_id"] == case.task_id and record["latency_ms"] == 12.3
    assert record["exact_match"] is False
    assert 0.0 <= record["edit_similarity"] < 100.0
    assert isinstance(record["tokens"], int) and not isinstance(record["tokens"], bool)
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        assert record["error"]["http_status"] == status
        assert record["tests"]["status"] == "not_run"
    else:
        assert "error" not in record
        assert record["tests"]["status"] in ("failed", "refused")


# -- a run that ends early keeps what it measured ------------------------------------------


class _FaultyDaemon:
    """Answers every request with an error body, then fails as told on request ``fail_at``."""

    def __init__(self, fail_at: int, fault: BaseException) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.fault = fault

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.fault
        if path == "/v1/status":
            return 200, {"model": {"name": "m"}, "device": "cpu"}
        return 503, {"error": {"code": "model_not_loaded", "message": "not loaded"}}


@pytest.mark.parametrize(
    ("fault", "aborted"),
    [
        (KeyboardInterrupt(), "interrupted (Ctrl-C) (after 2 cases of humaneval-single)"),
        (DaemonUnavailable("gone"), "gone (after 2 cases of humaneval-single)"),
    ],
)
def test_a_run_cut_short_keeps_its_cases(fault: BaseException, aborted: str) -> None:
    # Calls: 1 status, 2 warm-up, 3-4 two cases, 5 the fault.
    daemon = _FaultyDaemon(fail_at=5, fault=fault)
    options = EvalOptions(suites=("humaneval-single", "humaneval-multi"), limit=3)
    suites = load_suites(options)
    target = Target("t", "socket", "/nowhere")
    run = _run_target(target, daemon, suites, options, _NoBar())  # type: ignore[arg-type]
    assert run["aborted"] == aborted
    assert list(run["suites"]) == ["humaneval-single"]  # the multi suite never started
    summary = run["suites"]["humaneval-single"]["summary"]
    assert summary["cases"] == summary["errors"] == 2
    assert summary["test_outcomes"] == {"not_run": 2}
    document = {"runs": [run]}
    assert interrupted(document) == isinstance(fault, KeyboardInterrupt)


class _NoBar:
    def set_description(self, text: str) -> None:
        pass

    def update(self) -> None:
        pass
