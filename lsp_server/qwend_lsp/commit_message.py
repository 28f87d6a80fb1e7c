"""Editor: a commit message from the model's answer: subject, blank line, body.

Small models answer a commit-message prompt with a fenced block, a label
("Commit message:"), bits of the diff they were shown, or one very long
line. ``clean`` turns any of that into git's form:

- fences and labels go; lines of the diff (headers, hunks, +/- lines that
  are in the diff) go;
- the subject is the first remaining line without list or heading marks, at
  most ``SUBJECT_CHARS`` characters (cut at a word; the rest opens the body);
- a blank line, then the body: the remaining lines, blank runs collapsed.
  With nothing left for a body, it lists the files the diff changes.
"""

from __future__ import annotations

import re
from typing import Final

SUBJECT_CHARS: Final = 72  # git's convention: subjects fit an 80-column log with a hash
_FENCE = re.compile(r"^\s*```")
_LABEL = re.compile(r"^\s*(commit message|subject|message|summary|title)\s*:\s*", re.IGNORECASE)
_DIFF_LINE = re.compile(
    r"^(diff --git |index [0-9a-f]+\.\.|--- |\+\+\+ |@@ |new file mode|deleted file)"
)
_MARKS = re.compile(r"^\s*(?:[#>*-]+\s+|\d+\.\s+)?")
_FILE = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


def changed_files(diff: str) -> list[str]:
    return _FILE.findall(diff)


def clean(answer: str, diff: str) -> str:
    """The commit message in git's form (see the module docstring)."""
    diff_lines = {line for line in diff.splitlines() if line[:1] in "+-" and line[1:].strip()}
    kept: list[str] = []
    for line in answer.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line) or _DIFF_LINE.match(line) or line in diff_lines:
            continue
        kept.append(line.rstrip())
    while kept and not kept[0].strip():
        kept.pop(0)
    first = _LABEL.sub("", kept.pop(0)) if kept else ""
    subject = _MARKS.sub("", first).strip().strip("\"'`").strip().rstrip(":").rstrip()
    rest = ""
    if len(subject) > SUBJECT_CHARS:
        cut = subject.rfind(" ", 0, SUBJECT_CHARS + 1)
        cut = cut if cut > 0 else SUBJECT_CHARS
        subject, rest = subject[:cut].rstrip(), subject[cut:].strip()
    files = changed_files(diff)
    if not subject:
        subject = ("Update " + ", ".join(files))[:SUBJECT_CHARS] if files else "Update"
    body_lines = ([rest] if rest else []) + [_LABEL.sub("", line) for line in kept]
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(body_lines)).strip()
    if not body:
        body = "Changed: " + (", ".join(files) if files else "see the diff") + "."
    return f"{subject}\n\n{body}\n"
