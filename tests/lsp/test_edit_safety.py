"""LSP: the count of issue 14's "Done when": no applied edit breaks a file, no cut-off answer lands.

Drives `qwend lsp` as an editor does, on Python, Lua, JavaScript and Go files,
against a daemon whose refactor, tests and fix answers are limited to 40
tokens (so most are cut off). For each file it asks for the code actions at
two places (a cursor inside the first function, a selection of the second
one), checks that every action is offered, runs each edit action, applies
what the server sends the way an editor would, and parses the result with
tree-sitter. A Neovim client then asks for a completion at each file's block
opener. The counts are printed (``pytest -s``) and, with
``QWEND_EDIT_SAFETY_REPORT=path``, written as JSON after every step (so a
run stopped early still leaves its counts); docs/editors.md records them.
``QWEND_EDIT_SAFETY_PLACES=cursor`` (or ``selection``) runs one place only
(half the model calls, for a slow machine).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from qwend_lsp.syntax.checks import unclosed_fence
from qwend_lsp.syntax.languages import parse
from tests.fixtures.daemon import MODEL, MODEL_DIR, Daemon, require_models, smollm2_config
from tests.fixtures.lsp_client import StartLsp, apply, open_doc

pytestmark = pytest.mark.slow

LIMITED = 40  # tokens for refactor, tests and fix: answers get cut off
EDIT_COMMANDS = ("qwend.refactor", "qwend.docstring", "qwend.tests", "qwend.fix")
ALL_COMMANDS = {"qwend.explain", *EDIT_COMMANDS}
PLACES = os.environ.get("QWEND_EDIT_SAFETY_PLACES", "cursor,selection").split(",")
REPORT = os.environ.get("QWEND_EDIT_SAFETY_REPORT")

SOURCES: dict[str, tuple[str, str, int, tuple[int, int], tuple[int, int]]] = {
    # language: (file name, text, cursor line, second function's lines, opener (line, column))
    "python": (
        "shapes.py",
        "import math\n\n\ndef area(radius):\n    return math.pi * radius * radius\n\n\n"
        "class Shape:\n    def __init__(self, name):\n        self.name = name\n\n"
        "    def describe(self):\n        return f'{self.name}: {area(1)}'\n",
        4,
        (11, 12),
        (3, 17),
    ),
    "lua": (
        "scale.lua",
        "local M = {}\n\nlocal function clamp(x, lo, hi)\n  if x < lo then return lo end\n"
        "  if x > hi then return hi end\n  return x\nend\n\nfunction M.scale(values, factor)\n"
        "  local out = {}\n  for i, v in ipairs(values) do\n"
        "    out[i] = clamp(v * factor, 0, 100)\n  end\n  return out\nend\n\nreturn M\n",
        3,
        (8, 14),
        (8, 32),
    ),
    "javascript": (
        "stats.js",
        "const sum = (values) => {\n  return values.reduce((a, b) => a + b, 0);\n};\n\n"
        "function mean(values) {\n  if (values.length === 0) {\n    return 0;\n  }\n"
        "  return sum(values) / values.length;\n}\n\nmodule.exports = { sum, mean };\n",
        1,
        (4, 9),
        (4, 23),
    ),
    "go": (
        "stats.go",
        "package stats\n\nfunc Sum(values []int) int {\n\ttotal := 0\n"
        "\tfor _, v := range values {\n\t\ttotal += v\n\t}\n\treturn total\n}\n\n"
        "func Max(values []int) int {\n"
        "\tbest := values[0]\n\tfor _, v := range values[1:] {\n\t\tif v > best {\n"
        "\t\t\tbest = v\n\t\t}\n\t}\n\treturn best\n}\n",
        3,
        (10, 18),
        (2, 28),
    ),
}


@pytest.fixture(scope="module")
def limited_daemon() -> Iterator[Daemon]:
    require_models(MODEL_DIR, MODEL, "QWEND_TEST_MODEL_DIR")
    config = smollm2_config(MODEL_DIR)
    config["tasks"] = {name: {"max_tokens": LIMITED} for name in ("refactor", "tests", "fix")}
    config["tasks"]["docstring"] = {"max_tokens": 64}  # a docstring is short: a brief run
    root = Path(tempfile.mkdtemp(prefix="qwe-", dir="/tmp"))
    daemon = Daemon(root, config).start()
    try:
        daemon.wait_for("ready")
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def save(counts: dict[str, Any]) -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps(counts, indent=2) + "\n")


def span(line: int, character: int, end_line: int, end_character: int) -> t.Range:
    return t.Range(
        start=t.Position(line=line, character=character),
        end=t.Position(line=end_line, character=end_character),
    )


def edited_texts(edit: t.WorkspaceEdit, documents: dict[str, str]) -> dict[str, str]:
    """Each file's text after the edit, as an editor would apply it (new files start empty)."""
    after: dict[str, str] = {}
    for uri, edits in (edit.changes or {}).items():
        after[uri] = apply(documents.get(uri, ""), list(edits))
    for change in edit.document_changes or []:
        if isinstance(change, t.CreateFile):
            after.setdefault(change.uri, documents.get(change.uri, ""))
        elif isinstance(change, t.TextDocumentEdit):
            uri = change.text_document.uri
            base = after.get(uri, documents.get(uri, ""))
            after[uri] = apply(base, [e for e in change.edits if isinstance(e, t.TextEdit)])
    return after


