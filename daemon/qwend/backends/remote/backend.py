"""Engine: the remote backend: qwend's tasks, budgets and lanes in front of a shared engine.

The model runs in an OpenAI-compatible engine (vLLM, SGLang, llama.cpp's
server) that scales past this machine; qwend keeps everything else: prompt
rendering (chat templates, fill-in-the-middle), exact budgets, lanes, stop
strings, cancellation and statistics. The backend receives text, not token
ids (``streams_text``): each request is one streamed ``/v1/completions`` read
on its own thread, so the generation thread polls without blocking and a
slow request never holds up another. Closing a job's steps cuts its
connection, which is how the engine learns to stop generating.

Health: a probe at load and every ``PROBE_INTERVAL_S`` (``GET /v1/models``:
reachability, round-trip latency, the models served), plus what each request
learns, feed ``/health`` and ``qwend status``. An unreachable engine fails
requests with RemoteUnreachable; it never fails the daemon, which recovers as
soon as the engine answers again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from qwend.backends.base import Backend, Prompt, Sampling, SuspendMode, TextPiece
from qwend.backends.remote.apikey import ApiKey, read_api_key
from qwend.backends.remote.client import Chunk, Endpoint, EngineClient, Probe
from qwend.backends.remote.limits import TOKENIZER_ENGINE, TOKENIZER_NONE
from qwend.backends.remote.tokenizer import (
    Counter,
    EngineTokenizer,
    LocalTokenizer,
    require_tokenizer,
    tokenizer_file,
)
from qwend.errors import (
    BackendUnavailable,
    GenerationFailed,
    QwendError,
    RemoteEngineError,
    RemoteUnreachable,
)

if TYPE_CHECKING:
    from qwend.config import ModelProfile

log = logging.getLogger(__name__)

PROBE_INTERVAL_S: Final = 10.0  # how stale `qwend status` may be about an idle engine
READER_JOIN_S: Final = 1.0  # unload: how long a cut request's reader thread gets to end
_END: Final = object()  # a reader thread's last item


class EngineHealth:
    """The engine as last seen, by a probe or a request. Thread-safe."""

    def __init__(self, url: str, model: str) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {
            "url": url,
            "model": model,
            "reachable": None,  # None: not checked yet
            "latency_ms": None,
            "served_models": [],
            "max_model_len": None,
            "error": None,
            "checked_at": None,
        }

    def probed(self, probe: Probe) -> None:
        with self._lock:
            self._state.update(probe.to_dict())

    def request_opened(self) -> None:
        with self._lock:
            if not self._state["reachable"]:
                self._state.update(reachable=True, error=None, checked_at=time.time())

    def request_failed(self, error: RemoteEngineError) -> None:
        with self._lock:
            reachable = not isinstance(error, RemoteUnreachable)
            self._state.update(reachable=reachable, error=error.message, checked_at=time.time())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)


class _Upstream:
    """One streamed request, read on its own thread into a queue."""

    def __init__(
        self,
        client: EngineClient,
        body: dict[str, Any],
        wake: Callable[[], None],
        health: EngineHealth,
    ) -> None:
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = wake
        self._health = health
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._closed = threading.Event()
        self.thread = threading.Thread(
            target=self._read, args=(client, body), name="qwend-remote-read", daemon=True
        )
        self.thread.start()

    def _read(self, client: EngineClient, body: dict[str, Any]) -> None:
        try:
            for chunk in client.stream(body, self._opened):
                if self._closed.is_set():
                    return
                self.items.put(chunk)
                self._wake()
        except RemoteEngineError as exc:
            if not self._closed.is_set():
                self._health.request_failed(exc)
                self.items.put(exc)
        except QwendError as exc:
            self.items.put(exc)
        except Exception:  # a bug here must fail this request, not hang it
            log.exception("reading the remote engine's answer failed")
            self.items.put(GenerationFailed("reading the engine's answer failed"))
        finally:
            self.items.put(_END)
            self._wake()

    def _opened(self, response: httpx.Response) -> None:
        self._health.request_opened()
        with self._lock:
            self._response = response
        if self._closed.is_set():
            _cut(response)

    def close(self) -> None:
        """Cut the connection: the engine sees its client leave and stops generating."""
        self._closed.set()
        with self._lock:
            response = self._response
        if response is not None:
            _cut(response)


def _cut(response: httpx.Response) -> None:
    """Shut the response's socket down from another thread.

    Closing the socket would not wake a thread blocked reading it, nor send
    the engine a FIN while that read holds it open; shutdown does both.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class RemoteBackend(Backend):
    name = "remote"

    def __init__(self, profile: ModelProfile, *, profile_name: str, profile_folder: Path) -> None:
        self._profile = profile
        self._profile_name = profile_name
        self._folder = profile_folder
        self._endpoint = Endpoint(
            url=profile.url,
            model=profile.model,
            connect_timeout_s=profile.connect_timeout_s,
            read_timeout_s=profile.read_timeout_s,
            max_concurrent=profile.max_concurrent,
            ca_bundle=profile.ca_bundle,
        )
        self._context_length = profile.context_length
        self._client: EngineClient | None = None
        self._counter: Counter | None = None
        self._ready = threading.Event()  # set whenever a reader queued something
        self.health = EngineHealth(profile.url, profile.model)
        self._stop_probing = threading.Event()
        self._prober: threading.Thread | None = None
        self._readers: set[_Upstream] = set()

    def check(self) -> None:
        """The key (present, private) and the local tokenizer, before the socket is bound."""
        self._read_key()
        if self._profile.ca_bundle and not Path(self._profile.ca_bundle).expanduser().is_file():
            raise BackendUnavailable(
                f"model profile '{self._profile_name}': ca_bundle {self._profile.ca_bundle} "
                "is not a file"
            )
        require_tokenizer(self._profile.tokenizer, self._folder, self._profile_name)

    def _read_key(self) -> ApiKey | None:
        profile = self._profile
        return read_api_key(self._profile_name, profile.api_key_env, profile.api_key_file)

    def load(self) -> None:
        """Read the key and tokenizer and probe the engine once.

        An unreachable engine does not fail the load: the daemon serves
        status and answers each request with RemoteUnreachable until the
        engine is back.
        """
        client = EngineClient(self._endpoint, self._read_key())
        setting = self._profile.tokenizer
        if setting == TOKENIZER_ENGINE:
            self._counter = EngineTokenizer(client)
        elif setting == TOKENIZER_NONE:
            self._counter = None
        else:
            require_tokenizer(setting, self._folder, self._profile_name)
            path = tokenizer_file(setting, self._folder)
            assert path is not None
            self._counter = LocalTokenizer(path)
        self._client = client
        probe = client.probe()
        self.health.probed(probe)
        if not probe.reachable:
            log.warning("remote engine: %s (serving anyway; requests fail until it answers)",
                        probe.error)  # fmt: skip
        elif probe.error:
            log.warning("remote engine at %s: %s", client.url, probe.error)
        else:
            log.info("remote engine at %s: round trip %.1f ms", client.url, probe.latency_ms or 0)
        if probe.max_model_len is not None and probe.max_model_len < self._context_length:
            log.info("the engine's context is %d tokens: using it", probe.max_model_len)
            self._context_length = probe.max_model_len
        self._stop_probing.clear()
        self._prober = threading.Thread(
            target=self._probe_forever, args=(client,), name="qwend-remote-probe", daemon=True
        )
        self._prober.start()

    def _probe_forever(self, client: EngineClient) -> None:
        while not self._stop_probing.wait(PROBE_INTERVAL_S):
            try:
                self.health.probed(client.probe())
            except Exception:  # a probe must never end the daemon's view of the engine
                log.exception("probing the remote engine failed")

    def unload(self) -> None:
        self._stop_probing.set()
        for reader in tuple(self._readers):
            reader.close()
            reader.thread.join(READER_JOIN_S)
        if self._prober is not None:
            self._prober.join(READER_JOIN_S)
            self._prober = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._counter = None

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return frozenset()  # the engine ends at its model's end-of-turn token itself

    @property
    def max_concurrent(self) -> int:
        return self._profile.max_concurrent

    @property
    def has_tokenizer(self) -> bool:
        return self._profile.tokenizer != TOKENIZER_NONE

    def tokenize(self, text: str) -> list[int]:
        return self._require_counter().encode(text)

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        return self._require_counter().encode_batch(texts) if texts else []

    def tokenize_markup(self, marker: str) -> list[int]:
        return self._require_counter().encode(marker)

    def encode(self, prompt: Prompt) -> list[int]:
        """What the engine will count: it receives the joined text (an OpenAI
        engine such as llama-server takes no token ids), so markup typed in a
        request is parsed there as markup; docs/remote.md says so."""
        return self._require_counter().encode(prompt.text)

    def decode(self, ids: list[int]) -> str:
        return self._require_counter().decode(ids)

    def _require_counter(self) -> Counter:
        if self._counter is None:
            raise BackendUnavailable(
                f"model profile '{self._profile_name}' has no tokenizer (tokenizer = \"none\")",
                hint='point tokenizer at the model\'s tokenizer.json, or use "engine"',
            )
        return self._counter

    @property
    def streams_text(self) -> bool:
        return True

    @property
    def suspend_mode(self) -> SuspendMode:
        """ "keep": a suspended request stays open upstream and its reader thread
        buffers what arrives; it cannot be re-prefilled (the engine holds no
        token ids of ours), and the engine behind it batches on its own."""
        return "keep"

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        raise BackendUnavailable("the remote backend streams text: the engine calls generate_text")

    def generate_text(
        self,
        prompt: str,
        prompt_ids: list[int],
        sampling: Sampling,
        max_new_tokens: int,
        stops: tuple[str, ...],
    ) -> Generator[TextPiece | None, None, None]:
        if self._client is None:
            raise BackendUnavailable("the remote backend is not loaded")
        body: dict[str, Any] = {
            "model": self._profile.model,
            "prompt": prompt,  # rendered by qwend: chat template or fill-in-the-middle
            "max_tokens": max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},  # exact usage where the engine sends it
        }
        if stops:
            body["stop"] = list(stops)  # the engine stops early; qwend still matches them
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        upstream = _Upstream(self._client, body, self._ready.set, self.health)
        self._readers.add(upstream)
        try:
            yield from _pieces(upstream)
        finally:
            self._readers.discard(upstream)
            upstream.close()

    def wait_for_output(self, timeout: float) -> None:
        if not self._ready.is_set():
            self._ready.wait(timeout)
        self._ready.clear()

    def remote_health(self) -> dict[str, Any] | None:
        return self.health.snapshot()

    def describe(self) -> dict[str, Any]:
        tokenizer = self._counter.describe() if self._counter is not None else "none"
        return {
            "device": "remote",
            "engine": self.health.snapshot(),
            "tokenizer": tokenizer,
            "max_concurrent": self._profile.max_concurrent,
        }


def _pieces(upstream: _Upstream) -> Generator[TextPiece | None, None, None]:
    """The reader's chunks as text pieces; None while nothing new has arrived.

    A piece with text stands for one token until the engine's usage (sent
    last, where the engine supports ``stream_options``) corrects the total.
    """
    counted = 0
    usage: int | None = None
    finish: str | None = None
    while True:
        try:
            item = upstream.items.get_nowait()
        except queue.Empty:
            yield None
            continue
        if item is _END:
            correction = usage - counted if usage is not None else 0
            yield TextPiece("", tokens=correction, finish=finish or "length")
            return
        if isinstance(item, QwendError):
            raise item
        assert isinstance(item, Chunk)
        finish = item.finish or finish
        usage = item.completion_tokens if item.completion_tokens is not None else usage
        tokens = 1 if item.text else 0
        counted += tokens
        if item.text:
            yield TextPiece(item.text, tokens=tokens)
