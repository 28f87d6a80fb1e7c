"""Editor: the ``qwend`` command line (serve, stop, status, ask, pull, doctor).

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
from qwend.errors import DaemonUnavailable, QwendError
from qwend.states import STATUS_EXIT_CODES

EXIT_UNREACHABLE: Final = 2
DETACH_POLL_S: Final = 0.25
STOP_GRACE_S: Final = 5.0  # beyond the daemon's own drain timeout


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
    configure_logging()
    socket_path = Path(args.socket).expanduser() if args.socket else config.socket_path()
    return serve(
        config,
        socket_path,
        user_path=user_path,
        model_override=args.model,
        watch=not args.no_watch,
    )


def _serve_detached(args: argparse.Namespace) -> int:
    log_file = Path(args.log_file) if args.log_file else paths.log_path()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "qwend", "serve"]
    for flag in ("config", "socket", "model"):
        if value := getattr(args, flag):
            command += [f"--{flag}", value]
    if args.no_watch:
        command.append("--no-watch")
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
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
        _, status = DaemonClient(socket_path, timeout=args.timeout).request("GET", "/v1/status")
    except DaemonUnavailable as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "state": "unreachable",
                        "socket": str(socket_path),
                        "error": exc.to_dict()["error"],
                    }
                )
            )
        else:
            print(f"qwend: unreachable\n  {exc}")
        return EXIT_UNREACHABLE
    state = str(status.get("model", {}).get("state", "failed"))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return STATUS_EXIT_CODES.get(state, 1)


def format_status(status: dict[str, Any]) -> str:
    model = status.get("model", {})
    queue = status.get("queue", {})
    perf = status.get("performance", {})
    state = model.get("state", "?")
    detail = {
        "ready": f"loaded in {model.get('load_seconds') or 0:.1f}s",
        "loading": "loading the model",
        "unloaded": "loads on the first request",
        "failed": model.get("error") or "",
        "swapping": f"serving while '{model.get('swapping_to')}' loads",
    }.get(state, "")
    rows = [
        ("state", f"{state} ({detail})" if detail else state),
        ("model", f"{model.get('name')} ({model.get('backend')}, {status.get('device')})"),
        ("context", f"{model.get('context_length')} tokens"),
        ("memory", _megabytes(status.get("memory", {}).get("rss_bytes"))),
        *_gpu_rows(model),
        ("uptime", _duration(status.get("uptime_s", 0))),
        (
            "queue",
            f"{queue.get('completion', 0)} completion + {queue.get('interactive', 0)} "
            f"interactive + {queue.get('background', 0)} background waiting "
            f"(max {queue.get('capacity_per_lane', 0)} each), "
            f"{queue.get('active', 0)} running of {queue.get('slots', 1)} slots",
        ),
        ("lanes", _lanes(status)),
        ("tokens", f"{status.get('token_counting', '?')} counts for budgets"),
        ("requests", f"{perf.get('completed_jobs', 0)} completed"),
        (
            "latency",
            f"p50 {_seconds(perf.get('latency_p50_s'))}, p95 {_seconds(perf.get('latency_p95_s'))}",
        ),
        ("speed", f"{perf.get('tokens_per_second') or '-'} tokens/s"),
        ("socket", status.get("socket", "")),
        ("config", ", ".join(status.get("config_files", []))),
        ("reload", _last_reload(status.get("config") or {})),
        ("pid", str(status.get("pid", ""))),
    ]
    head = f"qwend {status.get('version', '?')}: {state}"
    return "\n".join([head, *(f"  {name:<9}{value}" for name, value in rows)])


def _gpu_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The GPU backend's device, memory and batching (absent on the CPU backend)."""
    cuda = model.get("cuda")
    if not cuda:
        return []
    gib = 2**30
    return [
        (
            "gpu",
            f"{cuda.get('device_name')}: {cuda.get('memory_allocated_bytes', 0) / gib:.1f} GiB "
            f"allocated, peak {cuda.get('memory_peak_bytes', 0) / gib:.1f} of "
            f"{cuda.get('memory_total_bytes', 0) / gib:.0f} GiB",
        ),
        (
            "cache",
            f"{model.get('cache_tokens')} tokens ({model.get('cache_type')}), "
            f"paged attention {model.get('paged_attention')}",
        ),
    ]


def _lanes(status: dict[str, Any]) -> str:
    """Priority order with each lane's tasks, then what preemption is doing."""
    sched = status.get("scheduling") or {}
    tasks = status.get("tasks") or {}
    order = " > ".join(
        f"{lane} ({', '.join(n for n, t in tasks.items() if t == lane) or '-'})"
        for lane in sched.get("lanes", [])
    )
    if not sched.get("preempt"):
        return f"{order or '-'}; preemption off"
    suspended = (status.get("queue") or {}).get("suspended", 0)
    return (
        f"{order}\n           preemption on ({sched.get('suspend_mode')} on suspend): "
        f"{suspended} suspended now, {sched.get('preemptions', 0)} suspensions, "
        f"{sched.get('suspended_total_s', 0):.1f}s suspended in all"
    )


def _last_reload(config: dict[str, Any]) -> str:
    last = config.get("last_reload")
    if not last:
        return "none since start"
    return format_reload(last).replace("\n", "\n           ")


def _megabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB resident"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- reload ----------------------------------------------------------------------


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to re-read its config now; exit 1 if the result is an error."""
    client = DaemonClient(_socket(args), timeout=args.timeout)
    status, body = client.request("POST", "/v1/admin/reload")
    if status != 200:
        print(f"qwend: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    print(format_reload(body))
    return 1 if body.get("result") in ("error", "swap_failed") else 0


def format_reload(outcome: dict[str, Any]) -> str:
    line = f"{outcome.get('result')} at {outcome.get('at')} ({outcome.get('trigger')})"
    if outcome.get("error"):
        line += f": {outcome['error']}"
    if outcome.get("changes"):
        line += "\n  changed: " + ", ".join(outcome["changes"])
    if outcome.get("needs_restart"):
        line += "\n  applies at the next start: " + ", ".join(outcome["needs_restart"])
    return line


# -- ask -------------------------------------------------------------------------


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
    serve.add_argument("--log-file", help="log file for --detach (default: XDG state dir)")
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
    return parser
