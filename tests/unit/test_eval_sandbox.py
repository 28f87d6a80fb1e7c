"""The qwend eval sandbox: it passes what passes and stops what it must.

Each case is a real subprocess under the real limits. Short limits keep the
forever-loop and the allocation cases quick; no test asserts a duration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwend.evaluation.sandbox import SandboxLimits, run_program

LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=512)


def test_a_passing_program_passes_and_a_failing_one_fails() -> None:
    assert run_program("assert sum([1, 2]) == 3\n", LIMITS).status == "passed"
    failed = run_program("assert sum([1, 2]) == 4, 'wrong sum'\n", LIMITS)
    assert failed.status == "failed" and failed.detail == "AssertionError: wrong sum"


def test_it_may_write_inside_its_own_directory() -> None:
    program = (
        "import os, tempfile\n"
        "open('scratch.txt', 'w').write('x')\n"
        "os.mkdir('d'); os.rename('scratch.txt', 'd/moved.txt')\n"
        "tempfile.mkstemp()\n"
        "assert open('d/moved.txt').read() == 'x'\n"
    )
    assert run_program(program, LIMITS).status == "passed"


@pytest.mark.parametrize(
    "write",
    [
        "open({path!r}, 'w').write('escaped')",
        "import os; os.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib; pathlib.Path({path!r}).write_text('escaped')",
        "import os; os.symlink({path!r}, 'link'); open('link', 'w').write('escaped')",
        "open('here', 'w').close(); import os; os.rename('here', {path!r})",
        # Caught by the program: the hook ends the process anyway.
        "try:\n    open({path!r}, 'a')\nexcept Exception:\n    pass",
    ],
)
def test_a_write_outside_its_directory_is_refused(tmp_path: Path, write: str) -> None:
    target = tmp_path / "outside.txt"
    result = run_program(write.format(path=str(target)) + "\n", LIMITS)
    assert result.status == "refused", result
    assert not target.exists()


def test_removing_a_file_outside_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    result = run_program(f"import os; os.remove({str(victim)!r})\n", LIMITS)
    assert result.status == "refused" and "os.remove" in result.detail
    assert victim.read_text() == "keep"


@pytest.mark.parametrize(
    ("program", "event"),
    [
        ("import socket; socket.create_connection(('127.0.0.1', 9))", "socket"),
        ("import subprocess; subprocess.run(['true'])", "subprocess.Popen"),
        ("import os; os.system('true')", "os.system"),
        ("import os; os.fork()", "os.fork"),
        ("import ctypes", "ctypes.dlopen"),
    ],
)
def test_network_processes_and_native_code_are_refused(program: str, event: str) -> None:
    result = run_program(program + "\n", LIMITS)
    assert result.status == "refused", result
    assert event in result.detail


def test_a_loop_that_never_ends_times_out() -> None:
    result = run_program("while True:\n    pass\n", LIMITS)
    assert result.status == "timeout", result


def test_a_sleeping_program_times_out_too() -> None:
    # No CPU used: only the wall-clock timeout can end it.
    result = run_program("import time\ntime.sleep(3600)\n", LIMITS)
    assert result.status == "timeout", result


def test_an_allocation_over_the_limit_fails_on_memory() -> None:
    result = run_program("block = bytearray(4 * 2**30)\n", LIMITS)
    assert result.status == "memory", result


def test_an_early_exit_is_not_a_pass() -> None:
    for program in ("import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit"):
        result = run_program(program + "\nassert False\n", LIMITS)
        assert result.status == "failed" and "exited before" in result.detail


def test_odd_text_is_a_failure_not_a_crash() -> None:
    for program in ("x = 1\x00", "s = '\ud800'\nassert False", "def f(:", ""):
        result = run_program(program, LIMITS)
        assert result.status in ("failed", "passed")
    assert run_program("", LIMITS).status == "passed"  # an empty program runs to its end
