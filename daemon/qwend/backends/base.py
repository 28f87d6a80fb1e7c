"""Engine: the small interface every model backend implements.

A backend only runs the model: load, tokenize, decode, and yield one token id
per step. The engine (engine.py) owns the thread, the queue, stop strings,
detokenization, cancellation and statistics, so each backend stays small and
any backend gets the same behaviour.

Preemption (engine/scheduling.py) suspends a running generation between two
token steps so a higher-priority job can have its slot. How a backend gives
the slot up is its ``suspend_mode``: "keep" (the generation's state stays in
its iterator, which the engine simply stops advancing) or "reprefill" (the
default: the engine closes the iterator, which frees the slot like a cancel,
and later calls ``resume`` with the prompt and the tokens generated so far).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

from qwend.errors import BackendUnavailable


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token. temperature 0 means greedy (argmax)."""

    temperature: float
    top_p: float
    seed: int | None = None


# How a running generation gives its slot to a higher-priority job (see ``Backend.suspend_mode``).
SuspendMode = Literal["keep", "reprefill"]


class Backend(ABC):
    """One loaded model. Not thread-safe: only the engine's thread calls it."""

    name: str

    def check(self) -> None:  # noqa: B027 (optional hook: the CPU backend needs no check)
        """Cheap start-up checks (the device, the library) before the daemon binds
        its socket. Raises BackendUnavailable saying what to do."""

    @abstractmethod
    def load(self) -> None:
        """Load weights and tokenizer. Raises ModelMissing or BackendUnavailable."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model's memory; ``load`` may be called again later."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Prompt plus generated tokens must fit in this many tokens."""

    @property
    @abstractmethod
    def stop_token_ids(self) -> frozenset[int]:
        """Token ids that end a generation (end of turn, end of text)."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Exact token ids for ``text``; special-token markup maps to its ids."""

    @property
    def max_concurrent(self) -> int:
        """How many jobs may run side by side.

        Above one, the engine advances every running job by one ``generate``
        step per round, and the backend batches those steps on the device.
        """
        return 1

    @property
    def suspend_mode(self) -> SuspendMode:
        """How a generation is suspended between two steps while another job runs.

        "keep": each ``generate`` iterator holds its own state (its KV cache),
        so several may be open at once; the engine just stops advancing a
        suspended one and advances it again on resume. Costs the suspended
        job's cache in memory, nothing in time.

        "reprefill" (the default; the contract for a single-context backend,
        which must implement nothing more): the engine closes the iterator,
        exactly as for a cancel, so the slot and its cache are free for the
        other job; on resume it calls ``resume``. Costs one prefill of prompt
        plus generated tokens, less what the backend's prefix reuse keeps.
        """
        return "reprefill"

    def resume(
        self,
        prompt_ids: list[int],
        generated_ids: list[int],
        sampling: Sampling,
        max_new_tokens: int,
    ) -> Generator[int, None, None]:
        """Continue a generation whose iterator a "reprefill" suspension closed.

        ``generated_ids`` were produced and delivered already; yield only the
        tokens after them, at most ``max_new_tokens``. The default runs
        ``generate`` over prompt plus generated tokens, so a backend that
        reuses a cached prefix (exllamav2, llama.cpp) pays only what its cache
        lost; one that can restore a saved sequence state overrides this.
        Greedy output continues exactly as an uninterrupted run would, up to the
        numerics of one batched prefill against token-by-token decoding; a
        seeded sampled run continues from a fresh generator state.
        """
        return self.generate([*prompt_ids, *generated_ids], sampling, max_new_tokens)

    @property
    def has_tokenizer(self) -> bool:
        """False for a backend that cannot count tokens exactly (budgets then fail,
        or estimate where configured)."""
        return True

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """``tokenize`` for many strings; backends override it to batch."""
        return [self.tokenize(text) for text in texts]

    @property
    def embedding_dim(self) -> int | None:
        """Length of ``embed``'s vectors (None when the model is not loaded)."""
        return None

    def embed(self, ids: list[int]) -> list[float]:
        """A unit-length vector for ``ids``. Raises BackendUnavailable if unsupported."""
        raise BackendUnavailable(f"the {self.name} backend does not compute embeddings")

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text for ``ids``, special tokens included as text."""

    @abstractmethod
    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        """Yield generated token ids one step at a time.

        The engine stops early by closing the iterator, so an implementation
        must hold no state outside it that a close would leave inconsistent.
        With ``max_concurrent`` above one, several of these iterators are open
        at once and are advanced in turn from the engine's one thread.
        Raises OutOfMemory when the device runs out of memory.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Device and memory facts for /v1/status (cheap; called off-thread)."""
