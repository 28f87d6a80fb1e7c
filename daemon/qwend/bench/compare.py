"""Editor: the side-by-side figures of ``qwend bench --compare``.

- The memory-bandwidth bound: batch-1 decode reads every weight once per
  token (the embedding only one row, unless the head shares it), plus the KV
  cache so far; a card cannot decode faster than its bandwidth over those
  bytes. Bytes come from the model folder's safetensors headers, so EXL2
  bits per weight are counted as stored.
- Raw exllamav2 on the same model folder without the daemon: what the daemon
  costs. It needs CUDA; elsewhere it is skipped and says so.
- Hugging Face transformers ``generate``, what a user would otherwise run:
  on a GPU a bf16 model with the same config (random weights: the speed is
  the same), on the CPU the daemon's own model folder as it is stored (a
  GGUF folder is dequantized to fp32 by transformers at load).
- Raw llama-cpp-python on the same GGUF file without the daemon (CPU): what
  the daemon costs on the llama.cpp backend. It needs a GGUF in the folder.

Both CPU sides also time a keystroke: a prompt that extends the previous one
by a few tokens, once evaluated in full and once after the previous prompt's
KV cache (prefix reuse), plus load time and resident memory.

Each runs in this process after the daemon measurements, one at a time.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import statistics
import struct
import time
from pathlib import Path
from typing import Any, Final

from qwend.bench.measure import DECODE_PROMPT

# Peak memory bandwidth by device name, in TB/s (NVIDIA's datasheets). First
# match wins, so the more specific names come first; torch calls the H100 SXM
# "NVIDIA H100 80GB HBM3".
CARD_BANDWIDTH_TBPS: Final = (
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),
    ("RTX 4090", 1.008),
    ("RTX 3090", 0.936),
)
KEYSTROKE_TOKENS: Final = 2  # what one typed character adds to a prompt, at most
KV_BYTES_PER_VALUE: Final = 2  # fp16 cache, what both backends use by default
SAFETENSORS_HEADER_BYTES: Final = 8  # little-endian u64 length of the JSON header
RAW_CACHE_POOL_ROUND: Final = 256  # exllamav2's page size: the cache length is a multiple


def card_bandwidth(device_name: str | None) -> float | None:
    """Bytes per second for a known card, else None."""
    if not device_name:
        return None
    for needle, tbps in CARD_BANDWIDTH_TBPS:
        if needle.lower() in device_name.lower():
            return tbps * 1e12
    return None


def _tensor_bytes(model_dir: Path) -> dict[str, tuple[int, list[int]]]:
    """{tensor name: (bytes, shape)} from every safetensors header in ``model_dir``."""
    found: dict[str, tuple[int, list[int]]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(SAFETENSORS_HEADER_BYTES))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                found[name] = (end - begin, list(info["shape"]))
    return found


def decode_bytes(model_dir: Path) -> dict[str, Any]:
    """Bytes one decoded token reads: weights (from the files) and KV cache per context token.

    Raises FileNotFoundError when the folder has no safetensors or config.json.
    """
    tensors = _tensor_bytes(model_dir)
    if not tensors:
        raise FileNotFoundError(f"no .safetensors files in {model_dir}")
    config = json.loads((model_dir / "config.json").read_text())
    tied = not any(name.startswith("lm_head.") for name in tensors)
    weights = 0
    for name, (size, shape) in tensors.items():
        if name.endswith("embed_tokens.weight") and not tied:
            weights += size // shape[0]  # one row is looked up
        else:
            weights += size
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    kv = 2 * layers * kv_heads * head_dim * KV_BYTES_PER_VALUE
    return {"weight_bytes_per_token": weights, "kv_bytes_per_context_token": kv, "tied": tied}


def bandwidth_bound(
    device_name: str | None, model_dir: Path | None, context_tokens: int
) -> dict[str, Any]:
    """The bound in tokens/s at ``context_tokens`` of KV cache, or why there is none."""
    bandwidth = card_bandwidth(device_name)
    if bandwidth is None:
        return {"device": device_name, "bound_tokens_per_s": None, "reason": "unknown device"}
    if model_dir is None:
        return {"device": device_name, "bound_tokens_per_s": None, "reason": "no model folder"}
    try:
        sizes = decode_bytes(model_dir)
    except (OSError, KeyError, ValueError) as exc:
        return {"device": device_name, "bound_tokens_per_s": None, "reason": str(exc)}
    per_token = (
        sizes["weight_bytes_per_token"] + sizes["kv_bytes_per_context_token"] * context_tokens
    )
    return {
        "device": device_name,
        "bandwidth_bytes_per_s": bandwidth,
        "context_tokens": context_tokens,
        **sizes,
        "bytes_per_token": per_token,
        "bound_tokens_per_s": bandwidth / per_token,
    }


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    torch: Any = importlib.import_module("torch")
    return bool(torch.cuda.is_available())


# -- Hugging Face transformers ----------------------------------------------------------


def resident_bytes() -> int | None:
    """This process's resident memory, from /proc (None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _delta(before: int | None, after: int | None) -> int | None:
    return after - before if before is not None and after is not None else None


