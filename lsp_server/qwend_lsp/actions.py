"""Editor: code actions on a selection and the edits built from the daemon's answers.

Pure helpers on lsprotocol types: which actions a selection gets, the range
an action works on, and how an answer becomes a ``WorkspaceEdit``. The
syntax rules they use live in ``qwend_lsp.syntax``; the checks an edit must
pass before it is sent are in commands.py.

- The range: the selection; with none, the smallest enclosing function,
  method or class in whole lines (``syntax.targets``), else the cursor line.
  The range sent and the range replaced are the same.
- refactor, fix: the range is replaced by the first fenced code block of
  the answer (the whole answer when it has no fence), re-indented to the
  range's indentation.
- docstring: in the language's own form and place (``syntax.docstrings``).
  Python: a string literal as the first statement of the body of the first
  def/class in the range (else the nearest one above it). Others: a doc
  comment above the unit. The text is taken out of whatever form the answer
  used.
- tests: the generated code goes into a new test file beside the source
  (``syntax.testfiles``), created through the edit's ``CreateFile``
  operation, or appended to that test file when it exists; never into the
  file under edit.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Final

import tree_sitter
from lsprotocol import types as t

from qwend.tasks.registry import TASKS
from qwend_lsp.syntax import docstrings, targets
from qwend_lsp.syntax.languages import Parsed

COMMAND_PREFIX: Final = "qwend."


@dataclass(frozen=True)
class ActionSpec:
    command: str  # the workspace/executeCommand name
    task: str  # the daemon task
    title: str
    kind: str


def _action(task: str, kind: str) -> ActionSpec:
    """A code action for a routed task, titled by the task registry."""
    return ActionSpec(f"{COMMAND_PREFIX}{task}", task, f"qwend: {TASKS[task].title}", kind)


CODE_ACTIONS: Final = (
    _action("explain", t.CodeActionKind.Refactor),
    _action("refactor", t.CodeActionKind.RefactorRewrite),
    _action("docstring", t.CodeActionKind.RefactorRewrite),
    _action("tests", t.CodeActionKind.Refactor),
    _action("fix", t.CodeActionKind.QuickFix),
)
CODE_ACTION_KINDS: Final = sorted({spec.kind for spec in CODE_ACTIONS})
PROSE_TASKS: Final = frozenset({"explain"})

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_HEADER = re.compile(r"^\s*(async\s+def|def|class)\b")


def code_actions(
    uri: str, selection: t.Range, diagnostics: list[t.Diagnostic]
) -> list[t.CodeAction]:
    """One action per task; ``fix`` carries the diagnostics' messages as its instruction."""
    argument: dict[str, object] = {"uri": uri, "range": _range_json(selection)}
    actions = []
    for spec in CODE_ACTIONS:
        args = dict(argument)
        title = spec.title
        if spec.task == "fix" and diagnostics:
            args["instruction"] = "; ".join(d.message for d in diagnostics)
            title = f"qwend: Fix: {diagnostics[0].message[:60]}"
        actions.append(
            t.CodeAction(
                title=title,
                kind=spec.kind,
                diagnostics=diagnostics if spec.task == "fix" and diagnostics else None,
                command=t.Command(title=title, command=spec.command, arguments=[args]),
            )
        )
    return actions


def _range_json(r: t.Range) -> dict[str, dict[str, int]]:
    return {
        "start": {"line": r.start.line, "character": r.start.character},
        "end": {"line": r.end.line, "character": r.end.character},
    }


def parse_range(raw: object) -> t.Range:
    """A Range from its JSON form; ValueError when malformed."""
    try:
        assert isinstance(raw, dict)
        start, end = raw["start"], raw["end"]
        return t.Range(
            start=t.Position(line=int(start["line"]), character=int(start["character"])),
            end=t.Position(line=int(end["line"]), character=int(end["character"])),
        )
    except (AssertionError, KeyError, TypeError, ValueError):
        raise ValueError(f"not a range: {raw!r}") from None


