"""Editor: answers that are not written into the file are kept for reading.

A refused edit (cut off, or it would break the file) still holds what the
model said. The answer goes into a markdown file under the user's runtime
directory, which the server asks the editor to open (``window/showDocument``)
when the client supports it: Neovim and eglot then show the whole answer in
a buffer instead of one truncated message line. The newest ``KEEP`` files
are kept.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Final

KEEP: Final = 20  # answers kept on disk; older ones are removed when a new one is written
_SERIAL = itertools.count(1)


def answers_dir() -> Path:
    """``$XDG_RUNTIME_DIR/qwend/answers``, else a per-user folder under the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(runtime) / "qwend" if runtime else Path(tempfile.gettempdir()) / f"qwend-{os.getuid()}"
    )
    return base / "answers"


def write_answer(
    task: str, source: str, reason: str, text: str, folder: Path | None = None
) -> Path:
    """Write the answer as markdown (the reason first); return the file."""
    folder = folder or answers_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = re.sub(r"[^\w.-]+", "_", Path(source).name)[:60] or "answer"
    path = (
        folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_SERIAL)}-{task}-{stem}.md"
    )
    path.write_text(
        f"# qwend {task}: {source}\n\n> {reason}\n\n{text.rstrip()}\n", encoding="utf-8"
    )
    for old in sorted(folder.glob("*.md"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path