def transformers_generate(
    model_dir: Path,
    *,
    prompt_tokens: int,
    sizes: list[int],
    decode_tokens: int,
    runs: int,
    threads: int | None,
    keystroke_context: int = 0,
) -> dict[str, Any]:
    """Decode tokens/s (after a ``prompt_tokens`` prompt) and time to first token per
    prompt size of ``generate`` on the same shapes, greedy, no early stop; on the
    CPU also a keystroke on a ``keystroke_context``-token prompt (0 skips it)."""
    memory_before = resident_bytes()
    load_started = time.perf_counter()
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    gpu = bool(torch.cuda.is_available())
    config = json.loads((model_dir / "config.json").read_text()) if gpu else {}
    if gpu:
        config.pop("quantization_config", None)
        hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
        with torch.device("cuda"):
            model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
        setup = "bf16, random weights from the model's config.json, cuda"
    else:
        if threads:
            torch.set_num_threads(threads)
        model = _cpu_model(transformers, torch, model_dir)
        setup = (
            f"{model.dtype} weights from {model_dir.name}, cpu, {torch.get_num_threads()} threads"
        )
    load_s = time.perf_counter() - load_started
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)

    def run(prompt_tokens: int, new_tokens: int) -> float:
        ids = torch.randint(0, vocab, (1, prompt_tokens), generator=generator).to(device)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run(prompt_tokens, 2)  # warm-up: first-call allocations and kernel selection
    decode: list[float] = []
    for _ in range(runs):
        one = run(prompt_tokens, 1)
        full = run(prompt_tokens, decode_tokens)
        decode.append((decode_tokens - 1) / (full - one) if full > one else 0.0)
    ttft = {str(size): statistics.median(run(size, 1) for _ in range(runs)) for size in sizes}
    keystroke = None
    if keystroke_context and not gpu:
        keystroke = _transformers_keystroke(torch, model, vocab, keystroke_context, runs, generator)
    memory = _delta(memory_before, resident_bytes())
    model = None  # free the weights before the next step loads its own
    if gpu:
        torch.cuda.empty_cache()
    return {
        "setup": setup,
        "transformers_version": transformers.__version__,
        "load_s": load_s,
        "rss_growth_bytes": memory,
        "decode_tokens_per_s": statistics.median(decode),
        "decode_runs": decode,
        "ttft_s": ttft,
        "keystroke": keystroke,
    }


def _cpu_model(transformers: Any, torch: Any, model_dir: Path) -> Any:
    """The folder's safetensors, or its GGUF dequantized to fp32 (as qwend pull converts)."""
    from qwend.backends.folder import gguf_file

    gguf = gguf_file(model_dir)
    if gguf is not None and not (model_dir / "config.json").is_file():
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), local_files_only=True, dtype=torch.float32
    )


