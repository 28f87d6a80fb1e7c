"""Transport: where qwend keeps its socket, lock, log, model cache and config.

Follows the XDG base directory spec. Nothing here is ever derived from a
request field: every path comes from the environment, the config or the CLI.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from qwend.errors import DaemonError, SocketPathError, UnsafePath

APP: Final = "qwend"
SOCKET_NAME: Final = "qwend.sock"
LOCK_NAME: Final = "qwend.lock"
LOG_NAME: Final = "qwend.log"
MAX_SOCKET_PATH_BYTES: Final = 107  # sun_path is 108 bytes on Linux, one for the NUL
PRIVATE_DIR_MODE: Final = 0o700  # only the owner may reach the socket inside
PRIVATE_UMASK: Final = 0o077  # no group or other bits on anything qwend creates
PRIVATE_FILE_MODE: Final = 0o600  # state files: the lock (holds the pid) and the log
# Never follow a planted link; never block on a planted FIFO (checked by fstat after).
STATE_FILE_FLAGS: Final = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
SHIPPED_CONFIG_NAME: Final = "qwend.toml"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var, "")
    # The spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/qwend``, or ``/tmp/qwend-<uid>`` when that is unset.

    The fallback is per user and checked by :func:`ensure_private_dir`, so
    another user cannot pre-create it to intercept the socket.
    """
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base):
        return Path(base) / APP
    return Path("/tmp") / f"{APP}-{os.getuid()}"


def default_socket_path() -> Path:
    return runtime_dir() / SOCKET_NAME


def lock_path_for(socket_path: Path) -> Path:
    """One lock per socket: two daemons on different sockets may coexist."""
    return socket_path.with_name(socket_path.name.removesuffix(".sock") + ".lock")


def user_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP / "config.toml"


def cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / APP


def models_dir() -> Path:
    return cache_dir() / "models"


def log_path() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / APP / LOG_NAME


def check_socket_path(path: Path) -> None:
    """Raise SocketPathError if ``path`` cannot be bound as a Unix socket."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(
            f"socket path is {len(os.fsencode(path))} bytes; Unix sockets allow "
            f"at most {MAX_SOCKET_PATH_BYTES}",
            hint="choose a shorter path with --socket or server.socket in the config",
        )


def ensure_private_dir(
    path: Path,
    *,
    what: str = "socket directory",
    error: type[DaemonError] = SocketPathError,
    fix: str = "choose another path with --socket",
) -> None:
    """Create ``path`` 0700 and refuse it if another user owns it or it is a link.

    Raises ``error`` (SocketPathError for the socket's directory, UnsafePath
    for the state directory) with what is wrong and how to fix it.
    """
    # pathlib applies ``mode`` to the last folder only: the umask guards the parents.
    try:
        with private_umask():
            path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise error(
            f"cannot create the {what} {path}: {exc.strerror}",
            hint=f"check permissions, or {fix}",
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise error(f"{path} is not a directory", hint=f"remove it, or {fix}")
    if info.st_uid != os.getuid():
        raise error(
            f"{path} belongs to another user (uid {info.st_uid})", hint=f"remove it, or {fix}"
        )
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)


@contextmanager
def private_umask() -> Iterator[None]:
    """Whatever is created inside is the user's alone (folders 0700, files 0600).

    The umask is per process, so a user's permissive one (even 000) never
    leaks into qwend's state or model cache; it is restored on the way out.
    """
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def ensure_log_dir(log_file: Path) -> None:
    """Make the log's folder: the default state folder is private and checked like
    the socket's; a folder the user chose with --log-file only gets private parents."""
    if log_file == log_path():
        ensure_private_dir(
            log_file.parent, what="state directory", error=UnsafePath, fix="pass --log-file"
        )
        return
    with private_umask():
        log_file.parent.mkdir(parents=True, exist_ok=True)


def open_state_file(path: Path, flags: int) -> int:
    """Open one of qwend's state files (the lock, the log) and return the descriptor.

    The contract, against a file planted by someone else: a symlink is never
    followed (O_NOFOLLOW), a FIFO or device is refused without blocking, and
    the file must be a regular file owned by this user. A file created here is
    0600 whatever the umask; an existing one of ours with a wider mode is
    narrowed. Raises UnsafePath, or the OSError of the open for the caller.
    """
    try:
        fd = os.open(path, flags | STATE_FILE_FLAGS, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO nobody reads
            raise _unsafe(path, "a symlink" if exc.errno == errno.ELOOP else "a FIFO") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _unsafe(path, "not a regular file")
        if info.st_uid != os.getuid():
            raise _unsafe(path, f"owned by another user (uid {info.st_uid})")
        if stat.S_IMODE(info.st_mode) & ~PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unsafe(path: Path, what: str) -> UnsafePath:
    return UnsafePath(
        f"refusing to open {path}: it is {what}",
        hint=f"remove {path} if you did not create it; qwend recreates it",
    )


def shipped_config_path() -> Path:
    """The shipped defaults: ``config/`` of a source checkout (editable installs),
    else the copy a wheel install puts in ``<prefix>/share/qwend/``."""
    checkout = Path(__file__).resolve().parents[2] / "config" / SHIPPED_CONFIG_NAME
    if checkout.is_file():
        return checkout
    return Path(sys.prefix) / "share" / APP / SHIPPED_CONFIG_NAME


def configured_socket_path(user_config: Path | None) -> Path:
    """The socket a daemon started with this config listens on, read cheaply.

    The light CLI commands (status, stop, ask) use this instead of full
    validation, which would import pydantic and cost them a third of a
    second. A file that cannot be read is skipped: the daemon reports it.
    """
    files = [shipped_config_path(), user_config or user_config_path()]
    chosen = ""
    for path in files:
        try:
            with path.open("rb") as handle:
                server = tomllib.load(handle).get("server", {})
        except (OSError, tomllib.TOMLDecodeError):
            continue
        value = server.get("socket") if isinstance(server, dict) else None
        if isinstance(value, str):
            chosen = value
    return Path(chosen).expanduser() if chosen else default_socket_path()
