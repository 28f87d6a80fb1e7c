"""Engine: the small interface every model backend implements.

A backend only runs the model: load, tokenize, decode, and yield one token id
per step. The engine (engine.py) owns the thread, the queue, stop strings,
detokenization, cancellation and statistics, so each backend stays small and
any backend gets the same behaviour.

Tokenization contract (every backend, llama.cpp's included):

- ``tokenize(text)`` is for text that came from a request (a chat message, a
  file's code, a raw prompt) and for the template's plain words. It never
  yields an added token, special or not: ``<|im_end|>`` or ``<|fim_middle|>``
  typed in a message becomes the ordinary tokens that spell it, so user text
  can neither close a turn nor forge a system turn or a FIM window. No BOS or
  other token is added either.
- ``tokenize_markup(marker)`` is for the template's own control markers
  (``<|im_start|>``, ``<|fim_prefix|>``, ...): added tokens map to their ids.
- ``encode(prompt)`` tokenizes a rendered ``Prompt``: each run of plain text
  with ``tokenize``, each marker with ``tokenize_markup``, concatenated. For
  text holding no marker this equals tokenizing the joined string with
  markup parsing on (tokenizers split at added tokens before anything else),
  so budgets counted with ``encode`` are exactly what the model receives.

With HF ``tokenizers`` the plain tokenizer is ``tokens.plain_tokenizer`` (every
added token flagged special, ``encode_special_tokens`` on); with llama.cpp it
is ``llama_tokenize(..., add_special=False, parse_special=False)`` and the
markup form ``parse_special=True``.

A backend whose model runs elsewhere (the remote backend: an engine behind
HTTP) receives text, not token ids, and says so with ``streams_text``: the
engine then calls ``generate_text`` and skips only the detokenizer; stops,
cancellation and statistics stay the engine's. Re-encoding the received text
into ids just to decode them again would cost a tokenizer pass per piece and
could split differently from the engine's own ids.

Preemption (engine/scheduling.py) suspends a running generation between two
token steps so a higher-priority job can have its slot. How a backend gives
the slot up is its ``suspend_mode``: "keep" (the generation's state stays in
its iterator, which the engine simply stops advancing) or "reprefill" (the
default: the engine closes the iterator, which frees the slot like a cancel,
and later calls ``resume`` with the prompt and the tokens generated so far).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from qwend.errors import BackendUnavailable


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token. temperature 0 means greedy (argmax)."""

    temperature: float
    top_p: float
    seed: int | None = None


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: its text, and which pieces of it are template markers.

    Only marker pieces may become added tokens; everything else, request text
    and the template's own words alike, is plain text. Build one with
    ``Prompt.marker(...)`` and ``+`` (a ``str`` operand is plain text), so the
    origin of every character is kept; never by parsing a joined string,
    which is exactly what would let user text forge markup.
    """

    pieces: tuple[tuple[str, bool], ...] = ()  # (text, is_marker)

    @classmethod
    def plain(cls, text: str) -> Prompt:
        return cls(((text, False),))

    @classmethod
    def marker(cls, text: str) -> Prompt:
        return cls(((text, True),))

    @classmethod
    def join(cls, parts: Iterable[Prompt | str]) -> Prompt:
        pieces: list[tuple[str, bool]] = []
        for part in parts:
            pieces.extend(part.pieces if isinstance(part, Prompt) else [(part, False)])
        return cls(tuple(pieces))

    def __add__(self, other: Prompt | str) -> Prompt:
        return Prompt.join((self, other))

    def __radd__(self, other: str) -> Prompt:
        return Prompt.join((other, self))

    @property
    def text(self) -> str:
        """The joined text (for logs and tests; never tokenize it whole)."""
        return "".join(text for text, _ in self.pieces)

    def runs(self) -> list[tuple[str, bool]]:
        """Adjacent plain pieces merged into one run, empty pieces dropped: the
        units ``Backend.encode`` tokenizes."""
        runs: list[tuple[str, bool]] = []
        for text, is_marker in self.pieces:
            if not text:
                continue
            if runs and not is_marker and not runs[-1][1]:
                runs[-1] = (runs[-1][0] + text, False)
            else:
                runs.append((text, is_marker))
        return runs


@dataclass(frozen=True)
class TextPiece:
    """One step of a text-streaming backend.

    ``tokens`` is how many generated tokens the piece stands for (the usage
    count); ``finish`` is the engine's finish_reason ("stop", "length") on
    the last piece, when the engine ended the generation itself.
    """

    text: str
    tokens: int = 1
    finish: str | None = None


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
        """Exact token ids for plain ``text``: never an added token (see the module)."""

    @abstractmethod
    def tokenize_markup(self, marker: str) -> list[int]:
        """Token ids for a template marker: added tokens map to their ids."""

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a rendered prompt: plain runs with ``tokenize`` (in one
        batch), markers with ``tokenize_markup``."""
        runs = prompt.runs()
        plain = iter(self.tokenize_batch([text for text, is_marker in runs if not is_marker]))
        ids: list[int] = []
        for text, is_marker in runs:
            ids.extend(self.tokenize_markup(text) if is_marker else next(plain))
        return ids

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
        """``tokenize`` (plain text) for many strings; backends override it to batch."""
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

    @property
    def streams_text(self) -> bool:
        """True for a backend that yields text (``generate_text``), not token ids."""
        return False

    def generate_text(
        self,
        prompt: str,
        prompt_ids: list[int],
        sampling: Sampling,
        max_new_tokens: int,
        stops: tuple[str, ...],
    ) -> Generator[TextPiece | None, None, None]:
        """Yield the answer as text pieces; None when nothing has arrived yet.

        Only for ``streams_text`` backends. A step never blocks: the engine
        advances every running job in turn, so one job waiting on the network
        must not hold up the others (``wait_for_output`` is where it waits).
        ``stops`` may be passed on so the engine stops early; the engine
        still matches them itself. Closing the iterator ends the request.
        """
        raise BackendUnavailable(f"the {self.name} backend yields token ids, not text")

    def remote_health(self) -> dict[str, Any] | None:
        """The engine behind a remote backend as last seen (for /health); None here."""
        return None

    def wait_for_output(self, timeout: float) -> None:  # noqa: B027 (token backends never wait)
        """Block up to ``timeout`` seconds until some running ``generate_text``
        has a piece ready; the engine calls it when a round produced nothing."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Device and memory facts for /v1/status (cheap; called off-thread)."""
