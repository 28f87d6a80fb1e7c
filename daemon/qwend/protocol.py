"""Protocol: the socket API's request types and OpenAI-shaped responses.

Every body is validated into one of these models before anything else sees
it. Unknown keys, wrong types and out-of-range values are a BadRequest that
names the field. The OpenAI fields qwend accepts but cannot honour beyond
their default (``n``, ``echo``, penalties...) accept exactly that default, so
a client is told instead of silently served something else.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qwend.errors import BadRequest

MAX_STOP_STRINGS = 16  # OpenAI allows 4; a few more help FIM clients
MAX_STOP_CHARS = 256
MAX_SNIPPETS = 64  # more files than any prompt could hold anyway
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux; paths are labels here, never opened
MAX_LANGUAGE_CHARS = 64  # a language id (a code fence's tag); LSP ids are short words
MAX_EMBEDDING_INPUTS = 256

Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=0, le=0, allow_inf_nan=False)]  # only 0 is honoured


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StreamOptions(_Body):
    include_usage: bool = False


class SampledRequest(_Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logprobs: Literal[False] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(s) > MAX_STOP_CHARS or not s for s in stops):
            raise ValueError(f"stop strings must be 1 to {MAX_STOP_CHARS} characters")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(SampledRequest):
    prompt: str
    suffix: str | None = None
    echo: Literal[False] = False
    best_of: Literal[1] = 1


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(SampledRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class TokenizeRequest(_Body):
    text: str
    model: str | None = None


class EmbeddingsRequest(_Body):
    input: str | list[str] = Field(min_length=1)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise BadRequest(
                f"field 'input': at most {MAX_EMBEDDING_INPUTS} texts per request", field="input"
            )
        if not all(texts):
            raise BadRequest("field 'input': texts must not be empty", field="input")
        return texts


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """OpenAI's two forms: a JSON list, or base64 of little-endian float32 (the
    openai client's default)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


# -- routed tasks (POST /v1/tasks/{task}) ---------------------------------------


class _TaskBody(_Body):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS
    )
    stream: bool = False


class Snippet(_Body):
    path: str = Field(max_length=MAX_PATH_CHARS)
    text: str
    score: float = Field(default=0.0, allow_inf_nan=False)


class CompleteInput(_TaskBody):
    prefix: str
    suffix: str = ""
    language: str = Field(default="", max_length=MAX_LANGUAGE_CHARS)
    path: str = Field(default="", max_length=MAX_PATH_CHARS)
    repo: str = Field(default="", max_length=256)
    snippets: list[Snippet] = Field(default_factory=list, max_length=MAX_SNIPPETS)


class CodeInput(_TaskBody):
    code: str = Field(min_length=1)
    language: str = Field(default="", max_length=MAX_LANGUAGE_CHARS)
    path: str = Field(default="", max_length=MAX_PATH_CHARS)
    context: str = ""
    instruction: str = ""


class CommitMessageInput(_TaskBody):
    diff: str = Field(min_length=1)
    instruction: str = ""


class ChatInput(_TaskBody):
    messages: list[ChatMessage] = Field(min_length=1)


TaskInput = CompleteInput | CodeInput | CommitMessageInput | ChatInput
TASK_INPUTS: dict[str, type[_TaskBody]] = {
    "complete": CompleteInput,
    "explain": CodeInput,
    "refactor": CodeInput,
    "docstring": CodeInput,
    "tests": CodeInput,
    "fix": CodeInput,
    "commit_message": CommitMessageInput,
    "chat": ChatInput,
    "reasoning": ChatInput,
}


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Decode JSON and validate it into ``model``; raise BadRequest naming the field."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise BadRequest(f"field '{field}': {message}{more}", field=field) from None


# -- what the transport calls ---------------------------------------------------


class Generation(Protocol):
    """A running generation: stream its text, or cancel it."""

    def stream(self) -> AsyncIterator[str]: ...

    async def text(self) -> str: ...

    def cancel(self) -> None: ...

    @property
    def finish_reason(self) -> str: ...

    @property
    def usage(self) -> dict[str, int]: ...


class Service(Protocol):
    """The domain behind the socket (qwend.engine.service implements it)."""

    @property
    def model_name(self) -> str: ...

    def state(self) -> str: ...

    def status(self) -> dict[str, Any]: ...

    def models(self) -> dict[str, Any]: ...

    async def complete(self, req: CompletionRequest) -> Generation: ...

    async def chat(self, req: ChatRequest) -> Generation: ...

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]: ...

    async def embed(self, req: EmbeddingsRequest) -> dict[str, Any]: ...

    async def task(self, name: str, body: Any) -> TaskRun: ...

    async def reload(self) -> dict[str, Any]: ...

    def max_body_bytes(self) -> int: ...


class TaskRun(Protocol):
    """A routed task: its generation plus the budget report of its prompt."""

    @property
    def generation(self) -> Generation: ...

    @property
    def stream(self) -> bool: ...

    @property
    def budget(self) -> dict[str, Any]: ...

    @property
    def sampling(self) -> dict[str, Any]: ...


# -- responses -----------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_body(
    rid: str, model: str, text: str, finish_reason: str | None, use: dict[str, int] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }
    if use is not None:
        body["usage"] = use
    return body


def chat_body(
    rid: str, model: str, text: str, finish_reason: str, use: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": use,
    }


def chat_chunk(
    rid: str, model: str, delta: dict[str, str], finish_reason: str | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk(rid: str, model: str, obj: str, use: dict[str, int]) -> dict[str, Any]:
    """The final chunk OpenAI sends when ``stream_options.include_usage`` is set."""
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }
