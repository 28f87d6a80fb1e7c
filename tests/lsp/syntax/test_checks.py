"""LSP syntax: cut-off answers are refused; an edit may not break a file that parsed."""

from __future__ import annotations

from qwend_lsp.syntax.checks import cut_off, parse_after, raise_limit_hint, unclosed_fence


def test_cut_off_answers() -> None:
    assert cut_off("length", "```python\ndef f():\n    return 1\n```") is not None
    assert cut_off("stop", "```python\ndef f():\n    return") is not None  # unclosed fence
    assert cut_off("stop", "```python\ndef f():\n    return 1\n```\nDone.") is None
    assert cut_off("stop", "def f():\n    return 1\n") is None  # no fence at all
    assert unclosed_fence("```\na\n```\n```js\nb")
    assert not unclosed_fence("text only")


def test_the_hint_says_how_to_raise_the_limit() -> None:
    hint = raise_limit_hint("refactor", 40)
    assert "40 tokens" in hint and "taskMaxTokens" in hint and "[tasks.refactor]" in hint


def test_a_file_that_parsed_must_parse_after() -> None:
    before = "def f():\n    return 1\n"
    ok = parse_after("python", before, "def f():\n    return 2\n")
    assert ok.ok and ok.checked and ok.as_result() == "passed"
    broken = parse_after("python", before, "def f():\n    return (2\n\nx = 1\n")
    assert not broken.ok and broken.error_line == 2
    assert "line 2" in broken.note


def test_checks_that_are_skipped_say_so() -> None:
    already_broken = parse_after("python", "def f(:\n", "def g(:\n")
    assert already_broken.ok and not already_broken.checked
    assert "syntax errors before" in already_broken.note
    unknown = parse_after("cobol", "x", "y")
    assert unknown.ok and not unknown.checked and "no grammar" in unknown.as_result()
    new_file = parse_after("go", None, "package calc\nfunc TestAdd(t *testing.T) {\n")
    assert not new_file.ok  # a new file has to parse too
