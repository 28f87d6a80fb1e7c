"""Editor: ``qwend eval``'s figures, table, side-by-side comparison and results file.

The results file (JSON) holds every case and is the source of truth:
``qwend eval --show FILE`` renders the same table from it alone. ``--json``
prints the summary view (every key of the file but the cases).

Per suite: ``exact_match`` and ``pass_at_1`` are fractions (0-1),
``edit_similarity`` is on RapidFuzz's 0-100 scale, ``pass_at_1`` is null when
no case has tests, and the latency percentiles cover the cases the daemon
answered (an error answer is counted in ``errors``, not in the latency).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Final

from qwend.bench.stats import percentile
from qwend.errors import EvalFailed
from qwend.evaluation.sandbox import STATUSES

SCHEMA: Final = 1  # bump when a key of the results file changes meaning
NOT_RUN: Final = "not_run"  # the daemon answered an error: the tests had nothing to run


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one suite on one target."""
    answered = [case for case in cases if "error" not in case]
    tested = [case for case in cases if case.get("tests") is not None]
    outcomes = Counter(case["tests"]["status"] for case in tested)
    latencies = [float(case["latency_ms"]) for case in answered]
    tokens = sum(int(case.get("tokens", 0)) for case in cases)
    return {
        "cases": len(cases),
        "exact_match": _mean([float(case["exact_match"]) for case in cases], 4),
        "edit_similarity": _mean([float(case["edit_similarity"]) for case in cases], 2),
        "pass_at_1": round(outcomes["passed"] / len(tested), 4) if tested else None,
        "tested": len(tested),
        "latency_p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "tokens_generated": tokens,
        "tokens_per_case": round(tokens / len(cases), 1) if cases else None,
        "errors": len(cases) - len(answered),
        "empty_suggestions": sum(1 for case in answered if not case["suggestion"].strip()),
        "test_outcomes": {
            status: outcomes[status] for status in (*STATUSES, NOT_RUN) if outcomes[status]
        },
    }


def _mean(values: list[float], digits: int) -> float | None:
    return round(sum(values) / len(values), digits) if values else None


def summary_view(document: dict[str, Any], results_file: Path | None) -> dict[str, Any]:
    """The document without the per-case records (what ``--json`` prints)."""
    runs = [
        {
            **{key: run[key] for key in ("label", "target", "model", "aborted")},
            "suites": {name: suite["summary"] for name, suite in run["suites"].items()},
        }
        for run in document["runs"]
    ]
    view = {key: value for key, value in document.items() if key != "runs"}
    return {**view, "results_file": str(results_file) if results_file else None, "runs": runs}


# -- the table -----------------------------------------------------------------------

_COLUMNS: Final = (
    ("suite", "<", 18),
    ("cases", ">", 6),
    ("exact", ">", 7),
    ("edit sim", ">", 9),
    ("pass@1", ">", 15),
    ("p50 ms", ">", 8),
    ("p95 ms", ">", 8),
    ("tokens", ">", 7),
    ("errors", ">", 7),
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _row(cells: list[str]) -> str:
    parts = [
        f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS, strict=True)
    ]
    return " ".join(parts).rstrip()


def _suite_cells(name: str, summary: dict[str, Any]) -> list[str]:
    tested = summary["tested"]
    pass_cell = f"{_percent(summary['pass_at_1'])} of {tested}" if tested else "no tests"
    return [
        name,
        str(summary["cases"]),
        _percent(summary["exact_match"]),
        _number(summary["edit_similarity"], 1),
        pass_cell,
        _number(summary["latency_p50_ms"]),
        _number(summary["latency_p95_ms"]),
        _number(summary["tokens_generated"]),
        str(summary["errors"]),
    ]


def _model_line(run: dict[str, Any]) -> str:
    model = run.get("model") or {}
    name = model.get("name", "?")
    return f"{run['label']}: {name} ({model.get('backend', '?')}, {model.get('device', '?')})"


