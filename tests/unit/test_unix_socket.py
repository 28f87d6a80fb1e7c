"""The instance lock and the private listening socket."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwend import cli, paths
from qwend.errors import AlreadyRunning, SocketPathError, UnsafePath
from qwend.server.unix_socket import (
    InstanceLock,
    bind_private_socket,
    lock_is_held,
    read_lock_pid,
)


@pytest.fixture
def sock_path(short_tmp: Path) -> Path:
    return short_tmp / "run" / "qwend.sock"


@pytest.fixture
def locks() -> Iterator[list[InstanceLock]]:
    """InstanceLocks made in a test; all released at the end."""
    made: list[InstanceLock] = []
    yield made
    for lock in made:
        lock.release()


def new_lock(made: list[InstanceLock], socket_path: Path) -> InstanceLock:
    lock = InstanceLock(socket_path)
    made.append(lock)
    return lock


# -- InstanceLock --------------------------------------------------------------------


def test_lock_path_sits_beside_the_socket(tmp_path: Path) -> None:
    assert InstanceLock(tmp_path / "qwend.sock").path == tmp_path / "qwend.lock"


def test_acquire_writes_our_pid(tmp_path: Path, locks: list[InstanceLock]) -> None:
    lock = new_lock(locks, tmp_path / "qwend.sock")
    lock.acquire()
    assert lock.path.read_text() == f"{os.getpid()}\n"
    assert read_lock_pid(lock.path) == os.getpid()
    assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600


def test_acquire_overwrites_a_stale_longer_pid(tmp_path: Path, locks: list[InstanceLock]) -> None:
    (tmp_path / "qwend.lock").write_text("123456789012\nleftover\n")
    lock = new_lock(locks, tmp_path / "qwend.sock")
    lock.acquire()
    assert lock.path.read_text() == f"{os.getpid()}\n"


def test_second_lock_on_same_socket_raises_already_running(
    tmp_path: Path, locks: list[InstanceLock]
) -> None:
    first = new_lock(locks, tmp_path / "qwend.sock")
    first.acquire()
    second = new_lock(locks, tmp_path / "qwend.sock")
    with pytest.raises(AlreadyRunning) as info:
        second.acquire()
    assert info.value.code == "already_running"
    assert info.value.exit_code == 2
    assert f"pid {os.getpid()}" in info.value.message
    assert "qwend stop" in info.value.hint
    # The failed attempt leaves the holder's pid in place.
    assert read_lock_pid(first.path) == os.getpid()


def test_locks_on_different_sockets_coexist(tmp_path: Path, locks: list[InstanceLock]) -> None:
    new_lock(locks, tmp_path / "a.sock").acquire()
    new_lock(locks, tmp_path / "b.sock").acquire()
    assert lock_is_held(tmp_path / "a.lock")
    assert lock_is_held(tmp_path / "b.lock")


def test_release_then_acquire_again(tmp_path: Path, locks: list[InstanceLock]) -> None:
    first = new_lock(locks, tmp_path / "qwend.sock")
    first.acquire()
    first.release()
    assert read_lock_pid(first.path) is None  # emptied on release
    assert first.path.exists()  # never unlinked
    second = new_lock(locks, tmp_path / "qwend.sock")
    second.acquire()
    assert read_lock_pid(second.path) == os.getpid()
    first.release()  # releasing twice is harmless and does not drop the other lock
    assert lock_is_held(second.path)


def test_the_same_lock_can_be_reacquired(tmp_path: Path, locks: list[InstanceLock]) -> None:
    lock = new_lock(locks, tmp_path / "qwend.sock")
    lock.acquire()
    lock.release()
    lock.acquire()
    assert lock_is_held(lock.path)


def test_lock_is_held(tmp_path: Path, locks: list[InstanceLock]) -> None:
    lock_path = tmp_path / "qwend.lock"
    assert not lock_is_held(lock_path)  # no file at all
    lock = new_lock(locks, tmp_path / "qwend.sock")
    lock.acquire()
    assert lock_is_held(lock_path)
    assert lock_is_held(lock_path)  # probing does not steal it
    lock.release()
    assert not lock_is_held(lock_path)
    assert lock_path.exists()


def test_lock_is_held_false_for_a_leftover_file(tmp_path: Path) -> None:
    (tmp_path / "qwend.lock").write_text("4242\n")
    assert not lock_is_held(tmp_path / "qwend.lock")


@pytest.mark.parametrize(
    ("text", "pid"), [("4242\n", 4242), ("", None), ("x1\n", None), ("-1", None)]
)
def test_read_lock_pid(tmp_path: Path, text: str, pid: int | None) -> None:
    (tmp_path / "qwend.lock").write_text(text)
    assert read_lock_pid(tmp_path / "qwend.lock") == pid


def test_read_lock_pid_missing_file(tmp_path: Path) -> None:
    assert read_lock_pid(tmp_path / "absent.lock") is None


# -- bind_private_socket ---------------------------------------------------------------


def test_bind_creates_a_0600_socket_under_umask_0(sock_path: Path, umask0: None) -> None:
    sock = bind_private_socket(sock_path)
    try:
        info = os.lstat(sock_path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(sock_path.parent).st_mode) == 0o700
        assert os.umask(0) == 0  # the umask was restored after binding
        assert sock.getblocking() is False
        assert sock.family == socket.AF_UNIX
    finally:
        sock.close()


def test_bound_socket_accepts_a_connection(sock_path: Path) -> None:
    server = bind_private_socket(sock_path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(sock_path))
        server.setblocking(True)
        server.settimeout(5)
        conn, _ = server.accept()
        conn.close()
    finally:
        client.close()
        server.close()


def test_bind_restores_the_umask(sock_path: Path) -> None:
    old = os.umask(0o022)
    try:
        bind_private_socket(sock_path).close()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


def test_bind_removes_a_stale_regular_file(sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("stale")
    sock = bind_private_socket(sock_path)
    try:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        sock.close()


def test_bind_removes_a_stale_socket(sock_path: Path) -> None:
    bind_private_socket(sock_path).close()  # a dead daemon's socket stays behind
    assert sock_path.exists()
    sock = bind_private_socket(sock_path)
    try:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        sock.close()


def test_bind_removes_a_dangling_symlink_not_its_target(sock_path: Path, short_tmp: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    target = short_tmp / "target"
    sock_path.symlink_to(target)
    sock = bind_private_socket(sock_path)
    try:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        assert not target.exists()
    finally:
        sock.close()


def test_bind_rejects_a_too_long_path(short_tmp: Path) -> None:
    long_path = short_tmp / ("d" * 120) / "qwend.sock"
    with pytest.raises(SocketPathError, match="bytes"):
        bind_private_socket(long_path)
    assert not long_path.parent.exists()  # checked before anything is created


def test_bind_fails_cleanly_when_the_parent_is_a_file(short_tmp: Path) -> None:
    (short_tmp / "run").write_text("")
    with pytest.raises(SocketPathError):
        bind_private_socket(short_tmp / "run" / "qwend.sock")


def test_bind_tightens_an_existing_0755_dir(sock_path: Path) -> None:
    sock_path.parent.mkdir()
    os.chmod(sock_path.parent, 0o755)
    bind_private_socket(sock_path).close()
    assert stat.S_IMODE(os.lstat(sock_path.parent).st_mode) == paths.PRIVATE_DIR_MODE


# -- planted state files (never followed, never another user's) ---------------------------


def test_a_lock_planted_as_a_symlink_is_not_followed(
    short_tmp: Path, locks: list[InstanceLock]
) -> None:
    victim = short_tmp / "victim.txt"
    victim.write_text("precious\n")
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    (run / "qwend.lock").symlink_to(victim)
    lock = new_lock(locks, run / "qwend.sock")
    with pytest.raises(UnsafePath) as info:
        lock.acquire()
    assert "symlink" in info.value.message and str(run / "qwend.lock") in info.value.message
    assert info.value.exit_code == 2
    assert victim.read_text() == "precious\n"
    assert read_lock_pid(run / "qwend.lock") is None  # `qwend stop` reads no pid through it
    assert not lock_is_held(run / "qwend.lock")


def test_a_lock_planted_as_a_fifo_is_refused(short_tmp: Path, locks: list[InstanceLock]) -> None:
    os.mkfifo(short_tmp / "qwend.lock")
    with pytest.raises(UnsafePath, match=r"not a regular file|FIFO"):
        new_lock(locks, short_tmp / "qwend.sock").acquire()


def test_a_lock_of_another_user_is_refused(
    short_tmp: Path, locks: list[InstanceLock], monkeypatch: pytest.MonkeyPatch
) -> None:
    (short_tmp / "qwend.lock").write_text("1\n")
    lock = new_lock(locks, short_tmp / "qwend.sock")
    owner = os.getuid()
    monkeypatch.setattr(paths, "ensure_private_dir", lambda path: None)  # the file is the point
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with pytest.raises(UnsafePath, match=f"another user \\(uid {owner}\\)"):
        lock.acquire()


def test_a_wide_lock_of_ours_is_narrowed(short_tmp: Path, locks: list[InstanceLock]) -> None:
    path = short_tmp / "qwend.lock"
    path.write_text("")
    os.chmod(path, 0o666)
    new_lock(locks, short_tmp / "qwend.sock").acquire()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_detached_log_planted_as_a_symlink_is_not_followed(
    xdg: Path, short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = short_tmp / "victim.txt"
    victim.write_text("precious\n")
    log = short_tmp / "qwend.log"
    log.symlink_to(victim)
    code = cli.main(
        ["serve", "--detach", "--log-file", str(log), "--socket", str(short_tmp / "q.sock")]
    )
    assert code == 2
    assert "refusing to open" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"
