"""Editor: the language server's link to the daemon (async HTTP over the Unix socket).

One ``DaemonLink`` per server. Each request opens its own connection
(``force_close``), so cancelling the awaiting task closes that connection and
the daemon drops the job within one token. A monitor task follows the
daemon's ``/health``: it reports state changes, retries with exponential
backoff (1 s x1.6, +-20 % jitter, capped at 120 s, reset after a success) and,
with ``autoStart``, spawns ``qwend serve --detach`` once per outage: an outage
ends only when a daemon answers, so a start that fails (the GPU profile on a
machine without one) is reported once, as state ``failed`` with its reason,
and not retried until then.
Requests never wait for the monitor: each one tries the socket itself, so the
server recovers the moment the daemon is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler

from qwend import trust
from qwend.errors import UntrustedSocket
from qwend.states import ALL_STATES, TRANSIENT_STATES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 3.0
HEALTH_TIMEOUT_S: Final = 3.0
READY_POLL_S: Final = 5.0  # while ready: notice a daemon that goes away
LOADING_POLL_S: Final = 0.5
DAEMON_STATES: Final = ALL_STATES  # what /health may say (qwend.states)


class DaemonDown(Exception):
    """No daemon answers on the socket."""


class DaemonRequestError(Exception):
    """The daemon answered with an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"qwend daemon error {code}: {message}")
        self.status = status
        self.code = code


class Backoff:
    """Exponential backoff: 1 s x1.6 per failure, +-20 % jitter, capped at 120 s."""

    def __init__(
        self,
        initial: float = 1.0,
        factor: float = 1.6,
        cap: float = 120.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.factor, self.cap, self.jitter = initial, factor, cap, jitter
        self._rng = rng or random.Random()
        self._base = initial

    def next(self) -> float:
        """The delay before the next attempt; each call grows the following one."""
        delay = self._base * (1 + self._rng.uniform(-self.jitter, self.jitter))
        self._base = min(self._base * self.factor, self.cap)
        return min(delay, self.cap)

    def reset(self) -> None:
        self._base = self.initial


@dataclass
class LinkStatus:
    state: str  # a daemon state, or "unreachable" / "starting"
    model: str | None
    socket: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "model": self.model,
            "socket": self.socket,
            "detail": self.detail,
        }


class TrustedUnixConnector(aiohttp.UnixConnector):
    """A Unix connector that sends nothing to a socket another user owns or serves.

    Before connecting it checks the socket's directory, and once connected the
    listener's uid (qwend.trust); either failure raises UntrustedSocket and
    closes the connection before the request is written.
    """

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> ResponseHandler:
        socket_path = Path(self.path)
        with contextlib.suppress(FileNotFoundError):  # the connect below reports it
            trust.check_socket_dir(socket_path)
        proto: ResponseHandler = await super()._create_connection(req, traces, timeout)
        transport = proto.transport
        try:
            if transport is None:
                raise ConnectionResetError("the connection closed before it was checked")
            trust.check_peer(transport.get_extra_info("socket"), socket_path)
        except BaseException:
            proto.close()
            raise
        return proto


