"""Unit tests for ``qwend bench``'s pure parts: statistics, exact-size prompts (with
both real tokenizers), the bandwidth bound, aggregation, and the table and JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tests.fixtures.fake_backend import QWEN_TOKENIZER_CACHE, TokenizerCounting

from qwend import cli
from qwend.bench import compare, lsp_probe, report, runner, under_load
from qwend.bench import synthetic_exl2 as syn
from qwend.bench.measure import StreamTiming, aggregate_tokens_per_s, decode_prompts
from qwend.bench.prompts import PromptError, fit_prompt, prefix_twin
from qwend.bench.stats import percentile, ratio, summarize

# -- statistics --------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_and_ratio() -> None:
    summary = summarize([3.0, 1.0, 2.0])
    assert (summary["median"], summary["min"], summary["max"], summary["n"]) == (2.0, 1.0, 3.0, 3)
    assert summary["runs"] == [3.0, 1.0, 2.0]
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None


# -- prompts of an exact size -------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2.5", "smollm2"])
@pytest.mark.parametrize("size", [64, 512, 2048])
def test_fit_prompt_is_exact_with_the_real_tokenizers(
    countings: dict[str, TokenizerCounting], family: str, size: int
) -> None:
    counting = countings[family]
    prompt = fit_prompt(counting.count, size, tag="t1")
    assert counting.count(prompt) == size
    twin = prefix_twin(prompt)
    assert twin != prompt
    head, _, last = prompt.rpartition("\n")
    assert twin.startswith(head + "\n") and not twin.endswith(last)
    assert counting.count(twin) == size  # same length, only the last line differs


def test_cold_prompts_differ_from_their_first_line(qwen_counting: TokenizerCounting) -> None:
    a = fit_prompt(qwen_counting.count, 128, tag="run-a")
    b = fit_prompt(qwen_counting.count, 128, tag="run-b")
    assert a.split("\n", 1)[0] != b.split("\n", 1)[0]


def test_fit_prompt_fails_when_padding_cannot_hit_the_count() -> None:
    def two_per_word(text: str) -> int:  # a tokenizer where every word costs two tokens
        return 2 * len(text.split())

    with pytest.raises(PromptError, match="exactly 101 tokens"):
        fit_prompt(two_per_word, 101, tag="odd")
    with pytest.raises(PromptError, match="too short"):
        fit_prompt(two_per_word, 4, tag="tiny")


def test_decode_prompts_are_distinct() -> None:
    prompts = decode_prompts(16)
    assert len(set(prompts)) == 16


# -- aggregation --------------------------------------------------------------------------


def _timing(tokens: int, started: float, ended: float, decode_s: float = 1.0) -> StreamTiming:
    return StreamTiming(0.1, decode_s, tokens, 10, "length", started, ended)


def test_decode_rate_excludes_the_first_token() -> None:
    assert _timing(11, 0, 1, decode_s=2.0).decode_tokens_per_s == 5.0
    assert _timing(1, 0, 1).decode_tokens_per_s is None


def test_aggregate_is_all_tokens_over_first_send_to_last_token() -> None:
    timings = [_timing(100, 10.0, 14.0), _timing(100, 10.5, 20.0)]
    assert aggregate_tokens_per_s(timings) == 20.0


# -- the bandwidth bound ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tbps"),
    [
        ("NVIDIA H100 80GB HBM3", 3.35),
        ("NVIDIA H100 PCIe", 2.0),
        ("NVIDIA H100 NVL", 3.9),
        ("NVIDIA H200", 4.8),
        ("NVIDIA A100-SXM4-80GB", 2.039),
        ("cpu", None),
        (None, None),
    ],
)
def test_card_bandwidth_by_device_name(name: str | None, tbps: float | None) -> None:
    expected = None if tbps is None else tbps * 1e12
    assert compare.card_bandwidth(name) == expected


@pytest.fixture(scope="module")
def tiny_exl2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    syn.build(out, syn.SHAPES["tiny"], tokenizer_cache=QWEN_TOKENIZER_CACHE, progress=False)
    return out


def test_decode_bytes_of_an_exl2_model_count_one_embedding_row(tiny_exl2: Path) -> None:
    shape = syn.SHAPES["tiny"]
    sizes = compare.decode_bytes(tiny_exl2)
    embed = shape.vocab_size * shape.hidden_size * 2
    total = sum(size for size, _ in compare._tensor_bytes(tiny_exl2).values())
    assert sizes["weight_bytes_per_token"] == total - embed + shape.hidden_size * 2
    assert not sizes["tied"]
    # 2 (K and V) x layers x kv heads x head dim x 2 bytes (fp16)
    assert sizes["kv_bytes_per_context_token"] == 2 * 2 * 2 * 64 * 2


def test_decode_bytes_of_a_tied_model_count_the_whole_embedding(tmp_path: Path) -> None:
    save_file(
        {"model.embed_tokens.weight": torch.zeros((1000, 64)), "model.norm.weight": torch.ones(64)},
        str(tmp_path / "model.safetensors"),
    )
    config = {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    sizes = compare.decode_bytes(tmp_path)
    assert sizes["tied"]
    assert sizes["weight_bytes_per_token"] == 1000 * 64 * 4 + 64 * 4
    assert sizes["kv_bytes_per_context_token"] == 2 * 3 * 4 * 16 * 2


def test_bandwidth_bound_divides_bandwidth_by_bytes_per_token(tiny_exl2: Path) -> None:
    bound = compare.bandwidth_bound("NVIDIA H200", tiny_exl2, context_tokens=100)
    per_token = bound["weight_bytes_per_token"] + 100 * bound["kv_bytes_per_context_token"]
    assert bound["bytes_per_token"] == per_token
    assert bound["bound_tokens_per_s"] == pytest.approx(4.8e12 / per_token)
    unknown = compare.bandwidth_bound("cpu", tiny_exl2, 100)
    assert unknown["bound_tokens_per_s"] is None and unknown["reason"] == "unknown device"
    missing = compare.bandwidth_bound("NVIDIA H200", tiny_exl2 / "absent", 100)
    assert missing["bound_tokens_per_s"] is None and "absent" in missing["reason"]


def test_raw_exllamav2_is_skipped_without_cuda(tiny_exl2: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = compare.raw_exllamav2(tiny_exl2, sizes=[512], decode_tokens=8, runs=1)
    assert set(result) == {"skipped"}
    assert "needs CUDA" in result["skipped"]


def test_raw_llamacpp_is_skipped_without_a_gguf(tiny_exl2: Path) -> None:
    result = compare.raw_llamacpp(
        tiny_exl2, sizes=[64], decode_tokens=4, runs=1, threads=(1, 1), context_length=512
    )
    assert set(result) == {"skipped"}
    assert "no GGUF file" in result["skipped"]


# -- the keystroke document -------------------------------------------------------------------


def test_document_with_cursor_puts_the_cursor_on_a_fresh_indented_line() -> None:
    code = "\n".join(f"x{i} = {i}" for i in range(20))
    text, cursor = lsp_probe.document_with_cursor(code)
    lines = text.split("\n")
    assert lines[cursor.line] == "    "
    assert lines[cursor.line - 1] == "def bench_target(items, limit):"
    assert cursor.character == 4
    assert len(lines) == 22 and lines[-1] == "x19 = 19"


# -- results: ratios, memory, table and JSON ----------------------------------------------------


def _result(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "schema": report.SCHEMA,
        "date": "2026-11-24T06:00:00+00:00",
        "settings": {"runs": 3},
        "environment": {
            "machine": "x86_64 Linux",
            "cpu_cores": 2,
            "memory_bytes": 24 * 2**30,
            "device": "cpu",
            "versions": {"qwend": "0.1.0", "python": "3.11.7"},
        },
        "model": {"name": "smollm2-135m", "backend": "transformers", "context_length": 8192},
        "ttft": [
            {
                "prompt_tokens": 512,
                "cold_s": summarize([1.0, 1.2, 1.1]),
                "prefix_hit_s": summarize([0.2, 0.3, 0.25]),
                "hit_prompt_tokens": 512,
            },
            {"prompt_tokens": 8192, "skipped": "the model's context is 8,192 tokens"},
        ],
        "decode": {
            "tokens_per_s": summarize([16.0, 15.0, 17.0]),
            "tokens": 128,
            "prompt_tokens": 9,
        },
        "concurrency": [{"streams": 4, "aggregate_tokens_per_s": summarize([15.0])}],
        "lsp": {
            "p50_s": 0.4,
            "p95_s": 0.9,
            "keystrokes": 20,
            "context_tokens": 2050,
            "max_tokens": 64,
            "debounce_ms": 150,
            "daemon_calls": 18,
        },
        "under_load": {
            "keystrokes": 12,
            "keystrokes_under_load": 11,
            "complete_max_tokens": 12,
            "idle_p50_s": 0.31,
            "idle_p95_s": 0.42,
            "loaded_p50_s": 0.34,
            "loaded_p95_s": 0.51,
            "p50_ratio": 0.34 / 0.31,
            "background": {
                "tokens_alone": 400,
                "tokens_under_load": 400,
                "same_text_as_alone": True,
            },
            "suspensions": 11,
            "suspend_mode": "keep",
            "suspended_s": 3.7,
            "resume_step_p50_s": 0.021,
            "background_s_per_token": 0.025,
        },
        "memory": {"rss_bytes": 2**30, "gpu": "n/a (CPU)", "gpu_peak_bytes": None},
        "status_wall_s": summarize([0.07]),
        "compare": {
            "bandwidth_bound": {
                "device": "cpu",
                "bound_tokens_per_s": None,
                "reason": "unknown device",
            },
            "raw_exllamav2": {"skipped": "needs CUDA"},
            "raw_llamacpp": {
                "decode_tokens_per_s": 20.0,
                "setup": "llama-cpp-python 0.3.36, m.gguf, 1 decode / 2 prompt threads",
                "ttft_s": {"512": 0.5},
                "keystroke": {
                    "prompt_tokens": 2050,
                    "cached_tokens": 2048,
                    "full_s": 3.25,
                    "prefix_reuse_s": 0.0625,
                },
                "load_s": 0.75,
                "rss_growth_bytes": 2**29,
            },
            "transformers": {"decode_tokens_per_s": 8.0, "setup": "fp32", "ttft_s": {"512": 2.2}},
        },
    }
    result.update(overrides)
    result["compare"]["ratios"] = runner._ratios(result, result["compare"])
    return result


def test_ratios_compare_the_daemon_with_each_side() -> None:
    ratios = _result()["compare"]["ratios"]
    assert ratios["daemon_decode_over_transformers"] == 2.0
    assert ratios["transformers_ttft_over_daemon_512"] == pytest.approx(2.0)
    assert "daemon_decode_of_raw_exllamav2" not in ratios  # skipped, so no ratio
    assert ratios["daemon_decode_of_raw_llamacpp"] == 0.8
    assert ratios["raw_llamacpp_decode_over_transformers"] == 2.5
    assert "daemon_decode_of_bandwidth_bound" not in ratios


def test_memory_reports_cuda_figures_or_says_cpu() -> None:
    cuda = {"device_name": "NVIDIA H100 80GB HBM3", "memory_peak_bytes": 7 * 2**30}
    on_gpu = runner._memory({"model": {"cuda": cuda}, "memory": {"rss_bytes": 1}})
    assert on_gpu["gpu_peak_bytes"] == 7 * 2**30 and on_gpu["gpu"] == cuda["device_name"]
    on_cpu = runner._memory({"model": {}, "memory": {"rss_bytes": 1}})
    assert on_cpu == {"rss_bytes": 1, "gpu": "n/a (CPU)", "gpu_peak_bytes": None}


def test_table_shows_every_figure_and_every_skip_reason() -> None:
    table = report.render_table(_result())
    assert "time to first token, 512 tokens (s)" in table
    assert "1.100" in table and "0.250" in table  # cold and prefix-hit medians
    assert "time to first token, 8,192 tokens (s)" in table and "skipped" in table
    assert "decode tokens/s, 1 stream" in table and "16.0" in table
    assert "aggregate tokens/s, 4 streams" in table
    assert "p95 0.900 s" in table and "18 reached the daemon" in table
    assert "n/a (CPU)" in table
    assert "unknown device" in table
    assert "needs CUDA" in table
    assert "ratio: daemon decode over transformers" in table and "2.00" in table
    assert "raw llama.cpp decode tokens/s" in table and "20.0" in table
    assert "raw llama.cpp keystroke, whole prompt (s)" in table and "3.250" in table
    assert "raw llama.cpp keystroke, prefix reuse (s)" in table and "0.062" in table
    assert "2,050-token prompt, 2,048 of them cached" in table
    assert "raw llama.cpp load time (s)" in table and "0.75" in table
    assert "raw llama.cpp resident memory added" in table and "0.50 GiB" in table
    assert "ratio: daemon decode of raw llamacpp" in table and "0.80" in table
    assert "keystroke latency p50, idle (s)" in table and "0.310" in table
    assert "same, background job running (s)" in table and "1.10x idle" in table
    assert "400 alone, same text as alone; 11 suspensions (keep)" in table
    assert "resume step p50 0.021 s vs 0.025 s/token" in table
    no_load = report.render_table(_result(under_load=None))
    assert "keystroke latency" not in no_load


def test_json_round_trips(tmp_path: Path) -> None:
    result = _result()
    report.write_json(result, tmp_path / "out" / "bench.json")
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == result


def test_steps_count_matches_the_options() -> None:
    options = runner.BenchOptions(
        socket_path=Path("/x"), sizes=[512, 2048], runs=2, concurrency=[4], compare=True
    )
    # warm-up, 2 sizes x 2 runs x (cold + hit), 2 decode, 1 level x 2 runs, lsp,
    # keystrokes under load, 2 status, bound + raw exllamav2 + raw llama.cpp + transformers
    assert options.steps() == 1 + 8 + 2 + 2 + 1 + 1 + 2 + 4
    assert runner.BenchOptions(socket_path=Path("/x"), load_keystrokes=0).steps() == (
        runner.BenchOptions(socket_path=Path("/x")).steps() - 1
    )


# -- the command line --------------------------------------------------------------------------


def test_bench_command_line_options() -> None:
    args = cli._parser().parse_args(
        ["bench", "--sizes", "512,2048", "--runs", "1", "--concurrency", "", "--compare"]
    )
    assert args.run is cli.cmd_bench
    assert cli._int_list(args.sizes) == [512, 2048]
    assert cli._int_list(args.concurrency) == []
    assert args.compare and args.lsp_keystrokes == 20 and args.lsp_max_tokens == 64
    assert (args.load_keystrokes, args.load_complete_tokens) == (12, 12)
    assert args.load_background_tokens == 400  # issue 16's figure: 12 beside 400
    with pytest.raises(argparse.ArgumentTypeError):
        cli._int_list("512,abc")
    with pytest.raises(argparse.ArgumentTypeError):
        cli._int_list("0")


def test_under_load_inputs_are_deterministic() -> None:
    prefixes = under_load.keystroke_prefixes(3)
    assert len(set(prefixes)) == 3  # each keystroke adds one character
    assert all(p.startswith(under_load.KEYSTROKE_FILE) for p in prefixes)
    assert prefixes[1] == prefixes[0] + under_load.TYPED_LINE[1]
    code = under_load.background_code()
    assert code == under_load.background_code()
    assert code.count("\ndef ") + code.startswith("def ") == under_load.BACKGROUND_FUNCTIONS
    assert code.endswith("    return total\n")
