"""Editor: the ``qwend`` command line (serve, stop, status, ask, pull, doctor, bench, eval).

Heavy modules are imported inside the commands that need them: ``status``,
``stop`` and ``ask`` touch only the standard library and the socket, so they
answer in tens of milliseconds. Every failure prints a message and a hint and
exits with the error's code; no traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from qwend import __version__, paths
from qwend.client import DaemonClient
from qwend.errors import BadResponse, DaemonError, DaemonUnavailable, QwendError
from qwend.states import STATUS_EXIT_CODES
from qwend.status_view import format_reload, format_status

EXIT_UNREACHABLE: Final = 2
DETACH_POLL_S: Final = 0.25
STOP_GRACE_S: Final = 5.0  # beyond the daemon's own drain timeout
STATUS_EXCERPT_CHARS: Final = 200  # of an answer that is not a status, in the error
# `qwend status --json`'s state when no status came back, by error code.
STATUS_ERROR_STATES: Final = {"socket_untrusted": "untrusted", "bad_response": "bad_response"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except QwendError as exc:
        print(f"qwend: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket).expanduser()
    return paths.configured_socket_path(Path(args.config) if args.config else None)


# -- serve -----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    if args.detach:
        return _serve_detached(args)
    from qwend.config import load_config
    from qwend.daemon import configure_logging, serve

    user_path = Path(args.config) if args.config else None
    config = load_config(user_path, model_override=args.model)
    log_file = Path(args.log_file).expanduser() if args.log_file else None
    if log_file is not None:
        paths.ensure_log_dir(log_file)
    log_health = configure_logging(log_file)
    socket_path = Path(args.socket).expanduser() if args.socket else config.socket_path()
    return serve(
        config,
        socket_path,
        user_path=user_path,
        model_override=args.model,
        watch=not args.no_watch,
        log_health=log_health,
    )


def _serve_detached(args: argparse.Namespace) -> int:
    from qwend.server.unix_socket import refuse_if_running

    # Refused here, as the foreground form refuses: the child would say it only in the log.
    # (A daemon that takes the lock in between makes the child exit 2, reported below.)
    refuse_if_running(_socket(args))
    log_file = Path(args.log_file) if args.log_file else paths.log_path()
    paths.ensure_log_dir(log_file)  # 0700 whatever the umask
    # The daemon writes its log itself, so a failing log falls back instead of failing it;
    # its stdout and stderr go to the same file for what comes before logging starts.
    command = [sys.executable, "-m", "qwend", "serve", "--log-file", str(log_file)]
    for flag in ("config", "socket", "model"):
        if value := getattr(args, flag):
            command += [f"--{flag}", value]
    if args.no_watch:
        command.append("--no-watch")
    # Never through a planted symlink or FIFO; 0600 whatever the umask.
    log = paths.open_state_file(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        os.close(log)
    print(f"qwend: daemon started (pid {process.pid}), log {log_file}")
    client = DaemonClient(_socket(args), timeout=2.0)
    deadline = time.monotonic() + args.wait
    last_state = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"qwend: the daemon exited with code {process.returncode}:", file=sys.stderr)
            print(_tail(log_file), file=sys.stderr)
            return process.returncode or 1
        try:
            _, body = client.request("GET", "/health")
        except DaemonUnavailable:
            body = {"status": "starting"}
        state = str(body.get("status", "starting"))
        if state != last_state:
            print(f"qwend: {state}")
            last_state = state
        if state in ("ready", "unloaded"):
            return 0
        if state == "failed":
            print("qwend: the model failed to load; see `qwend status`", file=sys.stderr)
            return 1
        time.sleep(DETACH_POLL_S)
    print(f"qwend: still {last_state} after {args.wait}s; see {log_file}", file=sys.stderr)
    return 3


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- stop ------------------------------------------------------------------------


def cmd_stop(args: argparse.Namespace) -> int:
    from qwend.server.unix_socket import lock_is_held, read_lock_pid

    lock = paths.lock_path_for(_socket(args))
    pid = read_lock_pid(lock)
    if not lock_is_held(lock) or pid is None:
        print("qwend: no daemon is running on this socket", file=sys.stderr)
        return EXIT_UNREACHABLE
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while lock_is_held(lock):
        if time.monotonic() > deadline:
            print(f"qwend: pid {pid} is still draining after {args.timeout}s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"qwend: stopped (pid {pid})")
    return 0


# -- status ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    socket_path = _socket(args)
    try:
        code, status = DaemonClient(socket_path, timeout=args.timeout).request("GET", "/v1/status")
        _require_status_shape(socket_path, code, status)
        text = json.dumps(status, indent=2) if args.json else _formatted(socket_path, status)
    except DaemonError as exc:
        state = STATUS_ERROR_STATES.get(exc.code, "unreachable")
        if args.json:
            print(
                json.dumps(
                    {
                        "state": state,
                        "socket": str(socket_path),
                        "error": exc.to_dict()["error"],
                    }
                )
            )
        else:
            print(f"qwend: {state}\n  {exc}")
        return EXIT_UNREACHABLE
    print(text)
    return STATUS_EXIT_CODES.get(str(status["model"].get("state", "failed")), 1)


def _require_status_shape(socket_path: Path, code: int, status: Any) -> None:
    """Raise BadResponse unless the answer looks like a qwend daemon's /v1/status."""
    if code == 200 and isinstance(status, dict) and isinstance(status.get("model"), dict):
        return
    excerpt = json.dumps(status)[:STATUS_EXCERPT_CHARS]
    raise BadResponse(
        f"the socket {socket_path} answered HTTP {code} with something that is not a "
        f"qwend status: {excerpt}",
        hint="another program may be listening there; check --socket and `qwend stop`",
    )


