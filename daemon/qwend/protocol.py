"""Protocol: the socket API's request types and OpenAI-shaped responses.

Every body is validated into one of these models before anything else sees
it. Unknown keys, wrong types and out-of-range values are a BadRequest that
names the field. The OpenAI fields qwend accepts but cannot honour beyond
their default (``n``, ``echo``, penalties...) accept exactly that default, so
a client is told instead of silently served something else.
"""

from __future__ import annotations

import json
import re
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
MAX_NUMBER_DIGITS = 4000  # under Python's 4,300-digit int-string limit; fields check range
_SURROGATE = re.compile("[\ud800-\udfff]")  # only unpaired ones survive json.loads

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


# -- routed tasks (POST /v1/tasks/{task}) ---------------------------------------


class TaskBody(_Body):
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


class CompleteInput(TaskBody):
    prefix: str
    suffix: str = ""
    language: str = Field(default="", max_length=MAX_LANGUAGE_CHARS)
    path: str = Field(default="", max_length=MAX_PATH_CHARS)
    repo: str = Field(default="", max_length=256)
    snippets: list[Snippet] = Field(default_factory=list, max_length=MAX_SNIPPETS)


class CodeInput(TaskBody):
    code: str = Field(min_length=1)
    language: str = Field(default="", max_length=MAX_LANGUAGE_CHARS)
    path: str = Field(default="", max_length=MAX_PATH_CHARS)
    context: str = ""
    instruction: str = ""


class CommitMessageInput(TaskBody):
    diff: str = Field(min_length=1)
    instruction: str = ""


class ChatInput(TaskBody):
    messages: list[ChatMessage] = Field(min_length=1)


TaskInput = CompleteInput | CodeInput | CommitMessageInput | ChatInput


def _bounded_int(digits: str) -> int:
    """json's int hook: refuse numerals no field could take before Python's
    int-string limit (4,300 digits) raises a ValueError mid-parse."""
    if len(digits) > MAX_NUMBER_DIGITS:
        raise BadRequest(
            f"the body has a number of {len(digits)} digits; at most {MAX_NUMBER_DIGITS} are read"
        )
    return int(digits)


def _first_non_text(data: Any) -> str | None:
    """The path of the first string (key or value) holding a lone UTF-16
    surrogate (a ``\ud800`` escape without its pair): JSON lets it through,
    but it is not text, and no tokenizer, log or UTF-8 answer can carry it.
    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                if _SURROGATE.search(key):
                    return path or "body"
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    """Decode JSON and validate it into ``model``; raise BadRequest naming the field.

    Whatever the bytes, the answer is the model or a BadRequest: malformed
    JSON, numbers too long to read or too large for their type, and strings
    that are not Unicode text are refused here, once for every endpoint.
    """
    try:
        data = json.loads(raw, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    bad = _first_non_text(data)
    if bad is not None:
        raise BadRequest(
            f"field '{bad}': contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
            "escape), which is not text",
            field=bad,
        )
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

    def health(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def models(self) -> dict[str, Any]: ...

    async def complete(self, req: CompletionRequest) -> Generation: ...

    async def chat(self, req: ChatRequest) -> Generation: ...

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]: ...

    async def embed(self, req: EmbeddingsRequest) -> dict[str, Any]: ...

    async def task(self, name: str, body: Any) -> TaskRun: ...

    async def reload(self) -> dict[str, Any]: ...

    def max_body_bytes(self) -> int: ...

    def read_timeout_s(self) -> float: ...


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
