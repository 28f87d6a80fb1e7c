"""Engine: apply an edited config to the running daemon, or say why not.

Called by the file watcher and by ``POST /v1/admin/reload``. The files are
read and hashed; identical bytes are no event. A file that does not parse or
validate, or a user file that was in use and is now gone, keeps the last good
config and records the error (file, line, key, reason). A good config is
applied by kind of change:

- sampling, stops, tasks (their lanes too), budgets, generation defaults,
  scheduling (engine/scheduling.py) and server limits:
  from the next request on;
- the resident model profile: a swap (InferenceService.swap_model), during
  which in-flight requests finish on the old model;
- ``server.socket`` and ``daemon.preload``: only at the next start (reported).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qwend import paths
from qwend.config import Config, load_config
from qwend.engine.service import InferenceService
from qwend.errors import ConfigError, QwendError

log = logging.getLogger(__name__)

Result = Literal["applied", "unchanged", "error", "model_swapped", "swap_failed"]
RESTART_KEYS = ("server.socket", "server.idle_timeout_s", "daemon.preload")


@dataclass(frozen=True)
class ReloadOutcome:
    result: Result
    trigger: str
    at: float = field(default_factory=time.time)
    error: str | None = None
    changes: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "trigger": self.trigger,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.at)),
            "error": self.error,
            "changes": list(self.changes),
            "needs_restart": list(self.needs_restart),
        }


class Reloader:
    def __init__(
        self,
        service: InferenceService,
        *,
        user_path: Path | None,
        model_override: str | None,
    ) -> None:
        self.service = service
        self.user_path = user_path
        self.model_override = model_override
        self.last: ReloadOutcome | None = None
        self.count = 0
        self._seen = self._fingerprint()
        self._lock = asyncio.Lock()

    def watched_files(self) -> list[Path]:
        """The files whose edits matter, present or not: shipped, then the user's."""
        return [paths.shipped_config_path(), self.user_path or paths.user_config_path()]

    async def reload(self, trigger: str) -> ReloadOutcome:
        """Re-read the config and apply it; never raises."""
        async with self._lock:
            fingerprint = self._fingerprint()
            if fingerprint == self._seen and trigger == "watch":
                return self.last or ReloadOutcome("unchanged", trigger)
            self._seen = fingerprint
            outcome = await self._reload(trigger)
            self.last = outcome
            self.count += 1
            self.service.engine.metrics.config_reloads.labels(result=outcome.result).inc()
            if outcome.error:
                log.error("config reload (%s): %s: %s", trigger, outcome.result, outcome.error)
            else:
                log.info(
                    "config reload (%s): %s %s", trigger, outcome.result, ", ".join(outcome.changes)
                )
            return outcome

    async def _reload(self, trigger: str) -> ReloadOutcome:
        old = self.service.config
        try:
            new = self._load(old)
        except ConfigError as exc:
            return ReloadOutcome(
                "error", trigger, error=f"{exc.message}; kept the last good config"
            )
        changes = _changed_keys(old, new)
        # Against what serves, not the last config: a failed swap is retried.
        model_changed = (new.model_name, new.profile) != self.service.serving
        if not changes and not model_changed:
            return ReloadOutcome("unchanged", trigger)
        restart = tuple(k for k in changes if k in RESTART_KEYS)
        self.service.apply_config(new)
        if not model_changed:
            return ReloadOutcome("applied", trigger, changes=changes, needs_restart=restart)
        try:
            await self.service.swap_model(new)
        except QwendError as exc:
            return ReloadOutcome(
                "swap_failed",
                trigger,
                error=f"{exc.message}; '{self.service.model_name}' keeps serving",
                changes=changes,
                needs_restart=restart,
            )
        return ReloadOutcome("model_swapped", trigger, changes=changes, needs_restart=restart)

    def _load(self, old: Config) -> Config:
        user = self.user_path or paths.user_config_path()
        if user in old.files and not user.is_file():
            raise ConfigError(f"{user}: the file was deleted")
        return load_config(self.user_path, model_override=self.model_override)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.watched_files():
            digest.update(str(path).encode())
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()

    def status(self) -> dict[str, Any]:
        return {
            "files": [str(p) for p in self.service.config.files],
            "watched": [str(p) for p in self.watched_files()],
            "reloads": self.count,
            "last_reload": self.last.to_dict() if self.last else None,
        }


def _changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """Dotted keys whose values differ (tables compared key by key)."""
    return tuple(sorted(_diff(old.settings.model_dump(), new.settings.model_dump(), "")))


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]
