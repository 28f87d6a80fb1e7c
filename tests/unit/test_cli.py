"""The light CLI commands: status formatting and exit codes, without a daemon."""

from __future__ import annotations

import json
import os
import socketserver
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from qwend import cli

SAMPLE_STATUS: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 4242,
    "uptime_s": 3725.4,
    "socket": "/run/user/1000/qwend/qwend.sock",
    "config_files": ["/etc/qwend.toml", "/home/u/.config/qwend/config.toml"],
    "preload": True,
    "device": "cpu",
    "memory": {"rss_bytes": 300 * 2**20 + 1234},
    "model": {
        "name": "smollm2-135m",
        "backend": "transformers",
        "state": "ready",
        "error": None,
        "load_seconds": 1.234,
        "context_length": 8192,
    },
    "token_counting": "exact",
    "tasks": {"complete": "completion", "explain": "interactive", "refactor": "background"},
    "queue": {
        "completion": 0,
        "interactive": 2,
        "background": 1,
        "capacity_per_lane": 32,
        "active": 1,
        "slots": 1,
        "suspended": 1,
    },
    "scheduling": {
        "lanes": ["completion", "interactive", "background"],
        "preempt": True,
        "suspend_mode": "keep",
        "preemptions": 3,
        "suspended_total_s": 4.25,
    },
    "performance": {
        "completed_jobs": 17,
        "latency_p50_s": 0.123,
        "latency_p95_s": 1.5,
        "tokens_per_second": 42.5,
    },
}


def with_model(**model: Any) -> dict[str, Any]:
    return {**SAMPLE_STATUS, "model": {**SAMPLE_STATUS["model"], **model}}


def test_format_status_shows_the_prefix_cache() -> None:
    status = with_model(
        backend="llama.cpp",
        prefix_cache={
            "cached_tokens": 900,
            "prompt_tokens": 1000,
            "evaluated_tokens": 100,
            "last_request": {"prompt_tokens": 500, "cached_tokens": 498, "evaluated_tokens": 2},
        },
    )
    lines = cli.format_status(status).splitlines()
    assert "  model    smollm2-135m (llama.cpp, cpu)" in lines
    assert (
        "  prefix   900 of 1000 prompt tokens came from the KV cache; "
        "last request evaluated 2 of 500 (498 cached)"
    ) in lines
    plain = cli.format_status(SAMPLE_STATUS).splitlines()
    assert not any(line.startswith("  prefix") for line in plain)


def test_format_status_ready() -> None:
    assert cli.format_status(SAMPLE_STATUS).splitlines() == [
        "qwend 0.1.0: ready",
        "  state    ready (loaded in 1.2s)",
        "  model    smollm2-135m (transformers, cpu)",
        "  context  8192 tokens",
        "  memory   300 MiB resident",
        "  uptime   1h02m05s",
        "  queue    0 completion + 2 interactive + 1 background waiting (max 32 each), "
        "1 running of 1 slots",
        "  lanes    completion (complete) > interactive (explain) > background (refactor)",
        "           preemption on (keep on suspend): 1 suspended now, 3 suspensions, "
        "4.2s suspended in all",
        "  tokens   exact counts for budgets",
        "  requests 17 completed",
        "  latency  p50 0.12s, p95 1.50s",
        "  speed    42.5 tokens/s",
        "  socket   /run/user/1000/qwend/qwend.sock",
        "  config   /etc/qwend.toml, /home/u/.config/qwend/config.toml",
        "  reload   none since start",
        "  pid      4242",
    ]


@pytest.mark.parametrize(
    ("model", "line"),
    [
        ({"state": "loading"}, "  state    loading (loading the model)"),
        ({"state": "unloaded"}, "  state    unloaded (loads on the first request)"),
        ({"state": "failed", "error": "no weights"}, "  state    failed (no weights)"),
        ({"state": "failed", "error": None}, "  state    failed"),
        ({"state": "weird"}, "  state    weird"),
    ],
)
def test_format_status_states(model: dict[str, Any], line: str) -> None:
    out = cli.format_status(with_model(**model)).splitlines()
    assert out[0] == f"qwend 0.1.0: {model['state']}"
    assert out[1] == line


