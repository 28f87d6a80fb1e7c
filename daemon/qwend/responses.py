"""Protocol: every response body the socket sends, built in one place.

OpenAI's shapes for completions, chat completions, their stream chunks,
embeddings and the model list, and qwend's own task answers. A ``Shape``
gives the three forms an answer can take (whole, one delta, the closing
chunks of a stream) so one handler skeleton serves every generating endpoint.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from qwend.protocol import Generation


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


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """OpenAI's two forms: a JSON list, or base64 of little-endian float32 (the
    openai client's default)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_body(
    model: str, vectors: Sequence[list[float] | str], prompt_tokens: int
) -> dict[str, Any]:
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_body(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [{"object": "model", **entry} for entry in entries]}


def tokenize_body(model: str, ids: list[int]) -> dict[str, Any]:
    return {"model": model, "count": len(ids), "ids": ids}


class Shape(Protocol):
    """How one endpoint words a generation: whole, per delta, and its stream's end."""

    def whole(self, text: str, job: Generation) -> dict[str, Any]: ...

    def delta(self, text: str) -> dict[str, Any]: ...

    def closing(self, job: Generation) -> list[dict[str, Any]]: ...


@dataclass
class CompletionShape:
    model: str
    include_usage: bool
    rid: str = field(default_factory=lambda: new_id("cmpl"))

    def whole(self, text: str, job: Generation) -> dict[str, Any]:
        return completion_body(self.rid, self.model, text, job.finish_reason, job.usage)

    def delta(self, text: str) -> dict[str, Any]:
        return completion_body(self.rid, self.model, text, None, None)

    def closing(self, job: Generation) -> list[dict[str, Any]]:
        last = [completion_body(self.rid, self.model, "", job.finish_reason, None)]
        if self.include_usage:
            last.append(usage_chunk(self.rid, self.model, "text_completion", job.usage))
        return last


@dataclass
class ChatShape:
    model: str
    include_usage: bool
    rid: str = field(default_factory=lambda: new_id("chatcmpl"))
    _sent_role: bool = False

    def whole(self, text: str, job: Generation) -> dict[str, Any]:
        return chat_body(self.rid, self.model, text, job.finish_reason, job.usage)

    def delta(self, text: str) -> dict[str, Any]:
        # The first chunk names the role, as OpenAI's does.
        body = {"content": text} if self._sent_role else {"role": "assistant", "content": text}
        self._sent_role = True
        return chat_chunk(self.rid, self.model, body, None)

    def closing(self, job: Generation) -> list[dict[str, Any]]:
        last = [chat_chunk(self.rid, self.model, {}, job.finish_reason)]
        if self.include_usage:
            last.append(usage_chunk(self.rid, self.model, "chat.completion.chunk", job.usage))
        return last


@dataclass
class TaskShape:
    """qwend's task answer: the text plus the sampling and budget actually used."""

    task: str
    model: str
    sampling: dict[str, Any]
    budget: dict[str, Any]

    def _outcome(self, job: Generation) -> dict[str, Any]:
        return {
            "finish_reason": job.finish_reason,
            "usage": job.usage,
            "sampling": self.sampling,
            "budget": self.budget,
        }

    def whole(self, text: str, job: Generation) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "text": text, **self._outcome(job)}

    def delta(self, text: str) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "delta": text}

    def closing(self, job: Generation) -> list[dict[str, Any]]:
        return [{"task": self.task, "model": self.model, **self._outcome(job)}]
