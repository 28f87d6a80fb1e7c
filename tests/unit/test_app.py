"""Transport unit tests: the aiohttp app on a real Unix socket, with a fake service."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from qwend.client import DaemonClient
from qwend.errors import QueueFull
from qwend.metrics import Metrics
from qwend.protocol import ChatRequest, CompletionRequest, TokenizeRequest
from qwend.server import app as app_module
from qwend.server.app import JsonErrorsAppRunner, build_app
from qwend.server.stalls import WriteWatchdog, runner_options


class FakeGeneration:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.cancelled = False

    async def stream(self) -> AsyncIterator[str]:
        for piece in self.pieces:
            yield piece

    async def text(self) -> str:
        return "".join(self.pieces)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def finish_reason(self) -> str:
        return "stop"

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


class FakeService:
    model_name = "fake-model"

    def __init__(self) -> None:
        self.full = False
        self.seen: list[Any] = []
        self.pieces = ["hel", "lo"]
        self.generations: list[FakeGeneration] = []
        self.read_timeout = 30.0

    def state(self) -> str:
        return "ready"

    def health(self) -> dict[str, Any]:
        return {"status": self.state(), "model": self.model_name}

    def status(self) -> dict[str, Any]:
        return {"model": {"state": "ready"}}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model_name}]}

    async def complete(self, req: CompletionRequest) -> FakeGeneration:
        if self.full:
            raise QueueFull("full")
        self.seen.append(req)
        self.generations.append(FakeGeneration(self.pieces))
        return self.generations[-1]

    async def chat(self, req: ChatRequest) -> FakeGeneration:
        return FakeGeneration(["hi"])

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]:
        return {"count": 1, "ids": [7]}

    async def embed(self, req: Any) -> dict[str, Any]:
        return {"data": []}

    async def task(self, name: str, body: Any) -> Any:
        raise AssertionError("task() is not used by these transport tests")

    async def reload(self) -> dict[str, Any]:
        return {"result": "unchanged"}

    def max_body_bytes(self) -> int:
        return 4096

    def read_timeout_s(self) -> float:
        return self.read_timeout


@pytest.fixture
async def served() -> AsyncIterator[tuple[Path, FakeService]]:
    service = FakeService()
    runner = JsonErrorsAppRunner(build_app(service, Metrics()))  # type: ignore[arg-type]
    await runner.setup()
    directory = Path(tempfile.mkdtemp(prefix="qwa-", dir="/tmp"))
    socket_path = directory / "s.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    yield socket_path, service
    await runner.cleanup()
    socket_path.unlink(missing_ok=True)
    directory.rmdir()


async def _request(path: Path, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return await asyncio.to_thread(DaemonClient(path).request, method, url, body)


async def test_completion_and_validation(served: tuple[Path, FakeService]) -> None:
    path, service = served
    status, body = await _request(path, "POST", "/v1/completions", {"prompt": "x"})
    assert status == 200
    assert body["choices"][0]["text"] == "hello"
    assert body["usage"]["total_tokens"] == 5
    status, body = await _request(path, "POST", "/v1/completions", {"prompt": "x", "k": 1})
    assert (status, body["error"]["field"]) == (400, "k")
    assert len(service.seen) == 1  # the invalid request never reached the service


async def test_streamed_completion_sends_done(served: tuple[Path, FakeService]) -> None:
    path, _ = served
    client = DaemonClient(path)
    events = await asyncio.to_thread(
        lambda: list(client.stream("/v1/completions", {"prompt": "x", "stream": True}))
    )
    assert [e["choices"][0]["text"] for e in events] == ["hel", "lo", ""]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_service_errors_keep_their_status(served: tuple[Path, FakeService]) -> None:
    path, service = served
    service.full = True
    status, body = await _request(path, "POST", "/v1/completions", {"prompt": "x"})
    assert (status, body["error"]["code"]) == (429, "queue_full")


async def test_method_size_and_route_errors_are_json(served: tuple[Path, FakeService]) -> None:
    path, _ = served
    status, body = await _request(path, "GET", "/v1/completions")
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")
    status, body = await _request(path, "POST", "/v1/completions", {"prompt": "x" * 10_000})
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    status, body = await _request(path, "GET", "/nope")
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_peer_of_another_uid_is_refused(
    served: tuple[Path, FakeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, service = served
    # The kernel's answer for the peer: another user (the client's own check
    # of the listener, qwend.trust, sees the real, equal uids and lets it through).
    monkeypatch.setattr(app_module, "peer_uid", lambda sock: os.getuid() + 1)
    status, body = await _request(path, "POST", "/v1/completions", {"prompt": "x"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert service.seen == []


async def test_metrics_count_outcomes(served: tuple[Path, FakeService]) -> None:
    path, _ = served
    await _request(path, "POST", "/v1/completions", {"prompt": "x"})
    await _request(path, "POST", "/v1/completions", {"bad": 1})
    client = DaemonClient(path)
    _, response = await asyncio.to_thread(client._open, "GET", "/metrics", None)
    text = response.read().decode()
    assert 'qwend_requests_total{endpoint="/v1/completions",outcome="ok"} 1.0' in text
    assert 'qwend_requests_total{endpoint="/v1/completions",outcome="bad_request"} 1.0' in text


# -- stalled clients ---------------------------------------------------------------------

STALL_S = 0.5  # every timeout in these tests; the server must act well within WAIT_S
WAIT_S = 10.0


@pytest.fixture
async def strict() -> AsyncIterator[tuple[Path, FakeService, web.AppRunner, WriteWatchdog]]:
    """The app as the daemon runs it, with every stall timeout at STALL_S."""
    service = FakeService()
    service.read_timeout = STALL_S
    runner = web.AppRunner(
        build_app(service, Metrics()),  # type: ignore[arg-type]
        **runner_options(STALL_S),
    )
    await runner.setup()
    assert runner.server is not None
    watchdog = WriteWatchdog(runner.server, lambda: STALL_S, check_interval_s=0.1)
    watchdog.start()
    directory = Path(tempfile.mkdtemp(prefix="qwa-", dir="/tmp"))
    socket_path = directory / "s.sock"
    await web.UnixSite(runner, str(socket_path)).start()
    yield socket_path, service, runner, watchdog
    await watchdog.stop()
    await runner.cleanup()
    socket_path.unlink(missing_ok=True)
    directory.rmdir()


def _raw(path: Path, data: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT_S)
    sock.connect(str(path))
    sock.sendall(data)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a timeout here fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


async def test_headers_that_stop_coming_are_dropped(strict: Any) -> None:
    path, service, _, _ = strict
    sock = await asyncio.to_thread(_raw, path, b"POST /v1/completions HTTP/1.1\r\nHost: q\r\n")
    with sock:
        assert await asyncio.to_thread(_read_until_closed, sock) == b""
    assert service.seen == []


async def test_an_idle_connection_is_closed(strict: Any) -> None:
    path, _, runner, _ = strict
    sock = await asyncio.to_thread(_raw, path, b"")
    with sock:
        assert await asyncio.to_thread(_read_until_closed, sock) == b""
    assert runner.server.connections == []


async def test_a_body_that_stops_coming_gets_408(strict: Any) -> None:
    path, service, _, _ = strict
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    sock = await asyncio.to_thread(_raw, path, head + b'{"prompt": ')
    with sock:
        answer = await asyncio.to_thread(_read_until_closed, sock)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout"
    assert "server.read_timeout_s" in body["error"]["hint"]
    assert service.seen == []


async def test_a_client_that_stops_reading_is_dropped_and_its_job_cancelled(strict: Any) -> None:
    path, service, runner, watchdog = strict
    service.pieces = ["x" * 65536] * 2000  # 128 MiB: far more than any socket buffers
    body = json.dumps({"prompt": "p", "stream": True}).encode()
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: q\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sock = await asyncio.to_thread(_raw, path, request)  # and never reads
    with sock:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not (service.generations and service.generations[0].cancelled):
            assert asyncio.get_running_loop().time() < deadline, "the stalled reader was kept"
            await asyncio.sleep(0.05)
    assert watchdog.aborted == 1
    assert runner.server.connections == []


# -- aiohttp's own errors are JSON too (issue 15, item 7) ---------------------------------


def _raw_exchange(path: Path, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: q\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: q\r\n\r\n",
        b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /v1/tokenize HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        b"POST /v1/tokenize HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["garbage", "http-9.9", "long-path", "long-header", "nan-length", "negative-length",
         "tls", "bad-header"],
)  # fmt: skip
async def test_http_level_garbage_gets_a_json_error(
    served: tuple[Path, FakeService], request_bytes: bytes
) -> None:
    path, service = served
    status, headers, body = await asyncio.to_thread(_raw_exchange, path, request_bytes)
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] in ("bad_request", "payload_too_large")
    assert error["message"]
    assert "\n" not in error["message"]
    assert service.seen == []


@pytest.mark.parametrize(("status", "code"), [(500, "internal_error"), (504, "internal_error")])
def test_aiohttp_server_errors_keep_their_status(status: int, code: str) -> None:
    error = app_module._low_level_error(status, None)
    assert (error.http_status, error.code) == (status, code)
    assert app_module._low_level_error(413, None).code == "payload_too_large"
