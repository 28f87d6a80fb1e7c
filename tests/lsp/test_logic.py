"""LSP: the pure helpers (no daemon): context, shaping, cache, options, backoff, edits."""

from __future__ import annotations

import random

import pytest
from lsprotocol import types as t

from qwend_lsp import actions
from qwend_lsp.completion import (
    CompletionCache,
    complete_body,
    cursor_context,
    shape_completion,
    with_selected,
)
from qwend_lsp.daemon_link import Backoff
from qwend_lsp.options import Options, parse_options
from qwend_lsp.syntax.languages import parse


def _ctx(text: str, marker: str = "|") -> object:
    offset = text.index(marker)
    return cursor_context(text.replace(marker, "", 1), offset)


def test_mid_statement_is_single_line() -> None:
    ctx = cursor_context("x = compute(\n", len("x = compute("))
    assert not ctx.multiline
    assert shape_completion("a, b)\nprint(x)", ctx) == "a, b)"


def test_the_complete_request_stops_a_single_line_at_the_newline() -> None:
    single = cursor_context("x = compute(\n", len("x = compute("))
    body = complete_body(single, language="python", path="a.py", snippets=[])
    assert body == {
        "prefix": "x = compute(",
        "suffix": "\n",
        "language": "python",
        "path": "a.py",
        "snippets": [],
        "stop": ["\n"],
    }
    block = cursor_context("def f():\n", len("def f():"))
    body = complete_body(
        block, language="x" * 100, path="b.py", snippets=[], max_tokens=8, temperature=0.0
    )
    assert "stop" not in body and body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert body["language"] == "x" * 64


def test_after_a_block_opener_is_multi_line_and_stops_at_dedent() -> None:
    text = "def f(a):\n    \n\nprint(f(1))\n"
    ctx = cursor_context(text, text.index("    \n") + 4)
    assert ctx.multiline
    assert shape_completion("return a + 1\n\ndef g():\n    pass", ctx) == "return a + 1"
    end_of_header = cursor_context("def f(a):", len("def f(a):"))
    assert end_of_header.multiline
    assert shape_completion("\n    return a\nx = 1", end_of_header) == "\n    return a"


def test_blank_line_without_opener_is_single_line() -> None:
    text = "x = 1\n\n"
    assert not cursor_context(text, len("x = 1\n")).multiline


def test_never_repeats_the_text_after_the_cursor() -> None:
    ctx = cursor_context("print(x)\n", len("print("))  # ")" follows... and "x"
    assert shape_completion("x)", ctx) == ""
    ctx = cursor_context("foo()\n", len("foo("))
    assert shape_completion("a, b)", ctx) == "a, b"
    text = "if x:\n    \n    return y\n"
    ctx = cursor_context(text, text.index("    \n") + 4)
    assert shape_completion("y = 2\n    return y", ctx) == "y = 2"


def test_cache_serves_typed_ahead_text() -> None:
    cache = CompletionCache(2)
    cache.store("u", "x = [n for n in ", "\n", "range(10)]")
    assert cache.lookup("u", "x = [n for n in ", "\n") == "range(10)]"
    assert cache.lookup("u", "x = [n for n in ran", "\n") == "ge(10)]"
    assert cache.lookup("u", "x = [n for n in rax", "\n") is None
    assert cache.lookup("other", "x = [n for n in ran", "\n") is None
    assert cache.lookup("u", "x = [n for n in ran", "different") is None
    cache.store("u", "a", "", "1")
    cache.store("u", "b", "", "2")  # evicts the least recently used
    assert cache.lookup("u", "x = [n for n in ", "\n") is None
    assert cache.lookup("u", "a", "") == "1"


def test_options_defaults_and_bad_values() -> None:
    assert parse_options(None) == (Options(), [])
    options, problems = parse_options(
        {"qwend": {"debounceMs": 50, "maxTokens": "x", "nope": 1, "autoStart": False}}
    )
    assert options.debounce_ms == 50 and options.auto_start is False
    assert options.max_tokens is None
    assert len(problems) == 2 and any("nope" in p for p in problems)


def test_prose_messages_option() -> None:
    assert Options().prose_messages is True
    options, problems = parse_options({"proseMessages": False})
    assert options.prose_messages is False and problems == []
    options, problems = parse_options({"proseMessages": "no"})
    assert options.prose_messages is True and len(problems) == 1


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next() for _ in range(20)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 * 0.8 <= delays[1] <= 1.6 * 1.2
    assert max(delays) <= 120
    assert delays[-1] >= 120 * 0.8
    backoff.reset()
    assert backoff.next() <= 1.2


LINES = ["class A:\n", "    def add(self, a, b):\n", "        return a + b\n"]


def _one_edit(edit: t.WorkspaceEdit) -> t.TextEdit:
    assert edit.changes is not None
    [text_edit] = edit.changes["u"]
    return text_edit


