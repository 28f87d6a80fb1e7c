"""Editor: where generated tests go: a new file beside the source, named as the language does.

| language | source | tests |
|---|---|---|
| python | ``pkg/calc.py`` | ``pkg/test_calc.py`` |
| javascript, typescript | ``calc.js`` / ``calc.ts`` | ``calc.test.js`` / ``calc.test.ts`` |
| go | ``calc.go`` | ``calc_test.go`` |
| rust | ``src/calc.rs`` | ``tests/calc.rs`` beside ``src/`` (cargo's integration tests) |
| java | ``src/main/java/x/Calc.java`` | ``src/test/java/x/CalcTest.java`` (else beside) |
| php | ``Calc.php`` | ``CalcTest.php`` |
| lua | ``calc.lua`` | ``calc_spec.lua`` (busted) |
| ruby | ``calc.rb`` | ``calc_test.rb`` (minitest) |
| c, cpp, bash, others | ``calc.c`` | ``test_calc.c`` |

A source that is itself a test file gets None: its tests are the file.
"""

from __future__ import annotations

from pathlib import PurePosixPath


def is_test_file(path: PurePosixPath) -> bool:
    name = path.name
    stem = name.split(".", 1)[0]
    return (
        stem.startswith("test_")
        or stem.endswith(("_test", "_spec", "Test"))
        or ".test." in name
        or ".spec." in name
    )


def file_for_tests(source: PurePosixPath, language: str) -> PurePosixPath | None:
    """The test file for ``source`` (see the module docstring), or None for a test file."""
    if is_test_file(source):
        return None
    stem, suffix = source.stem, source.suffix
    folder = source.parent
    if language == "python":
        return folder / f"test_{stem}{suffix}"
    if language in ("javascript", "typescript", "tsx"):
        return folder / f"{stem}.test{suffix}"
    if language == "go":
        return folder / f"{stem}_test{suffix}"
    if language == "rust":
        crate = folder.parent if folder.name == "src" else folder
        return crate / "tests" / f"{stem}{suffix}"
    if language == "java":
        parts = source.parts
        for index in range(len(parts) - 2):
            if parts[index : index + 3] == ("src", "main", "java"):
                mirrored = PurePosixPath(*parts[:index], "src", "test", "java", *parts[index + 3 :])
                return mirrored.parent / f"{stem}Test{suffix}"
        return folder / f"{stem}Test{suffix}"
    if language == "php":
        return folder / f"{stem}Test{suffix}"
    if language == "lua":
        return folder / f"{stem}_spec{suffix}"
    if language == "ruby":
        return folder / f"{stem}_test{suffix}"
    return folder / f"test_{stem}{suffix}"
