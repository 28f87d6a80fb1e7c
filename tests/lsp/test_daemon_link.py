"""LSP: the server outlives the daemon: clean errors while it is down, recovery when it is back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig

from tests.fixtures.daemon import MODEL_DIR, Daemon, smollm2_config
from tests.fixtures.lsp_client import Client, StartLsp, open_doc, wait_until

pytestmark = pytest.mark.slow


def _params(uri: str) -> t.InlineCompletionParams:
    return t.InlineCompletionParams(
        text_document=t.TextDocumentIdentifier(uri=uri),
        position=t.Position(line=1, character=12),
        context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Invoked),
    )


async def _status(client: Any) -> dict[str, Any]:
    result = await client.protocol.send_request_async("qwend/status", {})
    return result if isinstance(result, dict) else dict(result._asdict())


async def test_daemon_down_then_back(sandbox: Path, start_lsp: StartLsp) -> None:
    daemon = Daemon(sandbox, smollm2_config(MODEL_DIR))
    client = await start_lsp(daemon.socket, {"autoStart": False})
    assert isinstance(client, Client)
    uri = "file:///ws/down.py"
    open_doc(client, uri, "items = [3, 1, 2]\nfor item in \n")

    with pytest.raises(JsonRpcException) as raised:
        await client.text_document_inline_completion_async(_params(uri))
    assert raised.value.code == -32803  # RequestFailed
    assert "qwend daemon is not running" in raised.value.message
    status = await _status(client)
    assert status["state"] == "unreachable"
    assert status["socket"] == str(daemon.socket)

    daemon.start()
    try:
        daemon.wait_for("ready")
        answer = await client.text_document_inline_completion_async(_params(uri))  # same server
        assert answer is not None
        assert (await _status(client))["state"] == "ready"
        assert await wait_until(lambda: any(s["state"] == "ready" for s in client.statuses), 10)
    finally:
        daemon.stop()


async def test_auto_start_spawns_the_daemon_and_reports_loading(
    sandbox: Path, start_lsp: StartLsp
) -> None:
    daemon = Daemon(sandbox, smollm2_config(MODEL_DIR))  # its config and sandbox; the LSP starts it
    try:
        client = await start_lsp(
            daemon.socket, {"autoStart": True}, config=daemon.config_path, env=daemon.env
        )
        assert isinstance(client, Client)
        assert await wait_until(
            lambda: any(s["state"] == "ready" for s in client.statuses), timeout=180
        ), client.statuses
        assert daemon.health() == "ready"
        titles = [
            report.title
            for reports in client.progress_reports.values()
            for report in reports
            if isinstance(report, t.WorkDoneProgressBegin)
        ]
        assert "qwend daemon" in titles
        uri = "file:///ws/auto.py"
        open_doc(client, uri, "items = [3, 1, 2]\nfor item in \n")
        assert await client.text_document_inline_completion_async(_params(uri)) is not None
    finally:
        daemon.cli("stop", timeout=90)


async def test_exits_when_the_editor_process_dies(tmp_path: Path) -> None:
    editor = subprocess.Popen(["sleep", "600"])
    command = [sys.executable, "-m", "qwend", "lsp", "--socket", str(tmp_path / "none.sock")]
    client = await ClientServerConfig(server_command=command).start()
    try:
        await client.initialize_session(
            t.InitializeParams(
                capabilities=t.ClientCapabilities(),
                process_id=editor.pid,
                initialization_options={"autoStart": False},
            )
        )
        editor.kill()
        editor.wait()
        server = client._server
        assert server is not None
        await asyncio.wait_for(server.wait(), 15)
        assert server.returncode == 0
    finally:
        if editor.poll() is None:
            editor.kill()
            editor.wait()
        await client.stop()
