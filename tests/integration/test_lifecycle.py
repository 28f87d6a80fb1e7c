"""Integration: starting, refusing, failing, killing and stopping real daemons."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import HF_MODEL, Daemon, smollm2_config

pytestmark = pytest.mark.slow


def test_health_goes_loading_then_ready_and_status_exit_codes(
    make_daemon: Any, model_dir: Path
) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    assert daemon.cli("status").returncode == 2  # not started: unreachable
    daemon.start()
    seen: list[str] = []
    codes: set[int] = set()
    deadline = time.monotonic() + 120
    while "ready" not in seen and time.monotonic() < deadline:
        state = daemon.health()
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == "loading":
            codes.add(daemon.cli("status").returncode)
        time.sleep(0.02)
    assert [s for s in seen if s != "unreachable"] == ["loading", "ready"], seen
    assert 3 in codes  # `qwend status` while loading
    ready = daemon.cli("status")
    assert ready.returncode == 0
    assert "ready" in ready.stdout


def test_socket_and_directory_are_private(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    os.umask(0)  # the daemon must not depend on a careful umask
    try:
        daemon.start()
        daemon.wait_for("loading", "ready")
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.socket.parent).st_mode) == 0o700


def test_second_daemon_is_refused_while_first_serves(make_daemon: Any, model_dir: Path) -> None:
    first: Daemon = make_daemon(smollm2_config(model_dir))
    first.start().wait_for("ready")
    second = first.cli("serve", timeout=60)
    assert second.returncode == 2
    assert "already running" in second.stderr
    assert f"pid {first.process.pid}" in second.stderr  # type: ignore[union-attr]
    assert "Traceback" not in second.stderr
    assert first.health() == "ready"
    status, body = first.client(timeout=120).request(
        "POST", "/v1/completions", {"prompt": "x =", "max_tokens": 3}
    )
    assert status == 200 and body["choices"][0]["text"] is not None


def test_sigkill_then_restart_reuses_the_socket(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    daemon.start().wait_for("loading", "ready")
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait()
    assert daemon.socket.exists()  # the stale socket file stays behind
    assert daemon.cli("status").returncode == 2
    daemon.start().wait_for("ready")
    assert daemon.cli("status").returncode == 0


def test_sigterm_drains_in_flight_stream_then_exits_zero(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    daemon.start().wait_for("ready")
    events = daemon.client(timeout=120).stream(
        "/v1/completions",
        {"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0} | {"stream": True},
    )
    first = next(events)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    rest = list(events)
    finish = rest[-1]["choices"][0]["finish_reason"]
    assert first["choices"][0]["text"] is not None
    assert finish == "length"  # all 40 tokens were delivered during the drain
    assert daemon.process.wait(timeout=30) == 0
    assert not daemon.socket.exists()


def test_cli_stop_drains_and_releases(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    daemon.start().wait_for("ready")
    stopped = daemon.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert daemon.process is not None and daemon.process.wait(timeout=10) == 0
    assert daemon.cli("stop").returncode == 2  # nothing left to stop


def test_lazy_model_is_unloaded_until_first_request(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir, preload=False))
    daemon.start()
    assert daemon.wait_for("unloaded", timeout=60) == "unloaded"
    status, body = daemon.client().request("GET", "/health")
    assert (status, body["status"]) == (503, "unloaded")
    assert daemon.cli("status").returncode == 3
    code, answer = daemon.client(timeout=120).request(
        "POST", "/v1/completions", {"prompt": "def f():", "max_tokens": 4}
    )
    assert code == 200 and answer["usage"]["completion_tokens"] >= 1
    assert daemon.health() == "ready"


def test_model_that_fails_to_load_is_reported(make_daemon: Any, sandbox: Path) -> None:
    """A damaged safetensors folder (transformers): each damaged file named, with the fix."""
    broken = sandbox / "broken-model"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (broken / name).write_text("{ not a model")
    daemon: Daemon = make_daemon(smollm2_config(broken, profile=HF_MODEL))
    daemon.start()
    assert daemon.wait_for("failed") == "failed"
    status, body = daemon.client().request("POST", "/v1/completions", {"prompt": "x"})
    assert status == 503
    assert body["error"]["code"] == "model_not_loaded"
    assert "Traceback" not in json.dumps(body)
    # The damaged files are named with the fix, and the body says where they live nowhere.
    message = body["error"]["message"]
    assert "config.json: is not valid JSON" in message
    assert "model.safetensors: is truncated" in message
    assert "--force" in message
    assert str(sandbox) not in json.dumps(body)
    result = daemon.cli("status")
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "model.safetensors: is truncated" in result.stdout


def test_a_gguf_that_fails_to_load_is_reported(make_daemon: Any, sandbox: Path) -> None:
    """A damaged GGUF (llama.cpp): the file named, the fix given, no path in the body."""
    broken = sandbox / "broken-gguf"
    broken.mkdir()
    (broken / "smollm2.gguf").write_text("{ not a model")
    daemon: Daemon = make_daemon(smollm2_config(broken))
    daemon.start()
    assert daemon.wait_for("failed") == "failed"
    status, body = daemon.client().request("POST", "/v1/completions", {"prompt": "x"})
    assert (status, body["error"]["code"]) == (503, "model_not_loaded")
    message = body["error"]["message"]
    assert "smollm2.gguf" in message and "--force" in message
    assert "Traceback" not in json.dumps(body)
    assert str(sandbox) not in json.dumps(body)


def test_missing_model_fails_fast_with_the_pull_command(make_daemon: Any, sandbox: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(sandbox / "nowhere"))
    result = daemon.cli("serve", timeout=60)
    assert result.returncode == 1
    assert "qwend pull smollm2-135m" in result.stderr
    assert "Traceback" not in result.stderr
    assert not daemon.socket.exists()


def test_gpu_profile_fails_fast_without_silent_fallback(make_daemon: Any, model_dir: Path) -> None:
    config = smollm2_config(model_dir)
    config["daemon"]["model"] = "qwen2.5-7b-instruct"
    daemon: Daemon = make_daemon(config)
    result = daemon.cli("serve", timeout=60)
    assert result.returncode == 1
    assert "exllamav2" in result.stderr
    assert "--model smollm2-135m" in result.stderr
    assert not daemon.socket.exists()


def test_invalid_config_names_file_and_key(make_daemon: Any, model_dir: Path) -> None:
    config = smollm2_config(model_dir, queue_size=-3)
    daemon: Daemon = make_daemon(config)
    result = daemon.cli("serve", timeout=60)
    assert result.returncode == 1
    assert str(daemon.config_path) in result.stderr
    assert "server.queue_size" in result.stderr


def test_detach_waits_for_ready_and_stop(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    started = daemon.cli("serve", "--detach", "--log-file", str(daemon.log_path), timeout=180)
    try:
        assert started.returncode == 0, started.stderr
        assert "ready" in started.stdout
        assert daemon.health() == "ready"
    finally:
        assert daemon.cli("stop").returncode == 0
    assert daemon.health() == "unreachable"


def test_network_guard_itself_works(sandbox: Path) -> None:
    # Without this, an empty guard log would prove nothing.
    log = sandbox / "guard.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent / "netguard"),
        "QWEND_NETGUARD_LOG": str(log),
    }
    code = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert result.returncode != 0
    assert "127.0.0.1" in log.read_text()


def test_status_is_fast_and_imports_nothing_heavy(sandbox: Path) -> None:
    code = (
        "import sys, time; t = time.perf_counter();"
        "from qwend.cli import main; main(['status', '--socket', sys.argv[1]]);"
        "heavy = [m for m in ('torch', 'transformers', 'aiohttp', 'pydantic') if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(sandbox / "none.sock")], capture_output=True, text=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_concurrent_clients_all_answered(make_daemon: Any, model_dir: Path) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir, queue_size=8))
    daemon.start().wait_for("ready")
    results: list[int] = []

    def ask(i: int) -> None:
        status, _ = daemon.client(timeout=120).request(
            "POST", "/v1/completions", {"prompt": f"{i} +", "max_tokens": 4}
        )
        results.append(status)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [200] * 6


def test_a_full_disk_under_the_log_never_stops_the_daemon(
    make_daemon: Any, model_dir: Path
) -> None:
    """stdout and stderr (the log) on /dev/full: every write fails with ENOSPC."""
    daemon: Daemon = make_daemon(smollm2_config(model_dir))
    with open("/dev/full", "wb") as full:
        daemon.process = subprocess.Popen(
            daemon.command(
                "serve", "--config", str(daemon.config_path), "--socket", str(daemon.socket)
            ),
            env=daemon.env,
            stdout=full,
            stderr=full,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 120
    while daemon.health() not in ("ready", "failed"):
        assert daemon.process.poll() is None, "the daemon died"
        assert time.monotonic() < deadline, "the daemon never became ready"
        time.sleep(0.1)
    assert daemon.health() == "ready"  # the model loaded despite the writes failing
    code, answer = daemon.client().request(
        "POST", "/v1/completions", {"prompt": "def f():", "max_tokens": 4}
    )
    assert code == 200 and answer["usage"]["completion_tokens"] >= 1
    _, status = daemon.client().request("GET", "/v1/status")
    assert status["log"]["state"] == "failing"
    assert status["log"]["error"] == "No space left on device"
    assert status["log"]["lines_not_written"] >= 1
    result = daemon.cli("status")
    assert result.returncode == 0
    assert "FAILING: writing stderr fails (No space left on device)" in result.stdout


def test_drain_past_the_timeout_ends_requests_as_cancelled(
    make_daemon: Any, model_dir: Path
) -> None:
    """Past shutdown_timeout_s, a running stream gets a last chunk and [DONE], and a
    queued whole request its (here empty) partial answer, both "cancelled"."""
    daemon: Daemon = make_daemon(smollm2_config(model_dir, shutdown_timeout_s=1.0))
    daemon.start().wait_for("ready")
    client = daemon.client(timeout=120)
    body = {"prompt": "Once upon a time", "max_tokens": 4000, "temperature": 0, "stream": True}
    connection, response = client._open("POST", "/v1/completions", body)
    first = response.readline()
    assert first.startswith(b"data: ")
    plain: dict[str, Any] = {}

    def whole() -> None:  # queued behind the stream (one generation at a time on the CPU)
        plain["answer"] = daemon.client(timeout=120).request(
            "POST", "/v1/completions", {"prompt": "def f():", "max_tokens": 4000}
        )

    waiter = threading.Thread(target=whole)
    waiter.start()
    deadline = time.monotonic() + 60
    while daemon.client().request("GET", "/v1/status")[1]["queue"]["interactive"] < 1:
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.05)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    rest = response.read()  # until the daemon closes the stream
    connection.close()
    waiter.join(60)
    events = [line[len(b"data: ") :] for line in rest.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "cancelled"
    status, answer = plain["answer"]
    assert status == 200
    assert answer["choices"][0]["finish_reason"] == "cancelled"
    assert answer["choices"][0]["text"] == ""  # it never ran: an empty partial answer
    assert daemon.process.wait(timeout=30) == 0
