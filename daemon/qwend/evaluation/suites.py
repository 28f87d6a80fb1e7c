"""Editor: the cases ``qwend eval`` runs: the built-in suites and ``--file`` loading.

A case is one record of the HumanEval-infilling format (OpenAI, MIT; the
licence is vendored beside the data in ``data/``): ``task_id``, ``prompt``
(the text before the hole), ``suffix`` (after it), ``canonical_solution``
(what the hole held), and, for the functional check, ``test`` (a
``check(candidate)`` function) and ``entry_point`` (the function it checks).
Files are JSON Lines, optionally gzipped. A record without ``test`` or
``entry_point`` is scored on text only.

Each suite has a cursor mode: ``single`` (the hole is one line: the editor
asks for one line and the first line is scored), ``multi`` (a block), or
``auto`` (the language server's own heuristic decides, as in an editor).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qwend.errors import EvalFailed

MODES: Final = ("single", "multi", "auto")
REQUIRED_FIELDS: Final = ("task_id", "prompt", "suffix", "canonical_solution")
DATA_PACKAGE: Final = "qwend.evaluation"
LICENSE_NAME: Final = "LICENSE-human-eval-infilling"


@dataclass(frozen=True)
class Case:
    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str = ""
    entry_point: str = ""

    @property
    def has_tests(self) -> bool:
        return bool(self.test.strip() and self.entry_point.strip())

    @property
    def line_hole(self) -> bool:
        """Whole lines are missing (HumanEval's single- and multi-line files), not a span."""
        return self.prompt.endswith("\n") or not self.prompt


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    file_name: str
    mode: str
    description: str


BUILTIN: Final = {
    spec.name: spec
    for spec in (
        SuiteSpec(
            "humaneval-single",
            "HumanEval-SingleLineInfilling.jsonl.gz",
            "single",
            "HumanEval with one line removed (1,033 cases, 164 problems)",
        ),
        SuiteSpec(
            "humaneval-multi",
            "HumanEval-MultiLineInfilling.jsonl.gz",
            "multi",
            "HumanEval with a block of lines removed (5,815 cases, 164 problems)",
        ),
    )
}


@dataclass(frozen=True)
class Suite:
    name: str
    mode: str
    source: str  # "built-in" or the file's path
    total: int  # cases in the file, before --limit
    cases: tuple[Case, ...]


def builtin_suite(name: str, limit: int | None = None, mode: str | None = None) -> Suite:
    """A suite shipped in the package (``qwend.evaluation/data``)."""
    spec = BUILTIN.get(name)
    if spec is None:
        raise EvalFailed(
            f"no built-in suite named {name!r}", hint=f"choose from: {', '.join(BUILTIN)}"
        )
    resource = importlib.resources.files(DATA_PACKAGE).joinpath("data", spec.file_name)
    with importlib.resources.as_file(resource) as path:
        cases = read_cases(path)
    return Suite(name, mode or spec.mode, "built-in", len(cases), spread(cases, limit))


def file_suite(path: Path, limit: int | None = None, mode: str | None = None) -> Suite:
    """A suite from any JSON Lines file (``.jsonl`` or ``.jsonl.gz``) in the same format."""
    cases = read_cases(path)
    name = re.sub(r"\.jsonl(\.gz)?$", "", path.name) or path.name
    return Suite(name, mode or guess_mode(cases), str(path), len(cases), spread(cases, limit))


def guess_mode(cases: list[Case]) -> str:
    """``single`` or ``multi`` when every task id says so (as HumanEval's do), else ``auto``."""
    if all(case.task_id.startswith("SingleLineInfilling/") for case in cases):
        return "single"
    if all(case.task_id.startswith("MultiLineInfilling/") for case in cases):
        return "multi"
    return "auto"


def read_cases(path: Path) -> list[Case]:
    """Every record of ``path``; EvalFailed naming the line of the first bad one."""
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    cases: list[Case] = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    cases.append(_case(json.loads(line), path, number))
    except FileNotFoundError:
        raise EvalFailed(f"no such file: {path}") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise EvalFailed(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EvalFailed(f"{path}: line {number} is not JSON: {exc.msg}") from None
    if not cases:
        raise EvalFailed(f"{path} holds no cases")
    return cases


def _case(record: Any, path: Path, number: int) -> Case:
    where = f"{path}: line {number}"
    if not isinstance(record, dict):
        raise EvalFailed(f"{where} is not a JSON object")
    for name in REQUIRED_FIELDS:
        if not isinstance(record.get(name), str):
            raise EvalFailed(
                f"{where}: field {name!r} is missing or not a string",
                hint="each line needs task_id, prompt, suffix and canonical_solution "
                "(test and entry_point for pass@1): the HumanEval-infilling format",
            )
    optional = {name: record.get(name, "") for name in ("test", "entry_point")}
    for name, value in optional.items():
        if not isinstance(value, str):
            raise EvalFailed(f"{where}: field {name!r} is not a string")
    return Case(
        task_id=record["task_id"],
        prompt=record["prompt"],
        suffix=record["suffix"],
        canonical_solution=record["canonical_solution"],
        **optional,
    )


def spread(cases: list[Case], limit: int | None) -> tuple[Case, ...]:
    """``limit`` cases spread evenly over the file (the same ones on every run).

    The files are ordered by problem, so the first N cases would cover only
    the first few problems; evenly spaced ones cover them all.
    """
    if limit is None or limit >= len(cases):
        return tuple(cases)
    if limit < 1:
        raise EvalFailed(f"--limit must be at least 1, not {limit}")
    return tuple(cases[index * len(cases) // limit] for index in range(limit))


def license_text() -> str:
    """The licence of the vendored HumanEval-infilling data."""
    resource = importlib.resources.files(DATA_PACKAGE).joinpath("data", LICENSE_NAME)
    return resource.read_text(encoding="utf-8")