def render_table(document: dict[str, Any]) -> str:
    """One table per target, then a side-by-side comparison when there are two."""
    env = document["environment"]
    settings = document["settings"]
    head = [
        f"qwend eval, {document['date']}: qwend {env['qwend']}, {env['cpu_cores']} cores "
        f"({env['cpu']})",
        f"temperature {settings['temperature']}, max_tokens "
        f"{settings['max_tokens'] or 'the task default'}, sandbox timeout "
        f"{settings['sandbox']['timeout_s']:g}s, memory {settings['sandbox']['memory_mb']} MB, "
        f"network namespace {'on' if document['sandbox']['network_namespace'] else 'off'}",
    ]
    body: list[str] = []
    for run in document["runs"]:
        body += ["", _model_line(run), _row([name for name, _, _ in _COLUMNS])]
        for name, suite in run["suites"].items():
            body.append(_row(_suite_cells(name, suite["summary"])))
        for name, suite in run["suites"].items():
            outcomes = suite["summary"]["test_outcomes"]
            if outcomes:
                counts = ", ".join(f"{status} {count}" for status, count in outcomes.items())
                body.append(f"  {name} tests: {counts}")
        if run["aborted"]:
            body.append(f"  aborted: {run['aborted']}")
    if len(document["runs"]) == 2:
        body += ["", *render_comparison(document)]
    return "\n".join(head + body)


_COMPARED: Final = (
    ("exact match", "exact_match", True),
    ("edit similarity", "edit_similarity", False),
    ("pass@1", "pass_at_1", True),
    ("latency p50 ms", "latency_p50_ms", False),
    ("latency p95 ms", "latency_p95_ms", False),
    ("tokens generated", "tokens_generated", False),
)


def render_comparison(document: dict[str, Any]) -> list[str]:
    """Side by side: each figure on A and B, B minus A, and how the cases differ."""
    a, b = document["runs"]
    width = max(len(a["label"]), len(b["label"]), 10)
    lines = [f"side by side: A = {a['label']}, B = {b['label']}"]
    for suite in document["suites"]:
        name = suite["name"]
        if name not in a["suites"] or name not in b["suites"]:
            lines.append(f"{name}: not run on both")
            continue
        sa, sb = a["suites"][name]["summary"], b["suites"][name]["summary"]
        lines.append(f"{name:<18} {'A':>{width}} {'B':>{width}} {'B - A':>10}")
        for label, key, fraction in _COMPARED:
            va, vb = sa[key], sb[key]
            shown = _percent if fraction else _number
            delta = "-" if va is None or vb is None else _signed(vb - va, fraction)
            lines.append(f"  {label:<16} {shown(va):>{width}} {shown(vb):>{width}} {delta:>10}")
        lines.append("  " + _case_agreement(a["suites"][name]["cases"], b["suites"][name]["cases"]))
    return lines


def _signed(value: float, fraction: bool) -> str:
    return f"{100 * value:+.1f} pt" if fraction else f"{value:+,.1f}"


def _case_agreement(cases_a: list[dict[str, Any]], cases_b: list[dict[str, Any]]) -> str:
    by_id = {case["task_id"]: case for case in cases_b}
    pairs = [(case, by_id[case["task_id"]]) for case in cases_a if case["task_id"] in by_id]
    same = sum(1 for x, y in pairs if x["suggestion"] == y["suggestion"])
    only_a = sum(1 for x, y in pairs if _passed(x) and not _passed(y))
    only_b = sum(1 for x, y in pairs if _passed(y) and not _passed(x))
    return (
        f"same suggestion in {same} of {len(pairs)} cases; "
        f"tests passed only on A: {only_a}, only on B: {only_b}"
    )


def _passed(case: dict[str, Any]) -> bool:
    tests = case.get("tests")
    return isinstance(tests, dict) and tests.get("status") == "passed"


# -- the results file ------------------------------------------------------------------


def write_results(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_results(path: Path) -> dict[str, Any]:
    """A results file written by ``qwend eval``; EvalFailed for anything else."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalFailed(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalFailed(f"{path} is not a qwend eval results file: {exc}") from None
    if not isinstance(document, dict) or not {"schema", "runs", "suites"} <= set(document):
        raise EvalFailed(f"{path} is not a qwend eval results file")
    if document["schema"] != SCHEMA:
        raise EvalFailed(
            f"{path} has results schema {document['schema']}; this qwend reads {SCHEMA}"
        )
    return document
