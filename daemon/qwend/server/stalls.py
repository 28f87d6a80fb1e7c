"""Transport: clients that stop reading are dropped, so none holds a connection forever.

aiohttp covers the other two stalls with its own knobs, which the daemon
sets: ``keepalive_timeout`` (``server.idle_timeout_s``) closes a connection
that has no complete request, whether idle between requests or stuck in a
request line and headers that stop arriving; the handler's body read runs
under ``server.read_timeout_s`` (server/app.py). What aiohttp has no knob for
is the write side: an answer (a stream, or a large body) whose client stops
reading stays in the transport's send buffer, and the handler waits in
``drain`` for ever.

``WriteWatchdog`` looks at every open connection once a second: one whose
send buffer has held data without emptying for ``server.write_timeout_s`` is
aborted. That frees its descriptor and, with ``handler_cancellation``,
cancels its handler, which cancels the job: the model stops generating for
a reader that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

log = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 1.0  # how late a stalled reader may be noticed beyond its timeout
# After an error answer, aiohttp reads what is left of the body so the client gets
# the answer, not a reset; a client that stopped sending is not waited on longer.
LINGER_S: Final = 1.0


def runner_options(idle_timeout_s: float) -> dict[str, Any]:
    """aiohttp's own knobs for stalled clients, as ``web.AppRunner`` keyword arguments."""
    return {
        "handler_cancellation": True,  # a client that disconnects cancels its handler
        # No complete request for this long (idle, or headers that stop coming): closed.
        "keepalive_timeout": idle_timeout_s,
        "lingering_time": LINGER_S,
    }


class WriteWatchdog:
    """Aborts connections whose send buffer has not emptied for ``timeout_s()`` seconds."""

    def __init__(
        self,
        server: web.Server,
        timeout_s: Callable[[], float],
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._server = server
        self._timeout_s = timeout_s  # read at every check: a reload may change it
        self._interval = check_interval_s
        self._since: dict[object, float] = {}  # connection -> when its buffer last held data
        self._task: asyncio.Task[None] | None = None
        self.aborted = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def check(self) -> None:
        """One look at every connection (also called directly by tests)."""
        now = time.monotonic()
        timeout_s = self._timeout_s()
        open_now = set()
        for connection in self._server.connections:
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            open_now.add(connection)
            if transport.get_write_buffer_size() == 0:
                self._since.pop(connection, None)
                continue
            since = self._since.setdefault(connection, now)
            if now - since >= timeout_s:
                log.warning(
                    "dropping a client that read nothing for %.0fs (%d bytes unsent)",
                    now - since,
                    transport.get_write_buffer_size(),
                )
                transport.abort()
                self.aborted += 1
                self._since.pop(connection, None)
        for gone in set(self._since) - open_now:
            del self._since[gone]
