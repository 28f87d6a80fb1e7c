"""Benchmark: one decode step of qwend's paged-attention stand-in at Qwen2.5-7B's shapes.

Prints a table; nothing here is a test. For each device (the CPU, and CUDA if
present), batch size and context length it times ``flash_attn_with_kvcache``
as exllamav2's paged generator calls it for one layer (write one new token per
sequence into 256-token pages, gather every sequence's pages, attend), and
beside it ``flash_attn_func`` over K/V that are already contiguous per
sequence, as exllamav2's unpaged path calls it: the same attention without
paging. The difference is the cost of the gather and the mask.
"Per token" multiplies one layer by Qwen2.5-7B's 28 layers.

    python benchmarks/paged_attention_bench.py [--device cpu|cuda|all]
        [--batches 1 4 16] [--contexts 512 2048 4096] [--seconds 1.0] [--threads N]

On a shared CPU pass --threads 1: with two OpenMP threads and a busy second
core, single calls stall for whole scheduler slices (~8 ms here). Also on the
CPU, glibc hands large freed blocks back to the kernel, so every call's fresh
gather buffers page-fault and the paged figures jump 5-10x past a few MB; for
steady-state numbers run with MALLOC_MMAP_THRESHOLD_=4294967296
MALLOC_TRIM_THRESHOLD_=4294967296 in the environment. CUDA's caching
allocator has no such effect.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from qwend.backends.exllamav2.attention import flash_attn_func, flash_attn_with_kvcache

Q_HEADS, KV_HEADS, HEAD_DIM, LAYERS = 28, 4, 128, 28  # Qwen2.5-7B
PAGE_SIZE = 256  # exllamav2's PAGED_PAGE_SIZE
SPARE_PAGES = 8  # pages no sequence owns, so block tables are not a dense prefix
DEFAULT_CONTEXTS = {"cpu": [512, 2048, 4096], "cuda": [1024, 4096, 16384, 32768]}
DTYPES = {"cpu": torch.float32, "cuda": torch.float16}  # CPU SDPA is slow in fp16


def time_call(call: Callable[[], object], device: str, seconds: float) -> float:
    """Median milliseconds of ``call`` over about ``seconds`` of repeats, after a warm-up."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    call()
    sync()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 3 or (time.perf_counter() < deadline and len(samples) < 200):
        started = time.perf_counter()
        call()
        sync()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def decode_case(device: str, batch: int, context: int, seconds: float) -> tuple[float, float]:
    """(paged ms, unpaged ms) for one layer's decode step."""
    dtype = DTYPES[device]
    generator = torch.Generator(device=device).manual_seed(0)
    pages_per_seq = math.ceil((context + 1) / PAGE_SIZE)
    num_pages = batch * pages_per_seq + SPARE_PAGES
    cache_shape = (num_pages, PAGE_SIZE, KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(cache_shape, generator=generator, device=device, dtype=dtype)
    v_cache = torch.randn(cache_shape, generator=generator, device=device, dtype=dtype)
    order = torch.randperm(num_pages, generator=generator, device=device)
    block_table = order[: batch * pages_per_seq].view(batch, pages_per_seq).to(torch.int32)
    seqlens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, 1, Q_HEADS, HEAD_DIM, generator=generator, device=device, dtype=dtype)
    k = torch.randn(batch, 1, KV_HEADS, HEAD_DIM, generator=generator, device=device, dtype=dtype)
    v = torch.randn_like(k)
    scale = HEAD_DIM**-0.5

    def paged() -> object:
        return flash_attn_with_kvcache(
            q=q,
            k=k,
            v=v,
            k_cache=k_cache,
            v_cache=v_cache,
            cache_seqlens=seqlens,
            block_table=block_table,
            causal=True,
            softmax_scale=scale,
        )

    flat_k = torch.randn(batch, context + 1, KV_HEADS, HEAD_DIM, device=device, dtype=dtype)
    flat_v = torch.randn_like(flat_k)

    def unpaged() -> object:
        return flash_attn_func(q, flat_k, flat_v, causal=True, softmax_scale=scale)

    with torch.inference_mode():
        return time_call(paged, device, seconds), time_call(unpaged, device, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--contexts", type=int, nargs="+", help="default depends on the device")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per case")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("CUDA is not available")
        devices.remove("cuda")

    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}; {cores} CPU cores visible, {torch.get_num_threads()} used")
    print(f"shapes: {Q_HEADS} q / {KV_HEADS} kv heads, head_dim {HEAD_DIM}, pages of {PAGE_SIZE}")
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        print(f"\n{name}, {DTYPES[device]}: one decode step (median ms)")
        header = f"{'batch':>5} {'context':>8} {'paged/layer':>12} {'unpaged/layer':>14}"
        print(f"{header} {'paged/token':>12} {'overhead':>9}")
        for batch in args.batches:
            for context in args.contexts or DEFAULT_CONTEXTS[device]:
                paged_ms, flat_ms = decode_case(device, batch, context, args.seconds)
                print(
                    f"{batch:>5} {context:>8} {paged_ms:>12.3f} {flat_ms:>14.3f} "
                    f"{paged_ms * LAYERS:>12.2f} {paged_ms / flat_ms:>8.1f}x"
                )


if __name__ == "__main__":
    main()
