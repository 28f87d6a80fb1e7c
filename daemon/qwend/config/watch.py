"""Engine: notice edits to the config files while the daemon runs (watchdog).

Editors save in place, by renaming a temporary file over the target, or by
moving the old file to a backup first; one save fires two to six events. So
the watcher watches each file's *directory* (a missing file cannot be
watched, and a rename-save replaces the inode), matches an event on its
source or destination path, and calls back once, a quiet ``debounce_s`` after
the last event. Whether anything changed is the callback's business (it
compares content hashes).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

DEBOUNCE_S: Final = 0.25  # one editor save spans a few ms to ~100 ms of events
RELEVANT_EVENTS: Final = [
    FileModifiedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]  # opened, attrib and directory events are noise here


class _Matcher(FileSystemEventHandler):
    def __init__(self, targets: frozenset[str], poke: Callable[[], None]) -> None:
        self._targets = targets
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if paths & self._targets:
            self._poke()


class ConfigWatcher:
    """Call ``on_change`` once per burst of events on any of ``files``."""

    def __init__(
        self, files: Iterable[Path], on_change: Callable[[], None], debounce_s: float = DEBOUNCE_S
    ) -> None:
        self.files = [Path(os.path.abspath(f)) for f in files]
        self._on_change = on_change
        self._debounce_s = debounce_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._observer = Observer()
        self.watched_dirs: list[Path] = []

    def start(self) -> None:
        """Watch each file's directory; a directory that does not exist is skipped
        (and listed as unwatched in the log)."""
        handler = _Matcher(frozenset(str(f) for f in self.files), self._poke)
        for directory in sorted({f.parent for f in self.files}):
            if directory.is_dir():
                self._observer.schedule(handler, str(directory), event_filter=RELEVANT_EVENTS)
                self.watched_dirs.append(directory)
            else:
                log.warning("config directory %s does not exist: not watched", directory)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self._observer.stop()
        self._observer.join(timeout=5)

    def _poke(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._debounce_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        try:
            self._on_change()
        except Exception:  # the watcher thread must survive a failing reload
            log.exception("config reload callback failed")
