"""The clients' check of the socket before sending a byte (qwend.trust).

A listener planted by "another user" is a plain socket that records every
byte it receives: the contract is that it receives none. Another user is
made real where the tests run as root (a listener that drops to uid 65534
before ``listen()``, so the kernel's SO_PEERCRED names that uid) and is
simulated otherwise by the kernel answer for the peer's uid.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwend import cli, trust
from qwend.client import DaemonClient
from qwend.errors import DaemonError, UntrustedSocket
from qwend_lsp.daemon_link import DaemonDown, DaemonLink

NOBODY = 65534
ACCEPT_WAIT_S = 5.0


class Listener:
    """A socket that accepts connections and keeps every byte sent to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received = bytearray()
        self.connections = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                while True:
                    try:
                        data = conn.recv(4096)
                    except (TimeoutError, OSError):
                        break
                    if not data:
                        break
                    self.received += data

    def close(self) -> None:
        self._stop.set()
        self._thread.join(ACCEPT_WAIT_S)
        self._sock.close()


@pytest.fixture
def private_dir(short_tmp: Path) -> Path:
    path = short_tmp / "run"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


@pytest.fixture
def listener(private_dir: Path) -> Iterator[Listener]:
    planted = Listener(private_dir / "qwend.sock")
    yield planted
    planted.close()


def refused(socket_path: Path) -> UntrustedSocket:
    with pytest.raises(UntrustedSocket) as info:
        DaemonClient(socket_path, timeout=2.0).request("GET", "/v1/status")
    assert str(socket_path) in info.value.message
    return info.value


# -- the directory -------------------------------------------------------------------


def test_a_directory_open_to_others_is_refused(listener: Listener) -> None:
    os.chmod(listener.path.parent, 0o755)
    error = refused(listener.path)
    assert "mode 755" in error.message
    assert trust.owner_name(os.getuid()) in error.message
    assert error.code == "socket_untrusted"
    assert error.exit_code == 2
    assert isinstance(error, DaemonError)
    assert listener.connections == 0


def test_a_symlinked_directory_is_refused(listener: Listener, short_tmp: Path) -> None:
    link = short_tmp / "link"
    link.symlink_to(listener.path.parent)
    error = refused(link / "qwend.sock")
    assert "symlink" in error.message
    assert listener.connections == 0


def test_a_directory_of_another_user_is_refused(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # we are someone else now
    error = refused(listener.path)
    assert f"belongs to {trust.owner_name(owner)}" in error.message
    assert listener.connections == 0


def test_a_missing_directory_is_no_daemon(short_tmp: Path) -> None:
    with pytest.raises(Exception) as info:
        DaemonClient(short_tmp / "absent" / "qwend.sock").request("GET", "/health")
    assert info.value.__class__.__name__ == "DaemonUnavailable"


# -- the listener's uid ----------------------------------------------------------------


def test_peer_uid_is_the_kernels_answer() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert trust.peer_uid(left) == os.getuid()


def test_a_listener_of_another_uid_gets_no_byte(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trust, "peer_uid", lambda sock: os.getuid() + 1)
    error = refused(listener.path)
    assert "the process listening on it runs as" in error.message
    _wait_for(lambda: listener.connections == 1)
    assert bytes(listener.received) == b""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to listen as another uid")
def test_a_real_listener_of_another_user_gets_no_byte(private_dir: Path) -> None:
    path = private_dir / "qwend.sock"
    # Bind as root in our 0700 directory, then drop to nobody before listen():
    # SO_PEERCRED reports the listener's credentials as of listen().
    script = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({str(path)!r})\n"
        f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "s.listen(1)\n"
        "print('ready', flush=True)\n"
        "c, _ = s.accept()\n"
        "c.settimeout(2)\n"
        "data = b''\n"
        "try:\n"
        "    while (chunk := c.recv(4096)):\n"
        "        data += chunk\n"
        "except OSError:\n"
        "    pass\n"
        "print(len(data), flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        error = refused(path)
        assert f"runs as {trust.owner_name(NOBODY)}" in error.message
        assert child.stdout.readline().strip() == "0"  # bytes the planted listener got
    finally:
        child.kill()
        child.wait()


def test_the_language_server_sends_nothing_either(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trust, "peer_uid", lambda sock: os.getuid() + 1)

    async def ask() -> str:
        link = DaemonLink(listener.path, None)
        try:
            with pytest.raises(DaemonDown) as info:
                await link.task("complete", {"prefix": "secret source text"})
        finally:
            await link.close()
        return str(info.value)

    message = asyncio.run(ask())
    assert "refused" in message and str(listener.path) in message
    _wait_for(lambda: listener.connections == 1)
    assert bytes(listener.received) == b""


def test_the_language_server_checks_the_directory(listener: Listener) -> None:
    os.chmod(listener.path.parent, 0o777)

    async def ask() -> None:
        link = DaemonLink(listener.path, None)
        try:
            with pytest.raises(DaemonDown, match="open to other users"):
                await link.request("GET", "/health")
        finally:
            await link.close()

    asyncio.run(ask())
    assert listener.connections == 0


def test_qwend_status_reports_the_refusal(
    listener: Listener, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(listener.path.parent, 0o750)
    assert cli.main(["status", "--socket", str(listener.path)]) == 2
    out = capsys.readouterr().out
    assert "refusing the socket" in out and str(listener.path) in out
    assert listener.connections == 0


def _wait_for(condition: object, timeout: float = ACCEPT_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("the listener never saw the connection")
        time.sleep(0.01)
