"""The remote backend's rules and plumbing, without an engine.

Config validation (https off this machine, one key source, keys per backend),
the API key file's privacy, tokenizer resolution, the reader's chunks becoming
text pieces, and the engine's handling of a text-streaming backend: pieces
cut at stop strings, a silent stream never holding up another, a closed job
closing its stream. The real engine is exercised in
tests/integration/test_remote.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.fake_backend import GATE_TIMEOUT_S

from qwend.backends.base import Backend, Prompt, Sampling, TextPiece
from qwend.backends.remote.apikey import ApiKey, read_api_key
from qwend.backends.remote.backend import _END, _pieces
from qwend.backends.remote.client import Chunk
from qwend.backends.remote.limits import url_problem
from qwend.backends.remote.tokenizer import tokenizer_file
from qwend.config import load_config
from qwend.engine.engine import Engine
from qwend.engine.jobs import GenerationRequest
from qwend.errors import BackendUnavailable, ConfigError, RemoteUnreachable

REMOTE = """
[daemon]
model = "team"
[models.team]
backend = "remote"
family = "qwen2.5"
device = "remote"
context_length = 32768
"""


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


# -- config ---------------------------------------------------------------------


def test_a_remote_profile_loads_with_its_defaults(xdg: Path, tmp_path: Path) -> None:
    config = load(tmp_path, REMOTE + 'url = "https://gpu1.example.com:8000"\nmodel = "coder"\n')
    profile = config.profile
    assert (profile.backend, profile.url, profile.model) == (
        "remote",
        "https://gpu1.example.com:8000",
        "coder",
    )
    assert (profile.connect_timeout_s, profile.read_timeout_s, profile.max_concurrent) == (
        5.0,
        120.0,
        4,
    )
    assert profile.tokenizer == "" and profile.source == ""


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:8000/", "http://[::1]:9000", "http://127.0.0.2"],
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    assert url_problem(url) is None


def test_plain_http_to_another_machine_is_refused_at_load(xdg: Path, tmp_path: Path) -> None:
    error = refused(tmp_path, REMOTE + 'url = "http://gpu1.example.com:8000"\nmodel = "coder"\n')
    assert error.details["key"] == "models.team.url"
    assert "plain http is allowed only to this machine" in error.message
    assert "gpu1.example.com" in error.message and "use https" in error.message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "needs the engine's URL"),
        ("ftp://host", "not an http:// or https:// URL"),
        ("https://user:secret@host", "credentials do not belong in the URL"),
        ("https://host:8000/v1", "without /v1"),
        ("https://host/?x=1", "query"),
        ("https://host:port", "not a URL"),
        ("http://10.0.0.5:8000", "plain http is allowed only"),
    ],
)
def test_bad_urls_say_why(url: str, reason: str) -> None:
    problem = url_problem(url)
    assert problem is not None and reason in problem


def test_profile_rules(xdg: Path, tmp_path: Path) -> None:
    base = REMOTE + 'url = "https://h"\n'
    assert refused(tmp_path, base).details["key"] == "models.team.model"
    both = base + 'model = "m"\napi_key_env = "K"\napi_key_file = "/k"\n'
    assert "not both" in refused(tmp_path, both).message
    local = base + 'model = "m"\npath = "/models/x"\n'
    assert refused(tmp_path, local).details["key"] == "models.team.path"
    gpu = base + 'model = "m"\ncache_type = "q4"\n'
    assert refused(tmp_path, gpu).details["key"] == "models.team.cache_type"
    device = REMOTE.replace('device = "remote"', 'device = "cpu"') + 'url = "https://h"\n'
    assert refused(tmp_path, device).details["key"] == "models.team.device"


def test_local_backends_refuse_remote_keys_and_need_a_source(xdg: Path, tmp_path: Path) -> None:
    local = """
