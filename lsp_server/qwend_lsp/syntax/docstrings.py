"""Editor: docstrings in each language's own form and place.

| languages | form | place |
|---|---|---|
| python | ``\"\"\"text\"\"\"`` | first statement of the body, at the body's indentation |
| javascript, typescript, java, c, cpp, php, kotlin, scala | ``/** ... */`` | above the unit |
| rust, c#, swift, dart | ``/// text`` | above the unit (and its attributes) |
| go | ``// text`` | above the unit |
| lua | ``--- text`` | above the unit |
| ruby, bash (shell), perl, r, elixir, others with ``#`` comments | ``# text`` | above |
| anything else | ``/** ... */`` | above the selection (the old behaviour) |

"The unit" is the target (targets.py) when the language has a grammar,
else the selection's first line. ``docstring_text`` takes the text out of
whatever form the model answered in (a triple-quoted string, a doc comment,
comment lines, or prose).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Final

_BLOCK: Final = ("/**", " * ", " */")
STYLES: Final[dict[str, str]] = {
    **dict.fromkeys(
        ("javascript", "typescript", "tsx", "java", "c", "cpp", "php", "kotlin", "scala"), "block"
    ),
    **dict.fromkeys(("rust", "csharp", "swift", "dart"), "///"),
    "go": "//",
    "lua": "---",
    **dict.fromkeys(
        ("ruby", "bash", "sh", "shellscript", "perl", "r", "elixir", "powershell", "yaml"), "#"
    ),
    "python": "python",
}

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TRIPLE = re.compile(r"(\"\"\"|''')(.*?)\1", re.DOTALL)
_DOC_BLOCK = re.compile(r"/\*\*?(.*?)\*/", re.DOTALL)
_COMMENT_LINE = re.compile(r"^\s*(///?|---?|#(?![!\w]))\s?(.*)$")


def style(language: str) -> str:
    """The docstring form of ``language`` (a key of the module docstring's table)."""
    return STYLES.get(language, "block")


def docstring_text(answer: str) -> str:
    """The documentation the answer proposes, without any comment markers."""
    match = _TRIPLE.search(answer)
    if match:
        return textwrap.dedent(match.group(2)).strip()
    block = _DOC_BLOCK.search(answer)
    if block:
        rows = [re.sub(r"^\s*\*\s?", "", row) for row in block.group(1).splitlines()]
        return "\n".join(rows).strip()
    code = _FENCE.search(answer)
    if code:
        comments = _leading_comments(code.group(1))
        if comments:
            return comments
    prose = _FENCE.sub("", answer).strip()
    return prose.split("\n\n", 1)[0].strip()


def _leading_comments(code: str) -> str:
    """The first run of comment lines in ``code`` with their markers removed."""
    rows: list[str] = []
    for line in code.splitlines():
        match = _COMMENT_LINE.match(line)
        if match:
            rows.append(match.group(2).rstrip())
        elif rows:
            break
    return "\n".join(rows).strip()


@dataclass(frozen=True)
class Insertion:
    """Insert ``text`` at the start of line ``line`` (0-based)."""

    line: int
    text: str


def comment_above(language: str, text: str, line: int, indent: str) -> Insertion:
    """The doc comment of ``text`` above line ``line``, at ``indent``."""
    rows = text.splitlines() or [""]
    form = style(language)
    if form == "block":
        safe = [row.replace("*/", "* /") for row in rows]  # */ would end the comment
        body = "\n".join(f"{indent} * {row}".rstrip() for row in safe)
        return Insertion(line, f"{indent}/**\n{body}\n{indent} */\n")
    marker = {"python": "#"}.get(form, form)
    return Insertion(line, "".join(f"{indent}{marker} {row}".rstrip() + "\n" for row in rows))


def python_docstring(text: str, body_line: int, indent: str) -> Insertion:
    """A Python docstring before ``body_line``, the first line of the body, at ``indent``."""
    text = text.replace('"""', "'''").replace("\\", "\\\\")
    rows = text.splitlines() or [""]
    if len(rows) == 1:
        return Insertion(body_line, f'{indent}"""{rows[0]}"""\n')
    inner = "\n".join(f"{indent}{row}".rstrip() for row in rows)
    return Insertion(body_line, f'{indent}"""{inner.lstrip()}\n{indent}"""\n')