def test_docstring_goes_under_the_header_indented() -> None:
    selection = t.Range(start=t.Position(line=1, character=0), end=t.Position(line=3, character=0))
    answer = 'Here:\n```python\ndef add(self, a, b):\n    """Add a and b."""\n```'
    edit = _one_edit(actions.docstring_edit("u", "python", LINES, selection, answer))
    assert edit.range.start == t.Position(line=2, character=0)
    assert edit.new_text == '        """Add a and b."""\n'


def test_refactor_replaces_the_selection_with_the_first_block() -> None:
    selection = t.Range(start=t.Position(line=1, character=0), end=t.Position(line=3, character=0))
    answer = "Sure:\n```python\ndef add(self, a, b):\n    return b + a\n```\nDone."
    edit = _one_edit(actions.replace_edit("u", LINES, selection, answer))
    assert edit.range == selection
    assert edit.new_text == "    def add(self, a, b):\n        return b + a\n"


def test_tests_go_into_a_new_file_or_after_the_existing_tests() -> None:
    code = actions.test_code("```python\ndef test_add():\n    pass\n```")
    assert code == "def test_add():\n    pass\n"
    created = actions.new_file_edit("file:///w/test_calc.py", code)
    create, insert = created.document_changes or []
    assert isinstance(create, t.CreateFile) and create.uri == "file:///w/test_calc.py"
    assert create.options is not None and create.options.overwrite is False
    assert isinstance(insert, t.TextDocumentEdit)
    assert insert.edits[0].new_text == code
    edit = _one_edit(actions.append_edit("u", LINES, code))
    assert edit.range.start == t.Position(line=3, character=0)
    assert edit.new_text == "\ndef test_add():\n    pass\n"


def test_no_selection_targets_the_enclosing_function() -> None:
    source = "import os\n\ndef add(a, b):\n    total = a + b\n    return total\n"
    lines = source.splitlines(keepends=True)
    cursor = t.Range(start=t.Position(line=3, character=6), end=t.Position(line=3, character=6))
    whole = t.Range(start=t.Position(line=2, character=0), end=t.Position(line=5, character=0))
    assert actions.target_range(lines, cursor, parse("python", source)) == whole
    # No grammar: the cursor line, as before.
    line = t.Range(start=t.Position(line=3, character=0), end=t.Position(line=3, character=17))
    assert actions.target_range(lines, cursor, None) == line


def test_docstring_in_lua_goes_above_the_function() -> None:
    source = "local M = {}\nlocal function add(a, b)\n  return a + b\nend\nreturn M\n"
    lines = source.splitlines(keepends=True)
    cursor = t.Range(start=t.Position(line=2, character=2), end=t.Position(line=2, character=2))
    answer = "This function adds two numbers.\n\nIt is simple."
    edit = _one_edit(
        actions.docstring_edit("u", "lua", lines, cursor, answer, parse("lua", source))
    )
    assert edit.range.start == t.Position(line=1, character=0)
    assert edit.new_text == "--- This function adds two numbers.\n"


def test_python_docstring_from_the_tree_goes_before_the_first_statement() -> None:
    source = "class A:\n    @property\n    def f(self):\n        # note\n        return 1\n"
    lines = source.splitlines(keepends=True)
    cursor = t.Range(start=t.Position(line=4, character=8), end=t.Position(line=4, character=8))
    parsed = parse("python", source)
    edit = _one_edit(actions.docstring_edit("u", "python", lines, cursor, '"""One."""', parsed))
    assert edit.range.start == t.Position(line=3, character=0)
    assert edit.new_text == '        """One."""\n'


def test_selected_completion_info_extends_the_selected_item() -> None:
    text, offset = with_selected("x = os.pa\n", 7, 9, "path")
    assert (text, offset) == ("x = os.path\n", 11)


def test_new_options() -> None:
    options, problems = parse_options(
        {"completionMultiline": False, "warmUp": False, "taskTemperature": 0}
    )
    assert options.task_temperature == 0.0
    assert options.completion_multiline is False and options.warm_up is False and not problems
    assert Options().completion_multiline is None and Options().warm_up is True


def test_an_answer_without_code_or_docstring_makes_no_edit() -> None:
    lines = ["def add(a, b):\n", "    return a + b\n"]
    selection = t.Range(start=t.Position(line=0, character=0), end=t.Position(line=2, character=0))
    with pytest.raises(actions.EmptyAnswer):
        actions.docstring_edit("file:///x.py", "python", lines, selection, "")
    with pytest.raises(actions.EmptyAnswer):
        actions.replace_edit("file:///x.py", lines, selection, "```python\n```")
    edit = actions.docstring_edit(
        "file:///x.py", "python", lines, selection, '"""Add two numbers."""'
    )
    assert edit.changes is not None
    assert edit.changes["file:///x.py"][0].new_text == '    """Add two numbers."""\n'
