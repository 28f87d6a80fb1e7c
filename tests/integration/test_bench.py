"""Integration test: ``qwend bench`` against the real daemon with the real SmolLM2 model.

Tiny settings keep it to about a minute on 2 cores. It checks the JSON's
shape and that every figure is a real, positive measurement; it never
asserts how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon, smollm2_config

pytestmark = pytest.mark.slow


def _positive(summary: dict[str, Any]) -> None:
    assert summary["n"] == len(summary["runs"]) >= 1
    assert all(value > 0 for value in summary["runs"])
    assert summary["min"] <= summary["median"] <= summary["max"]


def test_qwend_bench_measures_the_running_daemon(
    make_daemon: Any, model_dir: Path, sandbox: Path
) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir)).start()
    daemon.wait_for("ready")
    out = sandbox / "bench.json"
    # 9000 exceeds SmolLM2's 8,192-token context: it must be skipped, with the reason.
    result = daemon.cli(
        "bench", "--sizes", "64,9000", "--runs", "1", "--decode-tokens", "8",
        "--concurrency", "2", "--lsp-keystrokes", "2", "--lsp-context", "200",
        "--lsp-max-tokens", "8", "--load-keystrokes", "2", "--load-complete-tokens", "4",
        "--load-background-tokens", "40", "--compare", "--no-progress", "--json", str(out),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + daemon.log()
    assert "decode tokens/s, 1 stream" in result.stdout
    data = json.loads(out.read_text())

    assert data["model"]["name"] == "smollm2-135m"
    assert data["environment"]["versions"]["qwend"]
    ttft, skipped = data["ttft"]
    assert ttft["prompt_tokens"] == 64 and ttft["hit_prompt_tokens"] == 64
    _positive(ttft["cold_s"])
    _positive(ttft["prefix_hit_s"])
    assert skipped["prompt_tokens"] == 9000 and "8,192" in skipped["skipped"]

    _positive(data["decode"]["tokens_per_s"])
    assert data["decode"]["tokens"] >= 2
    (level,) = data["concurrency"]
    assert level["streams"] == 2 and level["tokens_per_run"] >= 2
    _positive(level["aggregate_tokens_per_s"])

    lsp = data["lsp"]
    assert lsp["keystrokes"] == 2 and len(lsp["latencies_s"]) == 2
    assert 0 < lsp["p50_s"] <= lsp["p95_s"]
    assert lsp["context_tokens"] > 200  # the document plus the inserted function header
    assert 1 <= lsp["daemon_calls"] <= 2  # a typed-ahead cache hit never reaches the daemon

    load = data["under_load"]
    assert load["keystrokes"] == 2 and len(load["idle_latencies_s"]) == 2
    assert 1 <= load["keystrokes_under_load"] == len(load["loaded_latencies_s"]) <= 2
    assert load["idle_p50_s"] > 0 and load["loaded_p50_s"] > 0 and load["p50_ratio"] > 0
    background = load["background"]
    assert background["tokens_under_load"] == background["tokens_alone"] >= 2
    assert background["same_text_as_alone"] is True  # greedy, suspended and resumed
    assert load["suspensions"] >= 1 and load["suspend_mode"] == "reprefill"  # llama.cpp
    assert load["resume_step_p50_s"] > 0

    assert data["memory"]["gpu"] == "n/a (CPU)" and data["memory"]["rss_bytes"] > 0
    _positive(data["status_wall_s"])

    compare = data["compare"]
    assert compare["bandwidth_bound"]["reason"] == "unknown device"  # a CPU is not in the table
    assert "needs CUDA" in compare["raw_exllamav2"]["skipped"]
    # The same GGUF file through llama-cpp-python, and dequantized through transformers.
    llama = compare["raw_llamacpp"]
    assert llama["decode_tokens_per_s"] > 0 and llama["ttft_s"]["64"] > 0
    assert ".gguf" in llama["setup"] and llama["load_s"] > 0
    hf = compare["transformers"]
    assert hf["decode_tokens_per_s"] > 0 and hf["ttft_s"]["64"] > 0
    for side in (llama, hf):
        keystroke = side["keystroke"]
        assert keystroke["cached_tokens"] == 200  # --lsp-context
        assert keystroke["prompt_tokens"] == keystroke["cached_tokens"] + 2
        assert keystroke["full_s"] > 0 and keystroke["prefix_reuse_s"] > 0
    assert compare["ratios"]["daemon_decode_over_transformers"] > 0
    assert compare["ratios"]["daemon_decode_of_raw_llamacpp"] > 0
    assert "raw llama.cpp decode tokens/s" in result.stdout
    assert not daemon.netguard_log.exists() or not daemon.netguard_log.read_text().strip()
