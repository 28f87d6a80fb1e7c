"""The daemon's log never takes the daemon down (qwend.logsink).

/dev/full stands for a full disk: every write to it fails with ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwend import logsink
from qwend.logsink import GuardedStream, LogHealth, ResilientHandler


@pytest.fixture
def full_fd() -> Iterator[int]:
    fd = os.open("/dev/full", os.O_WRONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def fallback() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "name": "qwend.test", "levelname": "INFO"})


def drained(fd: int) -> str:
    try:
        return os.read(fd, 65536).decode()
    except BlockingIOError:
        return ""


def test_a_full_log_falls_back_to_stderr_and_says_so(
    full_fd: int, fallback: tuple[int, int], tmp_path: Path
) -> None:
    read_end, write_end = fallback
    health = LogHealth("/var/log/qwend.log", "stderr")
    handler = ResilientHandler(full_fd, health, write_end)
    handler.handle(record("loading model"))  # must not raise
    handler.handle(record("model ready"))
    seen = drained(read_end)
    assert "writing the log to /var/log/qwend.log failed (No space left on device)" in seen
    assert seen.count("failed (No space") == 1  # announced once per outage
    assert "loading model" in seen and "model ready" in seen
    snap = health.snapshot()
    assert snap["state"] == "failing" and snap["error"] == "No space left on device"
    assert snap["lines_not_written"] == 2 and snap["fallback"] == "stderr"
    # Space again: the log says it has a gap, the state is ok again.
    good = tmp_path / "qwend.log"
    handler.fd = os.open(good, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        handler.handle(record("next request"))
    finally:
        os.close(handler.fd)
    text = good.read_text()
    assert "next request" in text and "2 lines went to the fallback" in text
    assert health.snapshot()["state"] == "ok"


def test_no_fallback_loses_lines_quietly(full_fd: int) -> None:
    health = LogHealth("stderr", None)
    handler = ResilientHandler(full_fd, health, None)
    handler.handle(record("x"))
    assert health.failing and health.snapshot()["fallback"] is None


def test_library_writes_to_a_full_stderr_never_raise() -> None:
    health = LogHealth("stderr", None)
    full = open("/dev/full", "w", buffering=1)  # noqa: SIM115 (closed below, failing)
    try:
        stream = GuardedStream(full, health)
        print("Loading checkpoint shards: 100%", file=stream, flush=True)
        stream.write("x" * 100_000)
        stream.flush()
        assert stream.fileno() == full.fileno()
    finally:
        with contextlib.suppress(OSError):  # closing flushes what the full "disk" refused
            full.close()
    assert health.failing and "No space" in str(health.snapshot()["error"])


def test_install_logs_to_the_file_and_guards_the_standard_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    log_file = tmp_path / "qwend.log"
    health = logsink.install(log_file)
    try:
        logging.getLogger("qwend.test").info("hello %s", "log")
        assert "qwend.test: hello log" in log_file.read_text()
        assert isinstance(sys.stderr, GuardedStream) and isinstance(sys.stdout, GuardedStream)
        assert health.snapshot() == {
            "target": str(log_file),
            "state": "ok",
            "error": None,
            "failing_since": None,
            "lines_not_written": 0,
            "fallback": None,
        }
        assert oct(log_file.stat().st_mode & 0o777) == oct(0o600)
    finally:
        handler = root.handlers[-1]
        assert isinstance(handler, ResilientHandler)
        os.close(handler.fd)


def test_enospc_is_what_dev_full_gives(full_fd: int) -> None:
    with pytest.raises(OSError) as info:
        os.write(full_fd, b"x")
    assert info.value.errno == errno.ENOSPC
