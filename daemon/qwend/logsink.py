"""Engine: the daemon's log, which never takes the daemon down.

A full disk (ENOSPC), a vanished mount (EIO) or a closed terminal (EPIPE)
must cost log lines, never a request or the model load. Before this module,
a library writing progress to a full stderr raised OSError inside the model
load, and the model never loaded. So:

- every log record goes through one ``ResilientHandler``: written with
  ``os.write`` to the log's descriptor (no buffer left half-written by a
  failure); when that fails, the record goes to stderr instead (the
  fallback), and the first failure is announced there once;
- ``sys.stdout`` and ``sys.stderr`` are wrapped (``GuardedStream``) so that a
  library's own writes (progress bars, warnings, prints) swallow OSError;
- ``LogHealth`` records the state, which ``/v1/status`` reports under
  ``log`` and ``qwend status`` shows, until the log is writable again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final, TextIO

from qwend.paths import open_state_file

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STDERR_FD: Final = 2


class LogHealth:
    """Whether the log's target takes writes; thread-safe (every thread logs)."""

    def __init__(self, target: str, fallback: str | None) -> None:
        self.target = target
        self.fallback = fallback
        self._lock = threading.Lock()
        self._error: str | None = None
        self._since: float | None = None
        self._lost = 0  # lines that did not reach the target

    def failed(self, exc: OSError) -> bool:
        """Record a failed write; True for the first failure of an outage."""
        with self._lock:
            self._lost += 1
            first = self._error is None
            self._error = exc.strerror or str(exc)
            if first:
                self._since = time.time()
            return first

    def recovered(self) -> int | None:
        """Record a write that worked; the lines lost during the outage that ended, if any."""
        with self._lock:
            if self._error is None:
                return None
            lost, self._error, self._since, self._lost = self._lost, None, None, 0
            return lost

    @property
    def failing(self) -> bool:
        return self._error is not None

    def snapshot(self) -> dict[str, Any]:
        """What /v1/status reports under ``log``."""
        with self._lock:
            return {
                "target": self.target,
                "state": "failing" if self._error is not None else "ok",
                "error": self._error,
                "failing_since": self._since,
                "lines_not_written": self._lost,
                "fallback": self.fallback if self._error is not None else None,
            }


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


class ResilientHandler(logging.Handler):
    """Writes each record to ``fd``; on OSError to ``fallback_fd``; never raises OSError."""

    def __init__(self, fd: int, health: LogHealth, fallback_fd: int | None) -> None:
        super().__init__()
        self.fd = fd
        self.health = health
        self.fallback_fd = fallback_fd
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode(errors="replace")
        except Exception:  # a bad format string: logging's own report, on the guarded stderr
            self.handleError(record)
            return
        try:
            _write_all(self.fd, line)
        except OSError as exc:
            if self.health.failed(exc):
                self._fall_back(
                    f"qwend: writing the log to {self.health.target} failed "
                    f"({exc.strerror or exc}); log lines go to "
                    f"{self.health.fallback or 'nowhere'} until it works again\n".encode()
                )
            self._fall_back(line)
            return
        lost = self.health.recovered()
        if lost:  # say in the log itself that it has a gap
            note = f"the log is writable again; {lost} lines went to the fallback meanwhile"
            self.emit(logging.makeLogRecord({"msg": note, "name": __name__}))

    def _fall_back(self, data: bytes) -> None:
        if self.fallback_fd is None:
            return
        with contextlib.suppress(OSError):  # the fallback is full too: the line is lost
            _write_all(self.fallback_fd, data)


class GuardedStream:
    """A text stream whose writes never raise OSError (for sys.stdout and sys.stderr).

    Libraries write progress bars and warnings to these directly; a full disk
    under them must not fail the model load.
    """

    def __init__(self, stream: TextIO, health: LogHealth | None) -> None:
        self._stream = stream
        self._health = health

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._lost(exc)
            return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        if self._health is not None:
            self._health.failed(exc)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def install(log_file: Path | None) -> LogHealth:
    """Route the daemon's logging through a ResilientHandler; return its health.

    With ``log_file`` the log goes there and falls back to stderr; without, the
    log is stderr itself and has no fallback.
    """
    if log_file is not None:
        fd = open_state_file(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        health = LogHealth(str(log_file), "stderr")
        handler = ResilientHandler(fd, health, STDERR_FD)
        sys.stderr = GuardedStream(sys.stderr, None)
    else:
        health = LogHealth("stderr", None)
        handler = ResilientHandler(STDERR_FD, health, None)
        sys.stderr = GuardedStream(sys.stderr, health)
    sys.stdout = GuardedStream(sys.stdout, None)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # httpx (the remote backend) logs every request and health probe at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return health
