"""Engine: the rules a remote profile must follow, checked when the config loads.

Kept beside the remote backend and read by the config validator (as
exllamav2/limits.py is), so a profile that would send a prompt or an API key
in clear text over a network is refused when the file is read, naming the
key and the reason. Standard library only: the config loads without httpx.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from qwend.config.schema import ModelProfile

# Profile keys only the remote backend reads (docs/remote.md); another backend refuses them.
REMOTE_ONLY_KEYS: Final = (
    "url",
    "model",
    "api_key_env",
    "api_key_file",
    "ca_bundle",
    "tokenizer",
    "connect_timeout_s",
    "read_timeout_s",
    "max_concurrent",
)
# Keys of the local backends that mean nothing for an engine on another machine.
LOCAL_ONLY_KEYS: Final = ("path", "threads")
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
# tokenizer = "engine": count with the engine's tokenize endpoint; "none": no exact counts.
TOKENIZER_ENGINE: Final = "engine"
TOKENIZER_NONE: Final = "none"


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a remote engine, or None when it can.

    Plain http is allowed only to this machine: anything else would carry
    the code being edited and the API key in clear text over a network.
    """
    if not url:
        return "a remote profile needs the engine's URL, e.g. https://gpu1.example.com:8000"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port raises ValueError when it is not a number)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "credentials do not belong in the URL (they would be logged): use api_key_file"
    if parts.query or parts.fragment:
        return "the URL must not carry a query or a fragment"
    if parts.path.rstrip("/").endswith("/v1"):
        return "give the server's root without /v1: qwend adds /v1/completions itself"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (
            f"plain http is allowed only to this machine (localhost, 127.0.0.1, ::1), not to "
            f"{parts.hostname}: prompts and the API key would cross the network unencrypted; "
            "use https (docs/remote.md shows the engine's TLS flags)"
        )
    return None


def profile_problem(profile: ModelProfile) -> tuple[str, str] | None:
    """The first key of a remote profile that cannot work, and why."""
    problem = url_problem(profile.url)
    if problem is not None:
        return "url", problem
    if not profile.model:
        return "model", "a remote profile names the model the engine serves (its /v1/models id)"
    if profile.api_key_env and profile.api_key_file:
        return "api_key_file", "set api_key_env or api_key_file, not both"
    for key in LOCAL_ONLY_KEYS:
        if key in profile.model_fields_set:
            return key, "a remote profile runs no local model, so it has no use for it"
    return None