def _formatted(socket_path: Path, status: dict[str, Any]) -> str:
    """format_status, or BadResponse for a status whose fields have unexpected types."""
    try:
        return format_status(status)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise BadResponse(
            f"the status from {socket_path} has a field of an unexpected type ({exc})",
            hint="is the daemon the same version as this qwend? `qwend status --json` "
            "shows the raw answer",
        ) from None


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to re-read its config now; exit 1 if the result is an error."""
    client = DaemonClient(_socket(args), timeout=args.timeout)
    status, body = client.request("POST", "/v1/admin/reload")
    if status != 200:
        print(f"qwend: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    print(format_reload(body))
    return 1 if body.get("result") in ("error", "swap_failed") else 0


def cmd_ask(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": args.question}],
        "stream": True,
        "max_tokens": args.max_tokens,
    }
    if args.temperature is not None:
        body["temperature"] = args.temperature
    client = DaemonClient(_socket(args), timeout=None)
    for event in client.stream("/v1/chat/completions", body):
        if "error" in event:
            error = event["error"]
            print(f"\nqwend: {error.get('message')}", file=sys.stderr)
            if error.get("hint"):
                print(f"  hint: {error['hint']}", file=sys.stderr)
            return 1
        for choice in event.get("choices", []):
            print(choice.get("delta", {}).get("content", ""), end="", flush=True)
    print()
    return 0


# -- pull ------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report the GPU set-up; with --build, build exllamav2's extension now."""
    from qwend import doctor
    from qwend.config import load_config

    config = load_config(Path(args.config) if args.config else None, model_override=args.model)
    if args.build:
        print("building exllamav2's CUDA extension (first time: several minutes)", flush=True)
        print(f"built in {doctor.build_extension():.0f}s", flush=True)
    checks = doctor.run_checks(config)
    if args.json:
        print(json.dumps(doctor.as_json(checks), indent=2))
    else:
        print(doctor.render(checks))
    return doctor.exit_code(checks)


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch a profile's weights. Ctrl-C leaves at once; a hub pull run again resumes."""
    from qwend.config import load_config
    from qwend.models.pull import EXIT_INTERRUPTED, pull

    config = load_config(Path(args.config) if args.config else None)
    try:
        pull(config, args.model, force=args.force)
    except KeyboardInterrupt:
        print(
            "\nqwend: pull interrupted; run the same command again to resume "
            "(files that finished downloading are kept)",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        # The hub download threads cannot be stopped mid-file, and a normal exit
        # would wait for them; leave without joining them.
        os._exit(EXIT_INTERRUPTED)
    return 0


# -- lsp -------------------------------------------------------------------------


def cmd_lsp(args: argparse.Namespace) -> int:
    """The language server on stdio; editors start it, it talks to the daemon."""
    from qwend_lsp.server import main as lsp_main

    return lsp_main(socket_path=_socket(args), config_path=args.config)


# -- bench -----------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark the resident model through the running daemon; table on stdout."""
    from qwend.bench.report import render_table, write_json
    from qwend.bench.runner import BenchOptions, run_bench

    options = BenchOptions(
        socket_path=_socket(args),
        config_path=args.config,
        sizes=_int_list(args.sizes),
        runs=args.runs,
        decode_tokens=args.decode_tokens,
        concurrency=_int_list(args.concurrency),
        lsp_keystrokes=args.lsp_keystrokes,
        lsp_context=args.lsp_context,
        lsp_max_tokens=args.lsp_max_tokens,
        lsp_debounce_ms=args.lsp_debounce_ms,
        load_keystrokes=args.load_keystrokes,
        load_complete_tokens=args.load_complete_tokens,
        load_background_tokens=args.load_background_tokens,
        compare=args.compare,
        model_dir=Path(args.model_dir).expanduser() if args.model_dir else None,
        progress=not args.no_progress,
    )
    result = run_bench(options)
    print(render_table(result))
    if args.json:
        write_json(result, Path(args.json))
        print(f"\nJSON: {args.json}")
    return 0


def _int_list(text: str) -> list[int]:
    """ "512,2048" -> [512, 2048]; "" -> [] (the step is left out)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"values must be positive: {text!r}")
    return values


def _bench_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    bench = sub.add_parser(
        "bench", parents=[common], help="benchmark the resident model through the daemon"
    )
    bench.add_argument(
        "--sizes", default="512,2048,8192", help="prompt sizes for time to first token"
    )
    bench.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    bench.add_argument("--decode-tokens", type=int, default=128, help="tokens per decode run")
    bench.add_argument("--concurrency", default="4,16", help="concurrent streams ('' skips)")
    bench.add_argument("--lsp-keystrokes", type=int, default=20, help="0 skips the qwend lsp step")
    bench.add_argument("--lsp-context", type=int, default=2048, help="document size in tokens")
    bench.add_argument("--lsp-max-tokens", type=int, default=64, help="inline completion length")
    bench.add_argument("--lsp-debounce-ms", type=int, default=150, help="qwend lsp debounce")
    bench.add_argument(
        "--load-keystrokes",
        type=int,
        default=12,
        help="complete tasks idle, then beside a background tests task (0 skips the step)",
    )
    bench.add_argument("--load-complete-tokens", type=int, default=12, help="tokens per keystroke")
    bench.add_argument(
        "--load-background-tokens", type=int, default=400, help="the background task's length"
    )
    bench.add_argument(
        "--compare",
        action="store_true",
        help="also run raw exllamav2 and transformers generate on the same model",
    )
    bench.add_argument("--model-dir", help="the resident model's folder (default: from the config)")
    bench.add_argument("--json", help="also write the results as JSON to this file")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench.set_defaults(run=cmd_bench)


# -- eval ------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    """Score completions on HumanEval-infilling through the daemon; table or JSON on stdout."""
    from qwend.evaluation import report

    if args.show:
        document = report.read_results(Path(args.show))
        results_file = Path(args.show)
    else:
        document, results_file = _run_eval(args)
    if args.json:
        print(json.dumps(report.summary_view(document, results_file), indent=2))
    else:
        print(report.render_table(document))
    if not args.show:
        print(f"qwend: results in {results_file}", file=sys.stderr)
    from qwend.evaluation.runner import interrupted

    if interrupted(document):
        return 130
    return 1 if any(run["aborted"] for run in document["runs"]) else 0


def _run_eval(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    from qwend.errors import EvalFailed
    from qwend.evaluation import report, suites, targets
    from qwend.evaluation.runner import EvalOptions, run_eval
    from qwend.evaluation.sandbox import SandboxLimits

    unknown = [name for name in args.suites if name not in suites.BUILTIN]
    if unknown:
        raise EvalFailed(
            f"unknown suite {unknown[0]!r}", hint=f"built in: {', '.join(suites.BUILTIN)}"
        )
    files = tuple(Path(path).expanduser() for path in args.file or ())
    options = EvalOptions(
        suites=tuple(args.suites) if args.suites or files else tuple(suites.BUILTIN),
        files=files,
        limit=args.limit,
        mode=args.mode,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        run_tests=not args.no_tests,
        sandbox=SandboxLimits(timeout_s=args.test_timeout, memory_mb=args.test_memory_mb),
        start_timeout_s=args.start_timeout,
        config_path=args.config,
        progress=not args.no_progress,
    )
    if args.compare:
        run_targets = [targets.parse_target(spec, args.config) for spec in args.compare]
    else:
        socket_path = _socket(args)
        DaemonClient(socket_path, timeout=5.0).request("GET", "/health")  # fail fast, exit 2
        run_targets = [targets.running_daemon(socket_path)]
    document = run_eval(options, run_targets)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_file = (
        Path(args.output) if args.output else paths.log_path().parent / "eval" / f"{stamp}.json"
    )
    report.write_results(document, results_file)
    return document, results_file


def _eval_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    evaluate = sub.add_parser(
        "eval",
        parents=[common],
        help="score completions on HumanEval-infilling through the daemon",
        description="Run code-completion suites through the daemon's complete task and the "
        "language server's ghost-text shaping: exact match, edit similarity, pass@1 "
        "(tests run in a sandbox), latency. See docs/eval.md.",
    )
    evaluate.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="built-in suites: humaneval-single, humaneval-multi (default: both, unless --file)",
    )
    evaluate.add_argument(
        "--file", action="append", metavar="PATH", help="a suite file (.jsonl or .jsonl.gz)"
    )
    evaluate.add_argument("--limit", type=int, help="at most N cases per suite, spread evenly")
    evaluate.add_argument(
        "--mode",
        choices=("single", "multi", "auto"),
        help="cursor mode for every suite (default: the suite's own; auto: the LSP decides)",
    )
    evaluate.add_argument("--max-tokens", type=int, help="default: tasks.complete.max_tokens")
    evaluate.add_argument(
        "--temperature", type=float, default=0.0, help="default 0 (greedy, reproducible)"
    )
    evaluate.add_argument("--seed", type=int, help="sampling seed, with a temperature above 0")
    evaluate.add_argument("--no-tests", action="store_true", help="score text only")
    evaluate.add_argument(
        "--test-timeout", type=float, default=10.0, help="seconds per test run (default 10)"
    )
    evaluate.add_argument(
        "--test-memory-mb", type=int, default=1024, help="address space per test run"
    )
    evaluate.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="two targets, each a socket, a config file or a model profile",
    )
    evaluate.add_argument(
        "--start-timeout",
        type=float,
        default=900.0,
        help="seconds for a daemon that --compare starts to become ready",
    )
    evaluate.add_argument("--output", help="results file (default: XDG state dir/qwend/eval/)")
    evaluate.add_argument("--show", metavar="FILE", help="render a results file; run nothing")
    evaluate.add_argument("--json", action="store_true", help="print the summary as JSON")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    evaluate.set_defaults(run=cmd_eval)


# -- parser ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwend", description="A local code-assistant daemon: one model, every editor."
    )
    parser.add_argument("--version", action="version", version=f"qwend {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="user config file (default: XDG config)")
    common.add_argument("--socket", help="Unix socket path (default: from the config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the daemon")
    serve.add_argument("--model", help="resident model profile (overrides daemon.model)")
    serve.add_argument("--detach", action="store_true", help="run in the background")
    serve.add_argument(
        "--log-file",
        help="log to this file (stderr if it fails); --detach defaults to the XDG state dir",
    )
    serve.add_argument(
        "--no-watch", action="store_true", help="do not watch the config files for edits"
    )
    serve.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="with --detach: seconds to wait for ready (default 600)",
    )
    serve.set_defaults(run=cmd_serve)

    stop = sub.add_parser("stop", parents=[common], help="stop the daemon (drains first)")
    stop.add_argument("--timeout", type=float, default=60.0 + STOP_GRACE_S)
    stop.set_defaults(run=cmd_stop)

    status = sub.add_parser("status", parents=[common], help="health of the daemon and model")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default 2)")
    status.set_defaults(run=cmd_status)

    reload = sub.add_parser("reload", parents=[common], help="re-read the config files now")
    reload.add_argument("--timeout", type=float, default=600.0, help="seconds (model swaps)")
    reload.set_defaults(run=cmd_reload)

    lsp = sub.add_parser("lsp", parents=[common], help="run the language server on stdio")
    lsp.set_defaults(run=cmd_lsp)

    ask = sub.add_parser("ask", parents=[common], help="ask the resident model a question")
    ask.add_argument("question")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float)
    ask.set_defaults(run=cmd_ask)

    doctor = sub.add_parser("doctor", parents=[common], help="check the GPU set-up")
    doctor.add_argument("--model", help="profile to check (default: daemon.model)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--build", action="store_true", help="build exllamav2's CUDA extension now")
    doctor.set_defaults(run=cmd_doctor)

    pull = sub.add_parser("pull", parents=[common], help="download a model profile's weights")
    pull.add_argument("model", help="profile name, e.g. smollm2-135m")
    pull.add_argument("--force", action="store_true", help="fetch again even if present")
    pull.set_defaults(run=cmd_pull)

    _bench_parser(sub, common)
    _eval_parser(sub, common)
    return parser
