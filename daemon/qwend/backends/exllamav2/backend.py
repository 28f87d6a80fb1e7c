"""Engine: the GPU backend, an EXL2 (or fp16) model resident through exllamav2.

exllamav2's dynamic generator owns the KV cache and batches every running job
in one forward pass per ``iterate()``; jobmux.py joins it to the engine's one
token iterator per job.

Stop tokens are passed to exllamav2 too, so a finished job frees its cache
pages at once; stop strings, detokenization and cancellation stay with the
engine like for every backend. Prefix reuse needs nothing here: the generator
matches a new job's prompt against the cache (pages when paged, the previous
job otherwise).

Without flash-attn the generator runs one job at a time (``paged=False``),
and 0.3.2's non-flash prefill attention is not causal: attention.py patches
it. ``paged_attention = "torch"`` installs qwend's paged attention in plain
torch instead, which batches without flash-attn.

Preemption (engine/scheduling.py) uses the base class's "reprefill": with
paged attention a new job is simply batched beside the running ones, and a job
is suspended only when every slot is busy; suspending closes its stream, which
cancels the exllamav2 job and frees its cache for the new one, and resuming
enqueues prompt + generated tokens, whose prefix the generator reuses from
whatever pages are still cached (unpaged: none, a full re-prefill).

torch and exllamav2 are imported in ``load`` only.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qwend.backends.base import Backend, Sampling
from qwend.backends.exllamav2 import cuda as cuda_env
from qwend.backends.exllamav2.jobmux import JobMux, is_out_of_memory, release_cached_memory
from qwend.backends.exllamav2.limits import EXL2_PAGE_TOKENS, EXL2_QUERY_TOKENS
from qwend.backends.folder import require_complete
from qwend.backends.tokens import TokenizedByPair, TokenizerPair
from qwend.errors import BackendUnavailable, ModelNotLoaded

if TYPE_CHECKING:
    from qwend.config import ModelProfile

log = logging.getLogger(__name__)

MAX_Q_SIZE: Final = EXL2_QUERY_TOKENS  # sizes the pinned logits buffer per slot
UNPAGED_BATCH: Final = 1  # without paged attention the dynamic generator takes one job
CACHE_CLASSES: Final = {
    "fp16": "ExLlamaV2Cache",
    "q8": "ExLlamaV2Cache_Q8",
    "q6": "ExLlamaV2Cache_Q6",
    "q4": "ExLlamaV2Cache_Q4",
}


def stop_ids_from_folder(folder: Path, tokenizer: Any) -> frozenset[int]:
    """End-of-turn and end-of-text ids: generation_config.json, config.json, and
    tokenizer_config.json's eos_token, whichever name them."""
    found: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if not path.is_file():
            continue
        configured = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        if isinstance(configured, int):
            found.add(configured)
        elif isinstance(configured, list):
            found.update(int(i) for i in configured)
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        eos = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and tokenizer.token_to_id(eos) is not None:
            found.add(int(tokenizer.token_to_id(eos)))
    return frozenset(found)


@dataclass(frozen=True)
class _Loaded:
    """Everything a load creates; dropping it is what frees the GPU memory."""

    model: Any
    cache: Any
    generator: Any
    mux: JobMux
    version: str
    paged: str  # "flash_attn", "torch" or "off"
    cache_tokens: int
    max_batch_size: int
    device_name: str
    memory_total_bytes: int


