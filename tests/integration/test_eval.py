"""Integration test: ``qwend eval`` against the real daemon with the real SmolLM2 model.

One case per suite and 8 tokens per answer keep it short on 2 cores. SmolLM2
is tiny and has no FIM tokens, so its answers are mostly wrong: the test
checks that every figure is measured and consistent, never what it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon, smollm2_config

pytestmark = pytest.mark.slow

MY_CASE = {
    "task_id": "Mine/0",
    "prompt": "def add(a, b):\n",
    "suffix": "\n\nprint(add(1, 2))\n",
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
}


def test_qwend_eval_scores_the_running_daemon(
    make_daemon: Any, model_dir: Path, sandbox: Path
) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir)).start()
    daemon.wait_for("ready")
    out = sandbox / "eval.json"
    result = daemon.cli(
        "eval", "--limit", "1", "--max-tokens", "8", "--no-progress", "--json",
        "--output", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + daemon.log()
    view = json.loads(result.stdout)
    (run,) = view["runs"]
    assert run["model"]["name"] == "smollm2-135m" and run["aborted"] is None
    assert set(run["suites"]) == {"humaneval-single", "humaneval-multi"}
    for summary in run["suites"].values():
        assert summary["cases"] == summary["tested"] == 1 and summary["errors"] == 0
        assert summary["exact_match"] in (0.0, 1.0)
        assert 0.0 <= summary["edit_similarity"] <= 100.0
        assert summary["pass_at_1"] in (0.0, 1.0)
        assert 0 < summary["latency_p50_ms"] == summary["latency_p95_ms"]
        assert 1 <= summary["tokens_generated"] <= 8
    document = json.loads(out.read_text())
    (case,) = document["runs"][0]["suites"]["humaneval-multi"]["cases"]
    assert case["task_id"].startswith("MultiLineInfilling/HumanEval/0/")
    assert case["tests"]["status"] in ("passed", "failed", "timeout", "memory", "refused")
    assert case["finish_reason"] in ("stop", "length")

    shown = daemon.cli("eval", "--show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "smollm2-135m (llama.cpp, cpu)" in shown.stdout
    assert "humaneval-single" in shown.stdout


def test_qwend_eval_compares_a_running_daemon_with_one_it_starts(
    make_daemon: Any, model_dir: Path, sandbox: Path
) -> None:
    daemon: Daemon = make_daemon(smollm2_config(model_dir)).start()
    daemon.wait_for("ready")
    suite = sandbox / "mine.jsonl"
    suite.write_text(json.dumps(MY_CASE) + "\n")
    out = sandbox / "compare.json"
    result = daemon.cli(
        "eval", "--file", str(suite), "--mode", "multi", "--max-tokens", "8", "--no-progress",
        "--output", str(out), "--compare", str(daemon.socket), str(daemon.config_path),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + daemon.log()
    assert "side by side: A = " in result.stdout
    document = json.loads(out.read_text())
    first, second = document["runs"]
    assert first["target"] == f"socket {daemon.socket}"
    assert second["target"] == f"config {daemon.config_path}"
    assert first["model"]["name"] == second["model"]["name"] == "smollm2-135m"
    (case_a,) = first["suites"]["mine"]["cases"]
    (case_b,) = second["suites"]["mine"]["cases"]
    # The same model, greedy, on the same case: the same suggestion from both daemons.
    assert case_a["suggestion"] == case_b["suggestion"]
    assert "same suggestion in 1 of 1 cases" in result.stdout
    # The daemon the comparison started is gone: only the fixture's own remains.
    assert daemon.health() == "ready"