async def test_edits_never_break_a_file(
    limited_daemon: Daemon, start_lsp: StartLsp, tmp_path: Path
) -> None:
    counts: dict[str, Any] = {
        "attempts": 0,
        "applied": 0,
        "applied_and_broken": 0,
        "cut_off_applied": 0,
        "refused_cut_off": 0,
        "refused_would_break": 0,
        "refused_other": 0,
        "actions_missing": [],
        "neovim_items_with_newline": 0,
        "neovim_completions": 0,
        "per_language": {},
    }
    client = await start_lsp(limited_daemon.socket)
    vim = await start_lsp(limited_daemon.socket, {"completionFallback": True}, client_name="Neovim")
    for language, (name, text, cursor, (first, last), opener) in SOURCES.items():
        path = tmp_path / name
        path.write_text(text)
        uri = path.as_uri()
        documents = {uri: text}
        open_doc(client, uri, text, language=language)
        open_doc(vim, uri, text, language=language)
        named = {"cursor": span(cursor, 2, cursor, 2), "selection": span(first, 0, last + 1, 0)}
        places = [named[name_] for name_ in PLACES]
        mine = counts["per_language"].setdefault(
            language, {"applied": 0, "broken": 0, "refused": 0}
        )
        for place in places:
            offered = await client.text_document_code_action_async(
                t.CodeActionParams(
                    text_document=t.TextDocumentIdentifier(uri=uri),
                    range=place,
                    context=t.CodeActionContext(diagnostics=[]),
                )
            )
            commands = {
                a.command.command: a.command
                for a in offered or []
                if isinstance(a, t.CodeAction) and a.command
            }
            if set(commands) != ALL_COMMANDS:
                counts["actions_missing"].append(f"{language}:{place.start.line}")
            for name_ in EDIT_COMMANDS:
                command = commands[name_]
                before = len(client.applied_edits)  # type: ignore[attr-defined]
                try:
                    result = await client.workspace_execute_command_async(
                        t.ExecuteCommandParams(command=command.command, arguments=command.arguments)
                    )
                except JsonRpcException as exc:  # an error answer: nothing was written either
                    result = {"applied": False, "refused": f"error: {exc}"}
                counts["attempts"] += 1
                counts["last"] = f"{language} {name_} at line {place.start.line}"
                new_edits = client.applied_edits[before:]  # type: ignore[attr-defined]
                if result.get("applied"):
                    counts["applied"] += 1
                    mine["applied"] += 1
                    if result.get("finish_reason") == "length" or unclosed_fence(result["text"]):
                        counts["cut_off_applied"] += 1
                    for edit in new_edits:
                        for after in edited_texts(edit, documents).values():
                            parsed = parse(language, after)
                            if parsed is not None and parsed.has_error:
                                counts["applied_and_broken"] += 1
                                mine["broken"] += 1
                    save(counts)
                    continue
                mine["refused"] += 1
                assert not new_edits, "a refused edit was sent anyway"
                reason = result.get("refused", "")
                if "cut off" in reason:
                    counts["refused_cut_off"] += 1
                elif "would not parse" in reason:
                    counts["refused_would_break"] += 1
                else:
                    counts["refused_other"] += 1
                save(counts)
        line, column = opener
        listed = await vim.text_document_completion_async(
            t.CompletionParams(
                text_document=t.TextDocumentIdentifier(uri=uri),
                position=t.Position(line=line, character=column),
            )
        )
        counts["neovim_completions"] += 1
        for item in listed.items if isinstance(listed, t.CompletionList) else []:
            if item.text_edit is not None and "\n" in item.text_edit.new_text:
                counts["neovim_items_with_newline"] += 1
    counts["done"] = True
    save(counts)
    print("\nedit safety:", json.dumps(counts, indent=2))
    assert counts["actions_missing"] == []
    assert counts["applied_and_broken"] == 0
    assert counts["cut_off_applied"] == 0
    assert counts["neovim_items_with_newline"] == 0
    assert counts["attempts"] == len(SOURCES) * len(PLACES) * len(EDIT_COMMANDS)