class ExLlamaV2Backend(TokenizedByPair, Backend):
    name = "exllamav2"

    def __init__(self, model_dir: Path, profile: ModelProfile, *, profile_name: str) -> None:
        self.model_dir = model_dir
        self.profile = profile
        self.profile_name = profile_name
        self._context_length = profile.context_length
        self._tokenizer: Any = None
        self._tokens: TokenizerPair | None = None
        self._stop_ids: frozenset[int] = frozenset()
        self._loaded: _Loaded | None = None

    # -- start-up ------------------------------------------------------------

    def check(self) -> None:
        require_gpu_backend(self.profile_name)

    def load(self) -> None:
        require_complete(self.model_dir, f"qwend pull {self.profile_name}")
        gpu = cuda_env.require_gpu(self.profile_name)
        version = cuda_env.require_exllamav2(self.profile_name)
        chosen = cuda_env.prepare_build_env(gpu.capability)
        if chosen:
            log.info("build environment for exllamav2: %s", chosen)
        paged = self._choose_attention()
        self._tokenizer = _read_tokenizer(self.model_dir)
        self._tokens = TokenizerPair(self._tokenizer)
        self._stop_ids = stop_ids_from_folder(self.model_dir, self._tokenizer)
        if cuda_env.built_extension() is None:
            log.warning(
                "building exllamav2's CUDA extension for %s (first start only; minutes). "
                "`qwend doctor --build` shows its progress.",
                gpu.name,
            )
        started = time.monotonic()
        try:
            self._loaded = self._load_model(paged, version, gpu)
        except Exception as exc:
            self._loaded = None
            gc.collect()
            if is_out_of_memory(exc):
                release_cached_memory()
                raise BackendUnavailable(
                    f"model '{self.profile_name}' does not fit in the GPU's free memory "
                    f"({gpu.memory_free_bytes / 2**30:.1f} GiB of "
                    f"{gpu.memory_total_bytes / 2**30:.1f} GiB)",
                    hint='lower cache_tokens, use cache_type = "q4", or free the GPU',
                ) from exc
            raise
        log.info(
            "exllamav2 %s: %s on %s in %.1fs, %d cache tokens (%s), attention %s, batch %d",
            version,
            self.model_dir.name,
            gpu.name,
            time.monotonic() - started,
            self._loaded.cache_tokens,
            self.profile.cache_type,
            paged,
            self._loaded.max_batch_size,
        )

    def _choose_attention(self) -> str:
        """Which attention the generator pages with; installs the torch stand-in.

        Runs before exllamav2 is imported: it looks for flash-attn at import.
        """
        from qwend.backends.exllamav2 import attention as exl2_attention

        wanted = self.profile.paged_attention
        has_flash = cuda_env.flash_attn_version() is not None
        if wanted == "flash_attn" and not has_flash:
            raise BackendUnavailable(
                f"model profile '{self.profile_name}' asks for paged_attention = "
                '"flash_attn", and flash-attn is not installed',
                hint='install flash-attn, or set paged_attention = "torch" or "auto"',
            )
        if wanted == "off":
            return "off"
        if has_flash:  # the real kernels, whichever of auto/flash_attn/torch was asked
            return "flash_attn"
        if wanted == "torch":
            exl2_attention.install_flash_attn_shim()
            return "torch"
        return "off"  # auto without flash-attn: one request at a time

    def _load_model(self, paged: str, version: str, gpu: cuda_env.GpuFacts) -> _Loaded:
        import exllamav2
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        from qwend.backends.exllamav2 import attention as exl2_attention

        exl2_attention.patch_causal_prefill()
        profile = self.profile
        config = exllamav2.ExLlamaV2Config(str(self.model_dir))
        self._context_length = min(profile.context_length, int(config.max_seq_len))
        config.max_seq_len = self._context_length
        config.max_input_len = profile.prefill_chunk_tokens
        config.max_attention_size = profile.prefill_chunk_tokens**2
        config.arch_compat_overrides()
        if paged != "off" and config.no_flash_attn:  # softcap or sliding window, or
            log.warning(  # EXLLAMA_NO_FLASH_ATTN: this model cannot page; visible in status
                "%s cannot use paged attention (flash-attn disabled for it); "
                "serving one request at a time",
                self.model_dir.name,
            )
            paged = "off"
        model = exllamav2.ExLlamaV2(config)
        cache_tokens = kv_cache_tokens(profile, self._context_length)
        cache = getattr(exllamav2, CACHE_CLASSES[profile.cache_type])(
            model, max_seq_len=cache_tokens, lazy=True
        )
        model.load_autosplit(cache, progress=True)
        batch = profile.max_batch_size if paged != "off" else UNPAGED_BATCH
        generator = ExLlamaV2DynamicGenerator(
            model=model,
            cache=cache,
            tokenizer=exllamav2.ExLlamaV2Tokenizer(config),
            max_batch_size=batch,
            max_chunk_size=profile.prefill_chunk_tokens,
            max_q_size=MAX_Q_SIZE,
            paged=paged != "off",
        )
        generator.warmup()
        return _Loaded(
            model=model,
            cache=cache,
            generator=generator,
            mux=JobMux(generator),
            version=version,
            paged=paged,
            cache_tokens=cache_tokens,
            max_batch_size=batch,
            device_name=gpu.name,
            memory_total_bytes=gpu.memory_total_bytes,
        )

    def unload(self) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        loaded.model.unload()
        del loaded
        gc.collect()
        release_cached_memory()

    # -- Backend -------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def max_concurrent(self) -> int:
        return self._loaded.max_batch_size if self._loaded is not None else UNPAGED_BATCH

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self._stop_ids

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, max_new_tokens: int
    ) -> Generator[int, None, None]:
        if self._loaded is None:
            raise ModelNotLoaded("the model is not loaded")
        stops = sorted(self._stop_ids)

        def make_job(identifier: int) -> Any:
            return dynamic_job(prompt_ids, sampling, max_new_tokens, stops, identifier)

        return self._loaded.mux.stream(make_job)

    def describe(self) -> dict[str, Any]:
        loaded = self._loaded
        if loaded is None:
            return {"device": "cuda"}
        import torch

        return {
            "device": "cuda:0",
            "exllamav2": loaded.version,
            "cache_type": self.profile.cache_type,
            "cache_tokens": loaded.cache_tokens,
            "paged_attention": loaded.paged,
            "max_batch_size": loaded.max_batch_size,
            "prefix_cache": {
                "cached_tokens": loaded.mux.cached_tokens_total,
                "prompt_tokens": loaded.mux.prompt_tokens_total,
            },
            "cuda": {
                "device_name": loaded.device_name,
                "memory_total_bytes": loaded.memory_total_bytes,
                "memory_allocated_bytes": int(torch.cuda.memory_allocated()),
                "memory_peak_bytes": int(torch.cuda.max_memory_allocated()),
            },
        }


