"""Editor: one inline completion, end to end: cache, cancel-previous, debounce, daemon call.

``InlineCompleter.complete`` is what the LSP handlers await. The daemon call
runs in an inner task per document:

- a newer request for the same document cancels the older inner task; the
  older request then answers with no items (it was superseded, not
  cancelled by the client);
- ``$/cancelRequest`` cancels the handler's task, which cancels the inner
  task it awaits; the aiohttp request is closed and the daemon drops the job;
- automatic triggers wait ``debounceMs`` first, inside the inner task, so a
  burst of keystrokes sends one request; explicit (Invoked) triggers don't wait;
- the typed-ahead cache answers before any of that;
- a ``single_line`` request (a client whose completion popup cannot insert
  a newline) is asked and cut as one line even at a block opener.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qwend_lsp.completion import (
    CompletionCache,
    CursorContext,
    complete_body,
    cursor_context,
    shape_completion,
)
from qwend_lsp.daemon_link import DaemonLink
from qwend_lsp.options import Options


@dataclass(frozen=True)
class InlineRequest:
    uri: str
    text: str
    offset: int
    language: str
    path: str
    snippets: list[dict[str, Any]] = field(default_factory=list)
    single_line: bool = False  # the client cannot insert a newline from a completion item


class InlineCompleter:
    def __init__(self, link: DaemonLink, options: Options) -> None:
        self.link = link
        self.options = options
        self.cache = CompletionCache(options.cache_size)
        self._inflight: dict[str, asyncio.Task[str]] = {}
        self.daemon_calls = 0

    def configure(self, options: Options) -> None:
        self.options = options
        self.cache.size = options.cache_size

    async def complete(self, request: InlineRequest, automatic: bool) -> str | None:
        """The text to insert at the cursor, or None (superseded or nothing to add)."""
        ctx = cursor_context(request.text, request.offset)
        if request.single_line:
            ctx = dataclasses.replace(ctx, multiline=False)
        cached = self.cache.lookup(request.uri, ctx.prefix, ctx.suffix)
        if cached is not None and not (request.single_line and "\n" in cached):
            return cached
        previous = self._inflight.pop(request.uri, None)
        if previous is not None:
            previous.cancel()
        work = asyncio.create_task(self._ask(request, ctx, automatic))
        self._inflight[request.uri] = work
        try:
            return await work
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the client cancelled this request
            return None  # a newer request for this document took over
        finally:
            if self._inflight.get(request.uri) is work:
                del self._inflight[request.uri]

    async def _ask(self, request: InlineRequest, ctx: CursorContext, automatic: bool) -> str:
        if automatic and self.options.debounce_ms:
            await asyncio.sleep(self.options.debounce_ms / 1000)
        body = complete_body(
            ctx,
            language=request.language,
            path=request.path,
            snippets=request.snippets,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
        )
        self.daemon_calls += 1
        answer = await self.link.task("complete", body)
        text = shape_completion(str(answer.get("text", "")), ctx)
        self.cache.store(request.uri, ctx.prefix, ctx.suffix, text)
        return text
