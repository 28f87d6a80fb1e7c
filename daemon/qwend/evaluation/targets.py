"""Editor: what ``qwend eval`` runs against: a running daemon, or one it starts for the run.

Without ``--compare`` the target is the daemon on ``--socket`` (or the
config's socket). ``--compare A B`` takes two targets; each one is

- a **socket** path (an existing Unix socket): a daemon you started, used as is;
- a **config file** (an existing file): ``qwend serve --config FILE`` is
  started on a private socket for the run and stopped after it;
- a **model profile** name from the config: ``qwend serve --model NAME``
  (with ``--config`` when given) likewise.

The targets run one after the other, so two 7B models never share the GPU.
A started daemon gets ``--no-watch`` (a config edit mid-run must not change
the model under test) and logs to a file whose tail is shown if it fails.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qwend.client import DaemonClient
from qwend.errors import DaemonUnavailable, EvalFailed, QwendError

KINDS: Final = ("socket", "config", "profile")
HEALTH_POLL_S: Final = 0.25
STOP_TIMEOUT_S: Final = 90.0  # the daemon drains (shutdown_timeout_s, 60 by default) first
LOG_TAIL_LINES: Final = 20
SOCKET_DIR_PARENT: Final = "/tmp"  # short: a Unix socket path holds at most 107 bytes


@dataclass(frozen=True)
class Target:
    label: str  # as the user wrote it: the column heading of a comparison
    kind: str  # one of KINDS
    value: str  # the socket path, config path or profile name

    def describe(self) -> str:
        return f"{self.kind} {self.value}"


def running_daemon(socket_path: Path) -> Target:
    """The daemon the other qwend commands would talk to."""
    return Target("daemon", "socket", str(socket_path))


def parse_target(spec: str, config_path: str | None) -> Target:
    """Decide what ``spec`` (one ``--compare`` argument) names; EvalFailed when nothing."""
    path = Path(spec).expanduser()
    if path.is_socket():
        return Target(spec, "socket", str(path))
    if path.is_file():
        return Target(spec, "config", str(path.resolve()))
    profiles = _profiles(config_path)
    if spec in profiles:
        return Target(spec, "profile", spec)
    raise EvalFailed(
        f"--compare {spec!r} is neither a Unix socket, a config file nor a model profile",
        hint=f"profiles in the config: {', '.join(sorted(profiles)) or 'none'}",
    )


def _profiles(config_path: str | None) -> set[str]:
    from qwend.config import load_config

    try:
        config = load_config(Path(config_path) if config_path else None)
    except QwendError:
        return set()
    return set(config.settings.models)


@contextmanager
def serving(target: Target, config_path: str | None, start_timeout_s: float) -> Iterator[Path]:
    """The socket of a ready daemon for ``target``; a daemon started here is stopped after."""
    if target.kind == "socket":
        yield Path(target.value)
        return
    scratch = Path(tempfile.mkdtemp(prefix="qwe-", dir=SOCKET_DIR_PARENT))
    socket_path = scratch / "qwend.sock"
    log_path = scratch / "daemon.log"
    command = [sys.executable, "-m", "qwend", "serve", "--socket", str(socket_path), "--no-watch"]
    if target.kind == "config":
        command += ["--config", target.value]
    else:
        command += ["--model", target.value]
        if config_path:
            command += ["--config", config_path]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        _wait_ready(process, socket_path, log_path, target, start_timeout_s)
        yield socket_path
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_ready(
    process: subprocess.Popen[bytes],
    socket_path: Path,
    log_path: Path,
    target: Target,
    timeout_s: float,
) -> None:
    client = DaemonClient(socket_path, timeout=2.0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EvalFailed(
                f"the daemon for {target.describe()} exited with code {process.returncode}:\n"
                + _tail(log_path)
            )
        try:
            _, body = client.request("GET", "/health")
        except DaemonUnavailable:
            body = {}
        state = body.get("status")
        if state in ("ready", "unloaded"):
            return
        if state == "failed":
            raise EvalFailed(
                f"the model of {target.describe()} failed to load:\n" + _tail(log_path)
            )
        time.sleep(HEALTH_POLL_S)
    raise EvalFailed(
        f"the daemon for {target.describe()} was not ready after {timeout_s:g}s:\n"
        + _tail(log_path),
        hint="raise --start-timeout for large models",
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])
