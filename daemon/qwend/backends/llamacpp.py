"""Engine: the CPU backend for GGUF models, llama.cpp through llama-cpp-python.

The GGUF file is loaded as it is (quantized weights, its own tokenizer and
end-of-generation tokens), so nothing is converted and decode runs on
llama.cpp's quantized CPU kernels.

One llama.cpp context holds one sequence's KV cache, and it outlives the
request: the next prompt is compared with the tokens the cache holds, and
only the tokens after the shared prefix are evaluated (an editor's next
keystroke re-evaluates only what changed). The figures are in ``describe``
under ``prefix_cache``, like the exllamav2 backend's.

The engine drives it like every backend: ``generate`` yields one token per
step (the engine streams it, checks stops and cancellation between steps),
and a closed iterator leaves the cache consistent, because the tokens the
cache holds are recorded after every evaluation.

llama_cpp is imported in ``load`` only: the CLI never pays for it.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.metadata
import importlib.util
import logging
import os
import re
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Final

from qwend.backends.base import Backend, Sampling
from qwend.backends.folder import gguf_file, missing_files
from qwend.errors import (
    BackendUnavailable,
    GenerationFailed,
    ModelMissing,
    ModelNotLoaded,
    OutOfMemory,
)

log = logging.getLogger(__name__)

NAME: Final = "llama.cpp"
# Prompt tokens per llama_decode call while prefilling (llama.cpp's own default).
BATCH_TOKENS: Final = 512
# Bytes for one decoded text; llama.cpp says how many it needs when that is too few.
DETOKENIZE_BUFFER_BYTES: Final = 1024
# llama_decode's return codes that mean memory ran out (llama.h: 1 is "no KV slot for
# the batch", -2 and -3 failed allocations); any other non-zero code is a plain failure.
DECODE_OUT_OF_MEMORY: Final = frozenset({1, -2, -3})
# The sampler's seed when a request gives none (llama.cpp draws a random one).
RANDOM_SEED: Final = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED
INSTALL_HINT: Final = "pip install -e '.[cpu]' (builds llama.cpp: about 6 minutes on 2 cores)"


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python, or None (cheap: no import)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def common_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens ``cached`` and ``prompt`` share."""
    shared = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        shared += 1
    return shared


