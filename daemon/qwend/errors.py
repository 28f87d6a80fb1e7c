"""Protocol: the one error tree every qwend layer raises and reports.

Each error carries a stable ``code`` (the string clients match on, listed in
docs/errors.md), the HTTP status the socket answers with, and the exit code
the CLI ends with. The message says what happened; the hint says what to do.
Neither ever holds a traceback. The body built by ``to_dict`` (every error
the socket sends, whole or in-band in a stream) never holds an absolute
filesystem path either: each is cut to its last part (``…/config.json``), so a
message may name files freely for the CLI and the log without the socket
telling a client where the user's home, cache or model folder is.

    QwendError
    ├── ConfigError              config_invalid          (file, key, reason)
    ├── RequestError                                     (400-class: the client's fault)
    │   ├── BadRequest           bad_request             400
    │   ├── NotFound             not_found               404
    │   ├── MethodNotAllowed     method_not_allowed      405
    │   ├── ModelNotFound        model_not_found         404
    │   ├── PayloadTooLarge      payload_too_large       413
    │   ├── RequestTimeout       request_timeout         408
    │   ├── ContextLengthExceeded context_length_exceeded 400
    │   └── Forbidden            forbidden               403
    ├── EngineError                                      (the model could not serve it)
    │   ├── QueueFull            queue_full              429
    │   ├── ModelNotLoaded       model_not_loaded        503
    │   ├── OutOfMemory          out_of_memory           503
    │   ├── ShuttingDown         shutting_down           503
    │   ├── GenerationFailed     generation_failed       500
    │   └── RemoteEngineError    remote_engine_error     502 (a remote profile's engine)
    │       ├── RemoteUnreachable remote_unreachable     503
    │       └── RemoteAuthFailed remote_auth_failed      502 (401/403: the API key)
    ├── ModelError                                       (start-up: the model cannot be loaded)
    │   ├── ModelMissing         model_missing
    │   ├── ModelCorrupt         model_corrupt           (a file truncated, empty or garbage)
    │   ├── BackendUnavailable   backend_unavailable
    │   └── PullFailed           pull_failed             (qwend pull; below: hub sources)
    │       ├── HubUnreachable   hub_unreachable         (no network, HF_HUB_OFFLINE)
    │       ├── RepoNotFound     repo_not_found
    │       ├── RevisionNotFound revision_not_found
    │       ├── RepoGated        repo_gated              (license not accepted, or no token)
    │       └── HubTokenInvalid  hub_token_invalid
    ├── EvalFailed               eval_failed             (qwend eval: a suite file or a target)
    └── DaemonError                                      (CLI side: the daemon process)
        ├── DaemonUnavailable    daemon_unavailable      exit 2
        ├── AlreadyRunning       already_running         exit 2
        ├── SocketPathError      socket_path_invalid     exit 2
        ├── UntrustedSocket      socket_untrusted        exit 2 (another user's socket)
        ├── BadResponse          bad_response            exit 2 (the socket's answer is not qwend's)
        └── UnsafePath           unsafe_path             exit 2 (a planted lock or log)
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = [
    "AlreadyRunning",
    "BackendUnavailable",
    "BadRequest",
    "BadResponse",
    "ConfigError",
    "ContextLengthExceeded",
    "DaemonError",
    "DaemonUnavailable",
    "EngineError",
    "EvalFailed",
    "Forbidden",
    "GenerationFailed",
    "HubTokenInvalid",
    "HubUnreachable",
    "MethodNotAllowed",
    "ModelCorrupt",
    "ModelError",
    "ModelMissing",
    "ModelNotFound",
    "ModelNotLoaded",
    "NotFound",
    "OutOfMemory",
    "PayloadTooLarge",
    "PullFailed",
    "QueueFull",
    "QwendError",
    "RemoteAuthFailed",
    "RemoteEngineError",
    "RemoteUnreachable",
    "RepoGated",
    "RepoNotFound",
    "RequestError",
    "RequestTimeout",
    "RevisionNotFound",
    "ShuttingDown",
    "SocketPathError",
    "UnsafePath",
    "UntrustedSocket",
]


# An absolute path of two parts or more (a lone "/x" is kept: it names nothing).
# Not after a word character, "/", "." or "~", so URLs and relative paths are left.
_ABSOLUTE_PATH: Final = re.compile(r"(?<![\w/.~-])(?:/[^\s/'\"`,;:()<>\[\]{}]+){2,}/?")
API_PREFIX: Final = "/v1/"  # the socket's own routes are not filesystem paths


def redact_paths(text: str) -> str:
    """``text`` with every absolute filesystem path cut to ``…/<last part>``."""

    def cut(match: re.Match[str]) -> str:
        path = match.group(0)
        if path.startswith(API_PREFIX):
            return path
        return "…/" + path.rstrip("/").rsplit("/", 1)[-1]

    return _ABSOLUTE_PATH.sub(cut, text)


def _redact_value(value: Any) -> Any:
    return redact_paths(value) if isinstance(value, str) else value


class QwendError(Exception):
    """Base of every error qwend reports to a user or a client."""

    code = "internal_error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", "hint", ...}}``.

        Absolute paths in it are cut to their last part (``redact_paths``):
        the one place every error body is built, so no case can forget it.
        """
        details = {key: _redact_value(value) for key, value in self.details.items()}
        body: dict[str, Any] = {**details, "code": self.code, "message": redact_paths(self.message)}
        if self.hint:
            body["hint"] = redact_paths(self.hint)
        return {"error": body}

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(QwendError):
    """A config file is unreadable or invalid; names the file, key and reason."""

    code = "config_invalid"
    exit_code = 1


