"""LSP syntax: with no selection, an action's unit is the enclosing function, method or class."""

from __future__ import annotations

from qwend_lsp.syntax.languages import parse
from qwend_lsp.syntax.targets import LineSpan, enclosing_unit


def units(language: str, source: str) -> list[LineSpan | None]:
    parsed = parse(language, source)
    assert parsed is not None and not parsed.has_error
    return [enclosing_unit(parsed, line) for line in range(source.count("\n"))]


def test_python_method_with_its_decorator_then_the_class() -> None:
    source = "class A:\n    @staticmethod\n    def f(a):\n        return a\n\n    x = 1\n"
    got = units("python", source)
    assert got[1] == got[2] == got[3] == LineSpan(1, 3)  # decorator line included
    assert got[0] == got[4] == got[5] == LineSpan(0, 5)  # outside the method: the class


def test_lua_local_function_and_assigned_function() -> None:
    source = (
        "local M = {}\nlocal function add(a, b)\n  return a + b\nend\n"
        "M.mul = function(a, b)\n  return a * b\nend\nreturn M\n"
    )
    got = units("lua", source)
    assert got[2] == LineSpan(1, 3)
    assert got[5] == LineSpan(4, 6)  # `M.mul = function ... end`, the whole statement
    assert got[0] == LineSpan(0, 0)  # no function: the top-level statement


def test_javascript_callback_widens_to_the_whole_statement() -> None:
    source = (
        'app.get("/", (req, res) => {\n  res.send(1);\n});\n'
        "class A {\n  m() {\n    return 1;\n  }\n}\n"
        "export const f = () => {\n  return 2;\n};\n"
    )
    got = units("javascript", source)
    assert got[1] == LineSpan(0, 2)  # the arrow function shares its lines with the call
    assert got[5] == LineSpan(4, 6)  # the method
    assert got[3] == LineSpan(3, 7)  # the class
    assert got[9] == LineSpan(8, 10)  # export const f = () => {...};


def test_go_function_and_method() -> None:
    source = (
        "package main\n\nfunc add(a, b int) int {\n\treturn a + b\n}\n\n"
        "func (p P) X() int {\n\treturn p.x\n}\n"
    )
    got = units("go", source)
    assert got[3] == LineSpan(2, 4)
    assert got[7] == LineSpan(6, 8)
    assert got[1] is None  # a blank line outside any statement: the caller keeps the line
