"""Editor: code actions on a selection and the edits built from the daemon's answers.

Pure helpers on lsprotocol types: which actions a selection gets, and how an
answer becomes a ``WorkspaceEdit``.

- refactor, fix: the selection is replaced by the first fenced code block of
  the answer (the whole answer when it has no fence), re-indented to the
  selection's indentation.
- docstring: Python only gets a real docstring, inserted on the line after
  the ``def``/``class`` header (the first header in the selection, else the
  nearest one above it; a header spanning lines ends at the line that ends
  with ``:``), indented one level deeper (4 spaces, or the body's own
  indentation). The text is the first triple-quoted string of the answer,
  else its first paragraph of prose. Other languages get a ``/** ... */``
  block above the selection.
- tests: the generated code is appended at the end of the same document,
  after a blank line; the user moves it where it belongs.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Final

from lsprotocol import types as t

COMMAND_PREFIX: Final = "qwend."


@dataclass(frozen=True)
class ActionSpec:
    command: str  # the workspace/executeCommand name
    task: str  # the daemon task
    title: str
    kind: str


CODE_ACTIONS: Final = (
    ActionSpec("qwend.explain", "explain", "qwend: Explain this code", t.CodeActionKind.Refactor),
    ActionSpec(
        "qwend.refactor", "refactor", "qwend: Refactor this code", t.CodeActionKind.RefactorRewrite
    ),
    ActionSpec(
        "qwend.docstring", "docstring", "qwend: Add a docstring", t.CodeActionKind.RefactorRewrite
    ),
    ActionSpec("qwend.tests", "tests", "qwend: Generate tests", t.CodeActionKind.Refactor),
    ActionSpec("qwend.fix", "fix", "qwend: Fix this code", t.CodeActionKind.QuickFix),
)
CODE_ACTION_KINDS: Final = sorted({spec.kind for spec in CODE_ACTIONS})
PROSE_TASKS: Final = frozenset({"explain"})

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TRIPLE = re.compile(r"(\"\"\"|''')(.*?)\1", re.DOTALL)
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
    uri: str, language: str, lines: list[str], selection: t.Range, answer: str
) -> t.WorkspaceEdit:
    """Insert a docstring for the def/class at the selection (see the module docstring).

    Raises EmptyAnswer rather than insert placeholder text."""
    text = docstring_text(answer)
    if not text:
        raise EmptyAnswer("the answer held no docstring")
    if language != "python":
        line = lines[selection.start.line] if selection.start.line < len(lines) else ""
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        body = "\n".join(f"{indent} * {row}".rstrip() for row in text.splitlines())
        block = f"{indent}/**\n{body}\n{indent} */\n"
        at = t.Position(line=selection.start.line, character=0)
        return _edit(uri, t.TextEdit(range=t.Range(start=at, end=at), new_text=block))
    header = find_header(lines, selection)
    indent = body_indent(lines, header)
    rows = text.splitlines()
    if len(rows) == 1:
        doc = f'{indent}"""{rows[0]}"""\n'
    else:
        inner = "\n".join(f"{indent}{row}".rstrip() for row in rows)
        doc = f'{indent}"""{inner.lstrip()}\n{indent}"""\n'
    at = t.Position(line=header + 1, character=0)
    if header + 1 >= len(lines) and lines and not lines[-1].endswith("\n"):
        doc = "\n" + doc  # the header is the last line, without a newline
        at = t.Position(line=header, character=len(lines[header].rstrip("\r\n")))
    return _edit(uri, t.TextEdit(range=t.Range(start=at, end=at), new_text=doc))


def docstring_text(answer: str) -> str:
    """The docstring the answer proposes: a triple-quoted string, else prose."""
    match = _TRIPLE.search(answer)
    if match:
        return textwrap.dedent(match.group(2)).strip()
    prose = _FENCE.sub("", answer).strip()
    paragraph = prose.split("\n\n", 1)[0].strip()
    return paragraph.replace('"""', "'''")


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


def append_edit(uri: str, lines: list[str], answer: str) -> t.WorkspaceEdit:
    """Append the answer's first code block at the end of the document (the tests task)."""
    code = textwrap.dedent(first_code_block(answer))
    last = len(lines) - 1 if lines else 0
    tail = lines[last] if lines else ""
    end = t.Position(line=last, character=len(tail.rstrip("\r\n")))
    if tail.endswith("\n"):
        end = t.Position(line=last + 1, character=0)
        lead = "\n"
    else:
        lead = "\n\n" if lines else ""
    return _edit(uri, t.TextEdit(range=t.Range(start=end, end=end), new_text=f"{lead}{code}\n"))


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
