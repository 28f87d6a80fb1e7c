"""`qwend lsp` over raw JSON-RPC: messages no LSP client library would send."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any

ANSWER_TIMEOUT_S = 20.0  # a request that gets no answer by then is the hang this guards


class RawClient:
    """Writes framed JSON-RPC to `qwend lsp`'s stdin and reads framed answers."""

    def __init__(self, socket_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qwend", "lsp", "--socket", str(socket_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self.selector.register(self.process.stdout, selectors.EVENT_READ)

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def answer(self, request_id: int) -> dict[str, Any]:
        """The response to ``request_id``, skipping notifications on the way."""
        assert self.process.stdout is not None
        while True:
            assert self.selector.select(ANSWER_TIMEOUT_S), f"no answer to request {request_id}"
            length = 0
            while (line := self.process.stdout.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            message: dict[str, Any] = json.loads(self.process.stdout.read(length))
            if message.get("id") == request_id:
                return message

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def test_a_request_without_params_is_answered(sandbox: Path) -> None:
    client = RawClient(sandbox / "no-daemon.sock")
    try:
        client.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "processId": None,
                    "capabilities": {},
                    "initializationOptions": {"autoStart": False},
                },
            }
        )
        assert "capabilities" in client.answer(1)["result"]
        client.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        client.send({"jsonrpc": "2.0", "id": 2, "method": "qwend/status"})
        status = client.answer(2)["result"]
        assert status["state"] == "unreachable"
        assert status["socket"] == str(sandbox / "no-daemon.sock")
    finally:
        client.close()
