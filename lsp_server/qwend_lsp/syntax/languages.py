"""Editor: the language table (LSP language id -> tree-sitter grammar) and parsing.

Grammars come from the per-language wheels pinned in setup.cfg
(tree-sitter-python, -javascript...), each a compiled module with a
``language()`` function; nothing is downloaded at run time. A grammar that
fails to load counts as unknown (the caller then skips the syntax rules).
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from typing import Final

import tree_sitter

log = logging.getLogger(__name__)

# The grammar wheel's module and its function, by qwend's language name.
GRAMMARS: Final[dict[str, tuple[str, str]]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "lua": ("tree_sitter_lua", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "bash": ("tree_sitter_bash", "language"),
    "php": ("tree_sitter_php", "language_php"),
}

# LSP language ids (and editors' variants) that name one of the languages above.
ALIASES: Final[dict[str, str]] = {
    "python3": "python",
    "javascriptreact": "javascript",
    "jsx": "javascript",
    "js": "javascript",
    "typescriptreact": "tsx",
    "ts": "typescript",
    "golang": "go",
    "c++": "cpp",
    "cuda": "cpp",
    "objective-c": "c",
    "sh": "bash",
    "shell": "bash",
    "shellscript": "bash",
    "zsh": "bash",
    "rb": "ruby",
    "rs": "rust",
    "py": "python",
}

# File extensions, for a document whose client sent no useful language id.
EXTENSIONS: Final[dict[str, str]] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".hh": "cpp",
    ".lua": "lua",
    ".rb": "ruby",
    ".sh": "bash",
    ".bash": "bash",
    ".php": "php",
}


def language_name(language_id: str, path: str = "") -> str:
    """qwend's name for a document's language: the id, its alias, else the file extension."""
    lid = language_id.strip().lower()
    name = ALIASES.get(lid, lid)
    if name in GRAMMARS or not path:
        return name
    dot = path.rfind(".")
    by_extension = EXTENSIONS.get(path[dot:].lower()) if dot > path.rfind("/") else None
    return by_extension or name


@functools.cache
def grammar(name: str) -> tree_sitter.Language | None:
    """The compiled grammar of ``name`` (a language_name), or None when there is none."""
    spec = GRAMMARS.get(name)
    if spec is None:
        return None
    module, function = spec
    try:
        return tree_sitter.Language(getattr(importlib.import_module(module), function)())
    except (ImportError, AttributeError, ValueError) as exc:
        log.warning("the %s grammar (%s) does not load: %s", name, module, exc)
        return None


@dataclass(frozen=True)
class Parsed:
    """A parsed document: its tree and the UTF-8 bytes the tree's offsets index."""

    language: str
    tree: tree_sitter.Tree
    data: bytes

    @property
    def root(self) -> tree_sitter.Node:
        return self.tree.root_node

    @property
    def has_error(self) -> bool:
        return self.tree.root_node.has_error


def parse(name: str, text: str) -> Parsed | None:
    """Parse ``text`` as language ``name``; None when there is no grammar for it."""
    lang = grammar(name)
    if lang is None:
        return None
    data = text.encode("utf-8", errors="surrogatepass")
    return Parsed(name, tree_sitter.Parser(lang).parse(data), data)


def first_error(parsed: Parsed) -> tuple[int, int] | None:
    """(line, column), both 0-based, of the first ERROR or MISSING node; None when clean."""
    if not parsed.has_error:
        return None
    cursor = parsed.root
    while True:
        for child in cursor.children:
            if child.is_error or child.is_missing:
                return _line_col(parsed, child)
            if child.has_error:
                cursor = child
                break
        else:
            return _line_col(parsed, cursor)


def _line_col(parsed: Parsed, node: tree_sitter.Node) -> tuple[int, int]:
    row, byte_col = node.start_point
    line_start = node.start_byte - byte_col
    column = len(parsed.data[line_start : node.start_byte].decode("utf-8", errors="replace"))
    return row, column
