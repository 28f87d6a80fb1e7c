"""Engine: the HTTP client for one remote engine: TLS, timeouts, streamed completions, errors.

Speaks the part of the OpenAI HTTP API every engine shares: ``GET
/v1/models`` (the health probe) and ``POST /v1/completions`` with ``stream``
and a raw prompt. qwend renders every prompt itself (chat templates,
fill-in-the-middle), so nothing depends on the engine's ``suffix`` or chat
template support (vLLM rejects ``suffix``). Every failure becomes one of the
RemoteEngineError family, naming the engine's URL and never the API key.

httpx is synchronous here on purpose: each upstream request is read on its
own thread (backend.py), and the generation thread never blocks on it.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from qwend.backends.remote.apikey import ApiKey
from qwend.backends.remote.limits import is_loopback
from qwend.errors import BackendUnavailable, RemoteAuthFailed, RemoteEngineError, RemoteUnreachable

PROBE_TIMEOUT_S: Final = 5.0  # a health probe answers at once or the engine is in trouble
POOL_SPARE: Final = 2  # connections beyond max_concurrent: the health probe and tokenize
ERROR_TEXT_CHARS: Final = 300  # of an engine's error body, quoted in ours
FINISH_REASONS: Final = frozenset({"stop", "length"})


@dataclass(frozen=True)
class Probe:
    """One health check of the engine: reachable at all, and serving our model?"""

    reachable: bool
    latency_ms: float | None
    served: tuple[str, ...]
    max_model_len: int | None
    error: str | None
    checked_at: float  # time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "latency_ms": self.latency_ms,
            "served_models": list(self.served),
            "max_model_len": self.max_model_len,
            "error": self.error,
            "checked_at": self.checked_at,
        }


@dataclass(frozen=True)
class Chunk:
    """One streamed event: new text, and on the last ones the finish and usage."""

    text: str
    finish: str | None
    completion_tokens: int | None  # the engine's usage count, where it sends one


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is and how to talk to it (from the profile)."""

    url: str
    model: str
    connect_timeout_s: float
    read_timeout_s: float
    max_concurrent: int
    ca_bundle: str = ""


