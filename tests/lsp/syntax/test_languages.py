"""LSP syntax: every pinned grammar wheel loads and parses; ids and extensions map to them."""

from __future__ import annotations

import pytest

from qwend_lsp.syntax.languages import GRAMMARS, first_error, language_name, parse

BROKEN = {
    "python": "def f(:\n    pass\n",
    "javascript": "function f( {\n}\n",
    "typescript": "let x: = 1;\n",
    "tsx": "const a = <div>;\n",
    "go": "package main\nfunc f() {\n",
    "rust": "fn f( {\n}\n",
    "java": "class A { void f( }\n",
    "c": "int f( {\n}\n",
    "cpp": "class A { void f( };\n",
    "lua": "local x = (1\nprint(x)\n",
    "ruby": "def f(\n",
    "bash": "if then fi\n",
    "php": "<?php function f( { }\n",
}


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_each_grammar_loads_and_finds_errors(name: str) -> None:
    clean = parse(name, "")
    assert clean is not None and not clean.has_error
    broken = parse(name, BROKEN[name])
    assert broken is not None and broken.has_error
    assert first_error(broken) is not None


def test_first_error_is_the_first_broken_line() -> None:
    parsed = parse("python", "x = 1\ny = (2\nz = 3\n")
    assert parsed is not None
    error = first_error(parsed)
    assert error is not None and error[0] == 1


def test_language_names() -> None:
    assert language_name("python") == "python"
    assert language_name("typescriptreact") == "tsx"
    assert language_name("shellscript") == "bash"
    assert language_name("", "/w/calc.lua") == "lua"
    assert language_name("plaintext", "/w/main.go") == "go"
    assert language_name("cobol", "/w/x.cbl") == "cobol"
    assert parse("cobol", "x") is None  # no grammar: the caller skips the syntax rules