def target_range(lines: list[str], selection: t.Range, parsed: Parsed | None) -> t.Range:
    """The selection; with none, the enclosing unit from the tree, else the cursor line."""
    if selection.start != selection.end or parsed is None:
        return effective_range(lines, selection)
    span = targets.enclosing_unit(parsed, selection.start.line)
    if span is None:
        return effective_range(lines, selection)
    return lines_range(lines, span.first, span.last)


def lines_range(lines: list[str], first: int, last: int) -> t.Range:
    """Lines ``first``..``last`` whole: through the last one's newline when it has one."""
    tail = lines[last] if last < len(lines) else ""
    if tail.endswith("\n"):
        end = t.Position(line=last + 1, character=0)
    else:
        end = t.Position(line=last, character=len(tail))
    return t.Range(start=t.Position(line=first, character=0), end=end)


def effective_range(lines: list[str], selection: t.Range) -> t.Range:
    """An empty selection means the whole cursor line; a selection ending at
    column 0 of the next line stays as it is."""
    if selection.start != selection.end:
        return selection
    line = selection.start.line
    length = len(lines[line].rstrip("\r\n")) if line < len(lines) else 0
    return t.Range(
        start=t.Position(line=line, character=0), end=t.Position(line=line, character=length)
    )


# -- answers to edits ------------------------------------------------------------------


class EmptyAnswer(ValueError):
    """The model's answer holds nothing to put into the file: no edit is made."""


def first_code_block(answer: str) -> str:
    """The first fenced block (an unclosed fence runs to the end), else the whole answer."""
    match = _FENCE.search(answer)
    code = match.group(1) if match else answer
    return code.strip("\n")


def reindent(code: str, indent: str) -> str:
    return textwrap.indent(textwrap.dedent(code), indent, lambda line: bool(line.strip()))


def replace_edit(uri: str, lines: list[str], selection: t.Range, answer: str) -> t.WorkspaceEdit:
    """Replace the selection with the answer's first code block. Raises EmptyAnswer."""
    code = first_code_block(answer)
    if not code.strip():
        raise EmptyAnswer("the answer held no code")
    if selection.start.character == 0:
        first = lines[selection.start.line] if selection.start.line < len(lines) else ""
        code = reindent(code, first[: len(first) - len(first.lstrip(" \t"))])
    else:
        code = textwrap.dedent(code).strip()
    if selection.end.character == 0 and selection.end.line > selection.start.line:
        code += "\n"  # the selection took whole lines, newline included
    return _edit(uri, t.TextEdit(range=selection, new_text=code))


def docstring_edit(
    uri: str,
    language: str,
    lines: list[str],
    selection: t.Range,
    answer: str,
    parsed: Parsed | None = None,
) -> t.WorkspaceEdit:
    """Insert a docstring for the unit at the selection (see the module docstring).

    ``language`` is a syntax.languages name. Raises EmptyAnswer rather than
    insert placeholder text."""
    text = docstrings.docstring_text(answer)
    if not text:
        raise EmptyAnswer("the answer held no docstring")
    last = max(selection.start.line, selection.end.line - (selection.end.character == 0))
    node = targets.unit_starting_in(parsed, selection.start.line, last) if parsed else None
    if language == "python":
        insertion = _python_docstring(lines, selection, text, node)
    else:
        line = targets.widen(parsed, node).first if parsed and node else selection.start.line
        insertion = docstrings.comment_above(language, text, line, _indent_of(lines, line))
    at = t.Position(line=insertion.line, character=0)
    new_text = insertion.text
    if insertion.line >= len(lines) and lines and not lines[-1].endswith("\n"):
        new_text = "\n" + new_text  # after a last line that has no newline
        at = t.Position(line=len(lines) - 1, character=len(lines[-1]))
    return _edit(uri, t.TextEdit(range=t.Range(start=at, end=at), new_text=new_text))


