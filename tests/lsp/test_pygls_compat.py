"""LSP: the private pygls attributes that pygls_compat.py reads exist in the installed pygls."""

from __future__ import annotations

import importlib.metadata
import threading
from concurrent.futures import Future
from pathlib import Path

from qwend_lsp import pygls_compat
from qwend_lsp.server import QwendServer


def test_the_installed_pygls_is_the_pinned_one() -> None:
    assert importlib.metadata.version("pygls") == pygls_compat.PYGLS_VERSION


def test_request_future_finds_the_request_being_handled() -> None:
    server = QwendServer(Path("/nonexistent.sock"), None)
    protocol = server.protocol
    assert pygls_compat.request_future(protocol) is None  # outside any request
    future: Future[None] = Future()
    protocol._request_futures[7] = future
    protocol._ctx_msg_id.set(7)
    assert pygls_compat.request_future(protocol) is future


def test_stop_and_shutdown_flags() -> None:
    server = QwendServer(Path("/nonexistent.sock"), None)
    assert pygls_compat.shut_down_cleanly(server.protocol) is False
    server.protocol._shutdown = True
    assert pygls_compat.shut_down_cleanly(server.protocol) is True
    server._stop_event = threading.Event()
    pool = server.thread_pool
    pygls_compat.stop_without_join(server)
    assert server._stop_event.is_set()
    assert pool._shutdown  # type: ignore[attr-defined]
