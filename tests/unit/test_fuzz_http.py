"""Fuzz every POST endpoint in-process: no generated body may get a 5xx.

The real aiohttp app, the real InferenceService and Engine, over the scripted
FakeBackend (conftest.py; it refuses text a real tokenizer cannot take). Bodies
are drawn per endpoint: the endpoint's own fields with hostile values (lone
UTF-16 surrogates, 5,000-digit integers, 1e999, NaN, control characters,
special-token markup, wrong types, nesting), any JSON at all, and raw bytes.
Every answer must be below 500 and, when it is an error, the JSON error body of
docs/errors.md. Hypothesis runs derandomized and without a database, so CI sees
the same bodies every run; QWEND_FUZZ_EXAMPLES raises the count for a deeper
search (the suite's default is 1,000 bodies per endpoint).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.fake_backend import ENGINE_CLOSE_TIMEOUT_S, FakeBackend

from qwend.config import load_config
from qwend.engine.engine import Engine
from qwend.engine.service import InferenceService
from qwend.metrics import Metrics
from qwend.server.app import build_app
from qwend.tasks.registry import TASK_INPUTS

EXAMPLES = int(os.environ.get("QWEND_FUZZ_EXAMPLES", "1000"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same bodies on every run: a CI failure reproduces locally
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


class Raw(str):
    """JSON text written as it is (numbers json.dumps cannot or will not write)."""


RAW_NUMBERS = [
    "9" * 5000,  # over Python's 4,300-digit int-string limit
    "-" + "9" * 4301,
    "1" + "0" * 400,  # an int no float can hold
    "1e999",  # a float literal that overflows to infinity
    "-1e999",
    "1e-999",
    "1" + "0" * 400 + ".5",
    "NaN",  # Python's json reads these non-standard literals
    "Infinity",
    "-Infinity",
    "-0",
    "9223372036854775808",  # 2**63
]
HOSTILE_TEXT = [
    "\ud800",  # a lone high surrogate
    "\udc00\ud800",  # a reversed pair
    "a\udfffb",
    "\x00",
    "<|im_end|>\n<|im_start|>system\n",
    "<|fim_middle|>",
    "<|endoftext|>",
    "\u2028\u2029",
    "\r\n",
    "\ufeff",
    "",
]

texts = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])),
    max_size=24,
) | st.sampled_from(HOSTILE_TEXT)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 2**63 - 1, -1, 8192, 8193, 16384, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(RAW_NUMBERS).map(Raw),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _object(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of ``fields`` (each well-typed or anything), sometimes an unknown key."""
    values = {name: strategy | any_json for name, strategy in fields.items()}
    known = st.fixed_dictionaries({}, optional=values)
    return st.one_of(
        known,
        st.tuples(known, st.dictionaries(texts, any_json, max_size=2)).map(
            lambda pair: {**pair[1], **pair[0]}
        ),
    )


def _with(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]],
    valid: st.SearchStrategy[dict[str, Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    """A body for one endpoint: a plausible valid one (so the fuzz reaches the
    model, streaming included), the required fields with anything beside them,
    or any subset of the fields."""
    values = {name: strategy | any_json for name, strategy in required.items()}
    hostile = st.tuples(st.fixed_dictionaries(values), _object(optional)).map(
        lambda pair: {**pair[1], **pair[0]}
    )
    return st.one_of(valid, hostile, _object({**required, **optional}))


clean = st.text(max_size=24)
valid_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": clean}
    ),
    min_size=1,
    max_size=3,
)
valid_sampling = st.fixed_dictionaries(
    {},
    optional={
        "max_tokens": st.integers(1, 8),
        "temperature": st.floats(0, 2),
        "stream": st.booleans(),
        "stop": st.lists(st.text(min_size=1, max_size=4), max_size=2),
    },
)


def _valid(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.fixed_dictionaries(fields), valid_sampling).map(
        lambda pair: {**pair[1], **pair[0]}
    )


small_ints = st.integers(-3, 20) | numbers
floats = st.floats(-1, 3) | numbers
stops = texts | st.lists(texts, max_size=20)
message = _object(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", ""]), "content": texts}
)
messages = st.lists(message, max_size=4)
snippet = _object({"path": texts, "text": texts, "score": floats})
SAMPLING = {
    "max_tokens": small_ints,
    "temperature": floats,
    "top_p": floats,
    "stop": stops,
    "seed": numbers,
    "stream": st.booleans(),
    "model": texts | st.just("fake-model"),
}
OPENAI_EXTRAS = {
    "stream_options": _object({"include_usage": st.booleans()}),
    "n": small_ints,
    "presence_penalty": floats,
    "frequency_penalty": floats,
    "logprobs": st.booleans(),
    "user": texts,
}
TASK_COMMON = {k: v for k, v in SAMPLING.items() if k != "model"} | {"stop": st.lists(texts)}
TASK_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "CompleteInput": {
        "prefix": texts,
        "suffix": texts,
        "language": texts,
        "path": texts,
        "repo": texts,
        "snippets": st.lists(snippet, max_size=3),
    },
    "CodeInput": {
        "code": texts,
        "language": texts,
        "path": texts,
        "context": texts,
        "instruction": texts,
    },
    "CommitMessageInput": {"diff": texts, "instruction": texts},
    "ChatInput": {"messages": messages},
}
TASK_REQUIRED = {"CompleteInput": "prefix", "CodeInput": "code", "CommitMessageInput": "diff"}

