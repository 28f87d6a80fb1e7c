"""`qwend lsp` keeps answering after stdin garbage (issue 15, item 14).

Each case writes garbage, then a valid `qwend/status` request, to the real
server's stdin; the request must be answered, by a server that is still alive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lsp.test_framing import GARBAGE
from tests.lsp.test_raw_jsonrpc import RawClient

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "processId": None,
        "capabilities": {},
        "initializationOptions": {"autoStart": False},
    },
}


@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_on_stdin_then_a_request_is_answered(sandbox: Path, case: str) -> None:
    client = RawClient(sandbox / "no-daemon.sock")
    try:
        client.send(INITIALIZE)
        assert "capabilities" in client.answer(1)["result"]
        client.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        assert client.process.stdin is not None
        client.process.stdin.write(GARBAGE[case])
        client.process.stdin.flush()
        for request_id in (2, 3):  # the frame after the garbage, and the one after that
            client.send({"jsonrpc": "2.0", "id": request_id, "method": "qwend/status"})
            assert client.answer(request_id)["result"]["state"] == "unreachable"
        assert client.process.poll() is None
    finally:
        client.close()


def test_a_frame_that_is_not_json_gets_a_parse_error(sandbox: Path) -> None:
    client = RawClient(sandbox / "no-daemon.sock")
    try:
        client.send(INITIALIZE)
        client.answer(1)
        assert client.process.stdin is not None
        client.process.stdin.write(b"Content-Length: 5\r\n\r\n{oops")
        client.send({"jsonrpc": "2.0", "id": 2, "method": "qwend/status"})
        error = client.answer(None)["error"]  # type: ignore[arg-type]
        assert error["code"] == -32700
        assert client.answer(2)["result"]["state"] == "unreachable"
        json.dumps(error)
    finally:
        client.close()
