"""Editor: timings of the resident model through the daemon's socket API.

Every figure comes from the real endpoints a client uses: ``/v1/completions``
with ``stream: true`` (the first SSE data event is the first token; the
``usage`` chunk gives the exact completion token count), ``/v1/tokenize`` for
exact prompt sizes and ``/v1/status`` for the model and device facts. All
requests decode greedily (temperature 0): sampling cost then does not depend
on the logits, and runs repeat.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qwend.client import DaemonClient
from qwend.errors import QwendError

DECODE_PROMPT: Final = "def quicksort(items):\n    "  # code the model continues at length
TTFT_MAX_TOKENS: Final = 1  # only the first token is timed; one more would be decode time
REQUEST_TIMEOUT_S: Final = 1800.0  # an 8k prefill on 2 CPU cores takes minutes, not hours


class BenchFailed(QwendError):
    """A benchmark step got an error instead of a figure."""

    code = "bench_failed"


@dataclass(frozen=True)
class StreamTiming:
    """One streamed completion, timed on the client."""

    ttft_s: float  # request sent -> first text event
    decode_s: float  # first -> last text event
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str | None
    started: float  # perf_counter at send, to line up concurrent streams
    ended: float  # perf_counter at the last event

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time they took; None below two tokens."""
        if self.completion_tokens < 2 or self.decode_s <= 0:
            return None
        return (self.completion_tokens - 1) / self.decode_s


class Probe:
    """The daemon as the benchmark sees it: tokenize, stream, status."""

    def __init__(self, socket_path: Path, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _client(self) -> DaemonClient:
        return DaemonClient(self.socket_path, timeout=self.timeout)

    def status(self) -> dict[str, Any]:
        code, body = self._client().request("GET", "/v1/status")
        if code != 200:
            raise BenchFailed(f"/v1/status answered {code}: {body}")
        return body

    def count_tokens(self, text: str) -> int:
        """The resident model's exact token count for ``text``."""
        code, body = self._client().request("POST", "/v1/tokenize", {"text": text})
        if code != 200:
            raise BenchFailed(f"/v1/tokenize answered {code}: {_message(body)}")
        return int(body["count"])

    def stream(self, prompt: str, max_tokens: int, suffix: str | None = None) -> StreamTiming:
        """One greedy streamed completion; raises BenchFailed on an error answer."""
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if suffix is not None:
            body["suffix"] = suffix
        started = time.perf_counter()
        first = last = 0.0
        usage: dict[str, Any] = {}
        finish: str | None = None
        for event in self._client().stream("/v1/completions", body):
            now = time.perf_counter()
            if "error" in event:
                raise BenchFailed(f"completion failed: {_message(event)}")
            if "usage" in event and not event.get("choices"):
                usage = event["usage"]
                continue
            for choice in event.get("choices", []):
                finish = choice.get("finish_reason") or finish
                if choice.get("finish_reason") is None:
                    first = first or now
                    last = now
        if not first or not usage:
            raise BenchFailed("the stream ended without a token or without usage")
        return StreamTiming(
            ttft_s=first - started,
            decode_s=last - first,
            completion_tokens=int(usage["completion_tokens"]),
            prompt_tokens=int(usage["prompt_tokens"]),
            finish_reason=finish,
            started=started,
            ended=last,
        )

    def task(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """One routed task's whole answer; raises BenchFailed on an error answer."""
        code, answer = self._client().request("POST", f"/v1/tasks/{name}", body)
        if code != 200:
            raise BenchFailed(f"task {name} answered {code}: {_message(answer)}")
        return answer

    def task_stream(self, name: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """A routed task's stream events (deltas, then the closing event)."""
        for event in self._client().stream(f"/v1/tasks/{name}", {**body, "stream": True}):
            if "error" in event:
                raise BenchFailed(f"task {name} failed: {_message(event)}")
            yield event

    def concurrent(self, prompts: list[str], max_tokens: int) -> list[StreamTiming]:
        """Stream every prompt at once, one connection and thread each."""
        barrier = threading.Barrier(len(prompts))
        results: list[StreamTiming | BaseException | None] = [None] * len(prompts)

        def run(index: int) -> None:
            barrier.wait()
            try:
                results[index] = self.stream(prompts[index], max_tokens)
            except BaseException as exc:  # reported below, on the caller's thread
                results[index] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        timings: list[StreamTiming] = []
        for result in results:
            if isinstance(result, BaseException):
                raise BenchFailed(f"a concurrent stream failed: {result}") from result
            assert result is not None
            timings.append(result)
        return timings


def aggregate_tokens_per_s(timings: list[StreamTiming]) -> float:
    """All streams' completion tokens over the wall time from the first send to the last token."""
    wall = max(t.ended for t in timings) - min(t.started for t in timings)
    return sum(t.completion_tokens for t in timings) / wall if wall > 0 else 0.0


def status_wall_time(socket_path: Path, config: str | None = None) -> float:
    """Seconds for ``qwend status`` as a new process (Python start-up included)."""
    command = [sys.executable, "-m", "qwend", "status", "--socket", str(socket_path)]
    if config:
        command += ["--config", config]
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False, env=dict(os.environ))
    return time.perf_counter() - started


def decode_prompts(count: int) -> list[str]:
    """``count`` different short code prompts (one per concurrent stream)."""
    return [DECODE_PROMPT.replace("quicksort", f"quicksort_{i}") for i in range(count)]


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return str(body)[:200]