def test_format_status_without_performance_figures() -> None:
    status = {
        **SAMPLE_STATUS,
        "uptime_s": 59,
        "performance": {
            "completed_jobs": 0,
            "latency_p50_s": None,
            "latency_p95_s": None,
            "tokens_per_second": None,
        },
    }
    del status["memory"]
    out = cli.format_status(status)
    assert "  memory   -" in out
    assert "  uptime   0m59s" in out
    assert "  latency  p50 -, p95 -" in out
    assert "  speed    - tokens/s" in out


@pytest.mark.parametrize("mode", ["exact", "estimate", "none"])
def test_format_status_token_counting(mode: str) -> None:
    out = cli.format_status({**SAMPLE_STATUS, "token_counting": mode}).splitlines()
    assert out[9] == f"  tokens   {mode} counts for budgets"


def test_format_status_queue_per_lane() -> None:
    queue = {"interactive": 0, "background": 5, "capacity_per_lane": 8, "active": 0}
    out = cli.format_status({**SAMPLE_STATUS, "queue": queue})
    assert (
        "  queue    0 completion + 0 interactive + 5 background waiting (max 8 each), "
        "0 running of 1" in out
    )


def test_format_status_shows_the_gpu_backend() -> None:
    status = with_model(
        backend="exllamav2",
        cache_tokens=65536,
        cache_type="fp16",
        paged_attention="torch",
        cuda={
            "device_name": "NVIDIA H100 80GB HBM3",
            "memory_total_bytes": 80 * 2**30,
            "memory_allocated_bytes": 9 * 2**30,
            "memory_peak_bytes": 10 * 2**30,
        },
    )
    status["queue"] = {**status["queue"], "active": 3, "slots": 16}
    out = cli.format_status(status).splitlines()
    assert "  gpu      NVIDIA H100 80GB HBM3: 9.0 GiB allocated, peak 10.0 of 80 GiB" in out
    assert "  cache    65536 tokens (fp16), paged attention torch" in out
    assert any(line.endswith("3 running of 16 slots") for line in out)
    assert not any(
        line.startswith("  gpu") for line in cli.format_status(SAMPLE_STATUS).split("\n")
    )


def test_format_status_tolerates_a_sparse_body() -> None:
    out = cli.format_status({})
    assert out.splitlines()[0] == "qwend ?: ?"
    assert (
        "  queue    0 completion + 0 interactive + 0 background waiting (max 0 each), "
        "0 running of 1 slots" in out
    )
    assert "  lanes    -; preemption off" in out
    assert "  tokens   ? counts for budgets" in out


def test_status_exit_mapping() -> None:
    assert cli.STATUS_EXIT_CODES == {
        "ready": 0,
        "swapping": 0,  # the old model keeps serving while the new one loads
        "failed": 1,
        "loading": 3,
        "unloaded": 3,
    }
    assert cli.EXIT_UNREACHABLE == 2
    assert cli.EXIT_UNREACHABLE not in cli.STATUS_EXIT_CODES.values()


def test_status_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.sock"
    assert cli.main(["status", "--socket", str(missing)]) == 2
    out = capsys.readouterr().out
    assert out.startswith("qwend: unreachable\n")
    assert str(missing) in out
    assert "socket does not exist" in out


