"""Editor: the unit a code action works on: the smallest enclosing function, method or class.

With no selection, an action sends and replaces the same unit, in whole
lines (from column 0 of its first line through the newline of its last):

1. the smallest node at the cursor line's first non-blank character whose
   type is a unit of the language (``UNITS``);
2. widened to the wrappers that belong to it (``WRAPPERS``: a decorator,
   ``export``, ``const f = () => {...}``, ``M.f = function() ... end``);
3. widened to whole lines: while other code shares its first or last line,
   the next enclosing node (a callback passed on a call's line becomes the
   whole statement).

No unit around the cursor: the top-level statement at the cursor line. A
blank line outside any statement, or a language without a grammar: None,
and the caller keeps the cursor line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import tree_sitter

from qwend_lsp.syntax.languages import Parsed

_JS_UNITS: Final = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "function_expression",
        "function",
        "arrow_function",
        "method_definition",
        "class_declaration",
        "class",
    }
)
_JS_WRAPPERS: Final = frozenset(
    {
        "variable_declarator",
        "lexical_declaration",
        "variable_declaration",
        "export_statement",
        "assignment_expression",
        "expression_statement",
    }
)

UNITS: Final[dict[str, frozenset[str]]] = {
    "python": frozenset({"function_definition", "class_definition"}),
    "javascript": _JS_UNITS,
    "typescript": _JS_UNITS
    | {"interface_declaration", "abstract_class_declaration", "enum_declaration"},
    "tsx": _JS_UNITS | {"interface_declaration", "abstract_class_declaration"},
    "go": frozenset({"function_declaration", "method_declaration", "type_declaration"}),
    "rust": frozenset(
        {"function_item", "impl_item", "struct_item", "enum_item", "trait_item", "mod_item"}
    ),
    "java": frozenset(
        {
            "method_declaration",
            "constructor_declaration",
            "class_declaration",
            "interface_declaration",
            "enum_declaration",
            "record_declaration",
        }
    ),
    "c": frozenset({"function_definition", "struct_specifier"}),
    "cpp": frozenset({"function_definition", "class_specifier", "struct_specifier"}),
    "lua": frozenset({"function_declaration", "function_definition"}),
    "ruby": frozenset({"method", "singleton_method", "class", "module"}),
    "bash": frozenset({"function_definition"}),
    "php": frozenset({"function_definition", "method_declaration", "class_declaration"}),
}

# Parents a unit is widened to when it is their whole point.
WRAPPERS: Final[dict[str, frozenset[str]]] = {
    "python": frozenset({"decorated_definition"}),
    "javascript": _JS_WRAPPERS,
    "typescript": _JS_WRAPPERS,
    "tsx": _JS_WRAPPERS,
    "lua": frozenset({"expression_list", "assignment_statement", "variable_declaration"}),
    "c": frozenset({"type_definition", "declaration"}),
    "cpp": frozenset({"type_definition", "declaration", "template_declaration"}),
}


@dataclass(frozen=True)
class LineSpan:
    """Lines ``first`` through ``last`` (0-based, inclusive)."""

    first: int
    last: int


def enclosing_unit(parsed: Parsed, line: int) -> LineSpan | None:
    """The whole-line unit around ``line`` (see the module docstring), or None."""
    node = unit_at(parsed, line)
    if node is None:
        return _top_level_statement(parsed, line)
    return widen(parsed, node)


def unit_at(parsed: Parsed, line: int) -> tree_sitter.Node | None:
    """The smallest unit node around the first non-blank character of ``line``."""
    units = UNITS.get(parsed.language, frozenset())
    point = (line, _first_nonblank(parsed.data, line))
    wrappers = WRAPPERS.get(parsed.language, frozenset())
    node: tree_sitter.Node | None = parsed.root.descendant_for_point_range(point, point)
    while node is not None and node.type not in units:
        if node.type in wrappers:
            inner = _unit_inside(node, units, wrappers)
            if inner is not None:
                return inner  # on a decorator, `export`, `const f =`...: its unit
        node = node.parent
    return node


def _unit_inside(
    node: tree_sitter.Node, units: frozenset[str], wrappers: frozenset[str]
) -> tree_sitter.Node | None:
    """The unit a wrapper wraps (through further wrappers), or None."""
    for child in node.named_children:
        if child.type in units:
            return child
        if child.type in wrappers:
            found = _unit_inside(child, units, wrappers)
            if found is not None:
                return found
    return None


def unit_starting_in(parsed: Parsed, first: int, last: int) -> tree_sitter.Node | None:
    """The first unit that starts on lines ``first``..``last``, else the one around ``first``."""
    for line in range(first, last + 1):
        node = unit_at(parsed, line)
        if node is not None and widen(parsed, node).first == line:
            return node
    return unit_at(parsed, first)


def widen(parsed: Parsed, node: tree_sitter.Node) -> LineSpan:
    """The unit's lines, with its wrappers, widened to whole lines."""
    wrappers = WRAPPERS.get(parsed.language, frozenset())
    while node.parent is not None and node.parent.type in wrappers:
        node = node.parent
    while not _whole_lines(parsed.data, node) and _below_root(node.parent):
        assert node.parent is not None
        node = node.parent
    return LineSpan(node.start_point.row, _last_row(node))


def _below_root(node: tree_sitter.Node | None) -> bool:
    return node is not None and node.parent is not None


def _top_level_statement(parsed: Parsed, line: int) -> LineSpan | None:
    for child in parsed.root.named_children:
        if child.start_point.row <= line <= _last_row(child) and child.type != "comment":
            return LineSpan(child.start_point.row, _last_row(child))
    return None


def _last_row(node: tree_sitter.Node) -> int:
    """The node's last line; a node that ends at column 0 (a trailing newline) ends above."""
    row, column = node.end_point
    return row - 1 if column == 0 and row > node.start_point.row else row


def _first_nonblank(data: bytes, line: int) -> int:
    start = _line_start(data, line)
    end = data.find(b"\n", start)
    text = data[start : end if end >= 0 else len(data)]
    return len(text) - len(text.lstrip(b" \t"))


def _line_start(data: bytes, line: int) -> int:
    start = 0
    for _ in range(line):
        found = data.find(b"\n", start)
        if found < 0:
            return len(data)
        start = found + 1
    return start


def _whole_lines(data: bytes, node: tree_sitter.Node) -> bool:
    """Only blanks before the node on its first line and after it on its last."""
    before = data[node.start_byte - node.start_point.column : node.start_byte]
    newline = data.find(b"\n", node.end_byte)
    after = data[node.end_byte : newline if newline >= 0 else len(data)]
    return not before.strip() and not after.strip()