def _python_docstring(
    lines: list[str],
    selection: t.Range,
    text: str,
    node: tree_sitter.Node | None,
) -> docstrings.Insertion:
    """Before the first statement of the def/class body; by the header lines without a tree."""
    body = node.child_by_field_name("body") if node is not None else None
    statements = body.named_children if body is not None else []
    colons = [c for c in node.children if c.type == ":"] if node is not None else []
    if colons and statements and statements[0].start_point.row > colons[-1].start_point.row:
        # Right under the header (above any comment), at the first statement's indentation.
        first = statements[0].start_point.row
        return docstrings.python_docstring(
            text, colons[-1].start_point.row + 1, _indent_of(lines, first)
        )
    header = find_header(lines, selection)
    return docstrings.python_docstring(text, header + 1, body_indent(lines, header))


def _indent_of(lines: list[str], line: int) -> str:
    text = lines[line] if line < len(lines) else ""
    return text[: len(text) - len(text.lstrip(" \t"))]


def find_header(lines: list[str], selection: t.Range) -> int:
    """The line that ends the def/class header at or above the selection."""
    start = None
    for number in range(selection.start.line, min(selection.end.line, len(lines) - 1) + 1):
        if _HEADER.match(lines[number]):
            start = number
            break
    if start is None:
        for number in range(min(selection.start.line, len(lines) - 1), -1, -1):
            if _HEADER.match(lines[number]):
                start = number
                break
    if start is None:
        return max(0, selection.start.line - 1)
    for number in range(start, min(start + 20, len(lines))):
        if lines[number].split("#", 1)[0].rstrip().endswith(":"):
            return number
    return start


def body_indent(lines: list[str], header: int) -> str:
    """The indentation of the header's body: the next non-blank line's if deeper, else +4."""
    def_line = lines[header] if header < len(lines) else ""
    own = def_line[: len(def_line) - len(def_line.lstrip(" \t"))]
    for line in lines[header + 1 :]:
        if line.strip():
            indent = line[: len(line) - len(line.lstrip(" \t"))]
            return indent if len(indent) > len(own) else own + "    "
    return own + "    "


def test_code(answer: str) -> str:
    """The generated tests: the answer's first code block, dedented, ending in one newline."""
    code = textwrap.dedent(first_code_block(answer)).strip("\n")
    if not code.strip():
        raise EmptyAnswer("the answer held no code")
    return code + "\n"


def new_file_edit(uri: str, content: str) -> t.WorkspaceEdit:
    """Create ``uri`` (never over an existing file) holding ``content``."""
    create = t.CreateFile(
        uri=uri, options=t.CreateFileOptions(overwrite=False, ignore_if_exists=True)
    )
    start = t.Position(line=0, character=0)
    insert = t.TextDocumentEdit(
        text_document=t.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
        edits=[t.TextEdit(range=t.Range(start=start, end=start), new_text=content)],
    )
    return t.WorkspaceEdit(document_changes=[create, insert])


def append_edit(uri: str, lines: list[str], code: str) -> t.WorkspaceEdit:
    """Append ``code`` at the end of the document ``lines``, after a blank line."""
    last = len(lines) - 1 if lines else 0
    tail = lines[last] if lines else ""
    end = t.Position(line=last, character=len(tail.rstrip("\r\n")))
    if tail.endswith("\n"):
        end = t.Position(line=last + 1, character=0)
        lead = "\n"
    else:
        lead = "\n\n" if lines else ""
    return _edit(uri, t.TextEdit(range=t.Range(start=end, end=end), new_text=f"{lead}{code}"))


def _edit(uri: str, edit: t.TextEdit) -> t.WorkspaceEdit:
    return t.WorkspaceEdit(changes={uri: [edit]})


def selected_text(lines: list[str], selection: t.Range) -> str:
    """The text of ``selection`` (character offsets as code points)."""
    if selection.start.line >= len(lines):
        return ""
    if selection.start.line == selection.end.line:
        return lines[selection.start.line][selection.start.character : selection.end.character]
    parts = [lines[selection.start.line][selection.start.character :]]
    parts += lines[selection.start.line + 1 : selection.end.line]
    if selection.end.line < len(lines):
        parts.append(lines[selection.end.line][: selection.end.character])
    return "".join(parts)


def surrounding(lines: list[str], selection: t.Range, radius: int = 40) -> str:
    """Lines around the selection, for the tasks' ``context`` field."""
    first = max(0, selection.start.line - radius)
    return "".join(lines[first : selection.end.line + radius + 1])