def test_status_unreachable_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.sock"
    assert cli.main(["status", "--json", "--socket", str(missing)]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["state"] == "unreachable"
    assert body["socket"] == str(missing)
    assert body["error"]["code"] == "daemon_unavailable"


def test_stop_without_a_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stop", "--socket", str(tmp_path / "qwend.sock")]) == 2
    assert "no daemon is running" in capsys.readouterr().err


# -- against a tiny fake daemon ------------------------------------------------------


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(status: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(status).encode() if self.path == "/v1/status" else b"{}"
            self.send_response(200 if self.path == "/v1/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def serve_status(short_tmp: Path) -> Iterator[Any]:
    servers: list[_UnixHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(status: dict[str, Any]) -> Path:
        path = short_tmp / f"s{len(servers)}.sock"
        server = _UnixHTTPServer(str(path), _handler(status))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append(server)
        threads.append(thread)
        return path

    yield start
    for server, thread in zip(servers, threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("state", "code"), [("ready", 0), ("failed", 1), ("loading", 3), ("unloaded", 3), ("odd", 1)]
)
def test_status_exit_code_follows_model_state(
    serve_status: Any, capsys: pytest.CaptureFixture[str], state: str, code: int
) -> None:
    path = serve_status(with_model(state=state))
    assert cli.main(["status", "--socket", str(path)]) == code
    out = capsys.readouterr().out
    assert out.startswith(f"qwend 0.1.0: {state}\n")
    assert "  queue    0 completion + 2 interactive + 1 background waiting (max 32 each)" in out


def test_status_json_passes_the_body_through(
    serve_status: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = serve_status(SAMPLE_STATUS)
    assert cli.main(["status", "--json", "--socket", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == SAMPLE_STATUS


def test_serve_detach_keeps_the_state_dir_and_log_private_under_umask_0(
    xdg: Path, short_tmp: Path, umask0: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default GPU profile on this CPU test run (or a missing model): the daemon
    # starts, writes its refusal to the log and exits 1.
    code = cli.main(["serve", "--detach", "--socket", str(short_tmp / "q.sock"), "--wait", "60"])
    assert code == 1
    assert "the daemon exited with code 1" in capsys.readouterr().err
    state_dir = xdg / "state" / "qwend"
    assert stat.S_IMODE(os.lstat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(state_dir / "qwend.log").st_mode) == 0o600


def test_serve_detach_refuses_while_a_daemon_runs(
    xdg: Path, short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwend.server.unix_socket import InstanceLock

    socket_path = short_tmp / "run" / "q.sock"
    lock = InstanceLock(socket_path)  # what a running daemon holds
    lock.acquire()
    try:
        code = cli.main(["serve", "--detach", "--socket", str(socket_path), "--wait", "60"])
    finally:
        lock.release()
    captured = capsys.readouterr()
    assert code == 2
    assert f"already running (pid {os.getpid()})" in captured.err
    assert "daemon started" not in captured.out


@pytest.mark.parametrize(
    "answer",
    [
        ["not", "a", "status"],
        "a string",
        {"model": "smollm2-135m"},
        {"error": {"code": "not_found"}},
        {**SAMPLE_STATUS, "uptime_s": "a long time"},
    ],
)
def test_status_against_an_unexpected_answer_is_a_clear_error(
    serve_status: Any, capsys: pytest.CaptureFixture[str], answer: Any
) -> None:
    path = serve_status(answer)
    assert cli.main(["status", "--socket", str(path)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert out.out.startswith("qwend: bad_response\n")
    assert str(path) in out.out


def test_status_tolerates_odd_sections(
    serve_status: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = serve_status({**SAMPLE_STATUS, "queue": ["odd"], "memory": 5, "config": "x"})
    assert cli.main(["status", "--socket", str(path)]) == 0
    assert "  queue    0 completion + 0 interactive + 0 background" in capsys.readouterr().out


def test_status_json_against_an_unexpected_answer(
    serve_status: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = serve_status(["odd"])
    assert cli.main(["status", "--json", "--socket", str(path)]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["state"] == "bad_response"
    assert body["error"]["code"] == "bad_response"


def test_format_status_shows_a_failing_log() -> None:
    log = {
        "target": "/home/u/.local/state/qwend/qwend.log",
        "state": "failing",
        "error": "No space left on device",
        "failing_since": 0,
        "lines_not_written": 37,
        "fallback": "stderr",
    }
    lines = cli.format_status({**SAMPLE_STATUS, "log": log}).splitlines()
    row = next(line for line in lines if line.startswith("  log "))
    assert "FAILING: writing /home/u/.local/state/qwend/qwend.log fails" in row
    assert "(No space left on device)" in row and "37 lines went to stderr" in row
    ok = cli.format_status({**SAMPLE_STATUS, "log": {**log, "state": "ok"}})
    assert "  log      /home/u/.local/state/qwend/qwend.log" in ok.splitlines()
