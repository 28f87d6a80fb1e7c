"""Editor: keystroke-to-completion latency through ``qwend lsp``, driven like an editor.

Starts ``qwend lsp`` as a subprocess and speaks LSP JSON-RPC to it over stdio
with pygls' client (the library the server is built on). It opens a Python
document of the asked token count with the cursor on a fresh line inside it,
then types a line one character at a time: each keystroke is a
``didChange`` followed by an automatic ``textDocument/inlineCompletion``, and
the latency is from sending that request to its answer. The server's
debounce is part of what a user waits for, so it is applied (and reported).
The next keystroke waits for the answer, so no request supersedes another.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lsprotocol import types as t
from pygls.lsp.client import LanguageClient

from qwend import __version__

DOC_URI: Final = "file:///qwend-bench/workspace/bench_target.py"  # a label; never opened
TYPED_LINE: Final = "total = sum(item * 2 for item in items if item > limit)"
CURSOR_AT: Final = 0.9  # the cursor sits after 90 % of the document: a prefix and a suffix
SHUTDOWN_TIMEOUT_S: Final = 10.0
STATUS_NOTIFICATION: Final = "qwend/status"  # qwend lsp's daemon-state notification


@dataclass(frozen=True)
class KeystrokeRun:
    latencies_s: list[float]  # one per keystroke
    answered_with_text: int  # keystrokes whose answer carried a suggestion


def document_with_cursor(code: str) -> tuple[str, t.Position]:
    """``code`` with a function header and an indented empty line inserted at
    CURSOR_AT of its lines; returns the text and the cursor on that line."""
    lines = code.split("\n")
    at = max(1, int(len(lines) * CURSOR_AT))
    inserted = ["def bench_target(items, limit):", "    "]
    text = "\n".join([*lines[:at], *inserted, *lines[at:]])
    return text, t.Position(line=at + 1, character=4)


async def keystroke_latencies(
    socket_path: Path,
    config_path: str | None,
    document: str,
    cursor: t.Position,
    *,
    keystrokes: int,
    max_tokens: int,
    debounce_ms: int,
    timeout_s: float,
) -> KeystrokeRun:
    """Type ``keystrokes`` characters at ``cursor`` and time each inline completion."""
    client = LanguageClient("qwend-bench", __version__)

    @client.feature(STATUS_NOTIFICATION)  # type: ignore[untyped-decorator]
    def _status(params: object) -> None:
        """The server reports the daemon's state; the benchmark does not need it."""

    command = ["-m", "qwend", "lsp", "--socket", str(socket_path)]
    if config_path:
        command += ["--config", config_path]
    await client.start_io(sys.executable, *command, env=dict(os.environ))
    try:
        await client.initialize_async(
            t.InitializeParams(
                capabilities=t.ClientCapabilities(
                    text_document=t.TextDocumentClientCapabilities(
                        inline_completion=t.InlineCompletionClientCapabilities()
                    )
                ),
                initialization_options={
                    "autoStart": False,
                    "warmUp": False,  # the bench warms the model itself; count keystrokes only
                    "debounceMs": debounce_ms,
                    "maxTokens": max_tokens,
                    "temperature": 0,
                },
            )
        )
        client.initialized(t.InitializedParams())
        client.text_document_did_open(
            t.DidOpenTextDocumentParams(
                text_document=t.TextDocumentItem(
                    uri=DOC_URI, language_id="python", version=1, text=document
                )
            )
        )
        return await _type(client, cursor, keystrokes, timeout_s)
    finally:
        try:
            await asyncio.wait_for(client.shutdown_async(None), SHUTDOWN_TIMEOUT_S)
            client.exit(None)
        finally:
            await client.stop()  # type: ignore[no-untyped-call]


async def _type(
    client: LanguageClient, cursor: t.Position, keystrokes: int, timeout_s: float
) -> KeystrokeRun:
    typed = (TYPED_LINE * (keystrokes // len(TYPED_LINE) + 1))[:keystrokes]
    line, character = cursor.line, cursor.character
    latencies: list[float] = []
    with_text = 0
    for version, char in enumerate(typed, start=2):
        at = t.Position(line=line, character=character)
        client.text_document_did_change(
            t.DidChangeTextDocumentParams(
                text_document=t.VersionedTextDocumentIdentifier(uri=DOC_URI, version=version),
                content_changes=[
                    t.TextDocumentContentChangePartial(range=t.Range(start=at, end=at), text=char)
                ],
            )
        )
        character += 1
        params = t.InlineCompletionParams(
            text_document=t.TextDocumentIdentifier(uri=DOC_URI),
            position=t.Position(line=line, character=character),
            context=t.InlineCompletionContext(trigger_kind=t.InlineCompletionTriggerKind.Automatic),
        )
        started = time.perf_counter()
        answer = await asyncio.wait_for(
            client.text_document_inline_completion_async(params), timeout_s
        )
        latencies.append(time.perf_counter() - started)
        items = answer.items if isinstance(answer, t.InlineCompletionList) else answer or []
        with_text += any(item.insert_text for item in items)
    return KeystrokeRun(latencies, with_text)
