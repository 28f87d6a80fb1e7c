"""Transport: the socket's HTTP routes, on aiohttp.

Handlers only parse, delegate to the Service, and shape the answer. Every
failure leaves as a JSON error body with a stable code (errors.py); nothing
here ever sends a traceback or a path. /health, /v1/status and /metrics read
snapshots and never wait behind inference.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web, web_protocol
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qwend.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QwendError,
    RequestTimeout,
)
from qwend.metrics import Metrics
from qwend.protocol import (
    ChatRequest,
    CompletionRequest,
    EmbeddingsRequest,
    Generation,
    Service,
    TokenizeRequest,
    parse_body,
)
from qwend.responses import ChatShape, CompletionShape, Shape, TaskShape
from qwend.states import SERVING_STATES
from qwend.trust import peer_uid

log = logging.getLogger(__name__)

SERVICE: Final = web.AppKey("service", Service)
METRICS: Final = web.AppKey("metrics", Metrics)
HARD_MAX_BODY_BYTES: Final = 64 * 2**20  # config's ceiling; the live limit is checked per request
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InFlight:
    """Requests being handled, so shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True if every request finished within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)


def json_error(exc: QwendError) -> web.Response:
    return web.json_response(exc.to_dict(), status=exc.http_status)


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error and count every request."""
    metrics = request.app[METRICS]
    endpoint = _endpoint(request)
    started = time.monotonic()
    outcome = "ok"
    request.app[IN_FLIGHT].enter()
    try:
        response = await handler(request)
    except QwendError as exc:
        outcome = exc.code
        response = json_error(exc)
        if isinstance(exc, RequestTimeout):
            response.force_close()  # the rest of the body may never come: no keep-alive
    except web.HTTPException as exc:
        error = _from_http_exception(request, exc)
        outcome = error.code
        response = json_error(error)
    except asyncio.CancelledError:
        outcome = "client_disconnected"
        raise
    except Exception:  # a bug must cost one request, never the daemon
        log.exception("unhandled error in %s %s", request.method, request.path)
        outcome = "internal_error"
        response = json_error(QwendError("internal error", hint="see the daemon log"))
    finally:
        request.app[IN_FLIGHT].leave()
        elapsed = time.monotonic() - started
        metrics.requests.labels(endpoint=endpoint, outcome=outcome).inc()
        metrics.request_duration.labels(endpoint=endpoint).observe(elapsed)
        if endpoint not in ("/health", "/metrics", "/v1/status"):
            log.info("%s %s -> %s in %.3fs", request.method, request.path, outcome, elapsed)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> QwendError:
    if exc.status == 413:
        return _too_large(request.app[SERVICE].max_body_bytes())
    if exc.status == 404:
        return NotFound(f"no endpoint {request.path}", hint="see docs/api.md")
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    error = BadRequest(exc.reason)
    error.http_status = exc.status
    return error


@web.middleware
async def same_user_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse peers of another uid (behind the socket's 0600 mode)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX and peer_uid(sock) != os.getuid():
        raise Forbidden("this daemon serves only the user who started it")
    return await handler(request)


async def _read(request: web.Request) -> bytes:
    """The body, within the configured size and time limits (which a reload may change).

    A client that sends headers and then stops (or trickles the body) gets
    408 request_timeout after ``server.read_timeout_s``, instead of holding
    its connection forever.
    """
    service = request.app[SERVICE]
    limit = service.max_body_bytes()
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    timeout_s = service.read_timeout_s()
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:g}s",
            hint="send the whole body at once, or raise server.read_timeout_s",
        ) from None
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is larger than {limit} bytes", hint="send less, or raise server.max_body_bytes"
    )


async def _body(request: web.Request, model: type[Any]) -> Any:
    return parse_body(model, await _read(request))


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _stream(
    request: web.Request,
    job: Generation,
    chunk: Callable[[str], dict[str, Any]],
    closing: Callable[[], list[dict[str, Any]]],
) -> web.StreamResponse:
    """Send ``job`` as Server-Sent Events, ending with ``data: [DONE]``.

    The first delta is awaited before headers go out, so an error that comes
    before any text still gets its own HTTP status.
    """
    deltas = job.stream()
    try:
        first: str | None = await anext(deltas)
    except StopAsyncIteration:
        first = None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(_sse(chunk(first)))
            async for delta in deltas:
                await response.write(_sse(chunk(delta)))
        for payload in closing():
            await response.write(_sse(payload))
    except QwendError as exc:  # headers are gone: report in-band, as OpenAI does
        await response.write(_sse(exc.to_dict()))
    await response.write(_sse("[DONE]"))
    await response.write_eof()
    return response


# -- handlers --------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    body = request.app[SERVICE].health()
    serving = body.get("status") in SERVING_STATES
    return web.json_response(body, status=200 if serving else 503)


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].status())


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def models(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].models())


async def tokenize(request: web.Request) -> web.Response:
    req = await _body(request, TokenizeRequest)
    return web.json_response(await request.app[SERVICE].tokenize(req))


async def _answer(
    request: web.Request, job: Generation, shape: Shape, stream: bool
) -> web.StreamResponse:
    """The one skeleton of every generating endpoint: whole or streamed.

    The job is cancelled on the way out whatever happened: a no-op once it
    finished, and what frees the model when the client left mid-answer.
    """
    try:
        if not stream:
            text = await job.text()
            return web.json_response(shape.whole(text, job))
        return await _stream(request, job, shape.delta, lambda: shape.closing(job))
    finally:
        job.cancel()


def _include_usage(req: CompletionRequest | ChatRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


async def completions(request: web.Request) -> web.StreamResponse:
    req: CompletionRequest = await _body(request, CompletionRequest)
    service = request.app[SERVICE]
    job = await service.complete(req)
    return await _answer(
        request, job, CompletionShape(service.model_name, _include_usage(req)), req.stream
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    req: ChatRequest = await _body(request, ChatRequest)
    service = request.app[SERVICE]
    job = await service.chat(req)
    return await _answer(
        request, job, ChatShape(service.model_name, _include_usage(req)), req.stream
    )


async def embeddings(request: web.Request) -> web.Response:
    req = await _body(request, EmbeddingsRequest)
    return web.json_response(await request.app[SERVICE].embed(req))


async def task(request: web.Request) -> web.StreamResponse:
    """A routed task: the answer plus the budget report of its prompt."""
    name = request.match_info["task"]
    service = request.app[SERVICE]
    run = await service.task(name, await _read(request))
    shape = TaskShape(name, service.model_name, run.sampling, run.budget)
    return await _answer(request, run.generation, shape, run.stream)


async def admin_reload(request: web.Request) -> web.Response:
    """Re-read the config now (for systems where file watching is unavailable)."""
    return web.json_response(await request.app[SERVICE].reload())


# -- aiohttp's own errors ---------------------------------------------------------

LOW_LEVEL_DETAIL_CHARS: Final = 200  # aiohttp's parser messages quote the offending bytes


class JsonErrorsRequestHandler(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol, answering its own errors in JSON.

    What fails before any route or middleware runs (a bad request line, an
    unknown HTTP version, a line or header over aiohttp's 8,190-byte limits, a
    malformed Content-Length) reaches ``handle_error``, whose stock answer is
    plain text. This keeps its logging and its already-sent check, then
    answers with the error body every other failure gets, and closes the
    connection as aiohttp does.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a reply began
        response = json_error(_low_level_error(status, message))
        response.force_close()
        return response


def _low_level_error(status: int, message: str | None) -> QwendError:
    if status == 413:
        return PayloadTooLarge("the request is larger than the server accepts")
    if status >= 500:  # aiohttp's 500 (an escaped exception) or 504 (a handler timeout)
        failure = QwendError(
            "the request timed out" if status == 504 else "internal error",
            hint="see the daemon log",
        )
        failure.http_status = status
        return failure
    error = BadRequest(
        f"malformed HTTP request: {_summary(message) or f'HTTP {status}'}",
        hint="send HTTP/1.1 with a path and each header under 8 KB",
    )
    error.http_status = status if 400 <= status < 500 else 400
    return error


def _summary(message: str | None) -> str:
    """aiohttp's parser message on one line, without its dump of the bytes
    ("Bad status line: Invalid HTTP version")."""
    lines = (line.strip() for line in (message or "").splitlines())
    words = [
        line.split(" bytearray(")[0].rstrip(":")
        for line in lines
        if line and not line.startswith(("b'", 'b"', "^"))
    ]
    return ": ".join(words)[:LOW_LEVEL_DETAIL_CHARS]


class JsonErrorsServer(web.Server):
    """aiohttp's low-level server, making JsonErrorsRequestHandler connections."""

    def __call__(self) -> web_protocol.RequestHandler:
        return JsonErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorsAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's own errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorsServer  # the same server; only its protocol factory differs
        return server


def build_app(service: Service, metrics_: Metrics) -> web.Application:
    app = web.Application(
        client_max_size=HARD_MAX_BODY_BYTES, middlewares=[errors_and_metrics, same_user_only]
    )
    app[SERVICE] = service
    app[METRICS] = metrics_
    app[IN_FLIGHT] = InFlight()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/tokenize", tokenize)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/tasks/{task}", task)
    app.router.add_post("/v1/admin/reload", admin_reload)
    return app