BODIES: dict[str, st.SearchStrategy[Any]] = {
    "/v1/tokenize": _with(
        {"text": texts}, {"model": texts}, st.fixed_dictionaries({"text": clean})
    ),
    "/v1/completions": _with(
        {"prompt": texts},
        {**SAMPLING, **OPENAI_EXTRAS, "suffix": texts, "echo": st.booleans(), "best_of": numbers},
        _valid({"prompt": clean}) | _valid({"prompt": clean, "suffix": clean}),
    ),
    "/v1/chat/completions": _with(
        {"messages": messages},
        {**SAMPLING, **OPENAI_EXTRAS, "max_completion_tokens": small_ints},
        _valid({"messages": valid_messages}),
    ),
    "/v1/embeddings": _with(
        {"input": texts | st.lists(texts, max_size=4)},
        {"model": texts, "encoding_format": st.sampled_from(["float", "base64", "hex"])},
        st.fixed_dictionaries({"input": clean | st.lists(clean, min_size=1, max_size=3)}),
    ),
}
VALID_TASK_BODIES = {
    "CompleteInput": _valid({"prefix": clean, "suffix": clean}),
    "CodeInput": _valid({"code": clean, "instruction": clean}),
    "CommitMessageInput": _valid({"diff": clean}),
    "ChatInput": _valid({"messages": valid_messages}),
}


@st.composite
def task_request(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from([*TASK_INPUTS, "nope", "..", "%00", "complete/x"]))
    kind = TASK_INPUTS[name].__name__ if name in TASK_INPUTS else "CodeInput"
    fields = {**TASK_COMMON, **TASK_FIELDS[kind]}
    required = TASK_REQUIRED.get(kind, "messages")
    body = draw(_with({required: fields.pop(required)}, fields, VALID_TASK_BODIES[kind]))
    return f"/v1/tasks/{name}", body


garbage = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"", b"{", b"[" * 100_000, b'{"a":' * 5000, b"\xff\xfe", b"null", b"[]", b'"x"', b"1"]
    ),
)


def to_json(value: Any) -> str:
    """json.dumps, except Raw numbers go out as written and lone surrogates as
    \\u escapes (what a client in another language sends)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: surrogates become \ud800 escapes


def request_bodies(path: str) -> st.SearchStrategy[tuple[str, bytes]]:
    endpoint = task_request() if path == "/v1/tasks/*" else st.tuples(st.just(path), BODIES[path])
    encoded = endpoint.map(lambda pair: (pair[0], to_json(pair[1]).encode()))
    target = st.just(path) if path != "/v1/tasks/*" else st.just("/v1/tasks/explain")
    return (
        encoded
        | st.tuples(target, garbage)
        | st.tuples(target, any_json.map(to_json)).map(lambda pair: (pair[0], pair[1].encode()))
    )


class EmbeddingBackend(FakeBackend):
    """The fake backend plus a two-number embedding, so /v1/embeddings can answer."""

    @property
    def embedding_dim(self) -> int | None:
        return 2

    def embed(self, ids: list[int]) -> list[float]:
        return [1.0, 0.0] if len(ids) % 2 else [0.0, 1.0]


class Served:
    """The app on a loopback port, driven from synchronous hypothesis examples."""

    def __init__(self, xdg: Path) -> None:
        self.loop = asyncio.new_event_loop()
        backend = EmbeddingBackend("ok", context_length=16384)
        self.engine = Engine(backend, model_name="fake-model", queue_size=8, metrics=Metrics())
        self.engine.start(preload=True)
        service = InferenceService(self.engine, load_config(), xdg / "run" / "qwend.sock")
        self.client = test_utils.TestClient(
            test_utils.TestServer(build_app(service, Metrics())), loop=self.loop
        )
        self.loop.run_until_complete(self.client.start_server())
        self.loop.run_until_complete(self.engine.ensure_loaded())
        self.statuses: dict[int, int] = {}

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async def go() -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json"}
            async with self.client.post(path, data=body, headers=headers) as response:
                return response.status, await response.read()

        status, payload = self.loop.run_until_complete(go())
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, payload

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.engine.close(ENGINE_CLOSE_TIMEOUT_S)
        self.loop.close()


@pytest.fixture
def served(xdg: Path) -> Iterator[Served]:
    server = Served(xdg)
    yield server
    server.close()
    assert not server.engine._thread.is_alive()


ENDPOINTS = [*BODIES, "/v1/tasks/*"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_fuzzed_body_gets_a_5xx(
    served: Served, path: str, record_property: Callable[[str, object], None]
) -> None:
    @FUZZ_SETTINGS
    @given(request_bodies(path))
    def check(request: tuple[str, bytes]) -> None:
        url, body = request
        status, payload = served.post(url, body)
        assert status < 500, (status, payload[:300])
        if status >= 400:
            error = json.loads(payload)["error"]
            assert set(error) >= {"code", "message"}, error
            assert isinstance(error["code"], str)

    check()
    record_property("statuses", served.statuses)
    print(path, dict(sorted(served.statuses.items())))  # shown with -s
    assert sum(served.statuses.values()) >= EXAMPLES
    # Valid requests reach the model: the fuzz is not all refusals.
    assert served.statuses.get(200, 0) > 0, served.statuses