def _transformers_keystroke(
    torch: Any, model: Any, vocab: int, size: int, runs: int, generator: Any
) -> dict[str, Any]:
    """Time to the first token of a ``size``-token prompt extended by a keystroke:
    the whole prompt evaluated, and only the new tokens after the cached prefix."""
    import copy

    cold: list[float] = []
    warm: list[float] = []
    with torch.inference_mode():
        for _ in range(runs):
            ids = torch.randint(0, vocab, (1, size + KEYSTROKE_TOKENS), generator=generator)
            started = time.perf_counter()
            int(torch.argmax(model(input_ids=ids, use_cache=True).logits[0, -1]))
            cold.append(time.perf_counter() - started)
            prefix = model(input_ids=ids[:, :size], use_cache=True).past_key_values
            cache = copy.deepcopy(prefix)  # a fresh copy, as a server keeps the prefix's
            started = time.perf_counter()
            out = model(input_ids=ids[:, size:], past_key_values=cache, use_cache=True)
            int(torch.argmax(out.logits[0, -1]))
            warm.append(time.perf_counter() - started)
    return _keystroke_result(size, cold, warm)


def _keystroke_result(size: int, cold: list[float], warm: list[float]) -> dict[str, Any]:
    return {
        "prompt_tokens": size + KEYSTROKE_TOKENS,
        "cached_tokens": size,
        "full_s": statistics.median(cold),
        "prefix_reuse_s": statistics.median(warm),
    }


# -- raw llama.cpp ----------------------------------------------------------------------


def raw_llamacpp(
    model_dir: Path,
    *,
    sizes: list[int],
    decode_tokens: int,
    runs: int,
    threads: tuple[int, int] | None,
    context_length: int,
    keystroke_context: int = 0,
) -> dict[str, Any]:
    """llama-cpp-python's own ``Llama.generate`` on the same GGUF, without the daemon,
    with the daemon's (decode, prompt) ``threads`` (else the backend's defaults).

    Greedy, no early stop. Returns {"skipped": reason} without a GGUF or
    without llama-cpp-python.
    """
    from qwend.backends.folder import gguf_file
    from qwend.backends.llamacpp import llama_cpp_version, thread_counts

    gguf = gguf_file(model_dir)
    if gguf is None:
        return {"skipped": f"no GGUF file in {model_dir} (llama.cpp runs GGUF models)"}
    if llama_cpp_version() is None:
        return {"skipped": "llama-cpp-python is not installed (pip install -e '.[cpu]')"}
    memory_before = resident_bytes()
    started = time.perf_counter()
    llama_cpp: Any = importlib.import_module("llama_cpp")
    decode_threads, prompt_threads = thread_counts(0) if threads is None else threads
    llm = llama_cpp.Llama(
        model_path=str(gguf),
        n_ctx=context_length,
        n_threads=decode_threads,
        n_threads_batch=prompt_threads,
        verbose=False,
    )
    load_s = time.perf_counter() - started
    vocab = int(llm.n_vocab())
    rng = random.Random(0)

    def first_token(ids: list[int], *, reuse: bool) -> float:
        """Seconds to the first generated token; ``reuse`` keeps the cached prefix."""
        if not reuse:
            llm.reset()
        begun = time.perf_counter()
        next(iter(llm.generate(ids, temp=0.0, reset=True)))
        return time.perf_counter() - begun

    prompt = llm.tokenize(DECODE_PROMPT.encode(), add_bos=False, special=True)
    decode: list[float] = []
    for _ in range(runs):
        llm.reset()
        stamps: list[float] = []
        for _token in llm.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == decode_tokens:
                break
        decode.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    ttft: dict[str, float] = {}
    for size in sizes:
        times = [
            first_token([rng.randrange(vocab) for _ in range(size)], reuse=False)
            for _ in range(runs)
        ]
        ttft[str(size)] = statistics.median(times)
    keystroke = None
    if keystroke_context:
        size = keystroke_context
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(runs):
            ids = [rng.randrange(vocab) for _ in range(size + KEYSTROKE_TOKENS)]
            cold.append(first_token(ids, reuse=False))
            llm.reset()
            first_token(ids[:size], reuse=True)  # the previous keystroke's prompt
            warm.append(first_token(ids, reuse=True))
        keystroke = _keystroke_result(size, cold, warm)
    memory = _delta(memory_before, resident_bytes())
    llm.close()
    return {
        "setup": f"llama-cpp-python {llama_cpp.__version__}, {gguf.name}, "
        f"{decode_threads} decode / {prompt_threads} prompt threads",
        "load_s": load_s,
        "rss_growth_bytes": memory,
        "decode_tokens_per_s": statistics.median(decode),
        "decode_runs": decode,
        "ttft_s": ttft,
        "keystroke": keystroke,
    }


