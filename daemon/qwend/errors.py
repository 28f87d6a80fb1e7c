"""Protocol: the one error tree every qwend layer raises and reports.

Each error carries a stable ``code`` (the string clients match on, listed in
docs/errors.md), the HTTP status the socket answers with, and the exit code
the CLI ends with. The message says what happened; the hint says what to do.
Neither ever holds a traceback.

    QwendError
    ├── ConfigError              config_invalid          (file, key, reason)
    ├── RequestError                                     (400-class: the client's fault)
    │   ├── BadRequest           bad_request             400
    │   ├── NotFound             not_found               404
    │   ├── ModelNotFound        model_not_found         404
    │   ├── PayloadTooLarge      payload_too_large       413
    │   ├── ContextLengthExceeded context_length_exceeded 400
    │   └── Forbidden            forbidden               403
    ├── EngineError                                      (the model could not serve it)
    │   ├── QueueFull            queue_full              429
    │   ├── ModelNotLoaded       model_not_loaded        503
    │   ├── OutOfMemory          out_of_memory           503
    │   ├── ShuttingDown         shutting_down           503
    │   └── GenerationFailed     generation_failed       500
    ├── ModelError                                       (start-up: the model cannot be loaded)
    │   ├── ModelMissing         model_missing
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
        └── SocketPathError      socket_path_invalid     exit 2
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyRunning",
    "BackendUnavailable",
    "BadRequest",
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
    "RepoGated",
    "RepoNotFound",
    "RequestError",
    "RevisionNotFound",
    "ShuttingDown",
    "SocketPathError",
]


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
        """The JSON error body: ``{"error": {"code", "message", "hint", ...}}``."""
        body: dict[str, Any] = {**self.details, "code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
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


class ModelNotFound(RequestError):
    code = "model_not_found"
    http_status = 404


class PayloadTooLarge(RequestError):
    code = "payload_too_large"
    http_status = 413


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


class ModelError(QwendError):
    """The configured model cannot be loaded or fetched."""

    code = "model_error"
    exit_code = 1


class ModelMissing(ModelError):
    code = "model_missing"


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