class LlamaCppBackend(Backend):
    name = NAME

    def __init__(
        self, location: Path, *, context_length: int, threads: int, pull_hint: str
    ) -> None:
        self.location = location  # the profile's folder, or a .gguf file
        self._context_length = context_length
        self._threads = threads
        self._pull_hint = pull_hint
        self._llm: Any = None
        self._gguf: Path | None = None
        self._stop_ids: frozenset[int] = frozenset()
        self._version = ""
        self._load_threads = (0, 0)
        self._vocab_size = 0
        self._markup: dict[str, int] = {}  # the added tokens' text -> id
        self._markup_re: re.Pattern[str] | None = None
        # Prefix reuse, for /v1/status: totals over all requests, and the last request.
        self._prompt_total = 0
        self._cached_total = 0
        self._last: dict[str, int] | None = None

    # -- start-up ------------------------------------------------------------

    def check(self) -> None:
        if llama_cpp_version() is None:
            raise BackendUnavailable(
                "the llama.cpp backend needs llama-cpp-python, which is not installed",
                hint=INSTALL_HINT,
            )

    def load(self) -> None:
        gguf = gguf_file(self.location)
        if gguf is None:
            missing = ", ".join(missing_files(self.location, NAME))
            raise ModelMissing(
                f"the model is not in {self.location} (missing {missing})",
                hint=f"run: {self._pull_hint}",
            )
        self.check()
        started = time.monotonic()
        import llama_cpp

        self._version = llama_cpp.__version__
        threads = thread_counts(self._threads)
        llm = _open(llama_cpp, gguf, self._context_length, threads)
        trained = int(llm._model.n_ctx_train())
        if 0 < trained < self._context_length:
            # As the transformers backend does: never past what the model was trained on.
            llm.close()
            self._context_length = trained
            llm = _open(llama_cpp, gguf, trained, threads)
        self._vocab_size = int(llm.n_vocab())
        self._stop_ids, self._markup = _special_tokens(
            llama_cpp, llm._model.vocab, self._vocab_size
        )
        self._markup_re = (
            re.compile("|".join(re.escape(t) for t in sorted(self._markup, key=len, reverse=True)))
            if self._markup
            else None
        )
        self._llm, self._gguf, self._load_threads = llm, gguf, threads
        self._reset_cache()
        log.info(
            "llama.cpp %s: %s (%s, %d MB) in %.2fs, context %d, %d decode / %d prompt threads",
            self._version,
            gguf.name,
            llm._model.desc(),
            llm._model.size() // 2**20,
            time.monotonic() - started,
            self._context_length,
            *threads,
        )

    def unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()
            del llm
            gc.collect()

    # -- Backend -------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self._stop_ids

    def tokenize(self, text: str) -> list[int]:
        """Request text as plain text (backends/base.py): the GGUF's own
        tokenizer, no BOS, and never an added token.

        llama.cpp matches user-defined added tokens (Qwen2.5's FIM markers)
        even with special parsing off, so each spot where the text spells one
        is tokenized in two halves, which no added token can match: typed
        ``<|fim_middle|>`` stays the ordinary tokens that spell it.
        """
        model = self._model()
        ids: list[int] = []
        done = 0
        for found in self._markup_re.finditer(text) if self._markup_re else ():
            if found.start() > done:
                ids += model.tokenize(text[done : found.start()].encode("utf-8"), False, False)
            half = (found.end() - found.start()) // 2
            for piece in (
                text[found.start() : found.start() + half],
                text[found.start() + half : found.end()],
            ):
                ids += model.tokenize(piece.encode("utf-8"), False, False)
            done = found.end()
        if done < len(text):
            ids += model.tokenize(text[done:].encode("utf-8"), False, False)
        return ids

    def tokenize_markup(self, marker: str) -> list[int]:
        """A template marker: the model's added token for it (chat and FIM markup).

        llama.cpp's own special parsing is not used for the rest: it would also
        turn ordinary vocabulary entries that look like markup into control
        tokens (Qwen2.5's "</s>", which HTML uses).
        """
        if marker in self._markup:
            return [self._markup[marker]]
        return [int(i) for i in self._model().tokenize(marker.encode("utf-8"), False, False)]

    def decode(self, ids: list[int]) -> str:
        import llama_cpp

        if not ids:
            return ""
        if min(ids) < 0 or max(ids) >= self._vocab_size:
            # llama.cpp aborts the whole process on an id outside its vocabulary.
            raise GenerationFailed(f"token ids must be 0 to {self._vocab_size - 1}")
        tokens = (llama_cpp.llama_token * len(ids))(*ids)
        size = DETOKENIZE_BUFFER_BYTES
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(
                self._model().vocab, tokens, len(ids), buffer, size, False, True
            )
            if n >= 0:
                return buffer.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        llm = self._llm
        if llm is None:
            raise GenerationFailed("the model is not loaded")
        if not prompt_ids:
            raise GenerationFailed(
                "the prompt is empty: there is nothing to continue",
                hint="send at least one token of prompt",
            )
        # The last prompt token is evaluated again even when all of it is cached:
        # its logits pick the first new token.
        held = [int(i) for i in llm.input_ids[: llm.n_tokens]]
        reused = min(common_prefix(held, prompt_ids), len(prompt_ids) - 1)
        self._record(len(prompt_ids), reused)
        sampler = _sampler(sampling)
        try:
            llm.n_tokens = reused  # eval() drops the cache from here on
            self._eval(prompt_ids[reused:])
            for step in range(1, max_new_tokens + 1):
                token = int(sampler.sample(llm._ctx, -1))
                yield token
                if step < max_new_tokens:  # the last one is never needed as input
                    self._eval([token])
        finally:
            sampler.close()

    def _eval(self, ids: list[int]) -> None:
        """Evaluate ``ids`` after the cached tokens; on failure the cache is emptied."""
        try:
            self._llm.eval(ids)
        except RuntimeError as exc:
            self._reset_cache()
            code = _decode_code(exc)
            if code in DECODE_OUT_OF_MEMORY:
                raise OutOfMemory(
                    f"llama.cpp ran out of memory for this request (llama_decode {code})",
                    hint="retry with a shorter prompt or max_tokens, or lower the profile's "
                    "context_length",
                ) from exc
            raise GenerationFailed(f"llama.cpp failed: {exc}", hint="see the daemon log") from exc

    def _reset_cache(self) -> None:
        llm = self._llm
        if llm is not None:
            llm.n_tokens = 0
            llm._ctx.kv_cache_clear()

    def _record(self, prompt_tokens: int, cached: int) -> None:
        self._prompt_total += prompt_tokens
        self._cached_total += cached
        self._last = {
            "prompt_tokens": prompt_tokens,
            "cached_tokens": cached,
            "evaluated_tokens": prompt_tokens - cached,
        }

    @property
    def embedding_dim(self) -> int | None:
        return None if self._llm is None else int(self._llm.n_embd())

    def embed(self, ids: list[int]) -> list[float]:
        """Mean of the final hidden states over the tokens, L2-normalized: the
        transformers backend's recipe, from the same llama.cpp context.

        The context is switched to embedding output for the call and its KV
        cache emptied, so the next completion evaluates its prompt in full.
        """
        import llama_cpp
        import numpy as np

        llm = self._llm
        if llm is None:
            raise GenerationFailed("the model is not loaded")
        ctx = llm._ctx
        width = int(llm.n_embd())
        total = np.zeros(width, dtype=np.float64)
        self._reset_cache()
        llama_cpp.llama_set_embeddings(ctx.ctx, True)
        try:
            for start in range(0, len(ids), llm.n_batch):
                chunk = ids[start : start + llm.n_batch]
                llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
                try:
                    ctx.decode(llm._batch)
                except RuntimeError as exc:
                    raise GenerationFailed(f"llama.cpp failed to embed: {exc}") from exc
                rows = np.ctypeslib.as_array(ctx.get_embeddings(), shape=(len(chunk) * width,))
                total += rows.reshape(len(chunk), width).sum(axis=0, dtype=np.float64)
        finally:
            llama_cpp.llama_set_embeddings(ctx.ctx, False)
            self._reset_cache()
        norm = float(np.linalg.norm(total))
        return [float(x) for x in (total / norm if norm else total)]

    def describe(self) -> dict[str, Any]:
        llm = self._llm
        if llm is None:
            return {"device": "cpu"}
        return {
            "device": "cpu",
            "threads": self._load_threads[0],
            "threads_prompt": self._load_threads[1],
            "llama_cpp": self._version,
            "gguf": str(self._gguf),
            "weights": str(llm._model.desc()),
            "weights_bytes": int(llm._model.size()),
            "kv_cache_tokens": int(llm.n_tokens),
            "prefix_cache": {
                "cached_tokens": self._cached_total,
                "prompt_tokens": self._prompt_total,
                "evaluated_tokens": self._prompt_total - self._cached_total,
                "last_request": self._last,
            },
        }

    def _model(self) -> Any:
        if self._llm is None:
            raise GenerationFailed("the model is not loaded")
        return self._llm._model


