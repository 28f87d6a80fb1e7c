"""LSP: where an answer's edit goes (edits.py), without a daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types as t
from pygls.workspace import TextDocument

from qwend_lsp import edits
from qwend_lsp.answers import KEEP, write_answer

TESTS = "```python\ndef test_add():\n    assert add(1, 2) == 3\n```"


def test_tests_plan_a_new_file_created_by_the_client() -> None:
    plan = edits.tests_edit("file:///w/calc.py", "python", TESTS, None, can_create=True)
    assert plan.target_uri == "file:///w/test_calc.py" and plan.before is None
    assert plan.after == "def test_add():\n    assert add(1, 2) == 3\n"
    assert plan.edit is not None and plan.edit.document_changes and plan.opens


def test_tests_plan_without_create_support_is_written_by_the_server() -> None:
    plan = edits.tests_edit("file:///w/calc.go", "go", TESTS, None, can_create=False)
    assert plan.edit is None and plan.write_to == Path("/w/calc_test.go")


def test_tests_plan_appends_to_an_existing_test_file() -> None:
    existing = TextDocument("file:///w/test_calc.py", "import calc\n")
    plan = edits.tests_edit("file:///w/calc.py", "python", TESTS, existing, can_create=True)
    assert plan.before == "import calc\n"
    assert plan.after == "import calc\n\ndef test_add():\n    assert add(1, 2) == 3\n"


def test_no_place_for_tests() -> None:
    with pytest.raises(edits.NoPlace):
        edits.tests_edit("untitled:Untitled-1", "python", TESTS, None, can_create=True)
    with pytest.raises(edits.NoPlace):
        edits.tests_edit("file:///w/test_calc.py", "python", TESTS, None, can_create=True)


def test_apply_text_edits_in_the_clients_encoding() -> None:
    doc = TextDocument("file:///w/a.py", "s = 'é😀'\nx = 1\n")
    edit = t.TextEdit(
        range=t.Range(start=t.Position(line=1, character=0), end=t.Position(line=1, character=5)),
        new_text="x = 2",
    )
    assert edits.apply_text_edits(doc, [edit]) == "s = 'é😀'\nx = 2\n"


def test_answers_are_written_and_the_newest_kept(tmp_path: Path) -> None:
    paths = [write_answer("fix", "src/a.py", "cut off", f"answer {n}", tmp_path) for n in range(25)]
    assert len(list(tmp_path.glob("*.md"))) == KEEP
    text = paths[-1].read_text()
    assert text.startswith("# qwend fix: src/a.py") and "> cut off" in text and "answer 24" in text
