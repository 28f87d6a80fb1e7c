"""XDG paths, socket path limits and the private socket directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qwend import paths
from qwend.errors import SocketPathError


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- XDG -------------------------------------------------------------------------


def test_runtime_dir_from_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.runtime_dir() == tmp_path / "qwend"
    assert paths.default_socket_path() == tmp_path / "qwend" / "qwend.sock"


@pytest.mark.parametrize("value", [None, "", "relative/run", "./run"])
def test_runtime_dir_fallback(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    assert paths.runtime_dir() == Path(f"/tmp/qwend-{os.getuid()}")
    assert paths.default_socket_path() == Path(f"/tmp/qwend-{os.getuid()}/qwend.sock")


def test_xdg_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    assert paths.user_config_path() == tmp_path / "c" / "qwend" / "config.toml"
    assert paths.cache_dir() == tmp_path / "k" / "qwend"
    assert paths.models_dir() == tmp_path / "k" / "qwend" / "models"
    assert paths.log_path() == tmp_path / "s" / "qwend" / "qwend.log"


@pytest.mark.parametrize("value", [None, "", "rel/conf"])
def test_xdg_unset_or_relative_falls_back_to_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert paths.user_config_path() == tmp_path / ".config" / "qwend" / "config.toml"
    assert paths.cache_dir() == tmp_path / ".cache" / "qwend"
    assert paths.log_path() == tmp_path / ".local" / "state" / "qwend" / "qwend.log"


@pytest.mark.parametrize(
    ("sock", "lock"),
    [
        ("/run/u/qwend/qwend.sock", "/run/u/qwend/qwend.lock"),
        ("/x/other.sock", "/x/other.lock"),
        ("/x/nosuffix", "/x/nosuffix.lock"),
    ],
)
def test_lock_path_for(sock: str, lock: str) -> None:
    assert paths.lock_path_for(Path(sock)) == Path(lock)


# -- socket path length ------------------------------------------------------------


def test_check_socket_path_accepts_107_bytes() -> None:
    path = Path("/" + "a" * 106)
    assert len(os.fsencode(path)) == paths.MAX_SOCKET_PATH_BYTES == 107
    paths.check_socket_path(path)


def test_check_socket_path_rejects_108_bytes() -> None:
    with pytest.raises(SocketPathError) as info:
        paths.check_socket_path(Path("/" + "a" * 107))
    assert info.value.code == "socket_path_invalid"
    assert "108 bytes" in info.value.message
    assert "107" in info.value.message
    assert "--socket" in info.value.hint


def test_check_socket_path_counts_bytes_not_characters() -> None:
    fits = Path("/" + "é" * 53)  # 1 + 106 bytes, 54 characters
    assert len(os.fsencode(fits)) == 107
    paths.check_socket_path(fits)
    with pytest.raises(SocketPathError):
        paths.check_socket_path(Path("/" + "é" * 53 + "a"))


# -- private directory -------------------------------------------------------------


def test_ensure_private_dir_creates_0700_under_umask_0(tmp_path: Path, umask0: None) -> None:
    target = tmp_path / "run"
    paths.ensure_private_dir(target)
    assert target.is_dir()
    assert mode(target) == 0o700


def test_ensure_private_dir_fixes_a_0755_dir(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    os.chmod(target, 0o755)
    paths.ensure_private_dir(target)
    assert mode(target) == 0o700


def test_ensure_private_dir_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "run"
    paths.ensure_private_dir(target)
    (target / "keep").write_text("x")
    paths.ensure_private_dir(target)
    assert (target / "keep").read_text() == "x"
    assert mode(target) == 0o700


def test_ensure_private_dir_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"
    paths.ensure_private_dir(target)
    assert mode(target) == 0o700


def test_ensure_private_dir_parents_not_world_writable_under_umask_0(
    tmp_path: Path, umask0: None
) -> None:
    target = tmp_path / "a" / "run"
    paths.ensure_private_dir(target)
    assert mode(target) == 0o700
    assert not mode(tmp_path / "a") & stat.S_IWOTH


def test_ensure_private_dir_rejects_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("not a dir")
    with pytest.raises(SocketPathError) as info:
        paths.ensure_private_dir(target)
    assert str(target) in info.value.message
    assert target.read_text() == "not a dir"  # left alone


def test_ensure_private_dir_rejects_a_file_in_the_parent_chain(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SocketPathError, match="cannot create the socket directory"):
        paths.ensure_private_dir(tmp_path / "file" / "run")


def test_ensure_private_dir_rejects_a_symlink_to_a_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "run"
    link.symlink_to(real)
    with pytest.raises(SocketPathError, match="not a directory"):
        paths.ensure_private_dir(link)


def test_ensure_private_dir_rejects_another_users_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run"
    target.mkdir(mode=0o700)
    owner = os.lstat(target).st_uid
    monkeypatch.setattr(paths.os, "getuid", lambda: owner + 1)
    with pytest.raises(SocketPathError) as info:
        paths.ensure_private_dir(target)
    assert "another user" in info.value.message
    assert f"uid {owner}" in info.value.message


# -- configured_socket_path ----------------------------------------------------------


def write_user_config(xdg: Path, text: str) -> Path:
    path = xdg / "config" / "qwend" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_configured_socket_path_default(xdg: Path) -> None:
    assert paths.configured_socket_path(None) == xdg / "run" / "qwend" / "qwend.sock"


def test_configured_socket_path_from_user_file(xdg: Path) -> None:
    write_user_config(xdg, '[server]\nsocket = "/srv/q/qwend.sock"\n')
    assert paths.configured_socket_path(None) == Path("/srv/q/qwend.sock")


def test_configured_socket_path_expands_home(xdg: Path) -> None:
    write_user_config(xdg, '[server]\nsocket = "~/q.sock"\n')
    assert paths.configured_socket_path(None) == xdg / "home" / "q.sock"


def test_configured_socket_path_explicit_file_wins(xdg: Path, tmp_path: Path) -> None:
    write_user_config(xdg, '[server]\nsocket = "/from/default.sock"\n')
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[server]\nsocket = "/from/explicit.sock"\n')
    assert paths.configured_socket_path(explicit) == Path("/from/explicit.sock")


@pytest.mark.parametrize(
    "text",
    [
        "[server\nsocket = '/x.sock'\n",  # invalid TOML
        "server = 'not a table'\n",
        "[server]\nsocket = 5\n",
        "[server]\nqueue_size = 4\n",  # no socket key
        '[server]\nsocket = ""\n',
    ],
)
def test_configured_socket_path_falls_back_on_broken_or_silent_file(xdg: Path, text: str) -> None:
    write_user_config(xdg, text)
    assert paths.configured_socket_path(None) == xdg / "run" / "qwend" / "qwend.sock"


def test_configured_socket_path_missing_explicit_file(xdg: Path, tmp_path: Path) -> None:
    assert paths.configured_socket_path(tmp_path / "absent.toml") == paths.default_socket_path()
