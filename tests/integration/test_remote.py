"""Integration: a qwend daemon with a remote profile in front of a real engine on loopback.

The engine is llama-cpp-python's OpenAI-compatible server serving the SmolLM2
GGUF (tests/fixtures/llama_server.py); the daemon is the real `qwend serve`,
whose network guard lets it reach that one loopback port and nothing else.
Cancellation is observed where it matters, in the engine: llama_cpp.server
logs "Disconnected from client" when the request it is generating for goes away.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwend.backends.remote.backend import PROBE_INTERVAL_S
from qwend.backends.remote.tokenizer import LocalTokenizer
from tests.fixtures.daemon import Daemon
from tests.fixtures.llama_server import SERVED_MODEL, LlamaServer, find_gguf
from tests.integration.test_tasks import INPUTS

pytestmark = pytest.mark.slow

API_KEY = "qwend-test-key-9f2c"  # the engine's --api-key
WRONG_KEY = "not-the-key-51d0"
PROFILE = "team"
ENGINE_LOG_WAIT_S = 30.0  # the engine notices a disconnect at its next token


@pytest.fixture(scope="module")
def gguf(model_dir: Path) -> Path:
    found = find_gguf(model_dir)
    if found is None:
        pytest.fail(
            "the SmolLM2 GGUF is not on this machine: run `python -m tests.fixtures.llama_server` "
            "once (scripts/test.sh does) or set QWEND_TEST_GGUF"
        )
    return found


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="qwr-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(gguf: Path, workdir: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(gguf, workdir / "engine.log", api_key=API_KEY).start()
    yield server
    server.stop()


def key_file(folder: Path, key: str) -> Path:
    path = folder / "engine.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def remote_config(url: str, hf_model_dir: Path, **profile: Any) -> dict[str, Any]:
    return {
        "daemon": {"model": PROFILE, "preload": True},
        "server": {"shutdown_timeout_s": 10.0},
        "models": {
            PROFILE: {
                "backend": "remote",
                "family": "smollm2",
                "device": "remote",
                "context_length": 2048,
                "url": url,
                "model": SERVED_MODEL,
                "tokenizer": str(hf_model_dir),
                "max_concurrent": 2,
                **profile,
            }
        },
    }


def remote_daemon(root: Path, engine_url: str, config: dict[str, Any], **env: str) -> Daemon:
    root.mkdir()
    daemon = Daemon(root, config)
    host_port = engine_url.removeprefix("http://")
    daemon.env.update(QWEND_NETGUARD_ALLOW=host_port, **env)
    return daemon


@pytest.fixture(scope="module")
def daemon(engine: LlamaServer, hf_model_dir: Path, workdir: Path) -> Iterator[Daemon]:
    config = remote_config(engine.url, hf_model_dir, api_key_file=str(key_file(workdir, API_KEY)))
    started = remote_daemon(workdir / "d", engine.url, config).start()
    try:
        started.wait_for("ready")
        yield started
    finally:
        started.stop()


def _post(daemon: Daemon, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return daemon.client(timeout=120).request("POST", path, body)


def _exact_budget(budget: dict[str, Any]) -> None:
    assert budget["counting"] == "exact"
    parts = sum(part["tokens"] for part in budget["parts"])
    assert parts + budget["template_tokens"] == budget["prompt_tokens"]
    assert budget["input_budget"] + budget["max_tokens"] <= budget["context_length"] == 2048


def test_completion_and_chat_come_from_the_engine(daemon: Daemon, hf_model_dir: Path) -> None:
    prompt = "1, 2, 3, 4,"
    status, answer = _post(
        daemon, "/v1/completions", {"prompt": prompt, "max_tokens": 6, "temperature": 0}
    )
    assert status == 200, answer
    assert answer["choices"][0]["text"].strip().startswith("5")
    local = LocalTokenizer(hf_model_dir / "tokenizer.json")
    assert answer["usage"]["prompt_tokens"] == len(local.encode(prompt))
    assert answer["usage"]["completion_tokens"] >= 1
    status, answer = _post(
        daemon,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12},
    )
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("name", list(INPUTS))
def test_every_task_runs_on_the_engine_with_exact_budgets(daemon: Daemon, name: str) -> None:
    status, answer = _post(daemon, f"/v1/tasks/{name}", {**INPUTS[name], "max_tokens": 10})
    assert status == 200, answer
    assert answer["text"].strip()
    assert answer["usage"]["completion_tokens"] >= 1
    _exact_budget(answer["budget"])


def test_a_long_file_is_cut_by_exact_counts(daemon: Daemon) -> None:
    lines = [f"def func_{i}(x):\n    return x * {i}\n" for i in range(600)]
    body = {"prefix": "".join(lines[:300]) + "def middle(a):\n    ", "suffix": "".join(lines[300:])}
    status, answer = _post(daemon, "/v1/tasks/complete", {**body, "max_tokens": 8})
    assert status == 200, answer
    budget = answer["budget"]
    _exact_budget(budget)
    prefix = next(p for p in budget["parts"] if p["name"] == "prefix")
    assert 0 < prefix["kept_lines"] < prefix["total_lines"]


def test_the_local_tokenizer_counts_what_the_engine_counts(
    engine: LlamaServer, hf_model_dir: Path
) -> None:
    local = LocalTokenizer(hf_model_dir / "tokenizer.json")
    texts = [
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
        "def f(x):\n\treturn x  # ünïcode 日本語\n",
        INPUTS["commit_message"]["diff"],
    ]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for text in texts:
        answer = httpx.post(f"{engine.url}/extras/tokenize", json={"input": text}, headers=headers)
        assert answer.json()["tokens"] == local.encode(text)


def test_streaming_sends_deltas_then_done(daemon: Daemon) -> None:
    events = list(
        daemon.client(timeout=120).stream(
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Count to five."}],
                "max_tokens": 16,
                "stream": True,
            },
        )
    )
    deltas = [e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")]
    assert len([d for d in deltas if d]) >= 2
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def _probed_health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    """/health once a probe has measured the round trip (an engine busy with a
    generation answers probes late; the next probe runs within PROBE_INTERVAL_S)."""
    deadline = time.monotonic() + 3 * PROBE_INTERVAL_S
    while True:
        status, health = daemon.client().request("GET", "/health")
        if health["engine"]["latency_ms"] is not None or time.monotonic() > deadline:
            return status, health
        time.sleep(0.2)


def test_health_and_status_report_the_engine(daemon: Daemon, engine: LlamaServer) -> None:
    status, health = _probed_health(daemon)
    assert (status, health["status"]) == (200, "ready")
    seen = health["engine"]
    assert (seen["url"], seen["model"], seen["reachable"]) == (engine.url, SERVED_MODEL, True)
    assert seen["latency_ms"] > 0 and seen["error"] is None
    assert SERVED_MODEL in seen["served_models"]
    _, info = daemon.client().request("GET", "/v1/status")
    assert (info["device"], info["token_counting"], info["queue"]["slots"]) == (
        "remote",
        "exact",
        2,
    )
    shown = daemon.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert f"remote engine at {engine.url}" in shown.stdout
    assert "reachable, round trip" in shown.stdout
    assert API_KEY not in shown.stdout + json.dumps(info) + daemon.log()


def test_a_client_that_leaves_stops_the_engine(daemon: Daemon, engine: LlamaServer) -> None:
    before = engine.log().count("Disconnected from client")
    body = {"prompt": "1, 2, 3, 4, 5,", "max_tokens": 1500, "temperature": 0, "stream": True}
    payload = json.dumps(body).encode()
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(str(daemon.socket))
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: qwend\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(4096)
    sock.close()
    deadline = time.monotonic() + ENGINE_LOG_WAIT_S
    while engine.log().count("Disconnected from client") == before:
        assert time.monotonic() < deadline, f"the engine kept generating:\n{engine.log()[-2000:]}"
        time.sleep(0.1)
    status, answer = _post(daemon, "/v1/completions", {"prompt": "1, 2,", "max_tokens": 3})
    assert status == 200, answer


def test_a_wrong_key_is_a_clear_error_without_the_key(
    engine: LlamaServer, hf_model_dir: Path, workdir: Path
) -> None:
    config = remote_config(engine.url, hf_model_dir, api_key_env="QWEND_TEST_ENGINE_KEY")
    wrong = remote_daemon(workdir / "wrong", engine.url, config, QWEND_TEST_ENGINE_KEY=WRONG_KEY)
    try:
        wrong.start().wait_for("ready")
        status, answer = _post(wrong, "/v1/tasks/explain", {**INPUTS["explain"], "max_tokens": 4})
        assert status == 502
        error = answer["error"]
        assert error["code"] == "remote_auth_failed"
        assert error["message"] == (
            f"remote engine at {engine.url} refused the API key from $QWEND_TEST_ENGINE_KEY "
            "(HTTP 401)"
        )
        _, health = wrong.client().request("GET", "/health")
        assert health["engine"]["reachable"] is True
        assert "refused" in health["engine"]["error"]
        assert WRONG_KEY not in json.dumps(answer) + json.dumps(health) + wrong.log()
    finally:
        wrong.stop()


def test_engine_down_then_up(gguf: Path, hf_model_dir: Path, workdir: Path, tmp_path: Path) -> None:
    server = LlamaServer(gguf, tmp_path / "engine.log", api_key=API_KEY).start()
    config = remote_config(server.url, hf_model_dir, api_key_env="QWEND_TEST_ENGINE_KEY")
    daemon = remote_daemon(workdir / "downup", server.url, config, QWEND_TEST_ENGINE_KEY=API_KEY)
    ask = {"prompt": "1, 2,", "max_tokens": 3}
    try:
        daemon.start().wait_for("ready")
        assert _post(daemon, "/v1/completions", ask)[0] == 200
        server.stop()
        status, answer = _post(daemon, "/v1/completions", ask)
        assert (status, answer["error"]["code"]) == (503, "remote_unreachable")
        assert answer["error"]["message"].startswith(f"remote engine unreachable at {server.url}: ")
        status, health = daemon.client().request("GET", "/health")
        assert (status, health["status"], health["engine"]["reachable"]) == (200, "ready", False)
        shown = daemon.cli("status")
        assert shown.returncode == 0 and "unreachable" in shown.stdout
        server.start()  # the same port
        status, answer = _post(daemon, "/v1/completions", ask)
        assert status == 200, answer
        _, health = daemon.client().request("GET", "/health")
        assert health["engine"]["reachable"] is True
        guard = daemon.netguard_log
        assert not guard.exists() or not guard.read_text().strip()
    finally:
        daemon.stop()
        server.stop()


def test_engine_tokenizer_counts_with_the_engines_endpoint(
    engine: LlamaServer, hf_model_dir: Path, workdir: Path
) -> None:
    config = remote_config(engine.url, hf_model_dir, tokenizer="engine", api_key_env="QWEND_TEST_K")
    counted = remote_daemon(workdir / "tok", engine.url, config, QWEND_TEST_K=API_KEY)
    try:
        counted.start().wait_for("ready")
        status, answer = _post(counted, "/v1/tokenize", {"text": "def f(x):\n    return x\n"})
        assert status == 200, answer
        local = LocalTokenizer(hf_model_dir / "tokenizer.json")
        assert answer["ids"] == local.encode("def f(x):\n    return x\n")
        status, answer = _post(
            counted, "/v1/tasks/docstring", {**INPUTS["docstring"], "max_tokens": 6}
        )
        assert status == 200, answer
        _exact_budget(answer["budget"])
    finally:
        counted.stop()


def test_no_connection_leaves_the_machine(daemon: Daemon) -> None:
    guard = daemon.netguard_log
    assert not guard.exists() or not guard.read_text().strip(), guard.read_text()


def test_serve_refuses_a_key_file_others_can_read(hf_model_dir: Path, workdir: Path) -> None:
    folder = workdir / "public-key"
    folder.mkdir()
    key = key_file(folder, API_KEY)
    key.chmod(0o644)
    config = remote_config("http://127.0.0.1:9", hf_model_dir, api_key_file=str(key))
    refused = remote_daemon(workdir / "refused", "http://127.0.0.1:9", config)
    process = refused.start().process
    assert process is not None
    assert process.wait(timeout=60) == 1
    log = refused.log()
    assert "is readable by others (mode 0644)" in log and f"chmod 600 {key}" in log
    assert API_KEY not in log
    assert not refused.socket.exists()  # refused before the socket was bound
