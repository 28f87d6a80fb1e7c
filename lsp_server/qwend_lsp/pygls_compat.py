"""Editor: the one place that reaches into pygls' private attributes.

pygls has no public way to do these four things, so the language server
reads its internals here and nowhere else. They were checked against the
pinned version (``PYGLS_VERSION``, also pinned in setup.cfg); an upgrade
re-checks this module and its tests, nothing else.

- ``request_future``: the future of the request being handled
  (``protocol._request_futures``), so a command learns of ``$/cancelRequest``
  (pygls answers -32800 but does not cancel command tasks).
- ``stop_without_join``: set ``_stop_event`` and drop ``_thread_pool``
  without joining its stdin reader thread, which may block on read forever.
- ``shut_down_cleanly``: whether ``shutdown`` came before ``exit``
  (``protocol._shutdown``), which decides the exit code.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Final

from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

PYGLS_VERSION: Final = "2.1.1"  # the version these attributes were read from


def request_future(protocol: JsonRPCProtocol) -> Future[Any] | None:
    """The future pygls keeps for the request now being handled, or None."""
    msg_id = protocol.msg_id
    if msg_id is None:
        return None
    futures: dict[Any, Future[Any]] = protocol._request_futures
    return futures.get(msg_id)


def stop_without_join(server: JsonRPCServer) -> None:
    """Stop the server's loop and its thread pool without waiting for the reader thread."""
    if server._stop_event is not None:
        server._stop_event.set()
    if server._thread_pool is not None:
        server._thread_pool.shutdown(wait=False, cancel_futures=True)


def shut_down_cleanly(protocol: JsonRPCProtocol) -> bool:
    """Did the client send ``shutdown`` before the connection ended?"""
    return bool(getattr(protocol, "_shutdown", False))
