"""Editor: run a candidate program and its tests in a sandboxed subprocess (``qwend eval``).

The model's suggestion is untrusted code. Each program runs in a fresh
``python -I -B`` subprocess, in its own temporary working directory, under
these limits (docs/eval.md#the-sandbox says what they do and do not stop):

- **time**: a wall-clock timeout (the whole process group is killed), and
  ``RLIMIT_CPU`` one second above it as a backstop;
- **memory**: ``RLIMIT_AS`` (address space), so a huge allocation raises
  MemoryError instead of swapping the machine;
- **files**: ``RLIMIT_FSIZE`` caps any file it writes, and an audit hook
  (PEP 578), installed before the program's first line runs, ends the
  program at once when it opens a file for writing, creates, removes,
  renames, links or changes a path outside its working directory;
- **processes and network**: the same hook ends it on any attempt to start a
  process (fork, exec, ``subprocess``, ``os.system``), to signal one, to
  create a socket, or to load native code with ctypes; where unprivileged
  user namespaces work, the program also runs in a network namespace of its
  own (``unshare -rn``), which has no interface but loopback.

The hook and the limits act inside the interpreter; native code that makes
system calls directly (a C extension already on the path) is not stopped by
the hook. This is a guard against a confused model, not a jail for hostile
code: run ``qwend eval`` as an unprivileged user.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_TIMEOUT_S: Final = 10.0  # HumanEval's tests take well under a second; slow CPUs share
DEFAULT_MEMORY_MB: Final = 1024  # address space: the interpreter itself maps ~100 MB of it
FILE_SIZE_LIMIT_BYTES: Final = 16 * 2**20  # no HumanEval test writes a file at all
CPU_MARGIN_S: Final = 1  # RLIMIT_CPU is whole seconds, a backstop behind the wall clock
STDERR_TAIL_CHARS: Final = 600  # enough for the last traceback line or two
REFUSED_EXIT: Final = 86  # the hook's own exit status (with a marker line on stderr)
REFUSED_MARKER: Final = "qwend-eval-sandbox-refused:"
# Written by the bootstrap after the last line ran, with a nonce the program
# never sees: exit status 0 alone is not a pass (the suggestion may exit early).
FINISHED_MARKER: Final = "qwend-eval-sandbox-finished:"
KILL_WAIT_S: Final = 5.0

#: Outcomes of one run; ``passed`` is the only success.
STATUSES: Final = ("passed", "failed", "timeout", "memory", "refused", "error")

# Runs first inside the child: limits, then the audit hook, then the program.
# It must stay self-contained (the child is isolated from qwend's packages).
_BOOTSTRAP: Final = r"""
import os, resource, sys

def _main():
    program, memory, cpu, fsize = sys.argv[1], *(int(a) for a in sys.argv[2:5])
    finished = sys.argv[5]
    del sys.argv[1:]
    for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    with open(program, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    root = os.path.realpath(os.getcwd())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
        "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,),
        "os.chown": (0,), "os.utime": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
        "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
        "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (1,),
    }
    refused_events = (
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "os.kill", "os.killpg", "subprocess.Popen", "pty.spawn", "socket.__new__",
        "socket.connect", "socket.bind", "socket.getaddrinfo", "ctypes.dlopen",
        "ctypes.dlsym", "ctypes.call_function", "os.chroot", "os.setuid", "os.setgid",
    )
    busy = []

    def inside(path):
        if isinstance(path, int):
            return True  # a descriptor the process already holds
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    def refuse(event, detail):
        os.write(2, ("\n%s %s %r\n" % (%(marker)r, event, detail)).encode(errors="replace"))
        os._exit(%(refused_exit)d)

    def hook(event, args):
        if busy:
            return
        busy.append(1)
        try:
            if event in refused_events:
                refuse(event, args[:1])
            if event == "open" and args[0] is not None and args[2] & write_flags:
                if not inside(args[0]):
                    refuse(event, args[0])
            elif event in path_events:
                for index in path_events[event]:
                    if index < len(args) and args[index] is not None and not inside(args[index]):
                        refuse(event, args[index])
        finally:
            busy.pop()

    code = compile(source, "program.py", "exec")
    sys.addaudithook(hook)
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    os.write(2, ("\n%s\n" % finished).encode())

