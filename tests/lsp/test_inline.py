"""LSP: inline completions from the real daemon: text, cancellation, cancel-previous, cache."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcRequestCancelled

from tests.fixtures.daemon import Daemon
from tests.fixtures.lsp_client import StartLsp, metric, open_doc, task_requests, wait_until

pytestmark = pytest.mark.slow

CANCELLED = ("qwend_jobs_total", '{outcome="cancelled"}')


def inline_params(uri: str, line: int, character: int, kind: int = 1) -> t.InlineCompletionParams:
    """Inline completion params; ``kind`` may be VS Code's raw 0 (see fixed_converter)."""
    return t.InlineCompletionParams(
        text_document=t.TextDocumentIdentifier(uri=uri),
        position=t.Position(line=line, character=character),
        context=t.InlineCompletionContext(trigger_kind=kind),  # type: ignore[arg-type]
    )


async def test_inline_completion_returns_model_text(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, editor="visual-studio-code")
    assert client.initialize_result.capabilities.inline_completion_provider is not None  # type: ignore[attr-defined]
    uri = "file:///ws/squares.py"
    open_doc(client, uri, "numbers = [1, 2, 3]\nsquares = [n * n for n in \n")
    # VS Code's own Invoke kind is 0 (lsprotocol expects 1): the server accepts it.
    answer = await client.protocol.send_request_async(
        t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 26, kind=0)
    )
    assert isinstance(answer, t.InlineCompletionList)
    assert len(answer.items) == 1
    text = answer.items[0].insert_text
    assert isinstance(text, str) and text.strip()
    assert "\n" not in text  # mid-statement: a single line
    assert answer.items[0].range == t.Range(
        start=t.Position(line=1, character=26), end=t.Position(line=1, character=26)
    )
    # This client profile announces no inlineCompletion: the completion fallback is on.
    listed = await client.text_document_completion_async(
        t.CompletionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            position=t.Position(line=1, character=26),
        )
    )
    assert isinstance(listed, t.CompletionList)
    [item] = listed.items
    assert item.text_edit is not None and item.text_edit.new_text == text  # the cached suggestion


async def test_cancel_request_cancels_the_daemon_job(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"maxTokens": 2000})
    uri = "file:///ws/long.py"
    open_doc(client, uri, "def fibonacci(n):\n    \n")
    before = metric(daemon, *CANCELLED)
    pending = asyncio.create_task(
        client.protocol.send_request_async(
            t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 4), msg_id=4242
        )
    )
    assert await wait_until(lambda: _active(daemon))
    client.cancel_request(t.CancelParams(id=4242))
    with pytest.raises(JsonRpcRequestCancelled) as raised:
        await asyncio.wait_for(pending, 10)
    assert raised.value.code == -32800
    assert await wait_until(lambda: metric(daemon, *CANCELLED) > before, timeout=10)
    assert await wait_until(lambda: not _active(daemon), timeout=10)


def _active(daemon: Daemon) -> bool:
    _, status = daemon.client().request("GET", "/v1/status")
    return bool(status["queue"]["active"])


async def test_a_newer_request_cancels_the_older_one(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"maxTokens": 2000})
    uri = "file:///ws/two.py"
    open_doc(client, uri, "def fibonacci(n):\n    \nvalue = fibonacci(\n")
    before = metric(daemon, *CANCELLED)
    older = asyncio.create_task(
        client.protocol.send_request_async(
            t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 4)
        )
    )
    assert await wait_until(lambda: _active(daemon))
    newer = asyncio.create_task(
        client.protocol.send_request_async(
            t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 2, 18), msg_id=4343
        )
    )
    superseded = await asyncio.wait_for(older, 10)
    assert list(superseded.items) == []  # answered at once, empty: not an error
    assert await wait_until(lambda: metric(daemon, *CANCELLED) > before, timeout=10)
    # The newer one runs once the older one's job is cancelled. A sampled
    # answer can end within a few tokens, so it may be answered already; if
    # not, it is cancelled to keep the test short. Either way it is answered.
    if not newer.done():
        client.cancel_request(t.CancelParams(id=4343))
    with contextlib.suppress(JsonRpcRequestCancelled):
        await asyncio.wait_for(newer, 10)


async def test_typed_ahead_text_comes_from_the_cache(daemon: Daemon, start_lsp: StartLsp) -> None:
    client = await start_lsp(daemon.socket, {"maxTokens": 10, "temperature": 0})
    uri = "file:///ws/cache.py"
    line = 'message = "Hello, " + '
    open_doc(client, uri, f"def greet(name):\n    {line}\n    return message\n")
    first = await client.protocol.send_request_async(
        t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 4 + len(line))
    )
    assert first.items, "the model gave no completion to type ahead into"
    suggestion = first.items[0].insert_text
    assert isinstance(suggestion, str)
    # Greedy decoding makes the suggestion fixed; it must be long enough to type into.
    assert len(suggestion) >= 2, f"the model's suggestion {suggestion!r} is too short"
    calls = task_requests(daemon)
    typed = suggestion[:1]
    client.text_document_did_change(
        t.DidChangeTextDocumentParams(
            text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[
                t.TextDocumentContentChangePartial(
                    range=t.Range(
                        start=t.Position(line=1, character=4 + len(line)),
                        end=t.Position(line=1, character=4 + len(line)),
                    ),
                    text=typed,
                )
            ],
        )
    )
    second = await client.protocol.send_request_async(
        t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 4 + len(line) + 1)
    )
    assert [item.insert_text for item in second.items] == [suggestion[1:]]
    assert task_requests(daemon) == calls  # no daemon call