def thread_counts(configured: int) -> tuple[int, int]:
    """(decode, prompt) threads: the profile's ``threads`` for both, or with 0
    llama-cpp-python's own defaults, half the cores for decode and all of them
    for prompt evaluation.

    Decode runs one small matrix-vector step per token, with a barrier
    between llama.cpp's operations where every thread spins until the others
    arrive; when other processes hold the cores, a thread that is not running
    stalls all of them (docs/benchmarks.md measured 0.3 tokens/s with two
    threads against 6 with one on a busy 2-core machine).
    """
    if configured:
        return configured, configured
    cores = len(os.sched_getaffinity(0))
    return max(1, cores // 2), cores


def _open(llama_cpp: Any, gguf: Path, context_length: int, threads: tuple[int, int]) -> Any:
    """A llama.cpp model and context; load failures become qwend errors."""
    try:
        return llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=context_length,
            n_batch=BATCH_TOKENS,
            n_threads=threads[0],
            n_threads_batch=threads[1],
            verbose=False,
        )
    except ValueError as exc:
        if "context" in str(exc):
            raise OutOfMemory(
                f"llama.cpp could not create a {context_length}-token context for {gguf.name} "
                f"({exc}): most likely too little free memory",
                hint="lower the profile's context_length, or free memory",
            ) from exc
        raise ModelNotLoaded(
            f"llama.cpp could not load {gguf} ({exc})",
            hint="the file may be incomplete, or of an architecture this llama-cpp-python "
            "does not know; pull it again with --force",
        ) from exc


def _special_tokens(
    llama_cpp: Any, vocab: Any, n_vocab: int
) -> tuple[frozenset[int], dict[str, int]]:
    """The end-of-generation ids, and the added tokens by text, in one pass.

    Added tokens are the GGUF's control and user-defined tokens as the file
    stores them: what a Hugging Face tokenizer splits a text on before BPE.
    llama.cpp also promotes ordinary vocabulary entries that read like markup
    (Qwen2.5's "</s>", which HTML uses) to control tokens that end generation;
    those keep their "normal" attribute, are text, and are left out of both.
    For Qwen2.5 the stops are <|endoftext|>, <|im_end|> and the fill-in-the-
    middle pad, repo and file separators.
    """
    markup = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    normal = llama_cpp.LLAMA_TOKEN_ATTR_NORMAL
    stops: set[int] = set()
    added: dict[str, int] = {}
    for i in range(n_vocab):
        attr = llama_cpp.llama_vocab_get_attr(vocab, i)
        if attr & normal or not attr & markup:
            continue
        if llama_cpp.llama_vocab_is_eog(vocab, i):
            stops.add(i)
        text = llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")
        if text:
            added.setdefault(text, i)
    return frozenset(stops), added


def _sampler(sampling: Sampling) -> Any:
    """llama.cpp's sampler chain doing only what ``sampling`` says: argmax at
    temperature 0, else temperature then nucleus (top_p), as the transformers
    backend samples (no top-k, min-p or repetition penalty)."""
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    if sampling.temperature == 0:
        sampler.add_greedy()
        return sampler
    sampler.add_temp(sampling.temperature)
    if sampling.top_p < 1.0:
        sampler.add_top_p(sampling.top_p, 1)
    seed = RANDOM_SEED if sampling.seed is None else sampling.seed % RANDOM_SEED
    sampler.add_dist(seed)
    return sampler


def _decode_code(exc: RuntimeError) -> int | None:
    """llama_decode's return code from llama-cpp-python's "llama_decode returned N"."""
    text = str(exc)
    if "llama_decode returned" not in text:
        return None
    try:
        return int(text.rsplit(" ", 1)[-1])
    except ValueError:
        return None
