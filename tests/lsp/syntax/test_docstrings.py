"""LSP syntax: docstrings take each language's own form; the text comes out of any form."""

from __future__ import annotations

from qwend_lsp.syntax.docstrings import comment_above, docstring_text, python_docstring, style


def test_styles() -> None:
    assert style("lua") == "---"
    assert style("go") == "//"
    assert style("rust") == "///"
    assert style("ruby") == style("bash") == "#"
    assert style("javascript") == style("java") == "block"
    assert style("cobol") == "block"  # unknown: the old /** */ block


def test_comment_above_in_each_form() -> None:
    text = "Adds two numbers.\nReturns the sum."
    assert (
        comment_above("lua", text, 3, "  ").text
        == "  --- Adds two numbers.\n  --- Returns the sum.\n"
    )
    assert comment_above("go", "Add adds.", 0, "").text == "// Add adds.\n"
    assert comment_above("rust", "Adds.", 0, "    ").text == "    /// Adds.\n"
    assert comment_above("ruby", "Adds.", 0, "").text == "# Adds.\n"
    block = comment_above("javascript", "Adds. */ evil", 2, "  ")
    assert block.line == 2 and block.text == "  /**\n   * Adds. * / evil\n   */\n"


def test_python_docstring_is_a_string_in_the_body() -> None:
    assert python_docstring("Add.", 1, "    ").text == '    """Add."""\n'
    multi = python_docstring('Add a and b.\n\nUses """quotes""".', 4, "  ")
    assert multi.line == 4
    assert multi.text == "  \"\"\"Add a and b.\n\n  Uses '''quotes'''.\n  \"\"\"\n"


def test_docstring_text_from_any_form() -> None:
    assert docstring_text('```python\ndef f():\n    """Return one."""\n```') == "Return one."
    assert docstring_text("/**\n * Adds.\n * @param a x\n */") == "Adds.\n@param a x"
    assert docstring_text("```lua\n-- Adds two.\n-- Sums.\nlocal function add() end\n```") == (
        "Adds two.\nSums."
    )
    assert docstring_text("Adds two numbers.\n\nMore prose.") == "Adds two numbers."
    assert docstring_text("```js\nfunction f() {}\n```") == ""
