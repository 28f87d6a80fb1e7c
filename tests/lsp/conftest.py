"""LSP test fixtures: `qwend lsp` over stdio (pytest-lsp) against the real daemon and model.

One daemon serves the whole session (the SmolLM2 model from
tests/integration); each test starts its own language server with
``start_lsp`` and the initializationOptions it needs. Sockets live in short
/tmp directories (a Unix socket path must stay under 108 bytes).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pygls.protocol
import pytest
import pytest_asyncio
import pytest_lsp
from cattrs import Converter
from lsprotocol import types as t
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.integration.conftest import MODEL, MODEL_DIR, Daemon, require_models, smollm2_config

StartLsp = Callable[..., Awaitable[LanguageClient]]


def fixed_converter() -> Converter:
    """pygls' converter with lsprotocol's Union[Command, CodeAction] hook fixed.

    lsprotocol 2025.0.0 reads any object with a "command" key as a Command, so
    a CodeAction that carries a command would arrive as a garbled Command.
    """
    conv: Converter = pygls.protocol.default_converter()

    def command_or_action(obj: Any, _: Any) -> t.Command | t.CodeAction:
        if isinstance(obj.get("command"), str):
            return conv.structure(obj, t.Command)
        return conv.structure(obj, t.CodeAction)

    conv.register_structure_hook(t.Command | t.CodeAction, command_or_action)  # type: ignore[arg-type]
    # Let tests send VS Code's raw inline triggerKind 0 (Invoke), which is no enum member.
    conv.register_unstructure_hook(t.InlineCompletionTriggerKind, lambda e: getattr(e, "value", e))
    return conv


class Client(LanguageClient):
    """The pytest-lsp client, plus what these tests capture."""

    applied_edits: list[t.WorkspaceEdit]
    statuses: list[dict[str, Any]]


def make_client() -> Client:
    client = Client(converter_factory=fixed_converter)
    pytest_lsp.client.register_lsp_features(client)
    client.applied_edits = []
    client.statuses = []

    @client.feature(t.WORKSPACE_APPLY_EDIT)
    def apply_edit(ls: Client, params: t.ApplyWorkspaceEditParams) -> t.ApplyWorkspaceEditResult:
        ls.applied_edits.append(params.edit)
        return t.ApplyWorkspaceEditResult(applied=True)

    @client.feature("qwend/status")
    def status(ls: Client, params: Any) -> None:
        ls.statuses.append(params if isinstance(params, dict) else dict(params._asdict()))

    return client


def capabilities(editor: str | None = None, create_files: bool = True) -> t.ClientCapabilities:
    """An editor's profile, or a client with progress, showDocument, inline completion and
    (``create_files``) the CreateFile resource operation."""
    if editor is not None:
        return pytest_lsp.client_capabilities(editor)
    operations = [t.ResourceOperationKind.Create] if create_files else []
    return t.ClientCapabilities(
        window=t.WindowClientCapabilities(
            work_done_progress=True,
            show_document=t.ShowDocumentClientCapabilities(support=True),
        ),
        workspace=t.WorkspaceClientCapabilities(
            workspace_edit=t.WorkspaceEditClientCapabilities(
                document_changes=True, resource_operations=operations
            )
        ),
        text_document=t.TextDocumentClientCapabilities(
            inline_completion=t.InlineCompletionClientCapabilities()
        ),
    )


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    require_models(MODEL_DIR, MODEL, "QWEND_TEST_MODEL_DIR")
    root = Path(tempfile.mkdtemp(prefix="qwl-", dir="/tmp"))
    d = Daemon(root, smollm2_config(MODEL_DIR)).start()
    try:
        d.wait_for("ready")
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture
async def start_lsp(tmp_path: Path) -> AsyncIterator[StartLsp]:
    """start_lsp(socket, options=None, editor=None, config=None, env=None, client_name=None,
    create_files=True) -> client. Warm-up is off unless ``options`` turn it on: its request
    would blur the tests that count the daemon's requests."""
    clients: list[LanguageClient] = []

    async def start(
        socket: Path,
        options: dict[str, Any] | None = None,
        editor: str | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        client_name: str | None = None,
        create_files: bool = True,
    ) -> LanguageClient:
        command = [sys.executable, "-m", "qwend", "lsp", "--socket", str(socket)]
        if config is not None:
            command += ["--config", str(config)]
        server = ClientServerConfig(
            server_command=command, client_factory=make_client, server_env=env
        )
        client = await server.start()
        clients.append(client)
        opts = {
            "autoStart": False,
            "debounceMs": 0,
            "maxTokens": 8,
            "temperature": 0,
            "warmUp": False,
            **(options or {}),
        }
        client.initialize_result = await client.initialize_session(  # type: ignore[attr-defined]
            t.InitializeParams(
                capabilities=capabilities(editor, create_files),
                client_info=t.ClientInfo(name=client_name) if client_name else None,
                initialization_options=opts,
                root_uri=tmp_path.as_uri(),
                workspace_folders=[t.WorkspaceFolder(uri=tmp_path.as_uri(), name="ws")],
            )
        )
        return client

    yield start
    for client in clients:
        try:
            await asyncio.wait_for(client.shutdown_session(), 30)
        finally:
            await client.stop()


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(
        t.DidOpenTextDocumentParams(
            text_document=t.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )


def apply(text: str, edits: list[t.TextEdit]) -> str:
    """Apply non-overlapping TextEdits (character = code point here: ASCII sources)."""
    lines = text.splitlines(keepends=True)

    def offset(p: t.Position) -> int:
        return sum(len(line) for line in lines[: p.line]) + p.character

    for edit in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        start, end = offset(edit.range.start), offset(edit.range.end)
        text = text[:start] + edit.new_text + text[end:]
    return text


def _metrics(daemon: Daemon) -> list[str]:
    connection, response = daemon.client()._open("GET", "/metrics", None)
    try:
        return response.read().decode().splitlines()
    finally:
        connection.close()


def metric(daemon: Daemon, name: str, labels: str = "") -> float:
    """One sample of the daemon's /metrics, 0 when absent."""
    for line in _metrics(daemon):
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


def task_requests(daemon: Daemon) -> float:
    """How many /v1/tasks/{task} requests the daemon has seen, whatever the outcome."""
    total = 0.0
    for line in _metrics(daemon):
        if line.startswith('qwend_requests_total{endpoint="/v1/tasks/{task}"'):
            total += float(line.split()[-1])
    return total


async def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.2)
    return check()