def require_gpu_backend(profile_name: str) -> None:
    """Fail fast, before the daemon binds its socket, if this machine cannot run it."""
    cuda_env.require_exllamav2(profile_name)
    cuda_env.require_gpu(profile_name)


def kv_cache_tokens(profile: ModelProfile, context_length: int) -> int:
    """The cache's token pool: configured, else one full context, in whole pages."""
    wanted = profile.cache_tokens or context_length
    return -(-wanted // EXL2_PAGE_TOKENS) * EXL2_PAGE_TOKENS


def sampler_settings(sampling: Sampling) -> Any:
    """exllamav2 sampler settings that do only what ``sampling`` says.

    exllamav2's defaults add top-k 50 and a 1.025 repetition penalty; both are
    turned off, so temperature 0 is plain argmax like on the CPU backend.
    """
    from exllamav2.generator import ExLlamaV2Sampler

    if sampling.temperature == 0:
        return ExLlamaV2Sampler.Settings.greedy()
    return ExLlamaV2Sampler.Settings(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=0,
        min_p=0.0,
        token_repetition_penalty=1.0,
    )


def dynamic_job(
    prompt_ids: list[int],
    sampling: Sampling,
    max_new_tokens: int,
    stop_ids: list[int],
    identifier: int,
) -> Any:
    """An exllamav2 job for one request. Stop ids end it inside exllamav2 (its
    pages free at once); the engine still sees the stop token and ends the stream."""
    import torch
    from exllamav2.generator import ExLlamaV2DynamicJob

    return ExLlamaV2DynamicJob(
        input_ids=torch.tensor([prompt_ids], dtype=torch.long),
        max_new_tokens=max_new_tokens,
        gen_settings=sampler_settings(sampling),
        stop_conditions=stop_ids,
        decode_special_tokens=True,
        identifier=identifier,
        seed=sampling.seed,
    )


def _read_tokenizer(folder: Path) -> Any:
    """The model's own tokenizer.json through HF tokenizers (exact, batched, thread-safe)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))
