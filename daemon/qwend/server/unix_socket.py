"""Transport: one daemon per socket, and a socket only its owner can reach.

The lock is an flock on ``<socket>.lock`` beside the socket. The kernel drops
it when the holder dies, even by SIGKILL, so a leftover socket file is known
to be stale exactly when the lock can be taken, and only then is it removed.
The lock file is never unlinked (that would let two daemons hold two locks).
It holds the owner's pid, which ``qwend stop`` reads. Every open of it goes
through ``paths.open_state_file``: a symlink planted in its place is never
followed (the pid would be written into the link's target), and it must be a
regular file of this user, in the socket's private directory.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Final

from qwend import paths
from qwend.errors import AlreadyRunning, SocketPathError, UnsafePath

SOCKET_UMASK: Final = 0o177  # the socket is born 0600: no window with wider access
LISTEN_BACKLOG: Final = 128  # editors burst a few connections at a time
PID_TEXT_MAX_BYTES: Final = 64  # a pid and a newline; a bigger file is not ours


class InstanceLock:
    """An exclusive, non-blocking flock held for the daemon's lifetime."""

    def __init__(self, socket_path: Path) -> None:
        self.path = paths.lock_path_for(socket_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record our pid. Raises AlreadyRunning, UnsafePath."""
        paths.ensure_private_dir(self.path.parent)
        fd = paths.open_state_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise already_running(self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def already_running(lock_path: Path) -> AlreadyRunning:
    """The one refusal for a socket that a live daemon holds, foreground or --detach."""
    return AlreadyRunning(
        f"a qwend daemon is already running (pid {read_lock_pid(lock_path)}) on this socket",
        hint="use it, stop it with `qwend stop`, or pass another --socket",
    )


def refuse_if_running(socket_path: Path) -> None:
    """Raise AlreadyRunning if a daemon holds ``socket_path``'s lock now."""
    lock_path = paths.lock_path_for(socket_path)
    if lock_is_held(lock_path):
        raise already_running(lock_path)


def read_lock_pid(lock_path: Path) -> int | None:
    """The pid in the lock file; None if there is none, or the file is not a safe one."""
    try:
        fd = paths.open_state_file(lock_path, os.O_RDONLY)
    except (OSError, UnsafePath):
        return None
    try:
        text = os.read(fd, PID_TEXT_MAX_BYTES).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def lock_is_held(lock_path: Path) -> bool:
    """True while some process holds the daemon lock (a daemon is alive)."""
    try:
        fd = paths.open_state_file(lock_path, os.O_RDONLY)
    except (OSError, UnsafePath):  # absent, or not a lock any daemon of ours could hold
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def bind_private_socket(path: Path) -> socket.socket:
    """Bind a listening 0600 socket at ``path``; the caller holds the InstanceLock.

    A file left at ``path`` by a dead daemon is removed first: the lock proves
    nobody serves it.
    """
    paths.check_socket_path(path)
    paths.ensure_private_dir(path.parent)
    if path.is_symlink() or path.exists():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(SOCKET_UMASK)
    try:
        sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise SocketPathError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
