"""Transport: is the socket a client is about to talk to really this user's daemon?

With ``XDG_RUNTIME_DIR`` unset the socket lives under ``/tmp/qwend-<uid>``,
a name any local user can create first. A client must therefore check, before
it sends a byte (prompts and open files are private), that

1. the socket's directory is a real directory (not a symlink), owned by this
   user, with no group or other access; and
2. the process that accepted the connection runs as this user (the kernel's
   ``SO_PEERCRED`` on the connected socket, which no listener can forge).

The second check alone is the guarantee; the first names the problem before
connecting and catches a planted directory even when nothing listens yet.
Both clients use this module: ``qwend.client`` (the CLI) and
``qwend_lsp.daemon_link`` (the language server). The daemon uses
:func:`peer_uid` for the same check in the other direction.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import Final

from qwend.errors import UntrustedSocket

PEER_CRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid
GROUP_OTHER_BITS: Final = 0o077  # any of these lets another user reach the socket


def owner_name(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a uid without a passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    _pid, uid, _gid = PEER_CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CRED.size)
    )
    return int(uid)


def check_socket_dir(socket_path: Path) -> None:
    """Raise UntrustedSocket unless the socket's directory is this user's, 0700, no link.

    A directory that does not exist raises FileNotFoundError, which callers
    report as "no daemon is listening", as they do for a missing socket.
    """
    directory = socket_path.parent
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedSocket(
            f"refusing the socket {socket_path}: its directory {directory} is a symlink "
            f"(owned by {owner_name(info.st_uid)})",
            hint=f"remove {directory} if you did not make it; qwend serve recreates it",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedSocket(
            f"refusing the socket {socket_path}: {directory} is not a directory",
            hint=f"remove {directory}; qwend serve recreates it",
        )
    if info.st_uid != os.getuid():
        raise UntrustedSocket(
            f"refusing the socket {socket_path}: its directory {directory} belongs to "
            f"{owner_name(info.st_uid)}, not to you ({owner_name(os.getuid())})",
            hint="another user may be impersonating your daemon; set XDG_RUNTIME_DIR, "
            "or pass --socket to a path in a directory you own",
        )
    if stat.S_IMODE(info.st_mode) & GROUP_OTHER_BITS:
        raise UntrustedSocket(
            f"refusing the socket {socket_path}: its directory {directory} is mode "
            f"{stat.S_IMODE(info.st_mode):o}, open to other users (owner "
            f"{owner_name(info.st_uid)})",
            hint=f"chmod 700 {directory}, or let qwend serve fix it at the next start",
        )


def check_peer(sock: socket.socket, socket_path: Path) -> None:
    """Raise UntrustedSocket unless the listener at the other end runs as this user."""
    uid = peer_uid(sock)
    if uid != os.getuid():
        raise UntrustedSocket(
            f"refusing the socket {socket_path}: the process listening on it runs as "
            f"{owner_name(uid)}, not as you ({owner_name(os.getuid())})",
            hint="another user may be impersonating your daemon; nothing was sent. "
            "Set XDG_RUNTIME_DIR, or pass --socket to a path in a directory you own",
        )


def connect(socket_path: Path, timeout: float | None) -> socket.socket:
    """A connected socket to this user's daemon at ``socket_path``; nothing sent yet.

    Raises UntrustedSocket, or the OSError of the connect (FileNotFoundError,
    ConnectionRefusedError, TimeoutError) for the caller to report.
    """
    check_socket_dir(socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(os.fspath(socket_path))
        check_peer(sock, socket_path)
    except BaseException:
        sock.close()
        raise
    return sock