# -- raw exllamav2 ----------------------------------------------------------------------


def raw_exllamav2(
    model_dir: Path, *, sizes: list[int], decode_tokens: int, runs: int
) -> dict[str, Any]:
    """exllamav2's dynamic generator on the same folder, without the daemon.

    Returns {"skipped": reason} without CUDA or without exllamav2.
    """
    if not cuda_available():
        return {"skipped": "needs CUDA: exllamav2 runs only on its CUDA kernels (no GPU here)"}
    if importlib.util.find_spec("exllamav2") is None:
        return {"skipped": "exllamav2 is not installed (pip install 'qwend[gpu]')"}
    exl: Any = importlib.import_module("exllamav2")
    gen: Any = importlib.import_module("exllamav2.generator")
    pool = max([*sizes, 256]) + decode_tokens + RAW_CACHE_POOL_ROUND
    pool += -pool % RAW_CACHE_POOL_ROUND
    cfg = exl.ExLlamaV2Config(str(model_dir))
    cfg.max_seq_len = pool
    cfg.arch_compat_overrides()
    model = exl.ExLlamaV2(cfg)
    cache = exl.ExLlamaV2Cache(model, max_seq_len=pool, lazy=True)
    model.load_autosplit(cache, progress=False)
    tokenizer = exl.ExLlamaV2Tokenizer(cfg)
    paged = importlib.util.find_spec("flash_attn") is not None
    generator = gen.ExLlamaV2DynamicGenerator(
        model=model,
        cache=cache,
        tokenizer=tokenizer,
        paged=paged,
        max_batch_size=1,
        max_chunk_size=min(2048, cfg.max_input_len),
    )
    generator.warmup()
    torch: Any = importlib.import_module("torch")
    rng = torch.Generator().manual_seed(0)

    def job(ids: Any, new_tokens: int) -> tuple[float, float, int]:
        """(time to first token, decode seconds after it, tokens) of one greedy job."""
        generator.enqueue(
            gen.ExLlamaV2DynamicJob(
                input_ids=ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                gen_settings=gen.ExLlamaV2Sampler.Settings.greedy(),
                stop_conditions=[],
            )
        )
        started = time.perf_counter()
        first = last = 0.0
        tokens = 0
        while generator.num_remaining_jobs():
            for result in generator.iterate():
                if result.get("stage") == "streaming" and result.get("token_ids") is not None:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    tokens += int(result["token_ids"].shape[-1])
        return first - started, last - first, tokens

    prompt = tokenizer.encode(DECODE_PROMPT)
    decode = []
    for _ in range(runs):
        _, seconds, tokens = job(prompt, decode_tokens)
        decode.append((tokens - 1) / seconds if seconds > 0 else 0.0)
    ttft: dict[str, float] = {}
    for size in sizes:
        times = [
            job(torch.randint(0, cfg.vocab_size, (1, size), generator=rng), 1)[0]
            for _ in range(runs)
        ]
        ttft[str(size)] = statistics.median(times)
    name = torch.cuda.get_device_name(0)
    if hasattr(generator, "close"):
        generator.close()
    model.unload()
    generator = cache = model = None  # free the GPU memory before the next step
    torch.cuda.empty_cache()
    return {
        "setup": f"exllamav2 {exl.__version__}, dynamic generator, paged={paged}, {name}",
        "decode_tokens_per_s": statistics.median(decode),
        "decode_runs": decode,
        "ttft_s": ttft,
    }
