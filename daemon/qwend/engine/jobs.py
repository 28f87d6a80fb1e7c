"""Engine: one request's generation, as the asyncio side and the thread see it.

A ``GenerationRequest`` is a rendered prompt plus its limits; a ``Job`` is its
life on the asyncio side (events, cancel flag, finish); a ``RunningStream`` is
the same job on the generation thread (the backend's token steps, the
detokenizer and the stop matcher; or, for a backend that streams text, its
text pieces and the stop matcher). ``Finish`` records how it ended.

A running stream may be suspended between two steps (scheduling.py decides
when). Its detokenizer, stop matcher and generated tokens stay with it, so the
text already sent stays sent and resuming repeats nothing; whether the
backend's iterator stays open or is closed and re-prefilled on resume is the
backend's ``suspend_mode``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from qwend.backends.base import Backend, Prompt, Sampling, TextPiece
from qwend.engine.decoding import IncrementalDecoder, StopMatcher, trim_repeated_suffix
from qwend.errors import OutOfMemory, QwendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """A rendered prompt plus everything the engine needs to run it."""

    prompt: Prompt
    max_tokens: int
    sampling: Sampling
    stops: tuple[str, ...] = ()
    trim_suffix: str = ""  # completions: text after the cursor, never repeated at the end


@dataclass(frozen=True)
class Finish:
    """How a job ended. ``reason`` is the OpenAI finish_reason, or "cancelled"."""

    reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    duration_s: float  # from start to end, suspensions included
    suspended_s: float = 0.0  # time spent suspended for higher-priority work
    suspensions: int = 0


_job_ids = itertools.count(1)


@dataclass
class Job:
    """One request's generation, as seen from the asyncio side."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    prompt_ids: list[int] | None
    id: int = field(default_factory=lambda: next(_job_ids))
    enqueued_at: float = field(default_factory=time.monotonic)
    finish: Finish | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _events: asyncio.Queue[str | Finish | QwendError] = field(default_factory=asyncio.Queue)
    # Set by the engine: takes a cancelled job out of its queue at once.
    on_cancel: Callable[[], None] | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """Ask the generation thread to stop this job; safe from any thread.

        A job still queued leaves its lane now (``on_cancel``): a client that
        gave up must not hold a place another request could use.
        """
        self._cancel.set()
        if self.on_cancel is not None:
            self.on_cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def stream(self) -> AsyncIterator[str]:
        """Yield text deltas; ``finish`` is set when it ends. Raises QwendError."""
        while True:
            item = await self._events.get()
            if isinstance(item, str):
                yield item
            elif isinstance(item, Finish):
                self.finish = item
                return
            else:
                raise item

    async def text(self) -> str:
        """The whole answer; a completion's repeat of the text after the cursor is cut."""
        text = "".join([delta async for delta in self.stream()])
        if self.request.trim_suffix:
            text = trim_repeated_suffix(text, self.request.trim_suffix)
        return text

    @property
    def finish_reason(self) -> str:
        return self.finish.reason if self.finish is not None else "cancelled"

    @property
    def usage(self) -> dict[str, int]:
        prompt = self.finish.prompt_tokens if self.finish is not None else 0
        completion = self.finish.completion_tokens if self.finish is not None else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _post(self, item: str | Finish | QwendError) -> None:
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening
            self.cancel()


