"""Editor: the steps of one ``qwend bench`` run, in order, under a progress bar.

1. warm-up request (first-call allocations are not steady state);
2. time to first token per prompt size: a cold prompt (its own first line)
   and then its twin with the last line changed (a prefix-cache hit);
3. single-stream decode tokens/s; 4. aggregate tokens/s per concurrency;
5. keystroke-to-completion latency through ``qwend lsp``;
6. keystroke latency (``complete`` tasks) idle and while a background
   ``tests`` task generates (under_load.py: preemption at work);
7. ``qwend status`` wall time; 8. memory from ``/v1/status``;
9. with ``--compare``: raw exllamav2, raw llama.cpp,
   transformers ``generate``, and always
   the memory-bandwidth bound, plus the ratios between them.

A size or step the model cannot run (context too small) is recorded as
skipped with the reason; any error answer stops the run (BenchFailed).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import os
import platform
import secrets
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from qwend import __version__
from qwend.bench import compare, lsp_probe, under_load
from qwend.bench.measure import (
    DECODE_PROMPT,
    TTFT_MAX_TOKENS,
    BenchFailed,
    Probe,
    aggregate_tokens_per_s,
    decode_prompts,
    status_wall_time,
)
from qwend.bench.prompts import fit_prompt, prefix_twin
from qwend.bench.report import SCHEMA
from qwend.bench.stats import percentile, ratio, summarize
from qwend.states import SERVING_STATES

WARMUP_TOKENS: Final = 8
VERSIONED_PACKAGES: Final = (
    "torch",
    "transformers",
    "exllamav2",
    "tokenizers",
    "llama_cpp_python",
)


@dataclass(frozen=True)
class BenchOptions:
    """What to measure; the defaults are the full GPU run of docs/benchmarks.md."""

    socket_path: Path
    config_path: str | None = None
    sizes: list[int] = field(default_factory=lambda: [512, 2048, 8192])
    runs: int = 3
    decode_tokens: int = 128
    concurrency: list[int] = field(default_factory=lambda: [4, 16])
    lsp_keystrokes: int = 20
    lsp_context: int = 2048
    lsp_max_tokens: int = 64
    lsp_debounce_ms: int = 150  # qwend lsp's own default (qwend_lsp/options.py)
    load_keystrokes: int = 12  # keystrokes idle and again under load; 0 skips the step
    load_complete_tokens: int = 12
    load_background_tokens: int = 400
    compare: bool = False
    model_dir: Path | None = None
    progress: bool = True
    request_timeout_s: float = 1800.0

    def steps(self) -> int:
        """How many progress-bar steps this run has (for the bar's total)."""
        return (
            1
            + 2 * len(self.sizes) * self.runs
            + self.runs
            + len(self.concurrency) * self.runs
            + (1 if self.lsp_keystrokes else 0)
            + (1 if self.load_keystrokes else 0)
            + self.runs
            + (4 if self.compare else 1)
        )


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Measure the daemon on ``options.socket_path``; return the JSON document."""
    from tqdm import tqdm

    probe = Probe(options.socket_path, timeout=options.request_timeout_s)
    status = probe.status()
    model = status.get("model", {})
    if model.get("state") not in SERVING_STATES:
        raise BenchFailed(
            f"the model is {model.get('state')!r}, not ready",
            hint="wait for `qwend status` to say ready, then run qwend bench again",
        )
    context = int(model["context_length"])
    nonce = secrets.token_hex(4)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "settings": {
            **{k: v for k, v in asdict(options).items() if k not in ("socket_path", "model_dir")},
            "model_dir": str(options.model_dir) if options.model_dir else None,
            "ttft_max_tokens": TTFT_MAX_TOKENS,
            "decode_prompt": DECODE_PROMPT,
        },
        "environment": _environment(status),
        "model": {k: model.get(k) for k in ("name", "backend", "context_length", "dtype")},
    }
    with tqdm(
        total=options.steps(), disable=not options.progress, file=sys.stderr, unit="step"
    ) as bar:

        def step(label: str, action: Callable[[], Any]) -> Any:
            bar.set_description(label)
            value = action()
            bar.update()
            return value

        step("warm-up", lambda: probe.stream(DECODE_PROMPT, WARMUP_TOKENS))
        result["ttft"] = [
            _ttft(probe, size, context, options, nonce, step) for size in options.sizes
        ]
        decodes = [
            step("decode", lambda: probe.stream(DECODE_PROMPT, options.decode_tokens))
            for _ in range(options.runs)
        ]
        speeds = [d.decode_tokens_per_s for d in decodes if d.decode_tokens_per_s is not None]
        if not speeds:
            raise BenchFailed("the decode runs produced fewer than two tokens each")
        result["decode"] = {
            "tokens_per_s": summarize(speeds),
            "tokens": decodes[-1].completion_tokens,
            "prompt_tokens": decodes[-1].prompt_tokens,
        }
        result["concurrency"] = [
            _concurrency(probe, streams, options, step) for streams in options.concurrency
        ]
        result["lsp"] = (
            step("qwend lsp", lambda: _lsp(probe, context, options))
            if options.lsp_keystrokes
            else None
        )
        result["under_load"] = (
            step(
                "keystrokes under load",
                lambda: under_load.keystrokes_under_load(
                    probe,
                    keystrokes=options.load_keystrokes,
                    complete_tokens=options.load_complete_tokens,
                    background_tokens=options.load_background_tokens,
                ),
            )
            if options.load_keystrokes
            else None
        )
        result["status_wall_s"] = summarize(
            [
                step(
                    "qwend status",
                    lambda: status_wall_time(options.socket_path, options.config_path),
                )
                for _ in range(options.runs)
            ]
        )
        final = probe.status()
        result["memory"] = _memory(final)
        decode_context = result["decode"]["prompt_tokens"] + options.decode_tokens // 2
        result["compare"] = _compare(options, final, result, decode_context, step)
    return result


def _ttft(
    probe: Probe,
    size: int,
    context: int,
    options: BenchOptions,
    nonce: str,
    step: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    if size + TTFT_MAX_TOKENS > context:
        for _ in range(2 * options.runs):
            step(f"ttft {size}: skipped", lambda: None)
        return {
            "prompt_tokens": size,
            "skipped": f"the model's context is {context:,} tokens, too small for {size:,} + "
            f"{TTFT_MAX_TOKENS} generated",
        }
    cold: list[float] = []
    hit: list[float] = []
    hit_tokens = size
    for run in range(options.runs):
        prompt = fit_prompt(probe.count_tokens, size, tag=f"{nonce}-{size}-{run}")
        timing = step(f"ttft {size} cold", partial(probe.stream, prompt, TTFT_MAX_TOKENS))
        if timing.prompt_tokens != size:
            raise BenchFailed(
                f"asked for a {size}-token prompt, the daemon counted {timing.prompt_tokens}"
            )
        cold.append(timing.ttft_s)
        twin = prefix_twin(prompt)
        timing = step(f"ttft {size} hit", partial(probe.stream, twin, TTFT_MAX_TOKENS))
        hit.append(timing.ttft_s)
        hit_tokens = timing.prompt_tokens
    return {
        "prompt_tokens": size,
        "cold_s": summarize(cold),
        "prefix_hit_s": summarize(hit),
        "hit_prompt_tokens": hit_tokens,
    }


def _concurrency(
    probe: Probe,
    streams: int,
    options: BenchOptions,
    step: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    prompts = decode_prompts(streams)
    aggregates: list[float] = []
    ttfts: list[float] = []
    tokens = 0
    for _ in range(options.runs):
        timings = step(
            f"{streams} streams", lambda: probe.concurrent(prompts, options.decode_tokens)
        )
        aggregates.append(aggregate_tokens_per_s(timings))
        ttfts += [t.ttft_s for t in timings]
        tokens = sum(t.completion_tokens for t in timings)
    return {
        "streams": streams,
        "aggregate_tokens_per_s": summarize(aggregates),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "tokens_per_run": tokens,
    }


def _lsp(probe: Probe, context: int, options: BenchOptions) -> dict[str, Any]:
    if options.lsp_context + options.lsp_max_tokens > context:
        return {"skipped": f"the model's context ({context:,}) is smaller than the document"}
    code = fit_prompt(probe.count_tokens, options.lsp_context, tag=f"lsp-{secrets.token_hex(4)}")
    document, cursor = lsp_probe.document_with_cursor(code)
    before = _completed_jobs(probe)
    run = asyncio.run(
        lsp_probe.keystroke_latencies(
            options.socket_path,
            options.config_path,
            document,
            cursor,
            keystrokes=options.lsp_keystrokes,
            max_tokens=options.lsp_max_tokens,
            debounce_ms=options.lsp_debounce_ms,
            timeout_s=options.request_timeout_s,
        )
    )
    return {
        "p50_s": percentile(run.latencies_s, 50),
        "p95_s": percentile(run.latencies_s, 95),
        "keystrokes": len(run.latencies_s),
        "answered_with_text": run.answered_with_text,
        "daemon_calls": _completed_jobs(probe) - before,
        "context_tokens": probe.count_tokens(document),
        "max_tokens": options.lsp_max_tokens,
        "debounce_ms": options.lsp_debounce_ms,
        "latencies_s": run.latencies_s,
    }


def _completed_jobs(probe: Probe) -> int:
    return int(probe.status().get("performance", {}).get("completed_jobs", 0))


def _memory(status: dict[str, Any]) -> dict[str, Any]:
    cuda = status.get("model", {}).get("cuda")
    memory: dict[str, Any] = {"rss_bytes": status.get("memory", {}).get("rss_bytes")}
    if isinstance(cuda, dict):
        memory.update(
            gpu=cuda.get("device_name"),
            gpu_peak_bytes=cuda.get("memory_peak_bytes"),
            gpu_total_bytes=cuda.get("memory_total_bytes"),
        )
    else:
        memory.update(gpu="n/a (CPU)", gpu_peak_bytes=None)
    return memory


def _compare(
    options: BenchOptions,
    status: dict[str, Any],
    result: dict[str, Any],
    decode_context: int,
    step: Callable[[str, Callable[[], Any]], Any],
) -> dict[str, Any]:
    model_dir = options.model_dir or _model_dir(options.config_path, result["model"]["name"])
    cuda = status.get("model", {}).get("cuda")
    device = cuda.get("device_name") if isinstance(cuda, dict) else status.get("device")
    out: dict[str, Any] = {
        "model_dir": str(model_dir) if model_dir else None,
        "bandwidth_bound": step(
            "bandwidth bound", lambda: compare.bandwidth_bound(device, model_dir, decode_context)
        ),
    }
    sizes = [e["prompt_tokens"] for e in result["ttft"] if "skipped" not in e]
    # The keystroke extends a prompt the size of the qwend lsp step's document.
    keystroke = options.lsp_context if options.lsp_keystrokes else 0
    if options.compare:
        if model_dir is None:
            raise BenchFailed("--compare needs the model folder", hint="pass --model-dir DIR")
        out["raw_exllamav2"] = step(
            "raw exllamav2",
            lambda: compare.raw_exllamav2(
                model_dir, sizes=sizes, decode_tokens=options.decode_tokens, runs=options.runs
            ),
        )
        out["raw_llamacpp"] = step(
            "raw llama.cpp",
            lambda: compare.raw_llamacpp(
                model_dir,
                sizes=sizes,
                decode_tokens=options.decode_tokens,
                runs=options.runs,
                threads=_llama_threads(status.get("model", {})),
                context_length=int(result["model"]["context_length"]),
                keystroke_context=keystroke,
            ),
        )
        out["transformers"] = step(
            "transformers",
            lambda: compare.transformers_generate(
                model_dir,
                prompt_tokens=result["decode"]["prompt_tokens"],
                sizes=sizes,
                decode_tokens=options.decode_tokens,
                runs=options.runs,
                threads=_torch_threads(status.get("model", {})),
                keystroke_context=keystroke,
            ),
        )
    out["ratios"] = _ratios(result, out)
    return out


def _torch_threads(model: dict[str, Any]) -> int | None:
    """The daemon's torch threads when it runs transformers; else torch's default."""
    return model.get("threads") if model.get("backend") == "transformers" else None


def _llama_threads(model: dict[str, Any]) -> tuple[int, int] | None:
    """The daemon's llama.cpp (decode, prompt) threads, for the raw run to match."""
    if model.get("backend") != "llama.cpp" or not model.get("threads"):
        return None
    return int(model["threads"]), int(model.get("threads_prompt") or model["threads"])


def _ratios(result: dict[str, Any], compare_out: dict[str, Any]) -> dict[str, float | None]:
    daemon = result["decode"]["tokens_per_s"]["median"]
    ratios: dict[str, float | None] = {}
    bound = compare_out["bandwidth_bound"].get("bound_tokens_per_s")
    if bound:
        ratios["daemon_decode_of_bandwidth_bound"] = ratio(daemon, bound)
    for key in ("raw_exllamav2", "raw_llamacpp"):
        raw = compare_out.get(key) or {}
        if "decode_tokens_per_s" in raw:
            ratios[f"daemon_decode_of_{key}"] = ratio(daemon, raw["decode_tokens_per_s"])
    llama = compare_out.get("raw_llamacpp") or {}
    if "decode_tokens_per_s" in llama and "decode_tokens_per_s" in (
        compare_out.get("transformers") or {}
    ):
        ratios["raw_llamacpp_decode_over_transformers"] = ratio(
            llama["decode_tokens_per_s"], compare_out["transformers"]["decode_tokens_per_s"]
        )
    hf = compare_out.get("transformers") or {}
    if "decode_tokens_per_s" in hf:
        ratios["daemon_decode_over_transformers"] = ratio(daemon, hf["decode_tokens_per_s"])
        for entry in result["ttft"]:
            hf_ttft = hf["ttft_s"].get(str(entry["prompt_tokens"]))
            if "cold_s" in entry and hf_ttft:
                name = f"transformers_ttft_over_daemon_{entry['prompt_tokens']}"
                ratios[name] = ratio(hf_ttft, entry["cold_s"]["median"])
    return ratios


def _model_dir(config_path: str | None, name: str) -> Path | None:
    """The resident profile's folder, as the daemon's config names it (None if unknown)."""
    from qwend.config import load_config
    from qwend.errors import QwendError

    try:
        config = load_config(Path(config_path) if config_path else None)
        return config.model_dir(name) if name in config.settings.models else None
    except QwendError:
        return None


def _environment(status: dict[str, Any]) -> dict[str, Any]:
    versions = {"qwend": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    cuda = status.get("model", {}).get("cuda")
    return {
        "machine": f"{platform.machine()} {platform.system()}",
        "cpu": _cpu_name(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "memory_bytes": _memory_total(),
        "device": cuda.get("device_name") if isinstance(cuda, dict) else status.get("device"),
        "versions": versions,
        "daemon_version": status.get("version"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