[daemon]
model = "mine"
[models.mine]
backend = "transformers"
family = "smollm2"
device = "cpu"
context_length = 2048
"""
    assert refused(tmp_path, local).details["key"] == "models.mine.source"
    error = refused(tmp_path, local + 'source = "pypi:x==1"\nurl = "https://h"\n')
    assert error.details["key"] == "models.mine.url"
    assert "only the remote backend" in error.message


# -- the API key ----------------------------------------------------------------


def test_a_private_key_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-team-123\n")
    path.chmod(0o600)
    key = read_api_key("team", "", str(path))
    assert key is not None and key.value == "sk-team-123"
    assert "sk-team-123" not in repr(key) + str(key)
    assert str(key) == f"the API key from {path}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    path.write_text("sk-team-123\n")
    path.chmod(mode)
    with pytest.raises(BackendUnavailable) as info:
        read_api_key("team", "", str(path))
    assert f"mode {mode:04o}" in info.value.message
    assert info.value.hint == f"chmod 600 {path}"
    assert "sk-team-123" not in str(info.value)


def test_missing_or_empty_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailable, match="does not exist"):
        read_api_key("team", "", str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(BackendUnavailable, match="is empty"):
        read_api_key("team", "", str(empty))
    monkeypatch.delenv("QWEND_UNIT_KEY", raising=False)
    with pytest.raises(BackendUnavailable, match="QWEND_UNIT_KEY"):
        read_api_key("team", "QWEND_UNIT_KEY", "")
    monkeypatch.setenv("QWEND_UNIT_KEY", "sk-env")
    assert read_api_key("team", "QWEND_UNIT_KEY", "") == ApiKey("sk-env", "$QWEND_UNIT_KEY")
    assert read_api_key("team", "", "") is None


# -- tokenizer ------------------------------------------------------------------


def test_tokenizer_setting_resolves_to_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "team"
    assert tokenizer_file("", folder) == folder / "tokenizer.json"
    assert tokenizer_file(str(tmp_path), folder) == tmp_path / "tokenizer.json"
    assert tokenizer_file(str(tmp_path / "t.json"), folder) == tmp_path / "t.json"
    assert tokenizer_file("engine", folder) is None
    assert tokenizer_file("none", folder) is None


# -- chunks to pieces -------------------------------------------------------------


class _Reader:
    def __init__(self, *items: Any) -> None:
        import queue

        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for item in items:
            self.items.put(item)


def test_chunks_become_pieces_and_the_engines_usage_corrects_the_count() -> None:
    reader = _Reader(
        Chunk("Hel", None, None),
        Chunk("", None, None),  # a held-back step (vLLM): no text yet
        Chunk("lo", "stop", None),
        Chunk("", None, 5),  # the usage-only last event
        _END,
    )
    pieces = list(_pieces(reader))  # type: ignore[arg-type]
    assert [p.text for p in pieces] == ["Hel", "lo", ""]
    assert sum(p.tokens for p in pieces) == 5
    assert pieces[-1].finish == "stop"


def test_nothing_yet_is_none_and_errors_are_raised() -> None:
    reader = _Reader()
    steps = _pieces(reader)  # type: ignore[arg-type]
    assert next(steps) is None
    reader.items.put(Chunk("x", None, None))
    assert next(steps) == TextPiece("x", tokens=1)
    reader.items.put(RemoteUnreachable("remote engine unreachable at http://127.0.0.1:1: down"))
    with pytest.raises(RemoteUnreachable):
        next(steps)


# -- the engine with a text-streaming backend ------------------------------------


class TextBackend(Backend):
    """Scripted text streams: each generate_text run yields its script, one piece per step;
    a run whose prompt is "silent" yields nothing (None) until it is closed."""

    name = "text"

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.closed: list[str] = []
        self.waits = 0
        self.silent_started = threading.Event()

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    @property
    def context_length(self) -> int:
        return 256

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return frozenset()

    @property
    def max_concurrent(self) -> int:
        return 2

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def tokenize_markup(self, marker: str) -> list[int]:
        return [ord(c) for c in marker]

    def decode(self, ids: list[int]) -> str:
        raise AssertionError("a text backend is never asked to decode")

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        raise AssertionError("a text backend is never asked for token ids")

    @property
    def streams_text(self) -> bool:
        return True

    def generate_text(
        self,
        prompt: str,
        prompt_ids: list[int],
        sampling: Sampling,
        max_new_tokens: int,
        stops: tuple[str, ...],
    ) -> Generator[TextPiece | None, None, None]:
        try:
            if prompt == "silent":
                self.silent_started.set()
                while True:
                    yield None
            for text in self.script:
                yield TextPiece(text)
            yield TextPiece("", tokens=0, finish="length")
        finally:
            self.closed.append(prompt)

    def wait_for_output(self, timeout: float) -> None:
        self.waits += 1
        threading.Event().wait(timeout)

    def describe(self) -> dict[str, Any]:
        return {"device": "text"}


def request(prompt: str, stops: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(Prompt.plain(prompt), 50, Sampling(0.0, 1.0), stops)


async def test_text_pieces_are_cut_at_a_stop_across_pieces(make_engine: Any) -> None:
    backend = TextBackend(["def f():", "\n    return 1", "\n<|im", "_end|>after"])
    engine: Engine = make_engine(backend)
    job = await engine.submit(request("p", stops=("<|im_end|>",)))
    assert await job.text() == "def f():\n    return 1\n"
    assert job.finish_reason == "stop"
    assert job.usage["completion_tokens"] == 4
    assert job.usage["prompt_tokens"] == 1


async def test_a_silent_stream_does_not_hold_up_another(make_engine: Any) -> None:
    backend = TextBackend(["a", "b", "c"])
    engine: Engine = make_engine(backend)
    silent = await engine.submit(request("silent"))
    assert await asyncio.to_thread(backend.silent_started.wait, GATE_TIMEOUT_S)
    other = await engine.submit(request("talks"))
    assert await other.text() == "abc"
    assert other.finish_reason == "length"
    assert backend.waits >= 1  # rounds with nothing new waited instead of spinning
    silent.cancel()
    assert await silent.text() == ""
    assert silent.finish_reason == "cancelled"
    for _ in range(int(GATE_TIMEOUT_S / 0.01)):
        if "silent" in backend.closed:
            break
        await asyncio.sleep(0.01)
    assert backend.closed == ["talks", "silent"]  # closing the job closed its stream


class UncountedBackend(TextBackend):
    """tokenizer = "none": nothing here can count, so the engine behind checks the window."""

    @property
    def has_tokenizer(self) -> bool:
        return False

    def tokenize(self, text: str) -> list[int]:
        raise AssertionError("a backend without a tokenizer is never asked to count")


async def test_without_a_tokenizer_the_prompt_goes_uncounted(make_engine: Any) -> None:
    engine: Engine = make_engine(UncountedBackend(["ok"]))
    job = await engine.submit(request("x" * 1000))  # longer than the 256-token window here
    assert await job.text() == "ok"
    assert job.usage["prompt_tokens"] == 0


# -- qwend status ------------------------------------------------------------------


def test_status_names_the_remote_engine_and_its_reachability() -> None:
    from qwend.cli import format_status

    engine = {
        "url": "https://gpu1.example.com:8000",
        "model": "coder",
        "reachable": False,
        "latency_ms": None,
        "error": "remote engine unreachable at https://gpu1.example.com:8000: refused",
        "checked_at": None,
    }
    model = {
        "name": "team",
        "backend": "remote",
        "state": "ready",
        "engine": engine,
        "tokenizer": "engine",
        "max_concurrent": 4,
    }
    text = format_status({"model": model, "device": "remote"})
    assert "team (remote engine at https://gpu1.example.com:8000, model coder)" in text
    assert "engine   unreachable: remote engine unreachable at" in text
    assert "upstream 4 requests at once, tokenizer engine" in text
    engine.update(reachable=True, latency_ms=3.25, error=None)
    assert "engine   reachable, round trip 3.2 ms" in format_status(
        {"model": model, "device": "remote"}
    )


# -- cutting a request the engine is still working on -------------------------------


def test_closing_a_stream_cuts_the_connection_while_the_engine_is_silent() -> None:
    """The engine sent one event and then nothing (a long prefill, a busy queue):
    closing the job must still reach it at once, not at its next token."""
    import socket

    from qwend.backends.remote.backend import EngineHealth, _Upstream
    from qwend.backends.remote.client import Endpoint, EngineClient

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    saw_eof = threading.Event()

    def engine() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)  # the request
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            event = b'data: {"choices": [{"text": "a", "finish_reason": null}]}\n\n'
            conn.sendall(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            conn.settimeout(GATE_TIMEOUT_S)
            try:
                while conn.recv(4096):  # the rest of the request, then silence
                    pass
                saw_eof.set()  # the client shut the connection down
            except (TimeoutError, OSError):
                pass

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = EngineClient(Endpoint(url, "m", 5.0, 60.0, 1), None)
    woke = threading.Event()
    upstream = _Upstream(client, {"prompt": "x"}, woke.set, EngineHealth(url, "m"))
    try:
        assert woke.wait(GATE_TIMEOUT_S)
        assert upstream.items.get(timeout=GATE_TIMEOUT_S).text == "a"
        upstream.close()
        thread.join(GATE_TIMEOUT_S)
        assert saw_eof.is_set()
        upstream.thread.join(GATE_TIMEOUT_S)
        assert not upstream.thread.is_alive()
    finally:
        client.close()
        server.close()


# -- TLS: always verified, with the team's own CA in ca_bundle -------------------------


def _make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for 127.0.0.1, made as docs/remote.md shows."""
    import subprocess

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-sha256",
        "-days",
        "2",
        "-nodes",
        "-keyout",
        "team-ca.key",
        "-out",
        "team-ca.pem",
        "-subj",
        "/CN=team LLM CA",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "team-ca.pem", "-CAkey", "team-ca.key",
            "-CAcreateserial", "-days", "2", "-sha256", "-out", "server.crt",
            "-extfile", "san.ext")  # fmt: skip
    return folder / "team-ca.pem", folder / "server.crt", folder / "server.key"


def test_tls_is_verified_and_a_ca_bundle_adds_the_teams_ca(tmp_path: Path) -> None:
    import json
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from qwend.backends.remote.client import Endpoint, EngineClient

    ca, cert, key = _make_certificates(tmp_path)

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": [{"id": "m", "max_model_len": 1024}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        trusted = EngineClient(Endpoint(url, "m", 5.0, 5.0, 1, ca_bundle=str(ca)), None)
        probe = trusted.probe()
        trusted.close()
        assert (probe.reachable, probe.max_model_len, probe.error) == (True, 1024, None)

        untrusted = EngineClient(Endpoint(url, "m", 5.0, 5.0, 1), None)
        probe = untrusted.probe()
        assert not probe.reachable and probe.error is not None
        assert probe.error.startswith(f"remote engine unreachable at {url}: ")
        assert "CERTIFICATE_VERIFY_FAILED" in probe.error
        with pytest.raises(RemoteUnreachable) as info:
            untrusted.tokenize("x")
        assert "ca_bundle" in info.value.hint
        untrusted.close()
    finally:
        server.shutdown()
        server.server_close()
