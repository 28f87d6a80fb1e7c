"""LSP syntax: generated tests go to a new file named as the language does."""

from __future__ import annotations

from pathlib import PurePosixPath as P

from qwend_lsp.syntax.testfiles import file_for_tests, is_test_file


def test_names_per_language() -> None:
    assert file_for_tests(P("/w/pkg/calc.py"), "python") == P("/w/pkg/test_calc.py")
    assert file_for_tests(P("/w/calc.js"), "javascript") == P("/w/calc.test.js")
    assert file_for_tests(P("/w/calc.ts"), "typescript") == P("/w/calc.test.ts")
    assert file_for_tests(P("/w/calc.go"), "go") == P("/w/calc_test.go")
    assert file_for_tests(P("/w/src/calc.rs"), "rust") == P("/w/tests/calc.rs")
    assert file_for_tests(P("/w/src/main/java/x/Calc.java"), "java") == P(
        "/w/src/test/java/x/CalcTest.java"
    )
    assert file_for_tests(P("/w/calc.lua"), "lua") == P("/w/calc_spec.lua")
    assert file_for_tests(P("/w/calc.rb"), "ruby") == P("/w/calc_test.rb")
    assert file_for_tests(P("/w/calc.c"), "c") == P("/w/test_calc.c")


def test_a_test_file_has_no_test_file() -> None:
    for name in ("test_calc.py", "calc_test.go", "calc.test.js", "calc_spec.lua", "CalcTest.java"):
        assert is_test_file(P(name))
        assert file_for_tests(P("/w") / name, "python") is None
    assert not is_test_file(P("contest.py"))
