"""Engine: the CPU backend, Hugging Face transformers on torch.

Loads a safetensors model folder (as written by ``qwend pull``) and runs it
token by token with its KV cache, so the engine can stop after any step.
torch and transformers are imported in ``load`` only: the CLI never pays for
them.

Each ``generate`` iterator owns its KV cache and sampling generator, so a
suspended job keeps them and resumes where it stopped (``suspend_mode`` is
"keep"): a preempted job costs memory for its cache, no recomputation.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from qwend.backends.base import Backend, Sampling, SuspendMode
from qwend.backends.folder import require_complete
from qwend.backends.tokens import TokenizedByPair, TokenizerPair
from qwend.errors import OutOfMemory

log = logging.getLogger(__name__)


class TransformersBackend(TokenizedByPair, Backend):
    name = "transformers"

    def __init__(
        self, model_dir: Path, *, context_length: int, threads: int, pull_hint: str
    ) -> None:
        self.model_dir = model_dir
        self._context_length = context_length
        self._threads = threads
        self._pull_hint = pull_hint
        self._model: Any = None
        self._tokenizer: Any = None
        self._tokens: TokenizerPair | None = None
        self._stop_ids: frozenset[int] = frozenset()
        self._weights_bytes = 0
        self._cache_argument = "past_key_values"

    def load(self) -> None:
        require_complete(self.model_dir, self._pull_hint)
        # The folder is local; make sure nothing ever asks a hub for it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.monotonic()
        import torch
        from transformers import AutoModelForCausalLM

        if self._threads:
            torch.set_num_threads(self._threads)
        log.info("load: torch and transformers imported in %.2fs", time.monotonic() - started)
        step = time.monotonic()
        self.load_tokenizer()
        log.info("load: tokenizer read in %.2fs", time.monotonic() - step)
        step = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, local_files_only=True, dtype=torch.float32
        )
        self._model = model.eval()
        log.info("load: weights read in %.2fs", time.monotonic() - step)
        self._cache_argument = _cache_argument(model)
        self._stop_ids = frozenset(_eos_ids(self._model.generation_config, self._tokenizer))
        self._weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        model_limit = getattr(model.config, "max_position_embeddings", self._context_length)
        self._context_length = min(self._context_length, int(model_limit))

    def load_tokenizer(self) -> None:
        """The folder's tokenizer alone (``load`` calls it; tests use it without weights)."""
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self._tokens = TokenizerPair(self._tokenizer.backend_tokenizer)

    def unload(self) -> None:
        self._model = None
        self._tokenizer = None
        self._tokens = None

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self._stop_ids

    @property
    def suspend_mode(self) -> SuspendMode:
        return "keep"  # every generate() iterator holds its own past_key_values

    @property
    def embedding_dim(self) -> int | None:
        return None if self._model is None else int(self._model.config.hidden_size)

    def embed(self, ids: list[int]) -> list[float]:
        """Mean of the final hidden states over the tokens, L2-normalized.

        A decoder's pooled hidden state is a usable similarity signal for code
        search and deduplication, not a trained embedding model; see docs/api.md.
        """
        import torch

        with torch.inference_mode():
            hidden = self._model.base_model(input_ids=torch.tensor([ids])).last_hidden_state
            pooled = torch.nn.functional.normalize(hidden[0].float().mean(dim=0), dim=0)
        return [float(x) for x in pooled]

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        import torch

        generator = torch.Generator()
        generator.manual_seed(sampling.seed if sampling.seed is not None else time.time_ns())
        past = None
        inputs = torch.tensor([prompt_ids], dtype=torch.long)
        for _ in range(max_new_tokens):
            # Inference mode is entered per step, never held across a yield: a
            # suspended iterator must not leave the thread in (or out of) it
            # while another job's iterator runs.
            with torch.inference_mode():
                try:
                    out = self._model(
                        input_ids=inputs, **{self._cache_argument: past}, use_cache=True
                    )
                except RuntimeError as exc:  # torch reports host OOM as RuntimeError
                    if "out of memory" in str(exc).lower():
                        raise OutOfMemory("the CPU ran out of memory for this request") from exc
                    raise
                past = getattr(out, self._cache_argument)
                token = _pick(out.logits[0, -1], sampling, generator)
            yield token
            inputs = torch.tensor([[token]], dtype=torch.long)

    def describe(self) -> dict[str, Any]:
        import torch

        return {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "weights_bytes": self._weights_bytes,
            "dtype": "float32",
        }


def _cache_argument(model: Any) -> str:
    """The name the model's forward takes its KV cache under, and its output returns it
    under: ``cache`` from transformers 5.24 (which deprecates ``past_key_values``, with
    a FutureWarning per call), ``past_key_values`` before."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _pick(logits: Any, sampling: Sampling, generator: Any) -> int:
    """Greedy at temperature 0, else temperature plus nucleus (top_p) sampling."""
    import torch

    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > sampling.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