_main()
""".replace("%(marker)r", repr(REFUSED_MARKER)).replace("%(refused_exit)d", str(REFUSED_EXIT))


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB


@dataclass(frozen=True)
class SandboxResult:
    """One run: ``status`` is one of STATUSES; ``detail`` says why it did not pass."""

    status: str
    detail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Can this user run a program in a network namespace of its own (``unshare -rn``)?"""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        probe = subprocess.run(
            [unshare, "-rn", "true"], capture_output=True, timeout=KILL_WAIT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def isolation() -> dict[str, object]:
    """What the sandbox applies on this machine (recorded with every result)."""
    return {
        "network_namespace": network_namespace_available(),
        "audit_hook": True,
        "rlimits": ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE"],
    }


def run_program(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; never raises for what it does."""
    limits = limits or SandboxLimits()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qwend-eval-") as scratch:
        base = Path(scratch)
        workdir = base / "work"  # the only place the program may write
        workdir.mkdir()
        program_path = base / "program.py"
        # Lone surrogates or other odd text from the model must not break the harness.
        program_path.write_bytes(program.encode("utf-8", errors="replace"))
        stderr_path = base / "stderr.txt"
        finished = f"{FINISHED_MARKER}{secrets.token_hex(8)}"
        try:
            returncode, timed_out = _spawn(program_path, workdir, stderr_path, limits, finished)
        except OSError as exc:
            return SandboxResult("error", f"could not start the sandbox: {exc}", 0.0)
        stderr = _tail(stderr_path)
    seconds = time.monotonic() - started
    return _classify(returncode, timed_out, stderr, finished, limits, seconds)


def _spawn(
    program_path: Path, workdir: Path, stderr_path: Path, limits: SandboxLimits, finished: str
) -> tuple[int, bool]:
    memory = limits.memory_mb * 2**20
    cpu = int(limits.timeout_s) + CPU_MARGIN_S
    command = [
        sys.executable, "-I", "-B", "-c", _BOOTSTRAP,
        str(program_path), str(memory), str(cpu), str(FILE_SIZE_LIMIT_BYTES), finished,
    ]  # fmt: skip
    if network_namespace_available():
        command = ["unshare", "-rn", *command]
    env = {
        "PATH": os.defpath,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, killed whole on timeout
        )
        try:
            return process.wait(timeout=limits.timeout_s), False
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return process.wait(timeout=KILL_WAIT_S), True
        except BaseException:  # Ctrl-C in the parent: leave no program running
            _kill_group(process)
            process.wait(timeout=KILL_WAIT_S)
            raise


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4 * STDERR_TAIL_CHARS))
            return handle.read().decode(errors="replace")[-STDERR_TAIL_CHARS:]
    except OSError:
        return ""


def _classify(
    returncode: int,
    timed_out: bool,
    stderr: str,
    finished: str,
    limits: SandboxLimits,
    seconds: float,
) -> SandboxResult:
    lines = [line for line in stderr.splitlines() if line.strip() and line != finished]
    last = lines[-1].strip() if lines else ""
    if timed_out or returncode == -signal.SIGXCPU:
        return SandboxResult("timeout", f"still running after {limits.timeout_s:g}s", seconds)
    if returncode == 0 and finished in stderr:
        return SandboxResult("passed", "", seconds)
    if returncode == 0:
        # sys.exit(0) or os._exit(0) in the suggestion: the tests never finished.
        return SandboxResult("failed", "exited before its tests finished", seconds)
    if returncode == REFUSED_EXIT and REFUSED_MARKER in stderr:
        refused = next(line for line in lines if REFUSED_MARKER in line)
        return SandboxResult("refused", refused.split(REFUSED_MARKER, 1)[1].strip(), seconds)
    if "MemoryError" in last:
        return SandboxResult("memory", f"over the {limits.memory_mb} MB limit", seconds)
    if returncode == -signal.SIGXFSZ:
        return SandboxResult("failed", f"wrote a file over {FILE_SIZE_LIMIT_BYTES} bytes", seconds)
    if returncode < 0:
        return SandboxResult("failed", f"killed by signal {-returncode}", seconds)
    return SandboxResult("failed", last or f"exit status {returncode}", seconds)