class RunningStream:
    """A running job on the generation thread: its token steps (or, for a backend
    that streams text, its text pieces), detokenizer and stops."""

    def __init__(self, job: Job, backend: Backend, prompt_ids: list[int], lane: str) -> None:
        self.job = job
        self.lane = lane
        self.prompt_tokens = len(prompt_ids)
        self.started = time.monotonic()
        self.admitted_at = self.started
        self.first_token_at: float | None = None
        self.produced = 0
        self.reason = "length"
        self.progressed = False  # did the last step receive anything (text backends may not)
        self.suspended_at: float | None = None  # set while suspended
        self.suspended_s = 0.0
        self.suspensions = 0
        self.protected_until = 0.0  # scheduling.py's age rule: no preemption before this
        self.resume_steps_s: list[float] = []  # the first step after each resume
        self._resuming = False
        self._backend = backend
        self._prompt_ids = prompt_ids
        self._generated: list[int] = []
        request = job.request
        self._matcher = StopMatcher(request.stops)
        self._stop_ids = backend.stop_token_ids
        self._decoder: IncrementalDecoder | None = None
        self._steps: Generator[Any, None, None] | None
        if backend.streams_text:
            self._steps = backend.generate_text(
                request.prompt.text, prompt_ids, request.sampling, request.max_tokens, request.stops
            )
        else:
            self._decoder = IncrementalDecoder(backend.decode)
            self._steps = backend.generate(prompt_ids, request.sampling, request.max_tokens)

    def suspend(self, now: float) -> None:
        """Stop between two steps; a "reprefill" backend's iterator is closed here."""
        self.suspended_at = now
        self.suspensions += 1
        if self._backend.suspend_mode == "reprefill":
            self.close()
            self._steps = None

    def resume(self, now: float) -> None:
        """Take a slot again; a closed iterator is rebuilt from prompt + generated."""
        if self.suspended_at is not None:
            self.suspended_s += now - self.suspended_at
        self.suspended_at = None
        self.admitted_at = now
        self._resuming = True
        if self._steps is None:
            request = self.job.request
            remaining = request.max_tokens - self.produced
            if remaining <= 0:  # suspended after its last token: nothing to re-prefill for
                self._steps = _no_steps()
                return
            self._steps = self._backend.resume(
                self._prompt_ids, list(self._generated), request.sampling, remaining
            )

    def step(self) -> bool:
        """Take one token (or text piece) and post its text; True once the job is over.

        Raises OutOfMemory (host memory too) and whatever the backend raises.
        """
        self.progressed = False
        if self.job.cancelled:
            self.reason = "cancelled"
            return True
        assert self._steps is not None, "only an admitted stream steps (resume() rebuilds it)"
        began = time.monotonic()
        try:
            item = next(self._steps)
        except StopIteration:
            return True
        except MemoryError as exc:
            raise OutOfMemory("the host ran out of memory for this request") from exc
        if self._resuming:  # the resume's cost: a re-prefill, or one plain step
            self._resuming = False
            self.resume_steps_s.append(time.monotonic() - began)
        if self._decoder is None:
            return self._take_piece(item)
        return self._take_token(item, self._decoder)

    def _take_piece(self, piece: TextPiece | None) -> bool:
        if piece is None:  # nothing has arrived yet
            return False
        self.progressed = True
        self.produced += piece.tokens
        if self.first_token_at is None and piece.tokens:
            self.first_token_at = time.monotonic()
        if self.job.cancelled:
            self.reason = "cancelled"
            return True
        text = self._matcher.push(piece.text)
        if text:
            self.job._post(text)
        if self._matcher.stopped:
            self.reason = "stop"
            return True
        if piece.finish is not None:
            self.reason = piece.finish
            return True
        return False

    def _take_token(self, token: int, decoder: IncrementalDecoder) -> bool:
        self.progressed = True
        self.produced += 1
        self._generated.append(token)
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if self.job.cancelled:  # cancelled during the step: its token is not sent
            self.reason = "cancelled"
            return True
        if token in self._stop_ids:
            self.reason = "stop"
            return True
        text = self._matcher.push(decoder.push(token))
        if text:
            self.job._post(text)
        if self._matcher.stopped:
            self.reason = "stop"
            return True
        return False

    def close(self) -> None:
        """End the backend's steps (a backend frees the job's cache here)."""
        if self._steps is None:
            return
        try:
            self._steps.close()
        except Exception:  # the job is over either way; keep the thread alive
            log.exception("closing the steps of job %d failed", self.job.id)

    def finish(self) -> Finish:
        self.close()
        if self.reason != "cancelled":
            held = self._decoder.flush() if self._decoder is not None else ""
            tail = self._matcher.push(held) + self._matcher.flush()
            if tail:
                self.job._post(tail)
        now = time.monotonic()
        if self.suspended_at is not None:  # ended while suspended (cancelled, shut down)
            self.suspended_s += now - self.suspended_at
            self.suspended_at = None
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        return Finish(
            self.reason,
            self.prompt_tokens,
            self.produced,
            ttft,
            now - self.started,
            self.suspended_s,
            self.suspensions,
        )


def _no_steps() -> Generator[int, None, None]:
    """The steps of a generation that has already produced all its tokens."""
    yield from ()
