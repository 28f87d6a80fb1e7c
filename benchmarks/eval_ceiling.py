"""Benchmark: the ceiling of ``qwend eval``'s product path, and a check of its harness.

Answers every case with its own canonical solution, as if the model were
perfect, then shapes it as the language server's ghost text and scores it
exactly as ``qwend eval`` does. It prints, per suite: how many shaped answers
are still an exact match (the most a model can score through the editor's
shaping), how many canonical solutions pass their tests in the sandbox (must
be all: otherwise the harness, not the model, is wrong), and how many pass
once shaped. No daemon and no model are involved.

    python benchmarks/eval_ceiling.py [--limit N] [--no-tests] [SUITE ...]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from qwend.evaluation.runner import EvalOptions, request_for
from qwend.evaluation.sandbox import SandboxLimits, run_program
from qwend.evaluation.scoring import checked_program, insertion, score
from qwend.evaluation.suites import BUILTIN, builtin_suite
from qwend_lsp.completion import shape_completion


def ceiling(name: str, limit: int | None, tests: bool) -> dict[str, object]:
    suite = builtin_suite(name, limit)
    exact = 0
    canonical: Counter[str] = Counter()
    shaped: Counter[str] = Counter()
    failures: list[tuple[str, str]] = []
    for case in suite.cases:
        context, _ = request_for(case, suite.mode, EvalOptions())
        ghost = shape_completion(case.canonical_solution, context)
        exact += score(ghost, case.canonical_solution, suite.mode).exact_match
        if not tests:
            continue
        result = run_program(checked_program(case, case.canonical_solution), SandboxLimits())
        canonical[result.status] += 1
        if not result.passed:
            failures.append((case.task_id, result.detail))
        inserted = insertion(ghost, suite.mode, case.line_hole)
        shaped[run_program(checked_program(case, inserted), SandboxLimits()).status] += 1
    return {
        "suite": name,
        "cases": len(suite.cases),
        "shaped_exact_match": exact,
        "canonical_tests": dict(canonical),
        "shaped_tests": dict(shaped),
        "canonical_failures": failures[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", default=list(BUILTIN))
    parser.add_argument("--limit", type=int, help="cases per suite, spread evenly")
    parser.add_argument("--no-tests", action="store_true", help="text scores only (fast)")
    args = parser.parse_args()
    for name in args.suites:
        print(json.dumps(ceiling(name, args.limit, not args.no_tests)), flush=True)


if __name__ == "__main__":
    main()
