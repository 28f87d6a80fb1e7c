"""Transport: a small synchronous HTTP client for the daemon's Unix socket.

Built on the standard library alone so that ``qwend status`` starts in tens
of milliseconds: no aiohttp, no pydantic, no torch.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qwend import trust
from qwend.errors import DaemonUnavailable


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("qwend", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        # Checks the directory and the listener's uid before a byte is sent.
        self.sock = trust.connect(self._path, self.timeout)


class DaemonClient:
    """One request per connection; every transport failure is DaemonUnavailable.

    A socket that another user owns or serves raises UntrustedSocket before
    anything is sent (qwend.trust).
    """

    def __init__(self, socket_path: Path, timeout: float | None = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one request; return (HTTP status, decoded JSON body)."""
        connection, response = self._open(method, path, body)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(exc) from None
        finally:
            connection.close()
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {
                "error": {"code": "bad_response", "message": raw[:200].decode(errors="replace")}
            }
        return response.status, data

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each Server-Sent Event's JSON until ``[DONE]``.

        A non-200 answer is yielded once as its JSON error body.
        """
        connection, response = self._open("POST", path, body)
        try:
            if response.status != 200:
                yield json.loads(response.read() or b"{}")
                return
            for line in response:
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: ") :].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(exc) from None
        finally:
            response.close()  # the response holds its own handle on the socket
            connection.close()

    def _open(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        connection = _UnixConnection(self.socket_path, self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> DaemonUnavailable:
        if isinstance(exc, FileNotFoundError):
            reason = "no daemon is listening (the socket does not exist)"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "no daemon is listening (connection refused)"
        elif isinstance(exc, TimeoutError):
            reason = f"the daemon did not answer within {self.timeout}s"
        elif isinstance(exc, PermissionError):
            reason = "permission denied on the socket (is it another user's daemon?)"
        else:
            reason = f"the connection failed: {exc}"
        return DaemonUnavailable(
            f"{reason}: {self.socket_path}", hint="start it with: qwend serve --detach"
        )
