"""Editor: an answer becomes a planned edit, with the text before and after it.

commands.py checks the plan (syntax.checks) before sending it, so this
module only decides what would change:

- refactor, fix, docstring: one TextEdit in the document under edit;
- tests: a new file beside the source (syntax.testfiles), created by the
  edit's ``CreateFile`` when the client supports resource operations, else
  written by the server itself (never over an existing file); appended to
  that test file when it already exists. A source that is itself a test
  file, or a document that is no file, gets no test file: ``NoPlace``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from lsprotocol import types as t
from pygls.uris import from_fs_path
from pygls.workspace import TextDocument

from qwend_lsp import actions
from qwend_lsp.syntax import testfiles
from qwend_lsp.syntax.languages import Parsed


class NoPlace(ValueError):
    """There is no file to put the answer in (the message says why)."""


@dataclass(frozen=True)
class Plan:
    """What an answer would change: ``after`` is the target's whole text afterwards."""

    target_uri: str
    before: str | None  # None: the target is a new file
    after: str
    edit: t.WorkspaceEdit | None  # None: the server writes ``write_to`` itself
    write_to: Path | None = None  # a new file the client cannot create
    opens: bool = False  # show the target to the user once applied


def code_edit(
    task: str,
    doc: TextDocument,
    language: str,
    selection: t.Range,
    answer: str,
    parsed: Parsed | None,
) -> Plan:
    """refactor / fix / docstring in the document itself. Raises actions.EmptyAnswer."""
    lines = list(doc.lines)
    if task == "docstring":
        edit = actions.docstring_edit(doc.uri, language, lines, selection, answer, parsed)
    else:
        edit = actions.replace_edit(doc.uri, lines, selection, answer)
    assert edit.changes is not None
    after = apply_text_edits(doc, edit.changes[doc.uri])
    return Plan(doc.uri, doc.source, after, edit)


def tests_edit(
    source_uri: str,
    language: str,
    answer: str,
    existing: TextDocument | None,
    can_create: bool,
) -> Plan:
    """The tests into their own file (see the module docstring). Raises NoPlace, EmptyAnswer."""
    source = file_path(source_uri)
    if source is None:
        raise NoPlace("the document is not a file, so there is no place beside it for tests")
    target = testfiles.file_for_tests(PurePosixPath(source), language)
    if target is None:
        raise NoPlace("this is a test file: generate tests from the source file instead")
    code = actions.test_code(answer)
    target_uri = from_fs_path(str(target)) or f"file://{target}"
    if existing is not None:
        lines = list(existing.lines)
        edit = actions.append_edit(target_uri, lines, code)
        assert edit.changes is not None
        after = apply_text_edits(existing, edit.changes[target_uri])
        return Plan(target_uri, existing.source, after, edit, opens=True)
    if can_create:
        return Plan(target_uri, None, code, actions.new_file_edit(target_uri, code), opens=True)
    return Plan(target_uri, None, code, None, write_to=Path(str(target)), opens=True)


def file_path(uri: str) -> str | None:
    """The local path of a file: URI, or None."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def apply_text_edits(doc: TextDocument, edits: Sequence[t.TextEdit]) -> str:
    """``doc``'s text after non-overlapping ``edits`` (positions in the client's encoding)."""
    text = doc.source
    spans = [
        (doc.offset_at_position(e.range.start), doc.offset_at_position(e.range.end), e.new_text)
        for e in edits
    ]
    for start, end, new_text in sorted(spans, reverse=True):
        text = text[:start] + new_text + text[end:]
    return text
