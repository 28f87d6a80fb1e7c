"""Engine: many engine token streams over one exllamav2 dynamic generator.

exllamav2's dynamic generator batches every running job in one forward pass
per ``iterate()``; the engine advances each job's token iterator in turn.
``JobMux`` joins the two: a job's iterator runs one ``iterate()`` only when it
has no token buffered, and that one call feeds every running job's buffer, so
N streams cost one batched step per round, not N.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Final, Protocol

from qwend.errors import GenerationFailed, OutOfMemory


class DynamicGenerator(Protocol):
    """What JobMux uses of ``ExLlamaV2DynamicGenerator``."""

    def enqueue(self, job: Any) -> Any: ...
    def iterate(self) -> list[dict[str, Any]]: ...
    def cancel(self, job: Any) -> None: ...
    def num_remaining_jobs(self) -> int: ...


_END: Final = object()  # a job's buffer ends with this once exllamav2 reports eos


def is_out_of_memory(exc: BaseException) -> bool:
    """torch raises OutOfMemoryError; the extension's allocator, RuntimeError."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class JobMux:
    """Many engine token streams over one exllamav2 dynamic generator.

    Only the engine's thread calls it (the generator is not thread-safe).
    """

    def __init__(self, generator: DynamicGenerator) -> None:
        self._generator = generator
        self._buffers: dict[int, deque[object]] = {}
        self._keys = itertools.count()
        self.cached_tokens_total = 0  # prompt tokens served from the cache, all jobs
        self.prompt_tokens_total = 0

    @property
    def running(self) -> int:
        return len(self._buffers)

    def stream(self, make_job: Callable[[int], Any]) -> Generator[int, None, None]:
        """Token ids of the job ``make_job(identifier)`` builds, as exllamav2 emits them.

        Closing the iterator early cancels the job, which frees its pages.
        Raises OutOfMemory if the device runs out of memory while it waits.
        """
        key = next(self._keys)
        job = make_job(key)
        buffer: deque[object] = deque()
        self._buffers[key] = buffer
        self._generator.enqueue(job)
        ended = False
        try:
            while True:
                while not buffer:
                    self._iterate()
                item = buffer.popleft()
                if item is _END:
                    ended = True
                    return
                assert isinstance(item, int)
                yield item
        finally:
            del self._buffers[key]
            if not ended:
                self._generator.cancel(job)

    def _iterate(self) -> None:
        if not self._generator.num_remaining_jobs():
            raise GenerationFailed(
                "exllamav2 dropped a running job", hint="see the daemon log; retry the request"
            )
        try:
            results = self._generator.iterate()
        except Exception as exc:
            if is_out_of_memory(exc):
                release_cached_memory()
                raise OutOfMemory(
                    "the GPU ran out of memory for this request",
                    hint="retry with a shorter prompt or max_tokens, or lower the profile's "
                    "cache_tokens or max_batch_size (docs/gpu.md)",
                ) from exc
            raise
        for result in results:
            buffer = self._buffers.get(result.get("identifier", -1))
            if buffer is None or result.get("stage") != "streaming":
                continue
            for ids in (result.get("token_ids"), result.get("held", {}).get("token_ids")):
                if ids is not None:
                    buffer.extend(int(i) for i in ids.flatten().tolist())
            if result.get("eos"):
                buffer.append(_END)
                self.cached_tokens_total += int(result.get("cached_tokens", 0))
                self.prompt_tokens_total += int(result.get("prompt_tokens", 0))


def release_cached_memory() -> None:
    import torch

    torch.cuda.empty_cache()
