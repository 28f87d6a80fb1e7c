"""Editor: the checks an edit passes before it is sent to the editor.

- ``cut_off``: an answer that stopped at its token limit (the daemon's
  finish reason ``length``) or whose code fence is never closed is
  incomplete: it is never applied, and the message says how to raise the
  limit.
- ``parse_after``: when the document parsed without errors before, it must
  parse after the edit too; otherwise the edit is refused with the first
  error's line. A document that already had errors, or a language without a
  grammar, is not checked, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from qwend_lsp.syntax.languages import first_error, parse

FENCE: Final = "```"


def unclosed_fence(answer: str) -> bool:
    """Does the answer open a code fence that it never closes?"""
    fences = sum(1 for line in answer.splitlines() if line.lstrip().startswith(FENCE))
    return fences % 2 == 1


def cut_off(finish_reason: str | None, answer: str) -> str | None:
    """Why the answer is incomplete, or None when it is whole."""
    if finish_reason == "length":
        return "the answer was cut off at its token limit"
    if unclosed_fence(answer):
        return "the answer's code block never ends (the answer was cut off)"
    return None


def raise_limit_hint(task: str, max_tokens: object) -> str:
    """How a user raises the answer length of ``task`` (the editor's setting or the daemon's)."""
    limit = f" of {max_tokens} tokens" if isinstance(max_tokens, int) else ""
    return (
        f"Raise the limit{limit}: taskMaxTokens in the language server's settings "
        f"(VS Code: qwend.commands.maxTokens), or max_tokens under [tasks.{task}] "
        "in the daemon's config."
    )


@dataclass(frozen=True)
class Verdict:
    """What the parse check found: ``ok`` to apply; ``note`` says why it was skipped."""

    ok: bool
    checked: bool
    note: str
    error_line: int | None = None  # 1-based, in the edited text

    def as_result(self) -> str:
        return "passed" if self.ok and self.checked else self.note


def parse_after(language: str, before: str | None, after: str) -> Verdict:
    """Check ``after`` (the edited text); ``before`` None means a new file."""
    if parse(language, "") is None:
        return Verdict(True, False, f"skipped: no grammar for {language or 'this language'!r}")
    if before is not None:
        old = parse(language, before)
        if old is not None and old.has_error:
            return Verdict(True, False, "skipped: the file had syntax errors before the edit")
    new = parse(language, after)
    assert new is not None
    error = first_error(new)
    if error is None:
        return Verdict(True, True, "passed")
    line = error[0] + 1
    return Verdict(False, True, f"the edited file would not parse (line {line})", line)
