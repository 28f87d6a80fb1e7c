"""LSP: edits a user can trust, against the real daemon and model (issue 14).

Cut-off answers are refused and offered for reading; with no selection the
unit is the enclosing function; docstrings take the language's form; tests
go to a new file that is opened; commit messages have git's form;
completions for Vim-family clients hold no newline; ghost text extends the
selected suggestion; the model is warmed up when the daemon is ready.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types as t

from qwend_lsp.syntax.languages import parse
from tests.fixtures.daemon import Daemon
from tests.fixtures.lsp_client import Client, StartLsp, apply, open_doc, task_requests, wait_until

pytestmark = pytest.mark.slow

PY_SOURCE = "import os\n\n\ndef add(a, b):\n    total = a + b\n    return total\n"
LUA_SOURCE = "local M = {}\n\nlocal function add(a, b)\n  return a + b\nend\n\nreturn M\n"


def at(line: int, character: int) -> dict[str, dict[str, int]]:
    """An empty selection (a cursor) as the JSON range the code actions send."""
    point = {"line": line, "character": character}
    return {"start": point, "end": point}


async def run(client: Any, command: str, uri: str, range_json: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command=command, arguments=[{"uri": uri, "range": range_json}])
    )
    return result


async def test_a_cut_off_answer_is_refused_and_shown_for_reading(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 6})
    assert isinstance(client, Client)
    uri = "file:///ws/cut.py"
    open_doc(client, uri, PY_SOURCE)
    result = await run(client, "qwend.refactor", uri, at(4, 4))
    assert result["applied"] is False and result["finish_reason"] == "length"
    assert "cut off" in result["refused"] and "taskMaxTokens" in result["refused"]
    assert "6 tokens" in result["refused"]
    assert client.applied_edits == []
    assert any(m.type == t.MessageType.Warning and "cut off" in m.message for m in client.messages)
    [shown] = client.shown_documents
    assert shown.uri == result["answer_uri"] and not shown.take_focus
    answer_file = Path(shown.uri.removeprefix("file://"))
    assert result["text"].strip() in answer_file.read_text()


async def test_no_selection_replaces_the_enclosing_function(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 80})
    assert isinstance(client, Client)
    uri = "file:///ws/unit.py"
    open_doc(client, uri, PY_SOURCE)
    result = await run(client, "qwend.refactor", uri, at(4, 6))
    if result["applied"]:
        [edit] = client.applied_edits
        assert edit.changes is not None
        [text_edit] = edit.changes[uri]
        # The whole function, from its `def` line through its last line's newline.
        assert text_edit.range == t.Range(
            start=t.Position(line=3, character=0), end=t.Position(line=6, character=0)
        )
        after = apply(PY_SOURCE, [text_edit])
        assert after.startswith("import os\n\n\n")
        parsed = parse("python", after)
        assert parsed is not None and not parsed.has_error
        assert result["check"] == "passed"
    else:  # refused: then never written, and the reason is the parse check or the length
        assert client.applied_edits == []
        assert "would not parse" in result["refused"] or "cut off" in result["refused"]


async def test_lua_docstring_is_a_triple_dash_comment_above_the_function(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 80})
    assert isinstance(client, Client)
    uri = "file:///ws/mod.lua"
    open_doc(client, uri, LUA_SOURCE, language="lua")
    result = await run(client, "qwend.docstring", uri, at(3, 2))
    if not result["applied"]:  # a comment cannot break the file: cut off, or nothing to write
        assert client.applied_edits == []
        assert "cut off" in result["refused"] or "held no docstring" in result["refused"]
        pytest.skip(f"the model's docstring was refused: {result['refused']}")
    [edit] = client.applied_edits
    assert edit.changes is not None
    [text_edit] = edit.changes[uri]
    assert text_edit.range.start == t.Position(line=2, character=0)  # above `local function`
    assert all(row.startswith("---") for row in text_edit.new_text.splitlines())
    parsed = parse("lua", apply(LUA_SOURCE, [text_edit]))
    assert parsed is not None and not parsed.has_error


async def test_tests_go_into_a_new_file_that_is_opened(
    daemon: Daemon, start_lsp: StartLsp, tmp_path: Path
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 80})
    assert isinstance(client, Client)
    source = tmp_path / "calc.py"
    source.write_text(PY_SOURCE)
    open_doc(client, source.as_uri(), PY_SOURCE)
    result = await run(client, "qwend.tests", source.as_uri(), at(4, 4))
    if not result["applied"]:
        assert client.applied_edits == [] and result["refused"]
        pytest.skip(f"the model's tests were refused: {result['refused']}")
    target = (tmp_path / "test_calc.py").as_uri()
    assert result["uri"] == target
    [edit] = client.applied_edits
    assert edit.changes is None and edit.document_changes is not None
    create, insert = edit.document_changes
    assert isinstance(create, t.CreateFile) and create.uri == target
    assert isinstance(insert, t.TextDocumentEdit) and insert.text_document.uri == target
    [shown] = client.shown_documents
    assert shown.uri == target and shown.take_focus
    parsed = parse("python", insert.edits[0].new_text)
    assert parsed is not None and not parsed.has_error


async def test_tests_without_create_support_are_written_by_the_server(
    daemon: Daemon, start_lsp: StartLsp, tmp_path: Path
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 80}, create_files=False)
    assert isinstance(client, Client)
    source = tmp_path / "calc.py"
    source.write_text(PY_SOURCE)
    open_doc(client, source.as_uri(), PY_SOURCE)
    result = await run(client, "qwend.tests", source.as_uri(), at(4, 4))
    assert client.applied_edits == []  # the source is never edited
    if not result["applied"]:
        pytest.skip(f"the model's tests were refused: {result['refused']}")
    written = tmp_path / "test_calc.py"
    assert written.read_text().strip() and source.read_text() == PY_SOURCE
    parsed = parse("python", written.read_text())
    assert parsed is not None and not parsed.has_error


async def test_a_language_without_grammar_is_applied_unchecked_and_said_so(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 80})
    uri = "file:///ws/notes.cob"
    open_doc(client, uri, "DISPLAY 'HELLO'.\n", language="cobol")
    result = await run(client, "qwend.refactor", uri, at(0, 0))
    if not result["applied"]:  # no parse check: only a cut-off or code-less answer stops it
        assert "cut off" in result["refused"] or "held no code" in result["refused"]
        pytest.skip(f"the model's answer was refused: {result['refused']}")
    assert result["check"].startswith("skipped: no grammar")
    assert any("not syntax-checked" in m.message for m in client.messages)


async def test_commit_message_has_gits_form(
    daemon: Daemon, start_lsp: StartLsp, tmp_path: Path
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 24})
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "add.py").write_text(PY_SOURCE)
    subprocess.run([*git, "add", "add.py"], check=True)
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command="qwend.commitMessage", arguments=[])
    )
    lines = result["text"].split("\n")
    assert 0 < len(lines[0]) <= 72 and lines[1] == "" and lines[2].strip()
    assert "```" not in result["text"]
    assert not any(line.startswith(("+def", "@@", "diff --git")) for line in lines)


async def test_neovim_completion_at_a_block_opener_holds_no_newline(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    options = {"completionFallback": True, "maxTokens": 12}
    vim = await start_lsp(daemon.socket, options, client_name="Neovim")
    uri = "file:///ws/opener.py"
    source = "def fibonacci(n):\n"
    open_doc(vim, uri, source)
    params = t.CompletionParams(
        text_document=t.TextDocumentIdentifier(uri=uri), position=t.Position(line=0, character=17)
    )
    listed = await vim.text_document_completion_async(params)
    assert isinstance(listed, t.CompletionList)
    for item in listed.items:
        assert item.text_edit is not None and "\n" not in item.text_edit.new_text
    # Another client at the same place may get the block (the model's own answer).
    other = await start_lsp(daemon.socket, options, client_name="Emacs")
    open_doc(other, uri, source)
    block = await other.text_document_completion_async(params)
    assert isinstance(block, t.CompletionList)


async def test_ghost_text_extends_the_selected_suggestion(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"maxTokens": 8})
    uri = "file:///ws/selected.py"
    open_doc(client, uri, "import os\nfolder = os.pa\n")
    selected = t.SelectedCompletionInfo(
        range=t.Range(start=t.Position(line=1, character=12), end=t.Position(line=1, character=14)),
        text="path",
    )
    answer = await client.protocol.send_request_async(
        t.TEXT_DOCUMENT_INLINE_COMPLETION,
        t.InlineCompletionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            position=t.Position(line=1, character=14),
            context=t.InlineCompletionContext(
                trigger_kind=t.InlineCompletionTriggerKind.Automatic,
                selected_completion_info=selected,
            ),
        ),
    )
    assert isinstance(answer, t.InlineCompletionList)
    for item in answer.items:  # VS Code shows only items that extend the selected one
        assert isinstance(item.insert_text, str) and item.insert_text.startswith("path")
        assert item.range == selected.range


async def test_the_model_is_warmed_up_when_the_daemon_is_ready(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    before = task_requests(daemon)
    await start_lsp(daemon.socket, {"warmUp": True})
    assert await wait_until(lambda: task_requests(daemon) > before, timeout=30)
