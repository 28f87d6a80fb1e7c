"""LSP: code actions and commands against the real daemon: edits, prose, progress."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from tests.fixtures.daemon import Daemon
from tests.fixtures.lsp_client import Client, StartLsp, apply, metric, open_doc, wait_until

pytestmark = pytest.mark.slow

SOURCE = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
RANGE_JSON = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
WHOLE_FUNCTION = t.Range(start=t.Position(line=0, character=0), end=t.Position(line=2, character=0))


async def test_code_action_refactor_applies_an_edit(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 120, "taskTemperature": 0})
    assert isinstance(client, Client)
    uri = "file:///ws/add.py"
    open_doc(client, uri, SOURCE)
    actions = await client.text_document_code_action_async(
        t.CodeActionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            range=WHOLE_FUNCTION,
            context=t.CodeActionContext(diagnostics=[]),
        )
    )
    assert actions is not None
    by_command = {
        a.command.command: a for a in actions if isinstance(a, t.CodeAction) and a.command
    }
    assert set(by_command) == {
        "qwend.explain",
        "qwend.refactor",
        "qwend.docstring",
        "qwend.tests",
        "qwend.fix",
    }
    assert by_command["qwend.refactor"].kind == t.CodeActionKind.RefactorRewrite
    assert by_command["qwend.fix"].kind == t.CodeActionKind.QuickFix
    command = by_command["qwend.refactor"].command
    assert command is not None
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command=command.command, arguments=command.arguments)
    )
    # Greedy, the model stops on its own well within 120 tokens here, with code that
    # parses (a cut-off or breaking answer would be refused).
    assert result["applied"] is True, result
    assert result["text"] and result["check"] == "passed"
    [edit] = client.applied_edits
    assert edit.changes is not None
    [text_edit] = edit.changes[uri]
    assert text_edit.range == WHOLE_FUNCTION
    assert text_edit.new_text.strip()
    new_source = apply(SOURCE, list(edit.changes[uri]))
    assert new_source.endswith("\n\nprint(add(1, 2))\n")  # only the selection changed
    # The command reported progress: begin ... end.
    kinds = [
        type(report).__name__ for reports in client.progress_reports.values() for report in reports
    ]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"


async def test_explain_returns_prose(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 24})
    uri = "file:///ws/explain.py"
    open_doc(client, uri, SOURCE)
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(
            command="qwend.explain",
            arguments=[
                {
                    "uri": uri,
                    "range": {
                        "start": {"line": 0, "character": 0},
                        "end": {"line": 2, "character": 0},
                    },
                }
            ],
        )
    )
    assert isinstance(result["text"], str) and result["text"].strip()
    assert any(
        m.type == t.MessageType.Info and result["text"] in m.message for m in client.messages
    )
    assert not isinstance(client, Client) or client.applied_edits == []


async def test_explain_without_prose_messages_only_returns_the_text(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    """A client that shows results itself (the VS Code extension) gets no showMessage."""
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 24, "proseMessages": False})
    uri = "file:///ws/explain_quiet.py"
    open_doc(client, uri, SOURCE)
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(
            command="qwend.explain", arguments=[{"uri": uri, "range": RANGE_JSON}]
        )
    )
    assert isinstance(result["text"], str) and result["text"].strip()
    assert not any(result["text"] in m.message for m in client.messages)


async def test_cancel_from_the_progress_stops_the_command(
    daemon: Daemon, start_lsp: StartLsp
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 2000})
    uri = "file:///ws/cancel.py"
    open_doc(client, uri, SOURCE)
    before = metric(daemon, "qwend_jobs_total", '{outcome="cancelled"}')
    running = asyncio.create_task(
        client.workspace_execute_command_async(
            t.ExecuteCommandParams(
                command="qwend.tests", arguments=[{"uri": uri, "range": RANGE_JSON}]
            )
        )
    )
    assert await wait_until(lambda: bool(client.progress_reports) and _active(daemon))
    [token] = client.progress_reports
    client.window_work_done_progress_cancel(t.WorkDoneProgressCancelParams(token=token))
    assert await asyncio.wait_for(running, 10) == {"cancelled": True}
    assert await wait_until(
        lambda: metric(daemon, "qwend_jobs_total", '{outcome="cancelled"}') > before, 10
    )
    end = client.progress_reports[token][-1]
    assert isinstance(end, t.WorkDoneProgressEnd) and end.message == "cancelled"
    assert client.applied_edits == []  # type: ignore[attr-defined]


def _active(daemon: Daemon) -> bool:
    _, status = daemon.client().request("GET", "/v1/status")
    return bool(status["queue"]["active"])


async def test_commit_message_from_the_staged_diff(
    daemon: Daemon, start_lsp: StartLsp, tmp_path: Path
) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 16})  # root: tmp_path
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    with pytest.raises(JsonRpcException) as raised:
        await client.workspace_execute_command_async(
            t.ExecuteCommandParams(command="qwend.commitMessage", arguments=[])
        )
    assert raised.value.code == -32803 and "nothing is staged" in raised.value.message
    (tmp_path / "add.py").write_text(SOURCE)
    subprocess.run([*git, "add", "add.py"], check=True)
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command="qwend.commitMessage", arguments=[])
    )
    assert result["text"]


async def test_ask_answers_a_question(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"taskMaxTokens": 12})
    result = await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command="qwend.ask", arguments=["What does len() return?"])
    )
    assert result["text"].strip()
    assert any(result["text"] in m.message for m in client.messages)