class EngineClient:
    """A connection pool to one engine. Thread-safe (httpx's Client is)."""

    def __init__(self, endpoint: Endpoint, key: ApiKey | None) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url.rstrip("/")
        self._key = key
        headers = {"Authorization": f"Bearer {key.value}"} if key is not None else {}
        host = urlsplit(self.url).hostname or ""
        self._http = httpx.Client(
            base_url=self.url + "/",
            headers=headers,
            verify=_tls_context(endpoint.ca_bundle),
            timeout=httpx.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s),
            limits=httpx.Limits(max_connections=endpoint.max_concurrent + POOL_SPARE),
            # Proxy variables apply to engines elsewhere, never to this machine.
            trust_env=not is_loopback(host),
            follow_redirects=False,  # a redirect would carry the key to another origin
        )
        self._tokenize_route: tuple[str, Callable[[str], dict[str, Any]]] | None = None

    def close(self) -> None:
        self._http.close()

    # -- completions ------------------------------------------------------------

    def stream(
        self, body: dict[str, Any], opened: Callable[[httpx.Response], None]
    ) -> Iterator[Chunk]:
        """POST /v1/completions with ``stream`` and yield its events.

        ``opened`` receives the response once the engine accepted the request,
        so another thread can cut the connection (which is how the engine
        learns that the client went away). Raises RemoteEngineError.
        """
        try:
            with self._http.stream("POST", "v1/completions", json=body) as response:
                if response.status_code != httpx.codes.OK:
                    response.read()
                    raise self._status_error(response)
                opened(response)
                yield from self._events(response)
        except httpx.HTTPError as exc:
            raise self.network_error(exc) from None

    def _events(self, response: httpx.Response) -> Iterator[Chunk]:
        finished = False
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank lines, comments (keep-alive pings), event names
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            chunk = self._chunk(data)
            finished = finished or chunk.finish is not None
            yield chunk
        if not finished:
            raise RemoteUnreachable(
                f"remote engine unreachable at {self.url}: "
                "the connection closed before the answer ended"
            )

    def _chunk(self, data: str) -> Chunk:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise RemoteEngineError(
                f"remote engine at {self.url} sent an event qwend cannot read: {data[:80]!r}"
            )
        if "error" in event or event.get("object") == "error":
            raise RemoteEngineError(
                f"remote engine at {self.url} failed mid-answer: {self._scrub(_message(event))}"
            )
        choices = event.get("choices") or []
        text = "".join(str(c.get("text") or "") for c in choices if isinstance(c, dict))
        finish = next(
            (c["finish_reason"] for c in choices if isinstance(c, dict) and c.get("finish_reason")),
            None,
        )
        if finish is not None and finish not in FINISH_REASONS:
            raise RemoteEngineError(
                f"remote engine at {self.url} ended the answer with finish_reason {finish!r}"
            )
        usage = event.get("usage")
        completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return Chunk(text, finish, completion if isinstance(completion, int) else None)

    # -- health -------------------------------------------------------------------

    def probe(self) -> Probe:
        """GET /v1/models: reachability, round-trip latency, the models served."""
        started = time.monotonic()
        try:
            response = self._http.get(
                "v1/models",
                timeout=httpx.Timeout(PROBE_TIMEOUT_S, connect=self.endpoint.connect_timeout_s),
            )
        except httpx.ReadTimeout:
            # Connected, so reachable; an engine that serializes every request
            # (llama-cpp-python) answers only after the generation it is busy with.
            busy = f"connected, but /v1/models had no answer within {PROBE_TIMEOUT_S:g}s (busy?)"
            return Probe(True, None, (), None, busy, time.time())
        except httpx.HTTPError as exc:
            return Probe(False, None, (), None, self.network_error(exc).message, time.time())
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        if response.status_code != httpx.codes.OK:
            refused = self._status_error(response).message
            return Probe(True, latency_ms, (), None, refused, time.time())
        try:
            listed = response.json().get("data") or []
        except (ValueError, AttributeError):
            listed = []
        cards = [card for card in listed if isinstance(card, dict)]
        served = tuple(str(card.get("id")) for card in cards)
        ours = next((card for card in cards if card.get("id") == self.endpoint.model), None)
        limit = ours.get("max_model_len") if ours is not None else None  # vLLM lists it
        error: str | None = None
        if ours is None:
            error = (
                f"the engine does not list model '{self.endpoint.model}' "
                f"(it serves: {', '.join(served) or 'nothing'})"
            )
        return Probe(
            True, latency_ms, served, limit if isinstance(limit, int) else None, error, time.time()
        )

    # -- tokenize -----------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids from the engine's own tokenize endpoint. Raises RemoteEngineError.

        Engines disagree on its path and body: vLLM takes
        ``/tokenize {model, prompt}``, llama.cpp's server ``/tokenize
        {content}``, llama-cpp-python ``/extras/tokenize {input}``. The first
        call finds which one answers; later calls use it directly.
        """
        if self._tokenize_route is None:
            self._tokenize_route = self._find_tokenize_route()
        path, body = self._tokenize_route
        return self._tokens(self._post_json(path, body(text)))

    def _find_tokenize_route(self) -> tuple[str, Callable[[str], dict[str, Any]]]:
        model = self.endpoint.model
        routes: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
            ("tokenize", lambda t: {"model": model, "prompt": t, "add_special_tokens": False}),
            ("tokenize", lambda t: {"content": t, "add_special": False, "parse_special": True}),
            ("extras/tokenize", lambda t: {"model": model, "input": t}),
        ]
        for path, body in routes:
            try:
                answer = self._post_json(path, body("x"))
            except RemoteAuthFailed:
                raise
            except RemoteUnreachable:
                raise
            except RemoteEngineError:
                continue
            if isinstance(answer.get("tokens"), list) and answer["tokens"]:
                return path, body
        raise RemoteEngineError(
            f"remote engine at {self.url} has no tokenize endpoint qwend knows "
            "(/tokenize, /extras/tokenize)",
            hint="point the profile's tokenizer at the model's tokenizer.json instead",
        )

    def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self.network_error(exc) from None
        if response.status_code != httpx.codes.OK:
            raise self._status_error(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RemoteEngineError(f"remote engine at {self.url}/{path} answered no JSON object")
        return answer

    def _tokens(self, answer: dict[str, Any]) -> list[int]:
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise RemoteEngineError(f"remote engine at {self.url} answered tokenize without ids")
        return tokens

    # -- errors -------------------------------------------------------------------

    def _status_error(self, response: httpx.Response) -> RemoteEngineError:
        status = response.status_code
        if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            what = (
                str(self._key)
                if self._key is not None
                else "a request without an API key (the profile sets no api_key_env or "
                "api_key_file)"
            )
            return RemoteAuthFailed(
                f"remote engine at {self.url} refused {what} (HTTP {status})",
                hint="use the key the engine was started with (its --api-key)",
                upstream_status=status,
            )
        try:
            detail = _message(response.json())
        except ValueError:
            detail = response.text
        detail = self._scrub(" ".join(detail.split())[:ERROR_TEXT_CHARS])
        return RemoteEngineError(
            f"remote engine at {self.url} answered HTTP {status}: {detail}",
            hint="see docs/remote.md: the profile's model and context_length must match the engine",
            upstream_status=status,
        )

    def network_error(self, exc: httpx.HTTPError) -> RemoteEngineError:
        """The error a failed connection or read becomes."""
        endpoint = self.endpoint
        if isinstance(exc, httpx.ConnectTimeout):
            reason = f"no connection within {endpoint.connect_timeout_s:g}s"
        elif isinstance(exc, httpx.ReadTimeout):
            return RemoteEngineError(
                f"remote engine at {self.url} sent nothing for {endpoint.read_timeout_s:g}s",
                hint="the engine may be overloaded; raise read_timeout_s if it queues long",
            )
        elif isinstance(exc, httpx.TimeoutException):
            return RemoteEngineError(f"remote engine at {self.url} timed out: {type(exc).__name__}")
        elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            reason = f"the connection dropped ({self._scrub(str(exc)) or type(exc).__name__})"
        else:
            reason = self._scrub(str(exc)) or type(exc).__name__
        hint = "start the engine, or check the profile's url and the network"
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            hint = "the engine's certificate is not trusted: set ca_bundle to its CA's PEM file"
        return RemoteUnreachable(f"remote engine unreachable at {self.url}: {reason}", hint=hint)

    def _scrub(self, text: str) -> str:
        """Never repeat the key, even if an engine echoes it."""
        return text.replace(self._key.value, "***") if self._key is not None else text


def _message(body: Any) -> str:
    """The message in an engine's error body, whichever shape it uses."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if error:
            return str(error)
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return str(body)


def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    """The system's trusted authorities (certifi's, as httpx uses), plus ``ca_bundle``.

    Verification is always on: there is no option to turn it off.
    """
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        path = Path(ca_bundle).expanduser()
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise BackendUnavailable(
                f"ca_bundle {path} cannot be used: {exc}",
                hint="point ca_bundle at a PEM file of the engine's certificate authority",
            ) from None
    return context