class RequestError(QwendError):
    """The request itself is wrong; the daemon is fine."""

    code = "bad_request"
    http_status = 400


class BadRequest(RequestError):
    code = "bad_request"
    http_status = 400


class NotFound(RequestError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(RequestError):
    code = "method_not_allowed"
    http_status = 405


class ModelNotFound(RequestError):
    code = "model_not_found"
    http_status = 404


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    http_status = 413


class RequestTimeout(RequestError):
    """The request body did not arrive within ``server.read_timeout_s``."""

    code = "request_timeout"
    http_status = 408


class ContextLengthExceeded(RequestError):
    code = "context_length_exceeded"
    http_status = 400


class Forbidden(RequestError):
    code = "forbidden"
    http_status = 403


class EngineError(QwendError):
    """The engine could not serve the request; the daemon keeps serving."""

    code = "engine_error"
    http_status = 503


class QueueFull(EngineError):
    code = "queue_full"
    http_status = 429


class ModelNotLoaded(EngineError):
    code = "model_not_loaded"
    http_status = 503


class OutOfMemory(EngineError):
    code = "out_of_memory"
    http_status = 503


class ShuttingDown(EngineError):
    code = "shutting_down"
    http_status = 503


class GenerationFailed(EngineError):
    code = "generation_failed"
    http_status = 500


class RemoteEngineError(EngineError):
    """A remote profile's engine answered with an error, or broke off its answer.

    The message names the engine's URL and what it said (never the API key);
    the daemon keeps serving and the next request tries the engine again.
    """

    code = "remote_engine_error"
    http_status = 502


class RemoteUnreachable(RemoteEngineError):
    """No connection to the remote engine (refused, DNS, TLS, timeout, dropped)."""

    code = "remote_unreachable"
    http_status = 503


class RemoteAuthFailed(RemoteEngineError):
    """The remote engine refused qwend's API key (HTTP 401 or 403)."""

    code = "remote_auth_failed"
    http_status = 502


class ModelError(QwendError):
    """The configured model cannot be loaded or fetched."""

    code = "model_error"
    exit_code = 1


class ModelMissing(ModelError):
    code = "model_missing"


class ModelCorrupt(ModelError):
    """A model file is damaged (truncated, empty, not JSON); the message names it."""

    code = "model_corrupt"


class BackendUnavailable(ModelError):
    code = "backend_unavailable"


class PullFailed(ModelError):
    code = "pull_failed"


class HubUnreachable(PullFailed):
    """The model hub could not be reached: no network, or HF_HUB_OFFLINE is set."""

    code = "hub_unreachable"


class RepoNotFound(PullFailed):
    """The hub has no such repository (or it is private and the token cannot see it)."""

    code = "repo_not_found"


class RevisionNotFound(PullFailed):
    """The repository exists but has no such branch, tag or commit."""

    code = "revision_not_found"


class RepoGated(PullFailed):
    """The repository is gated: its license must be accepted, and the download authenticated."""

    code = "repo_gated"


class HubTokenInvalid(PullFailed):
    """The hub rejected the token itself (expired, revoked or mistyped)."""

    code = "hub_token_invalid"


class EvalFailed(QwendError):
    """``qwend eval`` cannot go on: a bad suite file, results file or compare target."""

    code = "eval_failed"
    exit_code = 1


class DaemonError(QwendError):
    """The daemon process cannot be reached, started or stopped."""

    code = "daemon_error"
    exit_code = 2


class DaemonUnavailable(DaemonError):
    code = "daemon_unavailable"


class AlreadyRunning(DaemonError):
    code = "already_running"


class SocketPathError(DaemonError):
    code = "socket_path_invalid"


class UntrustedSocket(DaemonError):
    """The socket's directory or its listener belongs to another user: nothing is sent.

    Raised by the clients (qwend.trust) before the first byte, so a socket
    planted at the ``/tmp`` fallback path never receives a prompt.
    """

    code = "socket_untrusted"


class UnsafePath(DaemonError):
    """A state file (the lock, the log) is a symlink, not a regular file, or another user's."""

    code = "unsafe_path"


class BadResponse(DaemonError):
    """Something answered on the socket, but not what a qwend daemon answers."""

    code = "bad_response"
