"""Editor: one ``qwend eval`` run: every case of every suite on every target, under a progress bar.

A case goes the way an editor's inline completion goes:

1. the document is the file with the hole; for a hole of whole lines (both
   HumanEval suites) the cursor sits on an empty line where the missing
   lines go (``document_text``), and the daemon gets the same prefix and
   suffix as Qwen's own HumanEval-FIM runs, plus that line's newline;
2. the language server's pure helpers (``qwend_lsp.completion``) build the
   cursor context and the ``complete`` request, and the daemon answers it
   through the product path (template, budget, stops, post-processing);
3. the answer goes through ``shape_completion``, the function that shapes
   the LSP's ghost text, and the result is scored (scoring.py) and, where the
   case has tests, run in the sandbox (sandbox.py).

The cursor mode comes from the suite (``single``/``multi``) unless ``auto``
asks for the LSP's own heuristic, which picks a block only after a line that
opens one (``:``): it would ask for one line in most multi-line cases, which
would make that suite meaningless. The model is small and often wrong: an
error answer, an empty or odd suggestion, code that does not parse, loops or
exits: each is recorded against its case and the run goes on. Only a daemon that stops answering
ends a target's run early (``aborted``); what was measured is kept.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qwend import __version__
from qwend.client import DaemonClient
from qwend.errors import DaemonUnavailable, EvalFailed
from qwend.evaluation import report, targets
from qwend.evaluation.sandbox import SandboxLimits, isolation, run_program
from qwend.evaluation.scoring import checked_program, insertion, score
from qwend.evaluation.suites import BUILTIN, Case, Suite, builtin_suite, file_suite
from qwend.evaluation.targets import Target
from qwend_lsp.completion import (
    CursorContext,
    complete_body,
    cursor_context,
    shape_completion,
)

LANGUAGE: Final = "python"  # HumanEval is Python; the prompt's comment marker follows it
WARMUP_MAX_TOKENS: Final = 1  # loads a lazy model and warms caches; not counted
INTERRUPTED: Final = "interrupted (Ctrl-C)"
MAX_SUGGESTION_CHARS: Final = 20_000  # kept in the results file per case; scores use all of it


@dataclass(frozen=True)
class EvalOptions:
    suites: tuple[str, ...] = tuple(BUILTIN)
    files: tuple[Path, ...] = ()
    limit: int | None = None
    mode: str | None = None  # None: each suite's own
    max_tokens: int | None = None  # None: the complete task's configured max_tokens
    temperature: float = 0.0  # greedy: pass@1 from one sample, the same on every run
    seed: int | None = None
    run_tests: bool = True
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    request_timeout_s: float = 600.0
    start_timeout_s: float = 900.0
    config_path: str | None = None
    progress: bool = True


def load_suites(options: EvalOptions) -> list[Suite]:
    suites = [builtin_suite(name, options.limit, options.mode) for name in options.suites]
    suites += [file_suite(path, options.limit, options.mode) for path in options.files]
    names = [suite.name for suite in suites]
    if len(set(names)) != len(names):
        raise EvalFailed(f"two suites share a name: {', '.join(names)}")
    return suites


def run_eval(options: EvalOptions, run_targets: list[Target]) -> dict[str, Any]:
    """Evaluate every target on the same cases; return the results document."""
    from tqdm import tqdm

    suites = load_suites(options)
    document: dict[str, Any] = {
        "schema": report.SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": _settings(options),
        "environment": _environment(),
        "sandbox": isolation(),
        "suites": [
            {
                "name": s.name,
                "mode": s.mode,
                "source": s.source,
                "total": s.total,
                "cases": len(s.cases),
            }
            for s in suites
        ],
        "runs": [],
    }
    total = len(run_targets) * sum(len(s.cases) for s in suites)
    with tqdm(total=total, disable=not options.progress, file=sys.stderr, unit="case") as bar:
        for target in run_targets:
            bar.set_description(f"{target.label}: starting")
            try:
                with targets.serving(target, options.config_path, options.start_timeout_s) as sock:
                    client = DaemonClient(sock, timeout=options.request_timeout_s)
                    run = _run_target(target, client, suites, options, bar)
                    document["runs"].append(run)
            except EvalFailed as exc:  # this target's daemon never became ready
                document["runs"].append(
                    {
                        "label": target.label,
                        "target": target.describe(),
                        "model": {},
                        "aborted": str(exc),
                        "suites": {},
                    }
                )
            if interrupted(document):
                break  # Ctrl-C: keep what was measured, run no further target
    return document


def interrupted(document: dict[str, Any]) -> bool:
    """Was the run stopped with Ctrl-C (its results are kept, and partial)?"""
    return any(str(run["aborted"]).startswith(INTERRUPTED) for run in document["runs"])


def _run_target(
    target: Target, client: DaemonClient, suites: list[Suite], options: EvalOptions, bar: Any
) -> dict[str, Any]:
    run: dict[str, Any] = {
        "label": target.label,
        "target": target.describe(),
        "model": _model(client),
        "aborted": None,
        "suites": {},
    }
    try:
        _warm_up(client, suites, options)
    except DaemonUnavailable as exc:
        run["aborted"] = exc.message
        return run
    for suite in suites:
        bar.set_description(f"{target.label}: {suite.name}")
        cases: list[dict[str, Any]] = []
        for case in suite.cases:
            try:
                cases.append(evaluate_case(client, case, suite.mode, options))
            except DaemonUnavailable as exc:
                run["aborted"] = f"{exc.message} (after {len(cases)} cases of {suite.name})"
                break
            except KeyboardInterrupt:
                run["aborted"] = f"{INTERRUPTED} (after {len(cases)} cases of {suite.name})"
                break
            bar.update()
        run["suites"][suite.name] = {"summary": report.summarize(cases), "cases": cases}
        if run["aborted"]:
            break
    return run


def request_for(
    case: Case, mode: str, options: EvalOptions
) -> tuple[CursorContext, dict[str, Any]]:
    """The cursor context and the ``complete`` body the language server would send."""
    context = cursor_context(document_text(case), len(case.prompt))
    if mode != "auto":
        context = dataclasses.replace(context, multiline=mode == "multi")
    body = complete_body(
        context,
        language=LANGUAGE,
        path=_path_label(case),
        snippets=[],
        max_tokens=options.max_tokens,
        temperature=options.temperature,
    )
    if options.seed is not None:
        body["seed"] = options.seed
    return context, body


def document_text(case: Case) -> str:
    """The editor's document: for a hole of whole lines, the cursor is on an empty line.

    The user who writes the missing lines is on a line of their own, so the
    text after the cursor starts with that line's newline; the cursor mode
    and the shaping (which compares the suggestion with the lines after the
    cursor) see the file as the user does. A span inside a line is left as is.
    """
    if case.line_hole:
        return f"{case.prompt}\n{case.suffix}"
    return case.prompt + case.suffix


def evaluate_case(
    client: DaemonClient, case: Case, mode: str, options: EvalOptions
) -> dict[str, Any]:
    """One case, scored; raises only DaemonUnavailable (the daemon is gone)."""
    context, body = request_for(case, mode, options)
    started = time.perf_counter()
    status, answer = client.request("POST", "/v1/tasks/complete", body)
    latency_ms = (time.perf_counter() - started) * 1000
    return score_answer(case, mode, context, status, answer, latency_ms, options)


def score_answer(
    case: Case,
    mode: str,
    context: CursorContext,
    status: int,
    answer: Any,
    latency_ms: float,
    options: EvalOptions,
) -> dict[str, Any]:
    """The record of one answer, whatever it holds: never raises on an odd answer."""
    if not isinstance(answer, dict):
        answer = {}
    record: dict[str, Any] = {"task_id": case.task_id, "latency_ms": round(latency_ms, 1)}
    raw = answer.get("text") if status == 200 else None
    if not isinstance(raw, str):
        error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
        record["error"] = {
            "http_status": status,
            "code": str(error.get("code", "bad_response")),
            "message": str(error.get("message", answer))[:500],
        }
        raw = ""
    usage: dict[str, Any] = answer["usage"] if isinstance(answer.get("usage"), dict) else {}
    tokens = usage.get("completion_tokens")
    suggestion = shape_completion(raw, context)
    text = score(suggestion, case.canonical_solution, mode)
    record.update(
        suggestion=suggestion[:MAX_SUGGESTION_CHARS],
        raw_chars=len(raw),
        finish_reason=answer.get("finish_reason"),
        tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0,
        exact_match=text.exact_match,
        edit_similarity=round(text.edit_similarity, 2),
        tests=_tests(case, suggestion, mode, options, failed="error" in record),
    )
    return record


def _tests(
    case: Case, suggestion: str, mode: str, options: EvalOptions, *, failed: bool
) -> dict[str, Any] | None:
    if not (options.run_tests and case.has_tests):
        return None
    if failed:
        return {"status": "not_run", "detail": "the daemon answered an error", "seconds": 0.0}
    inserted = insertion(suggestion, mode, case.line_hole)
    result = run_program(checked_program(case, inserted), options.sandbox)
    return {"status": result.status, "detail": result.detail, "seconds": round(result.seconds, 3)}


def _warm_up(client: DaemonClient, suites: list[Suite], options: EvalOptions) -> None:
    """One uncounted request, so a lazily loaded model's load time is no case's latency."""
    for suite in suites:
        if suite.cases:
            _, body = request_for(suite.cases[0], suite.mode, options)
            body["max_tokens"] = WARMUP_MAX_TOKENS
            client.request("POST", "/v1/tasks/complete", body)
            return


def _path_label(case: Case) -> str:
    """A file name for the prompt's path label (never opened)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", case.entry_point) or "case"
    return f"{name}.py"


def _model(client: DaemonClient) -> dict[str, Any]:
    try:
        code, status = client.request("GET", "/v1/status")
    except DaemonUnavailable:
        return {}
    if code != 200:
        return {}
    model = status.get("model", {})
    keys = ("name", "backend", "family", "context_length", "dtype")
    return {
        **{key: model.get(key) for key in keys if key in model},
        "device": status.get("device"),
        "daemon_version": status.get("version"),
    }


def _settings(options: EvalOptions) -> dict[str, Any]:
    values = dataclasses.asdict(options)
    values["files"] = [str(path) for path in options.files]
    values["suites"] = list(options.suites)
    return values


def _environment() -> dict[str, Any]:
    return {
        "machine": f"{platform.machine()} {platform.system()}",
        "cpu": _cpu_name(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "qwend": __version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
