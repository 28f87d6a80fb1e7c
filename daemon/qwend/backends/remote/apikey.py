"""Engine: the remote engine's API key, read from a variable or a private file.

The key lives only in an ``ApiKey``, whose repr and str hide it, so no log
line, error body or status answer can carry it by accident. A key file must
be a regular file that only its owner can read or write (mode 0600 or
stricter), as ssh insists for its keys: a readable key file is a leaked key.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from qwend.errors import BackendUnavailable

PRIVATE_MODE_MASK: Final = 0o077  # any group or other permission bit makes a key file public


@dataclass(frozen=True)
class ApiKey:
    """A bearer token and where it came from (shown in errors instead of the key)."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"the API key from {self.source}"


def read_api_key(profile_name: str, api_key_env: str, api_key_file: str) -> ApiKey | None:
    """The profile's key, None when it names no key source. Raises BackendUnavailable."""
    if api_key_env:
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            raise BackendUnavailable(
                f"model profile '{profile_name}': the variable {api_key_env} "
                "(api_key_env) is not set or empty",
                hint=f"export {api_key_env}=... before `qwend serve`, or use api_key_file",
            )
        return ApiKey(value, f"${api_key_env}")
    if api_key_file:
        return ApiKey(_read_private(profile_name, Path(api_key_file).expanduser()), api_key_file)
    return None


def _read_private(profile_name: str, path: Path) -> str:
    where = f"model profile '{profile_name}': api_key_file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BackendUnavailable(f"{where} does not exist") from None
    except OSError as exc:
        raise BackendUnavailable(f"{where} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BackendUnavailable(f"{where} is not a regular file")
    if info.st_mode & PRIVATE_MODE_MASK:
        raise BackendUnavailable(
            f"{where} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "a key file must be private",
            hint=f"chmod 600 {path}",
        )
    if info.st_uid != os.getuid():
        raise BackendUnavailable(
            f"{where} belongs to another user", hint="make it yours (chown), or copy it"
        )
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendUnavailable(f"{where} cannot be read: {exc}") from None
    if not value:
        raise BackendUnavailable(f"{where} is empty")
    return value