class DaemonLink:
    """Async client for the daemon plus its health monitor."""

    def __init__(
        self,
        socket_path: Path,
        config_path: str | None,
        on_change: Callable[[LinkStatus], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.config_path = config_path
        self.auto_start = False
        self.status = LinkStatus("unreachable", None, str(socket_path), "not checked yet")
        self._on_change = on_change
        self._session: aiohttp.ClientSession | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._spawn: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.backoff = Backoff()
        self._started_this_outage = False  # autoStart spawns once until a daemon answers
        self._start_failure: LinkStatus | None = None  # shown until a daemon answers

    # -- requests ---------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = TrustedUnixConnector(path=str(self.socket_path), force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (HTTP status, decoded body). Raise DaemonDown if unreachable.

        A cancelled caller closes the connection at once, which cancels the daemon's job.
        """
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._client().request(
                method,
                f"http://qwend{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT_S),
            )
            raw = await response.read()
        except asyncio.CancelledError:
            if response is not None:
                response.close()  # drop the connection: the daemon cancels the job
            raise
        except UntrustedSocket as exc:  # another user's socket: nothing was sent
            self._went_down(exc.message)
            raise DaemonDown(f"qwend daemon refused: {exc.message}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if response is not None:
                response.close()
            self._went_down(_reason(exc, self.socket_path))
            raise DaemonDown(f"qwend daemon is not running: {self.status.detail}") from None
        response.release()
        text = raw.decode(errors="replace")
        try:
            data = json.loads(text) if text.startswith(("{", "[")) else text
        except json.JSONDecodeError:
            data = text
        return response.status, data

    async def task(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/tasks/{name}; the answer's JSON, or DaemonRequestError."""
        status, data = await self.request("POST", f"/v1/tasks/{name}", body)
        if status != 200 or not isinstance(data, dict):
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise DaemonRequestError(
                status, str(error.get("code", "bad_response")), str(error.get("message", data))
            )
        self._seen_working()
        return data

    def _seen_working(self) -> None:
        self._outage_over()
        if self.status.state != "ready":
            self._set(LinkStatus("ready", self.status.model, str(self.socket_path), "answering"))
            self._wake.set()
        self.backoff.reset()

    def _outage_over(self) -> None:
        self._started_this_outage = False
        self._start_failure = None

    def _went_down(self, reason: str) -> None:
        if self._start_failure is not None:
            return  # the failed start's reason stays the status (reported once)
        if self.status.state not in ("unreachable", "starting"):
            self._set(LinkStatus("unreachable", None, str(self.socket_path), reason))
            self._wake.set()
        elif self.status.detail != reason and self.status.state == "unreachable":
            self.status.detail = reason

    # -- health monitor -----------------------------------------------------------

    def start(self, auto_start: bool) -> None:
        """Begin following /health (call once, from the running loop)."""
        self.auto_start = auto_start
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._follow())

    async def check(self) -> LinkStatus:
        """Ask /health once and update the state."""
        try:
            status, data = await self.request("GET", "/health", timeout=HEALTH_TIMEOUT_S)
        except DaemonDown:
            return self.status
        body = data if isinstance(data, dict) else {}
        state = str(body.get("status", "failed"))
        if state not in DAEMON_STATES:
            state = "ready" if status == 200 else "failed"
        model = body.get("model")
        detail = "ready" if state == "ready" else str(body.get("error") or state)
        self._outage_over()
        self._set(LinkStatus(state, str(model) if model else None, str(self.socket_path), detail))
        self.backoff.reset()
        return self.status

    async def _follow(self) -> None:
        while True:
            status = await self.check()
            down = status.state in ("unreachable", "starting") or self._start_failure is not None
            if down:
                if self.auto_start and self._spawn is None and not self._started_this_outage:
                    self._started_this_outage = True
                    self._spawn = asyncio.create_task(self._start_daemon())
                delay = LOADING_POLL_S if self._spawn is not None else self.backoff.next()
            elif status.state in TRANSIENT_STATES:
                delay = LOADING_POLL_S
            else:
                delay = READY_POLL_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _start_daemon(self) -> None:
        """Run ``qwend serve --detach``; it returns once the daemon is ready (or failed)."""
        try:
            await self._run_detach()
        finally:
            self._spawn = None
            self._wake.set()

    async def _run_detach(self) -> None:
        command = [sys.executable, "-m", "qwend", "serve", "--detach"]
        command += ["--socket", str(self.socket_path)]
        if self.config_path:
            command += ["--config", self.config_path]
        self._set(LinkStatus("starting", None, str(self.socket_path), "starting the daemon"))
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            _, err = await process.communicate()
        except OSError as exc:
            self._start_failed(f"cannot start the daemon: {exc}")
            return
        if process.returncode not in (0, 3):  # 3: still loading after --wait
            lines = err.decode(errors="replace").strip().splitlines() or ["(no output)"]
            self._start_failed(f"`qwend serve --detach` failed: {lines[-1]}")

    def _start_failed(self, detail: str) -> None:
        """Report why once; the monitor keeps polling, and a daemon started by
        hand ends the outage (and re-arms autoStart for the next one)."""
        detail += " (not retried until a daemon answers)"
        self._start_failure = LinkStatus("failed", None, str(self.socket_path), detail)
        self._set(self._start_failure)

    def _set(self, status: LinkStatus) -> None:
        changed = (status.state, status.model, status.detail) != (
            self.status.state,
            self.status.model,
            self.status.detail,
        )
        self.status = status
        if changed and self._on_change is not None:
            self._on_change(status)

    async def close(self) -> None:
        for task in (self._monitor, self._spawn):
            if task is not None:
                task.cancel()
        if self._session is not None:
            await self._session.close()


def _reason(exc: BaseException, socket_path: Path) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FileNotFoundError):
            return f"no socket at {socket_path}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused on {socket_path}"
        if isinstance(cause, PermissionError):
            return f"permission denied on {socket_path}"
        cause = cause.__cause__ or getattr(cause, "os_error", None)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"no answer on {socket_path} in time"
    return f"{type(exc).__name__} on {socket_path}: {exc}"
